"""Images in messages: content given as parts (either OpenAI shape) is checked within its
limits, stored losslessly on every engine (turn writes, appends, forks, imports), migrated
in and out, exported (format v4) and imported back, shown to the openai backend as parts
and refused by the embedded model, which cannot see them."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from chatsessions import AsyncChatSessions, migrations
from chatsessions.backends.local import LocalBackend
from chatsessions.backends.openai import OpenAIBackend
from chatsessions.config import Settings
from chatsessions.engine import content as limits
from chatsessions.engine.content import check_content
from chatsessions.engine.export import export_markdown
from chatsessions.errors import InvalidInput
from chatsessions.store.base import Store, open_store
from chatsessions.testing import FakeLLMServer
from chatsessions.types import (
    Chat,
    GenerationParams,
    ImagePart,
    Message,
    Role,
    TextPart,
    TurnStatus,
    utcnow,
)
from tests.conftest import _truncate

PIXEL = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 60).decode()
LINKED = "https://example.com/receipt.jpg"
PARTS = (TextPart("What is on this receipt?"), ImagePart(LINKED, "high"),
         TextPart("And this one?"), ImagePart(PIXEL))
AS_OPENAI = [
    {"type": "text", "text": "What is on this receipt?"},
    {"type": "image_url", "image_url": {"url": LINKED, "detail": "high"}},
    {"type": "text", "text": "And this one?"},
    {"type": "image_url", "image_url": {"url": PIXEL}},
]
TEXT = "What is on this receipt?\nAnd this one?"


# --- checking ----------------------------------------------------------------------------

def test_either_openai_shape_gives_the_same_parts() -> None:
    responses_shape = [
        {"type": "input_text", "text": "What is on this receipt?"},
        {"type": "input_image", "image_url": LINKED, "detail": "high"},
        {"type": "input_text", "text": "And this one?"},
        {"type": "input_image", "image_url": PIXEL}]
    for given in (AS_OPENAI, responses_shape, list(PARTS)):
        assert check_content(given, max_chars=1000) == (TEXT, PARTS)


def test_text_alone_stores_no_parts() -> None:
    assert check_content("hi", max_chars=10) == ("hi", None)
    assert check_content([{"type": "text", "text": "a"}, {"type": "input_text", "text": "b"}],
                         max_chars=10) == ("a\nb", None)
    assert check_content([{"type": "image_url", "image_url": {"url": LINKED}}],
                         max_chars=10) == ("", (ImagePart(LINKED),))


def _data_url(size: int, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(b"\0" * size).decode()


@pytest.mark.parametrize(("given", "needle"), [
    ([{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}],
     "content.0.image_url.url must be an https URL or a base64 data URL"),
    ([{"type": "image_url", "image_url": {"url": "https://example.com/" + "a" * 3000}}],
     "characters long; the limit is 2048"),
    ([{"type": "image_url", "image_url": {"url": "https://example.com/a b.png"}}],
     "spaces or control characters"),
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
     "not valid base64"),
    ([{"type": "image_url", "image_url": {"url": "data:text/html;base64,PGI+"}}],
     "text/html is not an image type"),
    ([{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
     "must be data:<media type>;base64,<data>"),
    ([{"type": "image_url", "image_url": {"url": _data_url(limits.MAX_IMAGE_BYTES + 3)}}],
     f"the limit is {limits.MAX_IMAGE_BYTES}"),
    ([{"type": "image_url", "image_url": {"url": _data_url(limits.MAX_IMAGE_BYTES - 3)}}] * 3,
     f"the limit for one message is {limits.MAX_MESSAGE_IMAGE_BYTES}"),
    ([{"type": "image_url", "image_url": {"url": LINKED}}] * (limits.MAX_IMAGES + 1),
     f"holds {limits.MAX_IMAGES + 1} images; the limit is {limits.MAX_IMAGES}"),
    ([{"type": "image_url", "image_url": {"url": LINKED, "detail": "max"}}],
     "detail must be one of auto, low, high"),
    ([{"type": "input_image", "file_id": "file-1"}], "uploaded files are not supported"),
    ([{"type": "image_url", "image_url": {"url": LINKED}, "extra": 1}], "unknown field"),
    ([{"type": "input_audio", "input_audio": {}}], "content.0.type must be text or image_url"),
    ([{"type": "text", "text": "\x00"}], "NUL"),
    ([{"type": "text", "text": "  "}], "content is empty"),
    ([], "content is empty"),
    ({"type": "text", "text": "a"}, "a string or a list of parts"),
])
def test_bad_parts_are_refused_naming_the_field(given: Any, needle: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_content(given, max_chars=100)
    assert needle in str(refused.value)


def test_as_openai_shows_the_parts_and_to_dict_keeps_them() -> None:
    message = Message("c", 1, Role.USER, TEXT, parts=PARTS)
    assert message.as_openai() == {"role": "user", "content": AS_OPENAI}
    assert message.to_dict()["parts"] == AS_OPENAI
    assert message.to_dict()["content"] == TEXT
    assert Message("c", 2, Role.USER, "plain").as_openai() == {"role": "user",
                                                               "content": "plain"}


# --- storage -----------------------------------------------------------------------------

@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chats.db'}"
    url: str = request.getfixturevalue("pg_database_url")
    asyncio.run(_truncate(url))
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    opened = open_store(store_url)
    await opened.open()
    yield opened
    await opened.close()


async def _chat(store: Store) -> Chat:
    now = utcnow()
    chat = Chat(id=f"c-{now.timestamp()}", tenant_id="t", system_prompt="Help.",
                backend="openai", model="m", created_at=now, updated_at=now)
    await store.create_chat(chat)
    return chat


async def test_parts_survive_every_write_a_fork_and_an_import(store: Store) -> None:
    chat = await _chat(store)
    user = await store.begin_turn(chat, "me", utcnow() + timedelta(seconds=30), TEXT,
                                  parts=PARTS)
    assert user is not None
    assert user.parts == PARTS
    await store.complete_turn(user, Message(chat.id, 0, Role.ASSISTANT, "Two receipts."),
                              lease_owner="me")
    await store.add_user_message(chat.id, "Only text", parts=None)
    await store.add_user_message(chat.id, "", parts=(ImagePart(LINKED),))
    await store.append_messages(chat.id, [
        Message(chat.id, 0, Role.ASSISTANT, TEXT, parts=PARTS)])
    rows = await store.messages(chat.id)
    expected = [PARTS, None, None, (ImagePart(LINKED),), PARTS]
    assert [m.parts for m in rows] == expected
    assert rows[0].content == TEXT
    assert rows[0].as_openai()["content"] == AS_OPENAI

    fork = Chat(id=chat.id + "-f", tenant_id="t", system_prompt="Help.", backend="openai",
                model="m", parent_id=chat.id)
    await store.fork_chat(fork, up_to_seq=rows[-1].seq)
    answered = [m.parts for m in rows if m.status is TurnStatus.OK]  # a fork copies those
    assert answered == [PARTS, None, PARTS]
    assert [m.parts for m in await store.messages(fork.id)] == answered
    imported = Chat(id=chat.id + "-i", tenant_id="t", system_prompt="Help.",
                    backend="openai", model="m", message_count=len(rows))
    await store.import_chat(imported, rows)
    assert [m.parts for m in await store.messages(imported.id)] == expected


def _migrate(url: str, revision: str, *, down: bool = False) -> bool:
    """Move the schema to ``revision``; whether ``messages.parts`` exists afterwards."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, revision)
            return "parts" in {c["name"] for c in sa.inspect(conn).get_columns("messages")}
    finally:
        engine.dispose()


