"""/v1/responses: turns of stored chats, through the same turn algorithm as ``/chats``.

* ``conversation=ID``: the input is appended to that chat and answered with its history;
* ``previous_response_id``: continues the chat that response belongs to, or, when the
  chat has moved on since (or the input holds more than one message), a fork of it taken
  at that response, so the context is exactly the history up to it;
* neither: a new chat;
* ``instructions`` (and system/developer input items) are the system prompt of this call
  only; ``store=false`` answers from the same context and keeps nothing.

Function tools: ``tools`` are offered to the model for this call; an answer calling them
is stored with its calls and answered by ``function_call`` output items. An input ending
with ``function_call_output`` items hands in the outputs of the calls the chat waits for
(:meth:`AsyncChatSessions.send_tool_results`); earlier ``function_call`` and output
items in the input are stored as history, as messages are.

Whatever the request asks, ``turns.py`` hands it to the library the same way: answered at
once, streamed detached from the client, or run in the background (``background.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse

from chatsessions.errors import ChatMoved, ChatNotFound, ChatSessionsError
from chatsessions.service import sse
from chatsessions.service.deps import SessionsDep
from chatsessions.service.metrics import Metrics
from chatsessions.service.openai_compat import background, turns
from chatsessions.service.openai_compat.chat_completions import aclose
from chatsessions.service.openai_compat.conversations import append_rows, get_conversation
from chatsessions.service.openai_compat.errors import (
    ERRORS,
    OpenAIRoute,
    bad_request,
    not_found,
    unsupported,
)
from chatsessions.service.openai_compat.formats import format_keywords, policy_keywords
from chatsessions.service.openai_compat.images import last_message_images
from chatsessions.service.openai_compat.items import (
    ITEM_ID,
    InputMessage,
    InputOutput,
    is_system,
    output_items,
    page,
    parse_input,
    response_id_for,
    rows_of,
)
from chatsessions.service.openai_compat.schemas import ResponseCreate, response_object
from chatsessions.service.openai_compat.streaming import (
    joined,
    json_or_events,
    now,
    response_events,
)
from chatsessions.service.openai_compat.turns import Detached, Turn
from chatsessions.sessions import AsyncChatSessions
from chatsessions.types import (
    Chat,
    Completion,
    Message,
    Role,
    StreamItem,
    TurnStatus,
)
from chatsessions.validation import check_params, check_text

router = APIRouter(prefix="/responses", route_class=OpenAIRoute, responses=ERRORS, tags=["openai"])
T = TypeVar("T")
#: a streamed turn's items: deltas and tool-call pieces, then its messages
Items = AsyncIterator[StreamItem | Message]


@dataclass(frozen=True, slots=True)
class Found:
    """A stored response: its chat, its answer, the input it answered, the one before."""

    chat: Chat
    answer: Message
    inputs: list[Message]
    previous_seq: int | None


def read_turn(body: ResponseCreate, sessions: AsyncChatSessions) -> Turn:
    """The request as text messages, refused (400) before anything is stored."""
    body.refuse_unsupported()
    if body.input is None:
        raise bad_request("Missing required parameter: 'input'.", "input",
                          "missing_required_parameter")
    if body.conversation_id and body.previous_response_id:
        raise bad_request("'previous_response_id' cannot be used together with "
                          "'conversation'.", "previous_response_id")
    limit = sessions.settings.max_message_chars
    given, images = last_message_images(body.input)
    items = parse_input(given, "input")
    system = [m.text for m in items if isinstance(m, InputMessage) and m.role == "system"]
    rest = [m for m in items if not is_system(m)]
    tools = body.tool_options()
    outputs = 0
    while outputs < len(rest) and isinstance(rest[len(rest) - 1 - outputs], InputOutput):
        outputs += 1
    last = rest[-1] if rest else None
    text: str | None = None
    results: dict[str, str] = {}
    if outputs:
        for item in rest[len(rest) - outputs:]:
            assert isinstance(item, InputOutput)
            if item.call_id in results:
                raise bad_request(f"Two outputs for the call {item.call_id!r}.", "input")
            results[item.call_id] = check_text(item.output, field="input", max_chars=limit,
                                               allow_empty=True)
        rest = rest[:len(rest) - outputs]
    elif isinstance(last, InputMessage) and last.role == "user":
        text = check_text(last.text, field="input", max_chars=limit,
                          allow_empty=images is not None)
        rest = rest[:-1]
    else:
        raise bad_request("The input must end with a user message or with function call "
                          "outputs: that is what the model answers.", "input")
    prior = rows_of(rest, "input")
    for row in prior:
        check_text(row.text, field="input", max_chars=limit,
                   allow_empty=row.role == "tool" or bool(row.calls))
    parts = [p for p in (body.instructions, *system) if p]
    instructions = "\n\n".join(parts) if parts else None
    if instructions is not None:
        check_text(instructions, field="instructions", max_chars=limit, allow_empty=True)
    params = check_params({key: value for key, value in {
        "temperature": body.temperature, "top_p": body.top_p,
        "max_tokens": body.max_output_tokens}.items() if value is not None})
    shape = {**format_keywords((body.text or {}).get("format"), "text.format"),
             **policy_keywords(body.truncation, body.context_management)}
    return Turn(instructions, prior, text, results, params, tools, shape,
                images if text is not None else None)


@router.post("", responses=json_or_events(
    "the Response, or with `stream`: its events, ending with `response.completed` or "
    "`response.failed`"))
async def create_response(body: ResponseCreate, request: Request,
                          sessions: SessionsDep) -> Response:
    """Answer the input as the next turn of a stored chat (see the module's docstring)."""
    turn = read_turn(body, sessions)
    created = now()
    if body.store is False:
        return await _unstored(body, turn, sessions, created)
    metrics: Metrics = request.app.state.metrics
    # A streamed text turn on a conversation finds the chat itself, as /chats/{id}/messages
    # does: reading it first would cost a read before the first token (see _first_step).
    found_by_turn = bool(body.stream and not body.background and body.conversation_id
                         and turn.text is not None and not turn.prior)
    chat_id, expected = ((str(body.conversation_id), None) if found_by_turn
                         else await _target(body, turn, sessions))
    if body.background:
        _, started = await _branching(sessions, chat_id, expected, lambda chat, count:
                                      background.start(body, sessions, chat, turn, count, created))
        return started
    if not body.stream:
        chat_id, answer = await _branching(sessions, chat_id, expected, lambda chat, count:
                                           _send(sessions, chat, turn, count, metrics))
        output = output_items(answer.seq, answer.content, answer.tool_calls or ())
        return JSONResponse(_response(body, response_id_for(chat_id, answer.seq), chat_id, created,
                                      "completed", output, answer, None))

    async def streamed(chat: str, count: int | None) -> tuple[int, Items, StreamItem | Message]:
        # the turn (or tool round) goes on, and is stored, if the client goes away
        items = Detached(sessions, chat, turn, count)
        stream = _counted(items, metrics)
        try:
            first = await _first_step(stream, chat if found_by_turn else None)
        except BaseException:
            await aclose(stream)
            raise
        return items.seq, stream, first

    chat_id, (seq, stream, first) = await _branching(sessions, chat_id, expected, streamed)
    id_ = response_id_for(chat_id, seq)
    events = response_events(str(seq), first, stream, lambda *state: _response(
        body, id_, chat_id, created, *state))
    return sse.EventStream(joined(events))


@router.get("/{response_id}", responses=json_or_events(
    "the Response, or with `stream`: its events after `starting_after`, then live ones"))
async def retrieve_response(response_id: str, request: Request,
                            sessions: SessionsDep) -> Any:
    """A stored response, rebuilt from its chat's messages; a background one as it stands;
    with ``stream=true``: its events again, from ``starting_after`` on."""
    query = request.query_params
    if query.get("stream", "false").lower() != "false":
        return await background.resume(sessions, response_id,
                                       background.starting_after(query.get("starting_after")))
    if (run_id := background.run_id_of(response_id)) is not None:
        return await background.retrieve(sessions, run_id)
    found = await find_response(sessions, response_id, "response_id")
    answer = found.answer
    ok = answer.status is TurnStatus.OK
    previous = (None if found.previous_seq is None
                else response_id_for(found.chat.id, found.previous_seq))
    return response_object(
        id_=response_id, created_at=float(int(answer.created_at.timestamp())),
        model=answer.model or found.chat.model, status="completed" if ok else "failed",
        output=output_items(answer.seq, answer.content, answer.tool_calls or ()) if ok else [],
        usage=answer.usage if ok else None, conversation_id=found.chat.id,
        previous_response_id=previous, completed_at=float(int(answer.created_at.timestamp())),
        error=None if ok else {"code": "server_error", "message": answer.error or "failed"},
    )


@router.get("/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    sessions: SessionsDep,
    after: Annotated[str | None, Query(pattern=ITEM_ID)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
) -> dict[str, Any]:
    """The messages this response answered: those after the previous answer."""
    found = await find_response(sessions, response_id, "response_id")
    return page(found.inputs, after=after, limit=limit, order=order)


async def find_response(sessions: AsyncChatSessions, id_: str, param: str) -> Found:
    """The stored response ``id_`` of the caller's tenant, or a 404."""
    parsed = await background.resolve(sessions, id_)
    missing = not_found(f"Response with id '{id_}' not found.", param)
    if parsed is None:
        raise missing
    chat_id, seq = parsed
    try:
        chat = await sessions.get_chat(chat_id)
    except ChatNotFound:
        raise missing from None
    # seqs are unique and start at 1: the first ``seq`` rows hold every seq up to it
    rows = [m for m in await sessions.messages(chat_id, limit=seq) if m.seq <= seq]
    if not rows or rows[-1].seq != seq or rows[-1].role is not Role.ASSISTANT or (
            rows[-1].status is TurnStatus.PENDING):
        raise missing
    inputs: list[Message] = []
    previous = None
    for message in reversed(rows[:-1]):
        if message.status is not TurnStatus.OK:
            continue
        if message.role is Role.ASSISTANT:
            previous = message.seq
            break
        inputs.append(message)
    return Found(chat, rows[-1], inputs[::-1], previous)


async def _target(body: ResponseCreate, turn: Turn,
                  sessions: AsyncChatSessions) -> tuple[str, int | None]:
    """The chat this turn goes to, with any prior input already appended, and the message
    count it must still have when the turn starts (None: no such condition)."""
    if body.conversation_id:
        chat = await get_conversation(sessions, body.conversation_id, "conversation")
        await append_rows(sessions, chat.id, turn.prior)
        return chat.id, None
    if body.previous_response_id:
        found = await find_response(sessions, body.previous_response_id,
                                    "previous_response_id")
        if found.answer.status is not TurnStatus.OK:
            raise bad_request("That response failed; continue from an earlier one.",
                              "previous_response_id")
        seq = found.answer.seq
        if not turn.prior and found.chat.message_count == seq:
            return found.chat.id, seq
        chat_id = await sessions.fork_chat(found.chat.id, up_to_seq=seq)
    else:
        chat_id = await sessions.create_chat(model=body.model)
    await append_rows(sessions, chat_id, turn.prior)
    return chat_id, None


async def _branching(sessions: AsyncChatSessions, chat_id: str, expected: int | None,
                     attempt: Callable[[str, int | None], Awaitable[T]]) -> tuple[str, T]:
    """Run ``attempt`` on the chat as the previous response left it (``expected``
    messages); if the chat went on after that response, branch off it: fork the chat at
    that point and run ``attempt`` on the fork. The chat it ran on, and its result."""
    try:
        return chat_id, await attempt(chat_id, expected)
    except ChatMoved:
        forked = await sessions.fork_chat(chat_id, up_to_seq=expected or 0)
        return forked, await attempt(forked, None)


async def _first_step(stream: AsyncIterator[StreamItem | Message],
                      conversation: str | None) -> StreamItem | Message:
    """The turn's first item; failures before any output get their own status. With
    ``conversation`` (a chat not read before the turn), one the turn does not find, or
    finds another tenant's, is the 404 reading it first would have given."""
    try:
        return await anext(stream)
    except ChatNotFound:
        if conversation is None:
            raise
        raise not_found(f"Conversation with id '{conversation}' not found.",
                        "conversation") from None


async def _send(sessions: AsyncChatSessions, chat_id: str, turn: Turn,
                expected: int | None, metrics: Metrics) -> Message:
    try:
        answer = await turns.send(sessions, chat_id, turn, expected)
    except ChatMoved:
        raise
    except ChatSessionsError:
        metrics.turn_failed()
        raise
    metrics.turn_ok(answer)
    return answer


async def _counted(turn: AsyncIterator[StreamItem | Message],
                   metrics: Metrics) -> AsyncIterator[StreamItem | Message]:
    """A streamed turn's items, its outcome counted as ``/chats`` counts turns."""
    async with aclosing(turn):  # type: ignore[type-var]
        try:
            async for item in turn:
                if isinstance(item, Message) and item.role is Role.ASSISTANT:
                    metrics.turn_ok(item)
                yield item
        except (ChatMoved, ChatNotFound):  # no turn was run
            raise
        except ChatSessionsError:
            metrics.turn_failed()
            raise


def _response(body: ResponseCreate, id_: str, chat_id: str | None, created: float, status: str,
              output: list[dict[str, Any]], final: Message | Completion | None,
              error: dict[str, Any] | None) -> dict[str, Any]:
    usage = None if final is None else final.usage
    model = (final.model if final is not None else None) or body.model or ""
    return response_object(
        id_=id_, created_at=created, model=model, status=status,  # type: ignore[arg-type]
        output=output, usage=usage, request=body, conversation_id=chat_id, error=error,
        completed_at=now() if status == "completed" else None)


# store=false ----------------------------------------------------------------------------

async def _unstored(body: ResponseCreate, turn: Turn, sessions: AsyncChatSessions,
                    created: float) -> Response:
    """The answer the chat's next turn would give (same context policy, circuit breaker
    and deadline), kept nowhere: see :meth:`AsyncChatSessions.answer`."""
    prior = turn.simple_prior
    if turn.text is None or prior is None or turn.tools:
        if body.conversation_id or body.previous_response_id:
            raise unsupported("store", "Tools and tool outputs with 'store': false are only "
                              "supported without 'conversation' and 'previous_response_id'")
        return await _stateless(body, turn, sessions, created)
    chat_id: str | None = None
    up_to_seq: int | None = None
    if body.conversation_id:
        chat_id = (await get_conversation(sessions, body.conversation_id, "conversation")).id
    elif body.previous_response_id:
        found = await find_response(sessions, body.previous_response_id,
                                    "previous_response_id")
        chat_id, up_to_seq = found.chat.id, found.answer.seq
    options: dict[str, Any] = {
        "params": turn.params, "system_prompt": turn.instructions, "prior": prior,
        "up_to_seq": up_to_seq, "model": body.model if chat_id is None else None,
        **turn.shape}
    id_, base = f"resp_{uuid.uuid4().hex}", uuid.uuid4().hex

    if not body.stream:
        answer = await sessions.answer(chat_id, turn.asked, **options)
        output = output_items(base, answer.content, ())
        return JSONResponse(_response(body, id_, None, created, "completed", output, answer,
                                      None))
    stream = sessions.stream_answer(chat_id, turn.asked, **options)
    try:
        first = await anext(stream)  # failures before any output get their own status
    except BaseException:
        await aclose(stream)
        raise
    events = response_events(base, first, stream, lambda *state: _response(
        body, id_, None, created, *state))
    return sse.EventStream(joined(events))


async def _stateless(body: ResponseCreate, turn: Turn, sessions: AsyncChatSessions,
                     created: float) -> Response:
    """An unstored answer with tools, or after tool outputs: the input is the whole
    conversation, completed as ``/v1/chat/completions`` would."""
    messages: list[dict[str, Any]] = [] if turn.instructions is None else [
        {"role": "system", "content": turn.instructions}]
    messages += [row.as_chat() for row in turn.prior]
    if turn.parts is not None:
        raise unsupported("input", "Images with tools and 'store': false are not supported")
    if turn.text is not None:
        messages.append({"role": "user", "content": turn.text})
    messages += [{"role": "tool", "content": output, "tool_call_id": call_id}
                 for call_id, output in turn.results.items()]
    base = uuid.uuid4().hex
    id_ = f"resp_{base}"
    # the whole conversation is the input: no stored history to trim or summarize
    formats = {k: v for k, v in turn.shape.items() if k == "response_format"}
    options: dict[str, Any] = {"model": body.model, "params": turn.params, **turn.tools,
                               **formats}
    if not body.stream:
        completion = await sessions.complete(messages, **options)
        output = output_items(base, completion.text.strip(), completion.tool_calls)
        return JSONResponse(_response(body, id_, None, created, "completed", output,
                                      completion, None))
    stream = sessions.stream_complete(messages, **options)
    try:
        first = await anext(stream)
    except BaseException:
        await aclose(stream)
        raise
    events = response_events(base, first, stream, lambda *state: _response(
        body, id_, None, created, *state))
    return sse.EventStream(joined(events))
