"""The chat page in a real browser: scrolling, the composer, Markdown, copy,
dark mode, phone width and what screen readers hear (Playwright + Chromium)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import override_settings
from langchain_core.messages import RemoveMessage, SystemMessage, ToolMessage
from playwright.sync_api import Browser, Page, expect

from chatmemory import records, store, views
from chatmemory.owners import owner_id
from tests.browser import (
    DESKTOP,
    GEOMETRY,
    PHONE,
    logged_in_context,
    long_chat,
    screenshot,
    script_errors,
    seed_chat,
)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

MARKDOWN = """\
Here is **bold**, *emphasis* and `inline code`, with a [safe link](https://example.com/docs).

1. first
2. second

- apple
- pear

| Name | Value |
|------|-------|
| a    | 1     |

```python
def greet(name):
    return f"hello {name}"
```

Done."""

# Each line tries to run script; none may.
HOSTILE = """\
<script>window.pwned = "script"</script>

<img src=x onerror="window.pwned = 'onerror'">

[js link](javascript:window.pwned='js-link')

[data link](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)

[spaced js]( javascript:window.pwned='spaced')

[entity js](jav&#x61;script:window.pwned='entity')

![image](javascript:window.pwned='image') ![tracker](https://example.com/t.png)

<a href="javascript:window.pwned='raw-a'">raw anchor</a>

<svg onload="window.pwned='svg'"></svg>

<details open ontoggle="window.pwned='toggle'"><summary>x</summary></details>

```html
<script>window.pwned = "fenced"</script><img src=x onerror="window.pwned='fenced-img'">
```

`<img src=x onerror="window.pwned='inline-code'">`"""


@pytest.fixture(autouse=True)
def close_async_redis_clients() -> None:
    """Replaces conftest's async fixture: nothing here uses async Redis, and
    Playwright's sync API keeps its own event loop running in this thread."""


@pytest.fixture(autouse=True)
def no_openai(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="pw")


def scripted(reply: str, *, delay: float = 0.02, size: int = 5) -> Any:
    return override_settings(
        CHATMEMORY_CHAT_MODEL={
            "factory": "tests.chat_models.ScriptedModel",
            "reply": reply,
            "chunk_size": size,
            "token_delay": delay,
        }
    )


@pytest.fixture
def open_chat(
    browser: Browser,
    live_server: Any,
    alice: Any,
) -> Iterator[Any]:
    """open_chat(session_id, viewport=..., color_scheme=...) -> a page on it."""
    contexts = []

    def opener(
        session_id: str | None = None,
        *,
        viewport: dict[str, int] = DESKTOP,
        color_scheme: str = "light",
    ) -> Page:
        context = logged_in_context(
            browser,
            live_server.url,
            alice,
            viewport=viewport,
            color_scheme=color_scheme,
            permissions=["clipboard-read", "clipboard-write"],
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(10_000)
        page.script_errors = script_errors(page)  # type: ignore[attr-defined]
        if session_id is None:
            page.goto("/chat/")
            # Until the new page's "load", chat.js (deferred) may not run yet:
            # a key pressed then would not send.
            with page.expect_navigation(url="**/chat/*/"):
                page.get_by_role("button", name="New chat").first.click()
        else:
            page.goto(f"/chat/{session_id}/")
        return page

    yield opener
    for context in contexts:
        context.close()


def wait_for_reply(page: Page) -> None:
    expect(page.locator("#cm-typing")).to_be_hidden(timeout=20_000)


def geometry(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(GEOMETRY)
    return result


# ---------------------------------------------------------------------------
# 1. Scrolling


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_a_long_chat_opens_at_its_latest_message(
    open_chat: Any, alice: Any, viewport: dict[str, int]
) -> None:
    seed_chat(alice, "long", long_chat())
    page = open_chat("long", viewport=viewport)
    expect(page.locator(".cm-ai .cm-md").last).to_contain_text("Answer 15.")
    shape = geometry(page)
    assert shape["scrollable"]
    assert shape["gap"] <= 2  # at the bottom
    assert shape["lastBottom"] <= shape["composerTop"] + 1  # not under the composer
    assert shape["bodyScroll"] <= 0  # only the transcript scrolls
    expect(page.get_by_text("Answer 15.")).to_be_in_viewport()
    name = "desktop" if viewport is DESKTOP else "phone"
    screenshot(page, f"chat-long-{name}")


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_view_follows_the_reply_unless_scrolled_up(
    open_chat: Any, alice: Any, viewport: dict[str, int]
) -> None:
    seed_chat(alice, "long", long_chat())
    reply = "\n\n".join(f"Paragraph {n} of a long streamed reply." for n in range(60))
    page = open_chat("long", viewport=viewport)
    with scripted(reply, delay=0.03, size=12):
        page.get_by_label("Your message").fill("A long answer, please")
        page.keyboard.press("Enter")
        streaming = page.locator(".cm-ai.cm-streaming .cm-text")
        expect(streaming).to_contain_text("Paragraph 5 ")
        for _ in range(5):  # followed while it grows
            shape = geometry(page)
            assert shape["gap"] <= 2, shape
            assert shape["lastBottom"] <= shape["composerTop"] + 1, shape
            page.wait_for_timeout(120)
        expect(page.locator("#cm-jump")).to_be_hidden()
        # The reader scrolls up: the view stays where they put it.
        page.locator("#cm-scroll").hover()
        page.mouse.wheel(0, -1500)
        expect(page.locator("#cm-jump")).to_be_visible()
        held = geometry(page)["scrollTop"]
        before = streaming.text_content() or ""
        page.wait_for_timeout(500)
        assert len(streaming.text_content() or "") > len(before)  # still streaming
        assert abs(geometry(page)["scrollTop"] - held) <= 2
        name = "desktop" if viewport is DESKTOP else "phone"
        screenshot(page, f"chat-scrolled-up-{name}")
        page.get_by_role("button", name="Jump to latest").click()
        expect(page.locator("#cm-jump")).to_be_hidden()
        page.wait_for_timeout(200)
        assert geometry(page)["gap"] <= 2
        wait_for_reply(page)
    shape = geometry(page)
    assert shape["gap"] <= 2
    assert shape["lastBottom"] <= shape["composerTop"] + 1
    expect(
        page.get_by_text("Paragraph 59 of a long streamed reply.", exact=True)
    ).to_be_in_viewport()
    assert page.script_errors == []


# ---------------------------------------------------------------------------
# 2. The composer


def test_the_composer_grows_sends_on_enter_and_keeps_drafts(
    open_chat: Any,
) -> None:
    page = open_chat()
    box = page.get_by_label("Your message")
    start = box.bounding_box()
    assert start is not None
    box.click()
    page.keyboard.type("line one")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line two")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("line three")
    expect(box).to_have_value("line one\nline two\nline three")
    grown = box.bounding_box()
    assert grown is not None and grown["height"] > start["height"] + 20
    for _ in range(30):
        page.keyboard.press("Shift+Enter")
    capped = box.bounding_box()
    assert capped is not None and capped["height"] <= 14 * 16 + 4  # max-height
    box.fill("Tell me a story")
    with scripted("Once upon a time " * 40, delay=0.03, size=6):
        page.keyboard.press("Enter")
        expect(page.locator(".cm-human .cm-text").last).to_have_text("Tell me a story")
        expect(page.locator("#cm-stop")).to_be_visible()
        # Typed while the reply streams: kept when it ends.
        box.fill("my next question")
        page.keyboard.press("Enter")  # does not send during a reply
        wait_for_reply(page)
        expect(box).to_have_value("my next question")
        expect(page.locator(".cm-human")).to_have_count(1)
        # Esc stops, and the draft survives that too.
        box.fill("")
        page.keyboard.press("Enter")  # empty: nothing is sent
        expect(page.locator("#cm-errors")).to_contain_text("empty")
        box.fill("second")
        page.keyboard.press("Enter")
        expect(page.locator(".cm-ai .cm-text").last).to_contain_text("Once upon")
        box.fill("a draft typed during the reply")
        page.keyboard.press("Escape")
        expect(page.locator(".cm-ai").last).to_have_class("cm-msg cm-ai cm-interrupted")
    expect(box).to_have_value("a draft typed during the reply")
    expect(box).to_be_focused()
    assert page.script_errors == []


def test_the_composer_is_compact_on_a_phone(open_chat: Any, alice: Any) -> None:
    seed_chat(alice, "long", long_chat(3))
    page = open_chat("long", viewport=PHONE)
    shape = geometry(page)
    assert shape["composerHeight"] <= 0.17 * shape["viewportHeight"], shape
    send = page.get_by_role("button", name="Send").bounding_box()
    box = page.get_by_label("Your message").bounding_box()
    assert send is not None and box is not None
    assert abs(send["y"] + send["height"] - (box["y"] + box["height"])) <= 4  # one row
    assert page.evaluate("document.scrollingElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "chat-phone")


# ---------------------------------------------------------------------------
# 3. Markdown


def test_markdown_renders_the_same_live_and_after_reload(open_chat: Any) -> None:
    page = open_chat()
    with scripted(MARKDOWN, delay=0.01, size=7):
        page.get_by_label("Your message").fill("Show me Markdown")
        page.keyboard.press("Enter")
        wait_for_reply(page)
    reply = page.locator(".cm-ai .cm-text").last
    live = reply.inner_html()
    expect(reply.locator("strong")).to_have_text("bold")
    expect(reply.locator("em")).to_have_text("emphasis")
    expect(reply.locator("p > code")).to_have_text("inline code")
    expect(reply.locator("ol > li")).to_have_count(2)
    expect(reply.locator("ul > li")).to_have_count(2)
    expect(reply.locator("table td").first).to_have_text("a")
    link = reply.get_by_role("link", name="safe link")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    code = reply.locator("pre code")
    expect(code).to_contain_text('return f"hello {name}"')
    assert code.locator(".hljs-keyword").count() >= 2  # highlighted: def, return
    expect(reply.get_by_role("button", name="Copy code")).to_be_visible()
    screenshot(page, "chat-markdown")
    page.reload()
    reloaded = page.locator(".cm-ai .cm-text").last
    expect(reloaded.locator("pre code")).to_be_visible()
    assert reloaded.inner_html() == live
    assert page.script_errors == []


def hostile_checks(page: Page) -> None:
    page.wait_for_timeout(300)  # give any handler a chance to run
    assert page.evaluate("window.pwned") is None
    transcript = page.locator("#cm-transcript")
    for selector in ("script", "img", "svg", "iframe", "[onerror]", "[onload]"):
        assert transcript.locator(selector).count() == 0, selector
    hrefs = transcript.locator(".cm-md a").evaluate_all(
        "links => links.map(a => a.getAttribute('href'))"
    )
    for href in hrefs:
        assert href is None or href.startswith(("https:", "http:")), href
    rels = transcript.locator(".cm-md a[href]").evaluate_all(
        "links => links.map(a => a.rel)"
    )
    assert rels and set(rels) == {"noopener noreferrer nofollow"}
    text = transcript.text_content() or ""
    # Raw HTML is shown as text, including inside code.
    assert '<script>window.pwned = "script"</script>' in text
    assert '<script>window.pwned = "fenced"</script>' in text
    assert "onerror=\"window.pwned='inline-code'\"" in text
    for name in ("js link", "data link", "raw anchor"):
        target = page.get_by_text(name, exact=True)
        if target.count():
            target.first.click(modifiers=["Alt"])
    page.wait_for_timeout(200)
    assert page.evaluate("window.pwned") is None


def test_hostile_markdown_runs_nothing_stored_or_live(
    open_chat: Any, alice: Any
) -> None:
    seed_chat(alice, "hostile", [("human", HOSTILE), ("ai", HOSTILE)])
    page = open_chat("hostile")
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    expect(page.locator(".cm-ai .cm-md")).to_have_count(1)
    hostile_checks(page)
    stored = page.locator(".cm-ai .cm-text").last.inner_html()
    with scripted(HOSTILE, delay=0.005, size=3):  # cut at every kind of boundary
        page.get_by_label("Your message").fill(HOSTILE)
        page.keyboard.press("Enter")
        wait_for_reply(page)
    hostile_checks(page)
    assert page.locator(".cm-ai .cm-text").last.inner_html() == stored
    assert dialogs == []
    screenshot(page, "chat-hostile", full_page=False)
    assert page.script_errors == []


# ---------------------------------------------------------------------------
# 5. Copy buttons and timestamps


def test_every_message_has_a_copy_button_and_a_time(open_chat: Any, alice: Any) -> None:
    page = open_chat()
    with scripted(MARKDOWN, delay=0.0, size=50):
        page.get_by_label("Your message").fill("Copy *this*")
        page.keyboard.press("Enter")
        wait_for_reply(page)
    human = page.locator(".cm-human").last
    ai = page.locator(".cm-ai").last
    for item in (human, ai):
        expect(item.locator("time.cm-time")).to_have_count(1)
        assert (item.locator("time").get_attribute("datetime") or "").startswith("20")
    human.get_by_role("button", name="Copy this message").click()
    assert page.evaluate("navigator.clipboard.readText()") == "Copy *this*"
    ai.get_by_role("button", name="Copy this reply").click()
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN
    ai.get_by_role("button", name="Copy code").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == 'def greet(name):\n    return f"hello {name}"\n'
    page.reload()
    page.locator(".cm-ai").last.get_by_role("button", name="Copy this reply").click()
    assert page.evaluate("navigator.clipboard.readText()") == MARKDOWN
    # System and tool messages too; not an unreadable entry (no text of its own).
    seed_chat(
        alice,
        "notes",
        [
            SystemMessage(content="Be brief."),
            ("human", "Weather?"),
            ToolMessage(content="42 degrees", tool_call_id="c1"),
            RemoveMessage(id="gone"),
            ("ai", "Hot."),
        ],
    )
    page.goto("/chat/notes/")
    for selector, text in ((".cm-system", "Be brief."), (".cm-other", "42 degrees")):
        page.locator(selector).get_by_role("button", name="Copy this message").click()
        assert page.evaluate("navigator.clipboard.readText()") == text
    expect(page.locator(".cm-unreadable")).to_have_count(1)
    expect(page.locator(".cm-unreadable .cm-copy")).to_have_count(0)
    expect(page.locator(".cm-copy")).to_have_count(4)


# ---------------------------------------------------------------------------
# 7. Dark mode


def luminance(page: Page, selector: str, prop: str) -> float:
    rgb = page.eval_on_selector(
        selector,
        f"""element => getComputedStyle(element).{prop}
            .match(/[\\d.]+/g).slice(0, 3).map(Number)""",
    )
    red, green, blue = (channel / 255 for channel in rgb)
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_dark_mode_covers_the_chat_page(
    open_chat: Any, alice: Any, viewport: dict[str, int]
) -> None:
    seed_chat(alice, "dark", [("human", "Dark?"), ("ai", MARKDOWN)])
    page = open_chat("dark", viewport=viewport, color_scheme="dark")
    expect(page.locator(".cm-ai .cm-md pre code")).to_be_visible()
    assert luminance(page, "body", "backgroundColor") < 0.15
    assert luminance(page, "body", "color") > 0.7
    for selector in (".cm-ai", ".cm-human", "#id_message", ".cm-notice", ".cm-sidebar"):
        assert luminance(page, selector, "backgroundColor") < 0.3, selector
    assert luminance(page, ".cm-md a", "color") > 0.5  # links stay readable
    assert luminance(page, ".cm-md pre code", "backgroundColor") < 0.15
    page.get_by_label("Your message").fill("")
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#cm-errors p")).to_be_visible()
    assert luminance(page, "#cm-errors p", "color") > 0.4
    name = "desktop" if viewport is DESKTOP else "phone"
    if viewport is DESKTOP:
        page.locator(".cm-manage summary").click()
        expect(page.locator(".cm-manage-panel")).to_be_visible()
        assert luminance(page, ".cm-manage-panel", "backgroundColor") < 0.3
        assert luminance(page, ".cm-rename input", "backgroundColor") < 0.3
    screenshot(page, f"chat-dark-{name}")
    page.goto("/chat/")
    assert luminance(page, "body", "backgroundColor") < 0.15
    assert luminance(page, ".cm-sessions", "backgroundColor") < 0.3
    screenshot(page, f"sessions-dark-{name}")
    page.goto("/chat/dark/delete/")
    assert luminance(page, "body", "backgroundColor") < 0.15
    assert luminance(page, "h1", "color") > 0.7
    assert luminance(page, ".cm-toolbar a", "color") > 0.5  # the Cancel link
    assert luminance(page, ".cm-danger", "color") > 0.5
    screenshot(page, f"delete-dark-{name}")


# ---------------------------------------------------------------------------
# 14. Accessibility

RECORD_ANNOUNCEMENTS = """() => {
  window.heard = [];
  const region = document.getElementById("cm-announce");
  new MutationObserver(() => {
    const text = region.textContent.trim();
    if (text) window.heard.push(text);
  }).observe(region, { childList: true, characterData: true, subtree: true });
}"""


def test_screen_readers_hear_the_reply_once(open_chat: Any) -> None:
    page = open_chat()
    assert page.locator("[aria-live]").count() == 1  # the announcer only
    assert page.locator("#cm-transcript[aria-live]").count() == 0
    page.evaluate(RECORD_ANNOUNCEMENTS)
    with scripted("A calm and complete answer.", delay=0.05, size=3):
        page.get_by_label("Your message").fill("Hello")
        page.keyboard.press("Enter")
        expect(page.locator("#cm-typing")).to_be_visible()
        wait_for_reply(page)
    page.wait_for_timeout(200)
    heard = page.evaluate("window.heard")
    assert heard == [
        "The assistant is typing\u2026",
        "The assistant replied: A calm and complete answer.",
    ]


def test_a_reply_cut_at_the_time_limit_shows_as_stopped(
    open_chat: Any, alice: Any
) -> None:
    seed_chat(alice, "slow", [("human", "Hi"), ("ai", "Hello")])
    page = open_chat("slow")
    page.evaluate(RECORD_ANNOUNCEMENTS)
    endless = "word " * 400
    with (
        scripted(endless, delay=0.05, size=5),
        override_settings(CHATMEMORY_TURN_TIME_LIMIT=0.6),
    ):
        page.get_by_label("Your message").fill("Talk a lot")
        page.keyboard.press("Enter")
        wait_for_reply(page)
    reply = page.locator(".cm-ai").last
    expect(reply).to_have_class("cm-msg cm-ai cm-interrupted")
    expect(reply.locator(".cm-flag")).to_have_text("stopped")
    expect(reply.get_by_role("button", name="Continue this reply")).to_be_visible()
    saved = records.read(store.read_records("slow")[-1])
    assert saved.interrupted and 0 < len(saved.text) < len(endless)
    assert reply.locator(".cm-text").evaluate("e => e.cmSource") == saved.text
    page.wait_for_timeout(200)
    assert page.evaluate("window.heard") == [
        "The assistant is typing\u2026",
        "The reply took too long and was stopped: " + saved.text.strip(),
    ]
    page.reload()
    expect(reply).to_have_class("cm-msg cm-ai cm-interrupted")
    expect(reply.get_by_role("button", name="Continue this reply")).to_be_visible()
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_the_page_speaks_spanish_live_and_after_reload(
    open_chat: Any, alice: Any
) -> None:
    seed_chat(alice, "hola", [("human", "Hola"), ("ai", "Buenas")])
    tools = {
        "factory": "tests.chat_models.ScriptedModel",
        "reply": "",
        "tool_calls": [{"name": "lookup", "args": {}}],
    }
    called = "Llamó a la herramienta lookup con {}"
    with override_settings(LANGUAGE_CODE="es"):
        page = open_chat("hola")
        expect(page.locator("html")).to_have_attribute("lang", "es")
        expect(page.get_by_role("button", name="Enviar")).to_be_visible()
        # chat.js's strings come from the JavaScript catalog.
        expect(
            page.locator(".cm-ai").get_by_role("button", name="Copiar esta respuesta")
        ).to_be_visible()
        page.evaluate(RECORD_ANNOUNCEMENTS)
        with override_settings(CHATMEMORY_CHAT_MODEL=tools):
            page.get_by_label("Su mensaje").fill("¿Qué hora es?")
            page.keyboard.press("Enter")
            wait_for_reply(page)
        expect(page.locator(".cm-calls > li")).to_have_text([called])
        page.wait_for_timeout(200)
        assert page.evaluate("window.heard") == [
            "El asistente está escribiendo\u2026",
            "El asistente respondió: " + called,
        ]
        page.get_by_label("Buscar en todos mis chats por título").fill("nada así")
        expect(page.locator("#cm-search-status")).to_have_text(
            "Ningún chat tiene ese título."
        )
        page.reload()
        expect(page.locator(".cm-calls > li")).to_have_text([called])
        expect(
            page.get_by_role("button", name="Regenerar esta respuesta")
        ).to_be_visible()
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_every_control_is_labelled_and_reachable_by_keyboard(
    open_chat: Any, alice: Any
) -> None:
    seed_chat(alice, "a11y", [("human", "Hi"), ("ai", MARKDOWN)])
    store.create_session("other", owner=owner_id(alice), title="Another chat")
    page = open_chat("a11y")
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll(
              'button, a[href], input:not([type=hidden]), textarea, summary, select')]
            .filter(el => el.offsetParent !== null)
            .filter(el => {
              const label = el.getAttribute('aria-label') || el.textContent.trim()
                || (el.labels && [...el.labels].map(l => l.textContent).join('').trim())
                || el.getAttribute('title');
              return !label;
            }).map(el => el.outerHTML)"""
    )
    assert unnamed == []
    reached = set()
    page.locator("body").focus()
    for _ in range(60):
        page.keyboard.press("Tab")
        reached.add(
            page.evaluate(
                "document.activeElement.id || document.activeElement.getAttribute"
                "('aria-label') || document.activeElement.textContent.trim()"
            )
        )
    for wanted in (
        "cm-chat-search",
        "id_message",
        "Copy this reply",
        "Copy code",
        "cm-send",
        "cm-scroll",
    ):
        assert wanted in reached, (wanted, reached)
    assert any(str(name).startswith("Rename \u201c") for name in reached)
    assert any(str(name).startswith("Delete \u201c") for name in reached)


def test_markdown_source_of_an_unrendered_page_is_the_stored_text(
    browser: Browser,
    live_server: Any,
    alice: Any,
) -> None:
    """Without JavaScript the page still shows every reply, as escaped text."""
    seed_chat(alice, "nojs", [("human", "Hi"), ("ai", HOSTILE)])
    context = logged_in_context(
        browser, live_server.url, alice, viewport=DESKTOP, java_script_enabled=False
    )
    page = context.new_page()
    page.goto("/chat/nojs/")
    assert page.locator(".cm-ai .cm-text").text_content() == HOSTILE
    assert page.locator("#cm-transcript img, #cm-transcript script").count() == 0
    context.close()


# ---------------------------------------------------------------------------
# 6. The sidebar


def test_the_sidebar_lists_searches_renames_and_deletes(
    open_chat: Any, alice: Any
) -> None:
    for name, title in [
        ("trip", "Trip to Lisbon"),
        ("soup", "Soup recipes"),
        ("here", "Planning a trip to Rome"),
    ]:
        seed_chat(alice, name, [("human", title), ("ai", "ok")])
        time.sleep(0.002)  # distinct activity times
    page = open_chat("here")
    items = page.locator("#cm-chat-list > li > a")
    expect(items).to_have_text(
        ["Planning a trip to Rome", "Soup recipes", "Trip to Lisbon"]
    )
    expect(page.locator("#cm-chat-list a[aria-current=page]")).to_have_text(
        "Planning a trip to Rome"
    )
    search = page.get_by_label("Search all my chats by title")
    search.fill("TRIP")
    expect(page.locator("#cm-search-list > li > a")).to_have_text(
        ["Planning a trip to Rome", "Trip to Lisbon"]
    )
    expect(page.locator("#cm-chat-list")).to_be_hidden()
    expect(page.locator("#cm-search-status")).to_have_text("2 chats found.")
    search.fill("nothing like this")
    expect(page.locator("#cm-search-status")).to_have_text("No chat has that title.")
    expect(page.locator("#cm-search-list > li")).to_have_count(0)
    search.fill("")
    expect(page.locator("#cm-chat-list")).to_be_visible()
    expect(page.locator("#cm-search-results")).to_be_hidden()
    screenshot(page, "sidebar")
    # Rename another chat from the list: back on this chat, the list says so.
    page.get_by_role("button", name="Rename \u201cSoup recipes\u201d").click()
    field = page.get_by_label("New title").locator("visible=true")
    expect(field).to_be_focused()
    field.fill("Soups <b>and</b> stews")
    field.press("Enter")
    page.wait_for_url("**/chat/here/")
    expect(items.nth(1)).to_have_text("Soups <b>and</b> stews")
    assert store.get_session("soup").title == "Soups <b>and</b> stews"  # type: ignore[union-attr]
    # Delete from the list, after a confirmation.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete \u201cTrip to Lisbon\u201d").click()
    page.wait_for_url("**/chat/here/")
    expect(items).to_have_count(2)
    assert store.get_session("trip") is None
    # Declining keeps the chat.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.get_by_role("button", name="Delete \u201cSoups <b>and</b> stews\u201d").click()
    page.wait_for_timeout(300)
    assert store.get_session("soup") is not None


def test_the_search_finds_chats_older_than_the_sidebar_lists(
    open_chat: Any, alice: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One request reads 20 chats here (500 by default): a search for the
    # oldest of 60 chats goes on twice, saying each time how far it got.
    monkeypatch.setattr(views, "SEARCH_SCANNED", 20)
    seed_chat(alice, "oldest", [("human", "An ancient needle"), ("ai", "ok")])
    time.sleep(0.002)
    owner = owner_id(alice)
    for number in range(59):
        store.create_session(f"hay{number}", owner=owner, title=f"Hay {number}")
    page = open_chat("oldest")
    listed = page.locator("#cm-chat-list > li:visible")
    expect(listed).to_have_count(views.SIDEBAR_LENGTH)
    expect(listed.filter(has_text="An ancient needle")).to_have_count(0)
    search = page.get_by_label("Search all my chats by title")
    status = page.locator("#cm-search-status")
    # A window finding more chats than one answer lists says so.
    monkeypatch.setattr(views, "SEARCH_RESULTS", 2)
    search.fill("hay")
    expect(status).to_have_text(
        "20 chats found in your 20 most recent chats (of 60). Only the first 2 of "
        "the 20 found last are listed: type more of the title."
    )
    expect(page.locator("#cm-search-list > li")).to_have_count(2)
    search.fill("NEEDLE")
    more = page.get_by_role("button", name="Search older chats")
    expect(status).to_have_text("0 chats found in your 20 most recent chats (of 60).")
    screenshot(page, "sidebar-search")
    more.click()
    expect(status).to_have_text("0 chats found in your 40 most recent chats (of 60).")
    more.click()
    expect(status).to_have_text("1 chat found.")
    expect(more).to_be_hidden()
    expect(page.locator("#cm-search-list > li > a")).to_have_text(["An ancient needle"])
    page.get_by_role("link", name="An ancient needle").click()
    page.wait_for_url("**/chat/oldest/")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_on_a_phone_the_sidebar_opens_from_a_button(open_chat: Any, alice: Any) -> None:
    seed_chat(alice, "one", [("human", "First chat"), ("ai", "ok")])
    seed_chat(alice, "two", [("human", "Second chat"), ("ai", "ok")])
    page = open_chat("two", viewport=PHONE)
    sidebar = page.locator("#cm-sidebar")
    expect(sidebar).to_be_hidden()
    toggle = page.get_by_role("button", name="Chats")
    expect(toggle).to_have_attribute("aria-expanded", "false")
    toggle.click()
    expect(sidebar).to_be_visible()
    expect(toggle).to_have_attribute("aria-expanded", "true")
    page.wait_for_timeout(300)  # the slide-in
    screenshot(page, "sidebar-phone")
    page.get_by_role("link", name="First chat").click()
    page.wait_for_url("**/chat/one/")
    expect(page.locator(".cm-title")).to_have_text("First chat")


# ---------------------------------------------------------------------------
# 5. Regenerate, edit, continue; a new chat is stored by its first message


def test_a_new_chat_is_stored_by_its_first_message(open_chat: Any, alice: Any) -> None:
    seed_chat(alice, "old", [("human", "An older chat"), ("ai", "ok")])
    page = open_chat()
    session_id = page.url.rstrip("/").split("/")[-1]
    assert store.get_session(session_id) is None  # nothing stored yet
    with scripted("Nice to meet you."):
        page.get_by_label("Your message").fill("Hello, new chat")
        page.keyboard.press("Enter")
        wait_for_reply(page)
    info = store.get_session(session_id)
    assert info is not None and info.owner == owner_id(alice)
    assert info.title == "Hello, new chat"
    expect(page).to_have_title("Hello, new chat")
    page.reload()
    expect(page.locator("#cm-chat-list > li > a").first).to_have_text("Hello, new chat")


def test_the_live_title_is_the_saved_one_everywhere(open_chat: Any, alice: Any) -> None:
    seed_chat(alice, "old", [("human", "An older chat"), ("ai", "ok")])
    page = open_chat()
    session_id = page.url.rstrip("/").split("/")[-1]
    expect(page).to_have_title("New chat")
    current = page.locator("#cm-chat-list > li.cm-current")
    expect(current).to_be_hidden()  # not stored yet
    # Runs of spaces and newlines, and a cut among characters JavaScript
    # counts twice: the page must not compute a title of its own.
    question = "  Plan   a trip\n\nto " + "\U0001f30d" * 40 + " and beyond " * 8
    with scripted("Sure."):
        page.get_by_label("Your message").fill(question)
        page.keyboard.press("Enter")
        wait_for_reply(page)
    info = store.get_session(session_id)
    assert info is not None
    title = info.title
    assert title.startswith("Plan a trip to \U0001f30d") and title.endswith("\u2026")
    expect(page.locator(".cm-title")).to_have_text(title)
    expect(page).to_have_title(title)
    expect(current).to_be_visible()
    expect(page.locator("#cm-chat-list > li").first).to_have_class("cm-current")
    expect(current.locator("a")).to_have_text(title)
    expect(
        current.get_by_role("button", name=f"Rename \u201c{title}\u201d")
    ).to_be_visible()
    live = page.evaluate(
        "() => [document.title, document.querySelector('.cm-title').textContent,"
        " document.querySelector('#cm-chat-list > li.cm-current a').textContent]"
    )
    assert live == [title, title, title]
    page.reload()
    reloaded = page.evaluate(
        "() => [document.title, document.querySelector('.cm-title').textContent,"
        " document.querySelector('#cm-chat-list > li.cm-current a').textContent]"
    )
    assert reloaded == live
    # Another reply on an older chat puts it first in the list.
    page.get_by_role("link", name="An older chat").click()
    page.wait_for_url("**/chat/old/")
    expect(page.locator("#cm-chat-list > li > a").first).to_have_text(title)
    with scripted("Again."):
        page.get_by_label("Your message").fill("More")
        page.keyboard.press("Enter")
        wait_for_reply(page)
    expect(page.locator("#cm-chat-list > li > a").first).to_have_text("An older chat")
    expect(page).to_have_title("An older chat")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_a_reply_of_only_tool_calls_shows_them_live_and_after_reload(
    open_chat: Any,
) -> None:
    page = open_chat()
    session_id = page.url.rstrip("/").split("/")[-1]
    model = {
        "factory": "tests.chat_models.ScriptedModel",
        "reply": "",
        "tool_calls": [
            {"name": "get_weather", "args": {"city": "<img src=x onerror=alert(1)>"}},
            {"name": "clock", "args": {}},
        ],
    }
    page.evaluate(RECORD_ANNOUNCEMENTS)
    with override_settings(CHATMEMORY_CHAT_MODEL=model):
        page.get_by_label("Your message").fill("Weather and time?")
        page.keyboard.press("Enter")
        wait_for_reply(page)
    saved = records.read(store.read_records(session_id)[-1]).tool_calls
    shown = [f"Called tool {call.name} with {call.arguments}" for call in saved]
    assert len(shown) == 2
    calls = page.locator(".cm-ai .cm-calls > li")
    expect(calls).to_have_text(shown)
    expect(calls.locator("code")).to_have_text(
        ["get_weather", saved[0].arguments, "clock", "{}"]
    )
    expect(page.locator(".cm-ai .cm-text")).to_be_hidden()  # no empty bubble
    live = page.locator(".cm-ai").evaluate(
        "e => e.querySelector('.cm-calls').outerHTML"
    )
    page.wait_for_timeout(200)
    assert page.evaluate("window.heard")[-1] == (
        "The assistant replied: " + " ".join(shown)
    )
    screenshot(page, "chat-tool-calls")
    page.get_by_role("button", name="Copy this reply").click()
    assert page.evaluate("navigator.clipboard.readText()") == "\n".join(shown)
    page.reload()
    expect(calls).to_have_text(shown)
    assert (
        page.locator(".cm-ai").evaluate("e => e.querySelector('.cm-calls').outerHTML")
        == live
    )
    assert page.locator("#cm-transcript img").count() == 0
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_regenerate_edit_and_continue(open_chat: Any, alice: Any) -> None:
    seed_chat(alice, "redo", [("human", "First question"), ("ai", "First answer")])
    page = open_chat("redo")
    last_ai = page.locator(".cm-ai").last
    last_human = page.locator(".cm-human").last
    # Regenerate: a new reply replaces the old one, the question stays.
    with scripted("A *regenerated* answer", delay=0.01):
        last_ai.get_by_role("button", name="Regenerate this reply").click()
        wait_for_reply(page)
    expect(page.locator(".cm-ai")).to_have_count(1)
    expect(last_ai.locator("em")).to_have_text("regenerated")
    assert [r["data"]["content"] for r in store.read_records("redo")] == [  # type: ignore[index]
        "First question",
        "A *regenerated* answer",
    ]
    # Edit: the question and its reply are replaced.
    last_human.get_by_role("button", name="Edit this message").click()
    editor = page.get_by_role("textbox", name="Edit this message")
    expect(editor).to_be_focused()
    expect(editor).to_have_value("First question")
    editor.fill("A better question")
    with scripted("The answer to the better question", delay=0.01):
        editor.press("Enter")
        wait_for_reply(page)
    expect(page.locator(".cm-human .cm-text")).to_have_text(["A better question"])
    expect(last_ai.locator(".cm-text")).to_have_text(
        "The answer to the better question"
    )
    screenshot(page, "chat-edited")
    # Stop, then continue where it stopped.
    with scripted("word " * 200, delay=0.03, size=5):
        last_ai.get_by_role("button", name="Regenerate this reply").click()
        expect(last_ai.locator(".cm-text")).to_contain_text("word word word")
        page.get_by_role("button", name="Stop").click()
        expect(last_ai).to_have_class("cm-msg cm-ai cm-interrupted")
    stopped_text = last_ai.locator(".cm-text").evaluate("e => e.cmSource")
    with scripted(" and the rest.", delay=0.01, size=3):
        last_ai.get_by_role("button", name="Continue this reply").click()
        wait_for_reply(page)
    expect(last_ai).to_have_class("cm-msg cm-ai")  # no longer stopped
    expect(last_ai.locator(".cm-flag")).to_have_count(0)
    saved = [r["data"]["content"] for r in store.read_records("redo")]  # type: ignore[index]
    assert saved == ["A better question", stopped_text + " and the rest."]
    page.reload()
    expect(page.locator(".cm-ai .cm-text")).to_have_text(
        (stopped_text + " and the rest.").strip()
    )
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_a_failed_regenerate_keeps_the_old_reply(open_chat: Any, alice: Any) -> None:
    seed_chat(alice, "keep", [("human", "Question"), ("ai", "The old answer")])
    page = open_chat("keep")
    failing = {"factory": "tests.chat_models.failing_model", "fail_after": 2}
    with override_settings(CHATMEMORY_CHAT_MODEL=failing):
        page.get_by_role("button", name="Regenerate this reply").click()
        expect(page.locator("#cm-errors")).to_contain_text("nothing was saved")
    expect(page.locator(".cm-ai:visible .cm-text")).to_have_text("The old answer")
    expect(page.locator(".cm-ai")).to_have_count(1)
    assert [r["data"]["content"] for r in store.read_records("keep")] == [  # type: ignore[index]
        "Question",
        "The old answer",
    ]


def test_a_failed_edit_keeps_the_edited_text(open_chat: Any, alice: Any) -> None:
    seed_chat(alice, "edit-fails", [("human", "Old question"), ("ai", "Old answer")])
    page = open_chat("edit-fails")
    question = page.locator(".cm-human").last
    question.get_by_role("button", name="Edit this message").click()
    editor = page.get_by_role("textbox", name="Edit this message")
    editor.fill("A long edited question\nthat took a while to write")
    failing = {"factory": "tests.chat_models.failing_model", "fail_after": 2}
    with override_settings(CHATMEMORY_CHAT_MODEL=failing):
        editor.press("Enter")
        expect(page.locator("#cm-errors")).to_contain_text("nothing was saved")
    wait_for_reply(page)
    # The editor is open again with the edited text, focused, for another try.
    expect(editor).to_have_value("A long edited question\nthat took a while to write")
    expect(editor).to_be_focused()
    expect(page.locator(".cm-ai:visible .cm-text")).to_have_text("Old answer")
    assert [r["data"]["content"] for r in store.read_records("edit-fails")] == [  # type: ignore[index]
        "Old question",
        "Old answer",
    ]
    # Sending it again works; Cancel would have shown the old question.
    with scripted("The new answer", delay=0.0):
        editor.press("Enter")
        wait_for_reply(page)
    expect(page.locator(".cm-human .cm-text")).to_have_text(
        ["A long edited question\nthat took a while to write"]
    )
    expect(page.locator(".cm-ai .cm-text")).to_have_text("The new answer")
    assert page.script_errors == []  # type: ignore[attr-defined]


def test_the_empty_chat_hint_never_comes_back_over_a_conversation(
    open_chat: Any,
) -> None:
    page = open_chat()
    hint = page.locator("#cm-empty-hint")
    expect(hint).to_be_visible()
    with scripted("Hello there", delay=0.0):
        page.get_by_label("Your message").fill("Hi")
        page.keyboard.press("Enter")
        wait_for_reply(page)
    expect(hint).to_be_hidden()
    failing = {"factory": "tests.chat_models.failing_model", "fail_after": 1}
    with override_settings(CHATMEMORY_CHAT_MODEL=failing):
        page.get_by_label("Your message").fill("And then?")
        page.keyboard.press("Enter")
        expect(page.locator("#cm-errors")).to_contain_text("nothing was saved")
    wait_for_reply(page)
    # The conversation is still there, and no "say something" hint over it.
    expect(page.locator(".cm-msg:visible")).to_have_count(2)
    expect(hint).to_be_hidden()
    expect(page.get_by_label("Your message")).to_have_value("And then?")
    assert page.script_errors == []  # type: ignore[attr-defined]