async def test_the_migration_removes_and_restores_the_parts_column(database_url: str) -> None:
    opened = open_store(database_url)
    await opened.open()
    chat = await _chat(opened)
    await opened.append_messages(chat.id, [Message(chat.id, 0, Role.USER, "kept")])
    await opened.close()
    assert _migrate(database_url, "0007", down=True) is False
    assert _migrate(database_url, "head") is True
    await opened.open()
    try:
        (kept,) = await opened.messages(chat.id)
        assert (kept.content, kept.parts) == ("kept", None)
        await opened.append_messages(chat.id, [Message(chat.id, 0, Role.USER, TEXT,
                                                       parts=PARTS)])
        assert (await opened.messages(chat.id))[-1].parts == PARTS
    finally:
        await opened.close()


# --- export and import -------------------------------------------------------------------

async def _with_images(sessions: AsyncChatSessions) -> str:
    return await sessions.import_chat({"messages": [
        {"role": "system", "content": "You read receipts."},
        {"role": "user", "content": AS_OPENAI},
        {"role": "assistant", "content": [{"type": "text", "text": "Two receipts."}]},
    ]})


async def test_an_export_carries_parts_and_imports_back_unchanged(
        sessions: AsyncChatSessions) -> None:
    chat_id = await _with_images(sessions)
    exported = await sessions.export_chat(chat_id)
    assert exported["format"] == "chatsessions.chat.v4"
    user, answer = exported["messages"]
    assert (user["content"], user["parts"]) == (TEXT, AS_OPENAI)
    assert (answer["content"], answer["parts"]) == ("Two receipts.", None)
    again = await sessions.export_chat(await sessions.import_chat(exported))
    assert again["messages"] == exported["messages"]
    history = await sessions.history(chat_id)
    assert history[1].parts == PARTS
    markdown = export_markdown(*await _chat_and_messages(sessions, chat_id))
    assert f"![image]({LINKED})" in markdown
    assert "*[image/png, 69 bytes]*" in markdown
    assert "base64" not in markdown


