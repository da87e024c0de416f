"""The API docs at /docs in a real browser with no network: Swagger UI comes from the
package itself, and the page keeps the same Content-Security-Policy as the console."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from chatsessions.service.pages import STATIC
from tests.browser import Offline, offline_browser


@pytest.fixture
def docs(live_server: Any) -> Iterator[tuple[Page, Offline]]:
    with offline_browser(live_server.url) as offline:
        page = offline.context.new_page()
        page.set_default_timeout(15_000)
        yield page, offline


def test_docs_render_the_operations_offline(
    docs: tuple[Page, Offline], live_server: Any
) -> None:
    page, offline = docs
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    response = page.goto(f"{live_server.url}/docs")
    assert response is not None
    assert response.ok
    assert "script-src 'self'" in response.headers["content-security-policy"]

    schema = httpx.get(f"{live_server.url}/openapi.json").json()
    operations = [(method.upper(), path) for path, item in schema["paths"].items()
                  for method in item]
    assert len(operations) > 20
    blocks = page.locator(".opblock")
    expect(blocks).to_have_count(len(operations))
    expect(page.locator(".info .title")).to_contain_text("chatsessions")
    chats = page.locator('.opblock-get:has(.opblock-summary-path[data-path="/chats"])')
    expect(chats).to_have_count(1)
    chats.locator(".opblock-summary").click()  # an operation opens, with its parameters
    expect(chats.locator(".parameters-container")).to_be_visible()

    assert offline.refused == []  # nothing asked of any other host
    assert page.evaluate("window.__csp") == []  # and nothing the policy had to stop
    assert errors == []


def test_docs_assets_ship_with_their_licences() -> None:
    """What /docs and the console load is in the package, each with its licence file."""
    vendor = STATIC / "vendor"
    for name in ["swagger-ui/swagger-ui-bundle.js", "swagger-ui/swagger-ui.css",
                 "marked/marked.umd.js", "dompurify/purify.min.js"]:
        assert (vendor / name).stat().st_size > 10_000
        assert (vendor / name).parent.joinpath("LICENSE").is_file()
    pinned = (vendor / "VERSIONS").read_text()
    for package in ["swagger-ui-dist", "marked", "dompurify"]:
        assert f"\n{package} " in pinned


def test_the_default_cdn_pages_are_gone(live_server: Any) -> None:
    page = httpx.get(f"{live_server.url}/docs").text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in page
    assert "<script>" not in page  # no inline script: the policy allows none
    assert "cdn" not in page.lower()
    assert httpx.get(f"{live_server.url}/redoc").status_code == 404
