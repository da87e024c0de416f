"""Headless Debian chromium for the browser tests, held offline.

A missing browser fails the test with what to do about it (``make test`` installs it where
it can), never a quiet skip: only ``CHATSESSIONS_SKIP_BROWSER=1`` skips, because someone
asked for it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import BrowserContext, Route, sync_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SKIP_ENV = "CHATSESSIONS_SKIP_BROWSER"

#: Collects the page's Content-Security-Policy violations in ``window.__csp``; init
#: scripts come from the driver, so the policy under test does not block this one.
RECORD_CSP = """
window.__csp = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__csp.push(`${e.violatedDirective} ${e.blockedURI}`));
"""


def require_chromium() -> None:
    """Fail (or, when asked to, skip) unless the browser is there."""
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(f"{SKIP_ENV}=1: browser tests skipped")
    pytest.fail(
        f"the browser tests need Chromium at {CHROMIUM}. `make test` installs Debian's "
        f"`chromium` when run as root; otherwise `apt-get install chromium` as root, or set "
        f"{SKIP_ENV}=1 to skip these tests on purpose.",
        pytrace=False,
    )


class Offline:
    """A browser context that may talk to one origin only; any other request is refused
    and remembered in :attr:`refused`, so a page that needs the network shows it."""

    def __init__(self, context: BrowserContext, origin: str) -> None:
        self.context, self.origin = context, origin
        self.refused: list[str] = []
        context.route("**/*", self._route)
        context.add_init_script(RECORD_CSP)

    def _route(self, route: Route) -> None:
        url = urlsplit(route.request.url)
        if f"{url.scheme}://{url.netloc}" == self.origin or url.scheme == "data":
            route.fallback()
        else:
            self.refused.append(route.request.url)
            route.abort("internetdisconnected")


@contextmanager
def offline_browser(origin: str) -> Iterator[Offline]:
    """A fresh headless chromium with one context held to ``origin``.

    Start it after any fixture that runs ``asyncio.run``: while Playwright's sync API is
    active it marks its event loop as running in this thread.
    """
    require_chromium()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield Offline(browser.new_context(), origin)
        finally:
            browser.close()
