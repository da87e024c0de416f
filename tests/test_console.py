"""The web console in a real browser (Debian's chromium) against the live service.

Answers come from the fake model through the real service, so what the page shows is
checked against ``FakeLLMServer.answer_for`` and against what the server stored.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from playwright.sync_api import Dialog, Locator, Page, expect

from chatsessions import AsyncChatSessions
from chatsessions.engine.titles import clean_title, title_request
from chatsessions.testing import FakeLLMServer, Fault
from tests.browser import Offline, offline_browser

XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def settings_kwargs(
    settings_kwargs: dict[str, object], request: pytest.FixtureRequest
) -> dict[str, object]:
    """A longer model timeout than the shared one: one test holds an answer back for seconds.
    Automatic titles only for the tests marked with :func:`auto_titled`, a window a few
    turns outgrow only for those marked with :func:`small_window`."""
    titles = getattr(request.function, "auto_titled", False)
    small = ({"context_window": 600, "max_output_tokens": 100}
             if getattr(request.function, "small_window", False) else {})
    return {**settings_kwargs, "request_timeout": 15.0, "auto_title": titles, **small}


def auto_titled(test: Any) -> Any:
    """Run this test with the server's automatic titles on."""
    test.auto_titled = True
    return test


def small_window(test: Any) -> Any:
    """Run this test with a context window that a few turns outgrow."""
    test.small_window = True
    return test


def expected_title(user: str, answer: str) -> str | None:
    """The title the fake model writes after this first exchange."""
    return clean_title(FakeLLMServer.answer_for(title_request(user, answer)))


def _has(cls: str) -> re.Pattern[str]:
    """Matches a class attribute that contains the class ``cls``."""
    return re.compile(rf"(^|\s){cls}(\s|$)")


class Console:
    """The page plus the few moves a user makes; every wait is on something visible."""

    def __init__(self, page: Page, url: str, offline: Offline) -> None:
        self.page, self.url, self.offline = page, url, offline
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self) -> None:
        self.page.goto(self.url)
        expect(self.page.get_by_test_id("chat-list")).to_be_attached()

    @property
    def selected(self) -> str:
        item = self.page.locator('[data-testid="chat-item"].selected')
        expect(item).to_have_count(1)
        return item.get_attribute("data-id") or ""

    def new_chat(self) -> str:
        before = self.page.get_by_test_id("chat-item").count()
        self.page.get_by_test_id("new-chat").click()
        expect(self.page.get_by_test_id("chat-item")).to_have_count(before + 1)
        chat_id = self.selected
        # The newest chat goes on top.
        expect(self.page.get_by_test_id("chat-item").first).to_have_attribute("data-id", chat_id)
        expect(self.page.get_by_test_id("message-input")).to_be_enabled()
        return chat_id

    def item(self, chat_id: str) -> Locator:
        return self.page.locator(f'[data-testid="chat-item"][data-id="{chat_id}"]')

    def select(self, chat_id: str) -> None:
        self.item(chat_id).locator(".chat-open").click()
        expect(self.item(chat_id)).to_have_class(_has("selected"))

    def type_and_send(self, text: str) -> None:
        box = self.page.get_by_test_id("message-input")
        box.fill(text)
        box.press("Enter")

    def wait_idle(self, answers: int) -> None:
        """Until ``answers`` stored answers are shown and the message box is usable again."""
        done = self.page.locator('[data-testid="message"][data-role="assistant"][data-status="ok"]')
        expect(done).to_have_count(answers, timeout=15_000)
        expect(self.page.get_by_test_id("message-input")).to_be_enabled()

    def csp_violations(self) -> list[str]:
        return list(self.page.evaluate("window.__csp"))

    def history(self) -> list[tuple[str, str]]:
        messages = self.page.get_by_test_id("message")
        return [
            (m.get_attribute("data-role") or "", m.locator(".bubble").inner_text())
            for m in messages.all()
        ]


