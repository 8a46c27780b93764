"""The admin pages in a real browser: long unbroken text wraps at 1,400 px.

Skipped like tests/test_browser.py when /usr/bin/chromium is missing, unless
CHATMEMORY_REQUIRE_BROWSER=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from langchain_core.messages import AIMessage, HumanMessage
from playwright.sync_api import Browser, Page

from chatmemory import store
from tests.admin_helpers import LIST_URL, chat, transcript_url
from tests.browser import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WIDTH = 1400


@pytest.fixture(autouse=True)
def close_async_redis_clients() -> None:
    """Replaces conftest's async fixture (Playwright's sync API owns the loop)."""


# The browser fixture is tests/browser.py's (a plugin of conftest).


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    User.objects.create_superuser("root", "root@example.com", "pw")
    context = browser.new_context(viewport={"width": WIDTH, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.goto(live_server.url + "/admin/login/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(live_server.url + "/admin/")
    yield page
    context.close()


def page_width(page: Page) -> int:
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def test_long_unbroken_text_wraps(page: Page, live_server: Any) -> None:
    word = "x" * 3000
    session_id = "s" + "i" * 199
    chat(
        session_id,
        HumanMessage("T" * 300),
        AIMessage(
            word, tool_calls=[{"name": "n" * 300, "args": {"a": word}, "id": "c"}]
        ),
        HumanMessage("short"),
        AIMessage("y" * 500, response_metadata={"k": word}),
    )
    tokens = {"input_tokens": 10**9, "output_tokens": 7, "total_tokens": 10**9 + 7}
    reply = {"type": "ai", "data": {"content": "a", "usage_metadata": tokens}}
    store.append_records("spent", [reply], owner="o" * 300)
    widths = {}
    for name, url in (
        ("list", LIST_URL),
        ("search", LIST_URL + "?q=" + session_id[:20]),
        ("transcript", transcript_url(session_id)),
        ("usage", LIST_URL + "usage/"),
    ):
        page.goto(live_server.url + url)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"admin-{name}-long-text.png"))
        widths[name] = page_width(page)
    assert widths == dict.fromkeys(widths, WIDTH)
