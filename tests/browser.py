"""Shared pieces of the browser tests: one Chromium per module, logged-in pages.

Skipped when /usr/bin/chromium is missing, unless CHATMEMORY_REQUIRE_BROWSER=1
(CI), which turns the skip into a failure. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from chatmemory.history import DjangoRedisChatMessageHistory
from chatmemory.owners import owner_id

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 700}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole module."""
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is missing (apt-get install chromium)"
        if os.environ.get("CHATMEMORY_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CHATMEMORY_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    # Playwright's sync API runs an event loop in this thread, so Django's
    # async-unsafe guard would refuse the ORM calls the tests make here
    # (creating users); nothing here runs on that loop concurrently.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=ARGS, headless=True
            )
            yield browser
            browser.close()


def logged_in_context(
    browser: Browser, base_url: str, user: Any, **options: Any
) -> BrowserContext:
    """A browser context whose cookie is ``user``'s session (no login form)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    context = browser.new_context(base_url=base_url, **options)
    context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": base_url}])
    return context


def script_errors(page: Page) -> list[str]:
    """The uncaught script errors ``page`` reports from now on."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


def seed_chat(
    owner: Any, session_id: str, messages: Sequence[BaseMessage | tuple[str, str]]
) -> str:
    """Store ``messages`` (or (role, text) pairs) as ``owner``'s chat."""
    history = DjangoRedisChatMessageHistory(session_id, owner=owner_id(owner))
    built = [
        item
        if isinstance(item, BaseMessage)
        else HumanMessage(content=item[1])
        if item[0] == "human"
        else AIMessage(content=item[1])
        for item in messages
    ]
    history.add_messages(built)
    return session_id


def long_chat(turns: int = 15) -> list[tuple[str, str]]:
    """A conversation several screens long."""
    pairs: list[tuple[str, str]] = []
    for number in range(1, turns + 1):
        pairs.append(("human", f"Question {number}: tell me more about item {number}"))
        pairs.append(
            (
                "ai",
                f"Answer {number}.\n\nHere is a paragraph about item {number} that "
                "runs over a couple of lines so the page gets long enough to "
                "scroll.\n\n- one point\n- another point",
            )
        )
    return pairs


def screenshot(page: Page, name: str, *, full_page: bool = False) -> None:
    """Save a screenshot under test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


# The geometry the scrolling tests check: the scroller is at its bottom, and the
# last message ends above the composer's top edge (nothing hidden under it).
GEOMETRY = """() => {
  const scroller = document.getElementById("cm-scroll");
  const items = document.querySelectorAll("#cm-transcript > li");
  const last = items[items.length - 1].getBoundingClientRect();
  const composer = document.getElementById("cm-compose").getBoundingClientRect();
  const view = scroller.getBoundingClientRect();
  return {
    gap: scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight,
    scrollTop: scroller.scrollTop,
    scrollable: scroller.scrollHeight > scroller.clientHeight + 50,
    lastBottom: last.bottom,
    viewBottom: view.bottom,
    composerTop: composer.top,
    composerHeight: composer.height,
    viewportHeight: window.innerHeight,
    bodyScroll: document.scrollingElement.scrollHeight - window.innerHeight,
  };
}"""