async def _chat_and_messages(sessions: AsyncChatSessions, chat_id: str
                             ) -> tuple[Chat, list[Message]]:
    return await sessions.get_chat(chat_id), await sessions.history(chat_id)


async def test_older_exports_import_and_parts_must_match_their_content(
        sessions: AsyncChatSessions) -> None:
    exported = await sessions.export_chat(await _with_images(sessions))
    v3 = {**exported, "format": "chatsessions.chat.v3",
          "messages": [{k: v for k, v in m.items() if k != "parts"}
                       for m in exported["messages"]]}
    older = await sessions.history(await sessions.import_chat(v3))
    assert [m.content for m in older[1:]] == [TEXT, "Two receipts."]
    assert [m.parts for m in older[1:]] == [None, None]
    for changed, needle in (({"content": "other"}, "the text of its parts"),
                            ({"parts": [{"type": "text", "text": TEXT}]}, "only with images"),
                            ({"parts": [{"type": "image_url", "image_url": {"url": "x"}}]},
                             "messages.0.parts.0.image_url.url")):
        doc = {**exported, "messages": [{**exported["messages"][0], **changed}]}
        with pytest.raises(InvalidInput, match=needle):
            await sessions.import_chat(doc)
    with pytest.raises(InvalidInput, match="a system prompt is text"):
        await sessions.import_chat({"messages": [{"role": "system", "content": AS_OPENAI}]})


# --- backends ----------------------------------------------------------------------------

async def test_the_openai_backend_sends_images_as_parts(fake_llm: FakeLLMServer) -> None:
    backend = OpenAIBackend(Settings(openai_base_url=fake_llm.base_url, openai_api_key="x",
                                     max_retries=0))
    try:
        shown = [{"role": "system", "content": "Help."},
                 Message("c", 1, Role.USER, TEXT, parts=PARTS).as_openai()]
        done = await backend.complete(shown, GenerationParams(), "m")
    finally:
        await backend.aclose()
    assert fake_llm.requests[-1].messages[1]["content"] == AS_OPENAI
    assert done.text == FakeLLMServer.answer_for(shown)


async def test_the_embedded_model_refuses_images_it_is_asked_about() -> None:
    local = LocalBackend(Settings())
    asked = Message("c", 1, Role.USER, TEXT, parts=PARTS).as_openai()
    with pytest.raises(InvalidInput, match="the embedded model cannot see images"):
        await local.complete([asked], GenerationParams(), "m")
    with pytest.raises(InvalidInput, match="the embedded model cannot see images"):
        async for _ in local.stream([asked], GenerationParams(), "m"):
            pass
    # earlier images (from a chat that used another backend) are shown as a mark
    kwargs = local._kwargs([asked, {"role": "assistant", "content": "Two."},
                            {"role": "user", "content": "Thanks"}], GenerationParams(),
                           None, None)
    assert kwargs["messages"][0] == {
        "role": "user", "content": "What is on this receipt?\n[image]\nAnd this one?\n[image]"}
