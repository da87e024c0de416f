"""Without the browser, the browser tests fail and say what to do; they skip only when
asked to. (The browser path is pointed elsewhere to play a machine without Chromium.)"""

from __future__ import annotations

import pytest

from tests import browser


def test_a_missing_browser_fails_saying_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.delenv(browser.SKIP_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        browser.require_chromium()
    message = str(failed.value)
    for hint in ["/nonexistent/chromium", "apt-get install chromium", "make test",
                 f"{browser.SKIP_ENV}=1"]:
        assert hint in message


def test_the_browser_tests_skip_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(browser, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv(browser.SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception):
        browser.require_chromium()
    monkeypatch.setenv(browser.SKIP_ENV, "yes please")  # anything but "1" is no opt-out
    with pytest.raises(pytest.fail.Exception):
        browser.require_chromium()