@pytest.fixture
def console(live_server: Any) -> Iterator[Console]:
    # Playwright starts after the live server on purpose: while its sync API is active it
    # marks its event loop as running in this thread, and the database fixtures behind
    # live_server use asyncio.run.
    with offline_browser(live_server.url) as offline:
        page = offline.context.new_page()
        page.set_default_timeout(10_000)
        yield Console(page, live_server.url, offline)
        assert offline.refused == []  # the console needs nothing from elsewhere


def expected_answer(base_url: str, chat_id: str, *users_and_answers: str) -> str:
    """What the fake model answers after this history, with the chat's own system prompt."""
    chat = httpx.get(f"{base_url}/chats/{chat_id}").json()
    messages: list[dict[str, str]] = [{"role": "system", "content": chat["system_prompt"]}]
    for i, text in enumerate(users_and_answers):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return FakeLLMServer.answer_for(messages)


def stored(base_url: str, chat_id: str) -> list[tuple[str, str, str]]:
    data = httpx.get(f"{base_url}/chats/{chat_id}/messages").json()["data"]
    return [(m["role"], m["status"], m["content"]) for m in data]


@auto_titled
def test_two_chats_keep_their_own_history_across_switches_and_reload(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    console.open()
    first = console.new_chat()
    console.type_and_send("Where is my parcel?")
    console.wait_idle(1)
    answer_1 = expected_answer(url, first, "Where is my parcel?")

    second = console.new_chat()
    assert console.history() == []
    console.type_and_send("I would like a refund, please.")
    console.wait_idle(1)
    answer_2 = expected_answer(url, second, "I would like a refund, please.")

    chat_1 = [("user", "Where is my parcel?"), ("assistant", answer_1)]
    chat_2 = [("user", "I would like a refund, please."), ("assistant", answer_2)]
    assert console.history() == chat_2
    for chat_id, shown in [(first, chat_1), (second, chat_2), (first, chat_1)]:
        console.select(chat_id)
        console.wait_idle(1)
        assert console.history() == shown

    # A second turn sends the whole history of that chat only.
    console.type_and_send("It was ordered last week.")
    console.wait_idle(2)
    answer_3 = expected_answer(url, first, "Where is my parcel?", answer_1,
                               "It was ordered last week.")
    chat_1 += [("user", "It was ordered last week."), ("assistant", answer_3)]
    assert console.history() == chat_1
    assert stored(url, first) == [(role, "ok", text) for role, text in chat_1]

    console.page.reload()
    expect(console.page.get_by_test_id("chat-item")).to_have_count(2)
    assert console.selected == first  # the selection survives a reload (URL fragment)
    console.wait_idle(2)
    assert console.history() == chat_1
    console.select(second)
    console.wait_idle(1)
    assert console.history() == chat_2
    # The server titled both chats after their first exchange; newest chat first.
    titles = console.page.locator('[data-testid="chat-item"] .chat-title')
    expect(titles).to_have_text([expected_title("I would like a refund, please.", answer_2),
                                 expected_title("Where is my parcel?", answer_1)])
    assert [c["title"] for c in httpx.get(f"{url}/chats").json()["data"]] == (
        titles.all_inner_texts())
    assert console.errors == []


def test_model_output_is_shown_as_text_never_as_html(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    console.open()
    console.type_and_send(XSS)  # no chat selected: typing starts one
    console.wait_idle(1)
    chat_id = console.selected

    answer = expected_answer(live_server.url, chat_id, XSS)
    assert XSS in answer  # the fake echoes the message, so the answer carries the payload
    assert console.history() == [("user", XSS), ("assistant", answer)]
    pane = console.page.get_by_test_id("messages")
    expect(pane.locator("img")).to_have_count(0)  # so no onerror can ever fire
    assert console.dialogs == []
    assert console.errors == []


#: What models write all the time, and what a hostile page quoted in an answer carries.
MARKDOWN_ANSWER = "\n".join([
    "## Shipping options",
    "",
    "Intro with **bold**, *italic* and `code <b>`.",
    "",
    "| Carrier | Days | Price |",
    "|:--------|-----:|:-----:|",
    "| Post    | 3    | 4.90  |",
    "| Courier | 1    | 12.00 |",
    "",
    "> Orders placed before noon",
    "> leave the same day.",
    "",
    "- Europe",
    "  - France",
    "  - Germany",
    "    1. Berlin",
    "    2. Hamburg",
    "- Asia",
    "",
    "```python",
    'print("<script>window.pwned = 1</script>")',
    "```",
    "",
    "![pixel](http://example.com/p.png) [a link](https://example.com/a?b=1&c=2) and",
    "https://example.org/x. [click me](javascript:window.pwned=5) [me too](/static/app.js)",
    "",
    "<script>window.pwned = 2</script>",
    "",
    'Hostile: <img src=x onerror="window.pwned = 3"> <svg onload="window.pwned = 4"></svg>',
    '<a href="javascript:window.pwned=6">or me</a>',
    '<iframe src="javascript:window.pwned=7"></iframe>',
])


#: a 1x1 transparent PNG, inline
PIXEL = ("data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
         "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def test_a_messages_images_are_shown_inline_or_linked(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    """A user message with an inline image and one on the web: the first is shown, the
    second is a link to it, never fetched (the page loads nothing from other hosts)."""
    with httpx.Client(base_url=live_server.url, timeout=30) as http:
        chat_id = http.post("/chats", json={}).json()["id"]
        content = [{"type": "text", "text": "Is this parcel damaged?"},
                   {"type": "image_url", "image_url": {"url": PIXEL}},
                   {"type": "image_url", "image_url": {"url": "https://example.com/box.png"}}]
        assert http.post(f"/chats/{chat_id}/messages",
                         json={"content": content}).status_code == 200
    console.open()
    console.select(chat_id)
    user = console.page.locator('[data-testid="message"][data-role="user"]')
    expect(user.locator(".bubble")).to_contain_text("Is this parcel damaged?")
    images = user.get_by_test_id("message-images")
    expect(images.locator("img")).to_have_count(1)
    assert images.locator("img").get_attribute("src") == PIXEL
    expect(images.locator("img")).to_have_js_property("naturalWidth", 1)  # decoded: shown
    link = images.locator("a")
    expect(link).to_have_attribute("href", "https://example.com/box.png")
    assert link.get_attribute("rel") == "noopener noreferrer"
    assert console.errors == []


def test_model_markdown_renders_and_hostile_html_stays_inert(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    """The fake model answers in markdown through the real service: tables, block quotes,
    nested lists and fenced code render; markup in the answer runs nothing."""
    fake_llm.script(MARKDOWN_ANSWER)
    console.open()
    chat_id = console.new_chat()
    console.type_and_send("How can you ship it?")
    console.wait_idle(1)
    assert stored(live_server.url, chat_id)[1] == ("assistant", "ok", MARKDOWN_ANSWER)

    bubble = console.page.locator('[data-testid="message"][data-role="assistant"] .bubble')
    expect(bubble.locator("h2")).to_have_text("Shipping options")
    expect(bubble.locator("strong")).to_have_text("bold")
    expect(bubble.locator("em")).to_have_text("italic")
    expect(bubble.locator("p code")).to_have_text("code <b>")
    table = bubble.locator("table")
    expect(table.locator("thead th")).to_have_text(["Carrier", "Days", "Price"])
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(table.locator("tbody tr").last.locator("td")).to_have_text(["Courier", "1", "12.00"])
    assert table.locator("td").nth(1).get_attribute("align") == "right"
    expect(bubble.locator("blockquote > p")).to_have_text(
        "Orders placed before noon\nleave the same day.", use_inner_text=True)
    expect(bubble.locator("ul > li")).to_have_count(4)  # Europe, France, Germany, Asia
    expect(bubble.locator("ul > li > ul > li")).to_have_count(2)
    expect(bubble.locator("ul > li > ul > li > ol > li")).to_have_text(["Berlin", "Hamburg"])
    code = bubble.locator("pre > code")
    expect(code).to_have_text('print("<script>window.pwned = 1</script>")')
    expect(code).to_have_class(_has("language-python"))

    # The markup is shown as the text it is; nothing of it became an element.
    expect(bubble.locator("script, img, svg, iframe, b")).to_have_count(0)
    text = bubble.inner_text()
    for literal in ["<script>window.pwned = 2</script>", 'onerror="window.pwned = 3"',
                    '<svg onload="window.pwned = 4">', '<a href="javascript:window.pwned=6">',
                    '<iframe src="javascript:window.pwned=7">']:
        assert literal in text
    # Links only to the web (the javascript: and the relative one stay their text); an
    # image is a plain link to it, never fetched.
    links = bubble.locator("a")
    expect(links).to_have_text(["pixel", "a link", "https://example.org/x"])
    assert [links.nth(i).get_attribute("href") for i in range(3)] == [
        "http://example.com/p.png", "https://example.com/a?b=1&c=2", "https://example.org/x"]
    for i in range(3):
        assert links.nth(i).get_attribute("rel") == "noopener noreferrer"
    expect(bubble).to_contain_text("click me me too")
    bubble.get_by_text("click me").click()  # plain text: nothing to follow

    assert console.page.evaluate("typeof window.pwned") == "undefined"
    assert console.dialogs == []
    assert console.csp_violations() == []  # nothing even tried to run
    assert console.errors == []


def test_console_is_served_under_a_strict_content_security_policy(
    console: Console, live_server: Any
) -> None:
    """The policy is sent with the page, and it holds: an inline handler that got into the
    page anyway (here put there by the test itself) is refused by the browser."""
    response = console.page.goto(live_server.url)
    assert response is not None
    policy = response.headers["content-security-policy"]
    for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'",
                      "object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"]:
        assert directive in policy
    assert "unsafe-inline" not in policy
    assert "unsafe-eval" not in policy
    expect(console.page.get_by_test_id("chat-list")).to_be_attached()
    assert console.csp_violations() == []  # the console itself needs no exception

    console.page.evaluate("""() => document.body.insertAdjacentHTML("beforeend",
        '<img id="probe" src="/no-such-image" onerror="window.pwned = 1">')""")
    console.page.wait_for_function("window.__csp.some((v) => v.startsWith('script-src'))")
    assert console.page.evaluate("typeof window.pwned") == "undefined"
    assert console.errors == []


def test_switching_chats_while_an_answer_streams(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    console.open()
    slow = console.new_chat()
    fake_llm.inject(Fault.timeout(5.0))  # only the next model call waits 5 s before answering
    console.type_and_send("Slow question")
    live = console.page.locator('[data-testid="message"][data-status="streaming"]')
    expect(live).to_have_count(1)
    expect(console.page.get_by_test_id("message-input")).to_be_disabled()

    fast = console.new_chat()  # leave while the first answer is still on its way
    assert console.history() == []
    console.type_and_send("Fast question")
    console.wait_idle(1)
    fast_history = [("user", "Fast question"),
                    ("assistant", expected_answer(url, fast, "Fast question"))]
    assert console.history() == fast_history

    # Back to the slow chat before it has answered: its turn is shown as in progress.
    console.select(slow)
    expect(live).to_have_count(1)
    expect(console.page.get_by_test_id("message")).to_have_count(2)
    expect(console.page.get_by_test_id("message-input")).to_be_disabled()
    # The background stream finishes and its answer replaces the placeholder.
    console.wait_idle(1)
    slow_history = [("user", "Slow question"),
                    ("assistant", expected_answer(url, slow, "Slow question"))]
    assert console.history() == slow_history
    assert stored(url, slow) == [("user", "ok", "Slow question"),
                                 ("assistant", "ok", slow_history[1][1])]

    # And once more the other way: leave during a stream, come back after it ended.
    fake_llm.inject(Fault.timeout(3.0))
    console.type_and_send("Another slow one")
    expect(live).to_have_count(1)
    console.select(fast)
    console.wait_idle(1)
    assert console.history() == fast_history
    expect(console.item(slow)).to_have_class(_has("unread"), timeout=15_000)
    console.select(slow)
    console.wait_idle(2)
    assert [role for role, _ in console.history()] == ["user", "assistant"] * 2
    assert console.errors == []


def test_rename_delete_and_multiline_messages(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    console.open()
    keep, drop = console.new_chat(), console.new_chat()
    box = console.page.get_by_test_id("message-input")
    box.fill("line one")
    box.press("Shift+Enter")  # a new line, not a send
    box.press_sequentially("line two")
    assert box.input_value() == "line one\nline two"
    console.page.get_by_test_id("send").click()
    console.wait_idle(1)
    assert console.history()[0] == ("user", "line one\nline two")
    assert stored(url, drop)[0] == ("user", "ok", "line one\nline two")

    console.item(keep).get_by_test_id("rename").click()
    title = console.item(keep).get_by_test_id("rename-input")
    title.fill("Parcel <b>questions</b>")
    title.press("Enter")
    expect(console.item(keep).locator(".chat-title")).to_have_text("Parcel <b>questions</b>")
    assert httpx.get(f"{url}/chats/{keep}").json()["title"] == "Parcel <b>questions</b>"

    delete = console.item(drop).get_by_test_id("delete")
    delete.click()  # the first click only asks
    expect(delete).to_have_text("Delete?")
    expect(console.page.get_by_test_id("chat-item")).to_have_count(2)
    delete.click()
    expect(console.page.get_by_test_id("chat-item")).to_have_count(1)
    assert httpx.get(f"{url}/chats/{drop}").status_code == 404
    expect(console.page.locator("#chat-title")).to_have_text("No chat selected")

    console.page.reload()
    expect(console.page.get_by_test_id("chat-item")).to_have_count(1)
    expect(console.item(keep).locator(".chat-title")).to_have_text("Parcel <b>questions</b>")
    assert console.dialogs == []
    assert console.errors == []


def test_failed_turn_is_marked_with_its_error(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    console.open()
    chat_id = console.new_chat()
    fake_llm.inject(Fault.status(500))
    console.type_and_send("Will this fail?")
    failed = console.page.locator('[data-testid="message"][data-status="failed"]')
    expect(failed).to_have_count(1)
    expect(failed.locator(".msg-error")).to_contain_text("Not answered")
    expect(console.page.get_by_test_id("error-banner")).to_be_visible()
    expect(console.page.get_by_test_id("message-input")).to_be_enabled()
    assert stored(live_server.url, chat_id)[0][:2] == ("user", "failed")
    # The chat stays usable.
    console.type_and_send("And now?")
    console.wait_idle(1)
    assert console.errors == []


def test_api_key_is_asked_for_stored_and_sent(
    console: Console, live_server: Any, settings_kwargs: dict[str, Any]
) -> None:
    async def add_key() -> str:
        async with AsyncChatSessions(**settings_kwargs) as sessions:
            _, secret = await sessions.keys.create("default", "console test")
            return secret

    with ThreadPoolExecutor(1) as pool:  # asyncio.run needs a thread without Playwright's loop
        secret = pool.submit(asyncio.run, add_key()).result()
    console.open()
    expect(console.page.get_by_test_id("api-key-form")).to_be_visible()
    expect(console.page.get_by_test_id("error-banner")).to_be_visible()
    console.page.get_by_test_id("api-key-input").fill(secret)
    console.page.get_by_test_id("api-key-save").click()
    expect(console.page.get_by_test_id("api-key-form")).to_be_hidden()

    console.new_chat()
    console.type_and_send("Hello with a key")  # the stream request carries the key too
    console.wait_idle(1)
    console.page.reload()
    expect(console.page.get_by_test_id("chat-item")).to_have_count(1)
    console.wait_idle(1)
    expect(console.page.get_by_test_id("api-key-form")).to_be_hidden()
    assert console.errors == []


def test_regenerate_keeps_the_earlier_answer_folded(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    console.open()
    chat_id = console.new_chat()
    console.type_and_send("Where is my parcel?")
    console.wait_idle(1)
    answer = expected_answer(url, chat_id, "Where is my parcel?")
    regenerate = console.page.get_by_test_id("regenerate")
    expect(regenerate).to_have_count(1)  # on the last answer only

    regenerate.click()
    earlier = console.page.locator('[data-testid="message"][data-status="replaced"]')
    expect(earlier).to_have_count(1)
    console.wait_idle(1)
    assert fake_llm.chat_histories()[-1][1:] == [
        {"role": "user", "content": "Where is my parcel?"}]  # the old answer left out
    assert stored(url, chat_id) == [("user", "ok", "Where is my parcel?"),
                                    ("assistant", "replaced", answer),
                                    ("assistant", "ok", answer)]
    expect(earlier.locator(".bubble")).to_be_hidden()  # folded
    earlier.locator("summary").click()
    expect(earlier.locator(".bubble")).to_have_text(answer)
    expect(regenerate).to_have_count(1)
    expect(earlier.get_by_test_id("regenerate")).to_have_count(0)

    # A failed regenerate changes nothing and says why.
    fake_llm.inject(Fault.status(500))
    regenerate.click()
    expect(console.page.get_by_test_id("error-banner")).to_be_visible()
    expect(console.page.get_by_test_id("message-input")).to_be_enabled()
    assert len(stored(url, chat_id)) == 3
    expect(earlier).to_have_count(1)
    console.wait_idle(1)
    assert console.errors == []


def test_edit_opens_a_fork_and_leaves_the_chat_alone(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    console.open()
    source = console.new_chat()
    console.type_and_send("Where is my parcel?")
    console.wait_idle(1)
    console.type_and_send("It was ordered last week.")
    console.wait_idle(2)
    before = stored(url, source)

    user = console.page.locator('[data-testid="message"][data-role="user"]')
    user.last.get_by_test_id("edit").click()
    box = console.page.get_by_test_id("edit-input")
    expect(box).to_have_value("It was ordered last week.")
    box.fill("It was ordered <b>yesterday</b>.")
    console.page.get_by_test_id("edit-save").click()

    expect(console.page.get_by_test_id("chat-item")).to_have_count(2)
    console.wait_idle(2)
    fork = console.selected
    assert fork != source
    assert console.page.evaluate("location.hash") == f"#{fork}"  # the URL follows the fork
    first_answer = before[1][2]
    edited = expected_answer(url, fork, "Where is my parcel?", first_answer,
                             "It was ordered <b>yesterday</b>.")
    assert console.history() == [("user", "Where is my parcel?"),
                                 ("assistant", first_answer),
                                 ("user", "It was ordered <b>yesterday</b>."),
                                 ("assistant", edited)]
    assert httpx.get(f"{url}/chats/{fork}").json()["parent_id"] == source
    assert stored(url, source) == before

    # Cancelling an edit changes nothing.
    user.first.get_by_test_id("edit").click()
    console.page.get_by_test_id("edit-input").press("Escape")
    expect(console.page.get_by_test_id("edit-input")).to_have_count(0)
    expect(console.page.get_by_test_id("chat-item")).to_have_count(2)
    assert console.errors == []


def test_retry_asks_a_failed_message_again(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    console.open()
    chat_id = console.new_chat()
    fake_llm.inject(Fault.status(500))
    console.type_and_send("Will this fail?")
    failed = console.page.locator('[data-testid="message"][data-status="failed"]')
    expect(failed).to_have_count(1)
    expect(console.page.get_by_test_id("regenerate")).to_have_count(0)

    failed.get_by_test_id("retry").click()
    console.wait_idle(1)
    assert stored(url, chat_id) == [
        ("user", "failed", "Will this fail?"), ("user", "ok", "Will this fail?"),
        ("assistant", "ok", expected_answer(url, chat_id, "Will this fail?"))]
    expect(console.page.get_by_test_id("retry")).to_have_count(0)  # nothing left to retry
    assert console.errors == []


@auto_titled
def test_an_untitled_chat_shows_the_servers_title_without_a_reload(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    console.open()
    chat_id = console.new_chat()
    expect(console.item(chat_id).locator(".chat-title")).to_have_text("Untitled chat")
    fake_llm.inject(Fault.timeout(0.0))
    fake_llm.inject(Fault.timeout(1.0))  # the title arrives well after the answer
    console.type_and_send("Where is my parcel?")
    console.wait_idle(1)
    answer = expected_answer(live_server.url, chat_id, "Where is my parcel?")
    title = expected_title("Where is my parcel?", answer)
    assert title
    expect(console.item(chat_id).locator(".chat-title")).to_have_text(title)
    expect(console.page.locator("#chat-title")).to_have_text(title)
    assert console.errors == []


def test_search_lists_hits_and_opens_the_message(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    parcel = httpx.post(f"{url}/chats", json={"title": "Parcel <b>help</b>"}).json()["id"]
    texts = ["The parcel number is 12345", f"Thanks {XSS} for the parcel",
             *(f"Filler message {i}" for i in range(8))]
    for text in texts:  # enough turns that the first one is far above the bottom
        httpx.post(f"{url}/chats/{parcel}/messages", json={"content": text}, timeout=30)
    other = httpx.post(f"{url}/chats", json={"title": "Refunds"}).json()["id"]
    httpx.post(f"{url}/chats/{other}/messages", json={"content": "A refund, please"}, timeout=30)
    console.open()
    console.select(other)
    console.wait_idle(1)

    box = console.page.get_by_test_id("search-input")
    box.fill("Parcel NUMBER")
    hits = console.page.get_by_test_id("search-hit")
    found = httpx.get(f"{url}/search", params={"q": "Parcel NUMBER"}).json()["data"]
    assert {h["seq"] for h in found} == {1, 2}  # the message and the answer echoing it
    expect(hits).to_have_count(2)
    assert [h.get_attribute("data-seq") for h in hits.all()] == [str(h["seq"]) for h in found]
    expect(console.page.get_by_test_id("chat-list")).to_be_hidden()
    expect(hits.first.locator(".chat-title")).to_have_text("Parcel <b>help</b>")
    for hit in hits.all():  # matched words marked, nothing else (the answer's [hash] isn't)
        expect(hit.locator("mark")).to_have_text(["parcel", "number"])

    # Markup in a snippet stays text.
    box.fill("onerror")
    expect(hits).to_have_count(2)
    expect(hits.first.locator(".hit-snippet")).to_contain_text("<img src=x")
    expect(console.page.get_by_test_id("search-results").locator("img, b")).to_have_count(0)

    # Opening a hit selects its chat and brings the message into view, marked.
    box.fill("parcel number")
    expect(hits).to_have_count(2)
    console.page.locator('[data-testid="search-hit"][data-seq="1"] button').click()
    expect(console.item(parcel)).to_have_class(_has("selected"))
    message = console.page.locator('[data-testid="message"][data-seq="1"]')
    expect(message).to_have_class(_has("found"))
    expect(message).to_be_in_viewport()
    assert console.page.locator('[data-testid="message"].found').count() == 1

    box.press("Escape")
    expect(console.page.get_by_test_id("chat-list")).to_be_visible()
    expect(console.page.get_by_test_id("search-results")).to_be_hidden()
    box.fill("nothing like this")
    expect(console.page.get_by_test_id("search-results")).to_contain_text("No message matches.")
    assert console.dialogs == []
    assert console.errors == []


@small_window
def test_a_summary_is_a_folded_block_after_the_messages_it_stands_for(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    url = live_server.url
    chat_id = httpx.post(f"{url}/chats", json={"title": "Long",
                                               "context_policy": "summarize"}).json()["id"]
    for n in range(8):
        sent = httpx.post(f"{url}/chats/{chat_id}/messages",
                          json={"content": f"question {n} " + "word " * 30}, timeout=30)
        assert sent.is_success
    data = httpx.get(f"{url}/chats/{chat_id}/messages").json()["data"]
    written = [m for m in data if m["role"] == "system"]
    assert written, "the chat outgrew its window"
    assert all(m["covers_seq"] for m in written)

    console.open()
    console.select(chat_id)
    console.wait_idle(8)
    blocks = console.page.get_by_test_id("summary")
    expect(blocks).to_have_count(len(written))
    first = blocks.first
    expect(first.locator("summary")).to_have_text("Summary of earlier messages")
    expect(first.locator(".bubble")).to_be_hidden()  # folded
    expect(first.locator("button")).to_have_count(0)  # nothing to edit, retry or regenerate
    # Not a message: the conversation still alternates, and each summary comes right after
    # the last message it stands for, not between a question and its answer.
    assert [role for role, _ in console.history()] == ["user", "assistant"] * 8
    shown = console.page.locator('[data-testid="message"], [data-testid="summary"]').all()
    order = [(node.get_attribute("data-testid"), int(node.get_attribute("data-seq") or 0))
             for node in shown]
    for summary in written:
        at = order.index(("summary", summary["seq"]))
        assert order[at - 1] == ("message", summary["covers_seq"])

    first.locator("summary").click()
    expect(first.locator(".bubble")).to_have_text(written[0]["content"])
    expect(first).to_contain_text(f"instead of messages 1–{written[0]['covers_seq']}")

    # A turn from the page goes on past the summaries.
    console.type_and_send("And now?")
    console.wait_idle(9)
    expect(console.page.get_by_test_id("regenerate")).to_have_count(1)
    assert console.errors == []


def test_tool_calls_and_outputs_are_folded_under_the_answer_they_led_to(
    console: Console, live_server: Any, fake_llm: FakeLLMServer
) -> None:
    v1 = f"{live_server.url}/v1"
    tool = {"type": "function", "name": "order_status", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"]}}
    asked = httpx.post(f"{v1}/responses", json={
        "model": "fake-model", "input": "Orders 4417 and 4418?", "tools": [tool]}).json()
    chat_id = asked["conversation"]["id"]
    calls = [item for item in asked["output"] if item["type"] == "function_call"]
    outputs = {calls[0]["call_id"]: "shipped " + XSS, calls[1]["call_id"]: "lost"}
    answered = httpx.post(f"{v1}/responses", json={
        "model": "fake-model", "conversation": chat_id, "tools": [tool],
        "input": [{"type": "function_call_output", "call_id": call_id, "output": output}
                  for call_id, output in outputs.items()]})
    assert answered.is_success
    waiting = httpx.post(f"{v1}/responses", json={
        "model": "fake-model", "conversation": chat_id, "input": "And 9?", "tools": [tool]})
    assert waiting.is_success

    console.open()
    console.select(chat_id)
    # the conversation reads as question and answer; the calls are not messages
    expect(console.page.get_by_test_id("message")).to_have_count(3)
    assert [role for role, _ in console.history()] == ["user", "assistant", "user"]
    answer = console.page.locator('[data-testid="message"][data-role="assistant"]')
    fold = answer.get_by_test_id("tool-calls")
    expect(fold.locator("summary")).to_have_text("2 tool calls: order_status, order_status")
    expect(fold.get_by_test_id("tool-output").first).to_be_hidden()  # folded
    fold.locator("summary").click()
    rows = fold.get_by_test_id("tool-call")
    expect(rows).to_have_count(2)
    expect(rows.first.locator("code")).to_have_text('order_status({"order_id": "4417"})')
    expect(rows.first.get_by_test_id("tool-output")).to_have_text("shipped " + XSS)  # text
    expect(rows.nth(1).get_by_test_id("tool-output")).to_have_text("lost")
    assert console.page.locator("img").count() == 0
    # a call still waiting for its output is shown on its own, after the question
    last = console.page.locator("article.msg").last
    expect(last.get_by_test_id("tool-calls").locator("summary")).to_have_text(
        "1 tool call: order_status")
    last.locator("summary").click()
    expect(last).to_contain_text("waiting for its output")
    assert console.errors == []
