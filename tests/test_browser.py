"""The chat in a real browser: Playwright driving Debian's Chromium.

Log in, stream, persist, stop, model errors, other users (tests/browser.py
says when the browser tests are skipped).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from playwright.sync_api import Browser, Page, expect

from chatmemory import store
from chatmemory.owners import owner_id
from tests.browser import ARTIFACTS

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SLOW_DEMO = {"factory": "chatmemory.llm.DemoChatModel", "token_delay": 0.06}


@pytest.fixture(autouse=True)
def close_async_redis_clients() -> None:
    """Replaces conftest's async fixture: nothing here uses async Redis, and
    Playwright's sync API keeps its own event loop running in this thread."""


@pytest.fixture
def page(browser: Browser, monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    with override_settings(CHATMEMORY_CHAT_MODEL=SLOW_DEMO):
        yield page
    context.close()


@pytest.fixture
def users(django_user_model: Any) -> list[Any]:
    return [
        django_user_model.objects.create_user(name, password="pw")
        for name in ("alice", "bob")
    ]


def log_in(page: Page, base: str, username: str) -> None:
    page.goto(base + "/chat/")
    assert "/accounts/login/" in page.url  # sent to log in first
    if username == "alice":
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "login-page.png"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base + "/chat/")


def new_chat(page: Page) -> str:
    page.get_by_role("button", name="New chat").first.click()
    page.wait_for_selector("#cm-compose")
    return page.url.rstrip("/").split("/")[-1]


# Records the reply's length at every animation frame where it changed, i.e.
# every paint the user could see.
WATCH_PAINTS = """() => {
  window.paints = [];
  const frame = () => {
    const replies = document.querySelectorAll(".cm-ai .cm-text");
    const text = replies.length ? replies[replies.length - 1].textContent : "";
    const last = window.paints[window.paints.length - 1];
    if (!last || last[1] !== text.length) {
      window.paints.push([performance.now(), text.length]);
    }
    requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""


def test_chat_streams_then_persists(page: Page, live_server: Any, users: Any) -> None:
    base = live_server.url
    log_in(page, base, "alice")
    new_chat(page)
    expect(page.locator("#cm-demo-notice")).to_contain_text("Offline demo model")
    page.evaluate(WATCH_PAINTS)
    box = page.get_by_label("Your message")
    box.fill("Hello from the browser")
    box.press("Enter")
    expect(page.locator("#cm-typing")).to_be_visible()
    expect(page.locator("#cm-stop")).to_be_visible()
    expect(page.locator("#cm-typing")).to_be_hidden(timeout=20_000)
    reply = page.locator(".cm-ai .cm-text").last.text_content() or ""
    assert "Hello from the browser" in reply
    paints = page.evaluate("window.paints")
    lengths = [length for _, length in paints if length]
    # The reply grew over many paints, and the first came well before the end.
    assert len(lengths) >= 10
    assert lengths == sorted(lengths) and lengths[-1] == len(reply)
    first = next(at for at, length in paints if length)
    assert paints[-1][0] - first > 1000
    expect(box).to_have_value("")  # sent and saved: the box is cleared
    expect(page.locator(".cm-title")).to_have_text("Hello from the browser")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "chat-page.png"), full_page=True)

    page.reload()
    messages = page.locator(".cm-transcript .cm-msg")
    expect(messages).to_have_count(2)
    expect(page.locator(".cm-title")).to_have_text("Hello from the browser")
    expect(messages.nth(0)).to_contain_text("Hello from the browser")
    assert (messages.nth(1).locator(".cm-text").text_content() or "") == reply

    box = page.get_by_label("Your message")
    box.fill("Second message")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#cm-typing")).to_be_hidden(timeout=20_000)
    expect(page.locator(".cm-ai .cm-text").last).to_contain_text(
        "Your first message was \u201cHello from the browser\u201d"
    )
    page.goto(base + "/chat/")
    expect(page.locator(".cm-sessions")).to_contain_text("Hello from the browser")
    page.screenshot(path=str(ARTIFACTS / "sessions-page.png"))


def test_stop_keeps_the_reply_so_far_marked(
    page: Page, live_server: Any, users: Any
) -> None:
    log_in(page, live_server.url, "alice")
    session_id = new_chat(page)
    page.get_by_label("Your message").fill("Please stop me")
    page.get_by_role("button", name="Send").click()
    reply = page.locator(".cm-ai .cm-text").last
    expect(reply).to_contain_text("I am the offline")  # a few tokens in
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".cm-ai").last).to_have_class("cm-msg cm-ai cm-interrupted")
    expect(page.locator("#cm-stop")).to_be_hidden()
    shown_html = reply.inner_html()
    shown = reply.evaluate("element => element.cmSource")  # the text rendered
    assert shown and "I am the offline" in shown
    deadline = time.monotonic() + 10
    saved: list[Any] = []
    while time.monotonic() < deadline:
        saved = store.read_records(session_id)
        if len(saved) == 2 and saved[1]["data"]["content"] == shown:
            break
        time.sleep(0.1)  # the server notices the closed connection on a write
    assert saved[1]["data"]["response_metadata"]["interrupted"] is True
    assert saved[1]["data"]["content"] == shown  # what the user saw, exactly
    page.reload()
    stopped = page.locator(".cm-ai.cm-interrupted")
    expect(stopped).to_have_count(1)
    expect(stopped.locator(".cm-flag")).to_have_text("stopped")
    assert stopped.locator(".cm-text").inner_html() == shown_html  # unchanged
    assert "remember it" not in (stopped.text_content() or "")  # not the full reply


def test_a_model_error_keeps_the_text_in_the_box(
    page: Page, live_server: Any, users: Any
) -> None:
    log_in(page, live_server.url, "alice")
    session_id = new_chat(page)
    failing = {"factory": "tests.chat_models.failing_model", "fail_after": 3}
    with override_settings(CHATMEMORY_CHAT_MODEL=failing):
        page.get_by_label("Your message").fill("<img src=x onerror=alert(1)>")
        page.get_by_role("button", name="Send").click()
        expect(page.locator("#cm-errors")).to_contain_text("nothing was saved")
    expect(page.get_by_label("Your message")).to_have_value(
        "<img src=x onerror=alert(1)>"
    )
    expect(page.locator(".cm-transcript .cm-human")).to_have_count(0)
    assert store.get_session(session_id) is None  # nothing was stored
    # Sent again with the working model, the markup shows as text.
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#cm-typing")).to_be_hidden(timeout=20_000)
    expect(page.locator(".cm-human .cm-text")).to_have_text(
        "<img src=x onerror=alert(1)>"
    )
    assert page.locator(".cm-transcript img").count() == 0


def test_another_user_gets_404(page: Page, live_server: Any, users: Any) -> None:
    alice, bob = users
    store.create_session("alices-chat", owner=owner_id(alice), title="Private")
    log_in(page, live_server.url, "bob")
    response = page.goto(live_server.url + "/chat/alices-chat/")
    assert response is not None and response.status == 404
    page.goto(live_server.url + "/chat/")
    expect(page.locator("body")).not_to_contain_text("Private")
