from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.test import AsyncClient, Client, override_settings
from django.urls import reverse
from django.utils import translation
from langchain_core.messages import (
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    message_to_dict,
)

from chatmemory import llm, store, views
from chatmemory.agent import TURN_METADATA
from chatmemory.conf import conf
from chatmemory.exceptions import STORE_DOWN
from chatmemory.langgraph import thread_records
from chatmemory.owners import owner_id
from chatmemory.records import INTERRUPTED
from chatmemory.turn import CANNOT_REDO, CONTINUE_PROMPT, ChatTurn
from tests.chat_models import HistoryModel
from tests.redis_server import free_port
from tests.test_sse import parse as events

pytestmark = pytest.mark.django_db

FAST_DEMO = {"factory": "chatmemory.llm.DemoChatModel", "token_delay": 0}
FAILING = {"factory": "tests.chat_models.failing_model", "fail_after": 3}
DOWN = {
    **settings.CACHES,
    "down": {
        "BACKEND": "django_redis.cache.RedisCache",
        # Port 1 on loopback: nothing listens, so connecting fails at once.
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    },
}


@pytest.fixture(autouse=True)
def fast_model(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with override_settings(CHATMEMORY_CHAT_MODEL=FAST_DEMO):
        yield


@pytest.fixture
def bob(django_user_model: Any) -> AbstractBaseUser:
    user: AbstractBaseUser = django_user_model.objects.create_user("bob", password="pw")
    return user


@pytest.fixture
def bob_client(bob: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def session_id(alice: AbstractBaseUser) -> str:
    session_id = uuid.uuid4().hex
    assert store.create_session(session_id, owner=owner_id(alice))
    return session_id


def body_of(response: Any) -> bytes:
    if response.streaming:
        return b"".join(response.streaming_content)
    return bytes(response.content)


@pytest.fixture(params=["chain", "agent"])
def chat_mode(request: pytest.FixtureRequest) -> Iterator[str]:
    """Runs a test once per chat mode (CHATMEMORY_CHAT_MODE)."""
    with override_settings(CHATMEMORY_CHAT_MODE=request.param):
        yield request.param


both_modes = pytest.mark.usefixtures("chat_mode")
"""The test must pass in both chat modes: a chain on the history, an agent on
a LangGraph thread."""


def records(session_id: str) -> list[dict[str, Any]]:
    """A chat's stored messages: a history session's, or a thread's."""
    info = store.get_session(session_id)
    if info is not None and info.kind == "thread":
        return thread_records(session_id)
    return [r for r in store.read_records(session_id) if isinstance(r, dict)]


def turn_of(record: dict[str, Any]) -> Any:
    """The turn id a stored reply names (beside it, or in a thread's message)."""
    if store.TURN_FIELD in record:
        return record[store.TURN_FIELD]
    return record["data"]["response_metadata"].get(TURN_METADATA)


# --- who may see what ---------------------------------------------------------

SESSION_VIEWS = [
    ("chat", "get", {}, 200),
    ("send", "post", {"message": "hi"}, 302),
    ("stream", "post", {"message": "hi"}, 200),
    ("rename", "post", {"title": "new title"}, 302),
    ("delete", "get", {}, 200),
    ("delete", "post", {}, 302),
]


def test_anonymous_users_are_sent_to_log_in(client: Client, session_id: str) -> None:
    urls = [("get", reverse("chatmemory:sessions")), ("post", "/chat/")]
    urls += [
        (method, reverse(f"chatmemory:{name}", args=[session_id]))
        for name, method, _, _ in SESSION_VIEWS
    ]
    for method, url in urls:
        response = getattr(client, method)(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/accounts/login/?next="), url
    assert len(records(session_id)) == 0


@pytest.mark.parametrize(("name", "method", "data", "status"), SESSION_VIEWS)
@both_modes
def test_the_owner_may_use_every_view(
    alice_client: Client,
    session_id: str,
    name: str,
    method: str,
    data: dict[str, str],
    status: int,
) -> None:
    url = reverse(f"chatmemory:{name}", args=[session_id])
    response = getattr(alice_client, method)(url, data)
    assert response.status_code == status
    body_of(response)


@pytest.mark.parametrize(("name", "method", "data", "status"), SESSION_VIEWS)
@both_modes
def test_another_user_gets_404_like_a_missing_session(
    bob_client: Client,
    alice_client: Client,
    session_id: str,
    name: str,
    method: str,
    data: dict[str, str],
    status: int,
) -> None:
    url = reverse(f"chatmemory:{name}", args=[session_id])
    theirs = getattr(bob_client, method)(url, data)
    missing = getattr(alice_client, method)(
        reverse(f"chatmemory:{name}", args=["no-such-session"]), data
    )
    assert theirs.status_code == missing.status_code == 404
    assert theirs.content == missing.content  # nothing tells them apart
    info = store.get_session(session_id)
    assert info is not None and info.message_count == 0 and info.title == ""


def test_an_invalid_session_id_is_a_404(alice_client: Client) -> None:
    too_long = "x" * (conf.MAX_SESSION_ID_LENGTH + 1)
    assert alice_client.get(f"/chat/{too_long}/").status_code == 404


# --- my sessions ----------------------------------------------------------------


def new_chat(client: Client) -> str:
    response = client.post(reverse("chatmemory:sessions"))
    assert response.status_code == 302
    session_id = str(response["Location"].strip("/").split("/")[-1])
    assert response["Location"] == reverse("chatmemory:chat", args=[session_id])
    return session_id


@both_modes
def test_a_new_chat_is_stored_by_its_first_message(
    alice_client: Client, alice: AbstractBaseUser, bob_client: Client
) -> None:
    session_id = new_chat(alice_client)
    assert store.get_session(session_id) is None  # a click stores nothing
    page = alice_client.get(reverse("chatmemory:chat", args=[session_id]))
    assert page.status_code == 200 and "New chat" in page.content.decode()
    # Nobody else can open it, stored or not.
    assert bob_client.get(f"/chat/{session_id}/").status_code == 404
    alice_client.post(f"/chat/{session_id}/send/", {"message": "first"})
    info = store.get_session(session_id)
    assert info is not None and info.owner == owner_id(alice) and info.title == "first"
    assert bob_client.get(f"/chat/{session_id}/").status_code == 404


@both_modes
def test_a_new_chat_streamed_to_is_stored(
    alice_client: Client, alice: AbstractBaseUser
) -> None:
    session_id = new_chat(alice_client)
    body = body_of(alice_client.post(f"/chat/{session_id}/stream/", {"message": "hi"}))
    assert events(body)[-1][0] == "done"
    info = store.get_session(session_id)
    assert info is not None and info.owner == owner_id(alice)


def test_a_new_chat_named_or_deleted_before_any_message(
    alice_client: Client, alice: AbstractBaseUser
) -> None:
    named = new_chat(alice_client)
    alice_client.post(f"/chat/{named}/rename/", {"title": "Plans"})
    info = store.get_session(named)
    assert info is not None and info.title == "Plans" and info.owner == owner_id(alice)
    dropped = new_chat(alice_client)
    response = alice_client.post(f"/chat/{dropped}/delete/")
    assert response["Location"] == "/chat/"
    assert alice_client.get(f"/chat/{dropped}/").status_code == 404
    assert store.get_session(dropped) is None


def test_only_the_latest_unsent_new_chats_are_remembered(alice_client: Client) -> None:
    made = [new_chat(alice_client) for _ in range(views.NEW_CHATS_KEPT + 2)]
    assert alice_client.get(f"/chat/{made[0]}/").status_code == 404
    assert alice_client.get(f"/chat/{made[-1]}/").status_code == 200


def test_my_sessions_newest_first_only_mine_paginated(
    alice_client: Client, alice: AbstractBaseUser, bob: AbstractBaseUser
) -> None:
    for number in range(3):
        store.append_records(
            f"mine-{number}",
            [{"type": "human", "data": {"content": f"Topic <{number}>"}}],
            owner=owner_id(alice),
        )
        time.sleep(0.002)  # distinct activity times
    store.append_records(
        "theirs", [{"type": "human", "data": {"content": "Bob's"}}], owner=owner_id(bob)
    )
    with override_settings(CHATMEMORY_SESSIONS_PER_PAGE=2):
        first = alice_client.get("/chat/").content.decode()
        second = alice_client.get("/chat/?page=2").content.decode()
        for bad in ["3", "0", "abc"]:
            assert alice_client.get(f"/chat/?page={bad}").status_code == 404
    assert first.index("Topic &lt;2&gt;") < first.index("Topic &lt;1&gt;")
    assert "Topic &lt;0&gt;" not in first and "Topic &lt;0&gt;" in second
    assert "Page 1 of 2 (3 chats)" in first and 'rel="next"' in first
    assert 'rel="prev"' in second
    assert "Bob" not in first + second
    assert "New chat" in first


def test_an_empty_list_says_how_to_start(alice_client: Client) -> None:
    page = alice_client.get("/chat/").content.decode()
    assert "No chats yet" in page


# --- the chat page ----------------------------------------------------------------


def test_the_chat_page_shows_the_transcript_escaped(
    alice_client: Client, session_id: str
) -> None:
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "<script>alert(1)</script>"}},
            {
                "type": "ai",
                "data": {
                    "content": [{"type": "text", "text": "<b>bold</b>"}, " tail"],
                    "response_metadata": {"interrupted": True},
                },
            },
            {"type": "system", "data": {"content": "sys note"}},
            {"type": "tool", "data": {"content": "tool out", "tool_call_id": "c"}},
        ],
    )
    page = alice_client.get(reverse("chatmemory:chat", args=[session_id]))
    html = page.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;\n\n tail" in html  # text blocks: a blank line apart
    assert "cm-interrupted" in html and ">stopped<" in html
    assert "cm-system" in html and "cm-other" in html
    assert "Offline demo model" in html
    assert 'data-stream-url="/chat/' in html


def test_the_page_names_another_model(alice_client: Client, session_id: str) -> None:
    spec = {"factory": "tests.chat_models.HistoryModel"}
    with override_settings(CHATMEMORY_CHAT_MODEL=spec):
        html = alice_client.get(f"/chat/{session_id}/").content.decode()
    assert "Offline demo model" not in html
    assert "Answering: <strong>HistoryModel</strong>" in html


def test_transcript_of_odd_records() -> None:
    raw = store.UnreadableEntry(0, b"{", "not JSON")
    entries = views.transcript(
        [
            raw,
            {"type": "ai"},
            {"type": "human", "data": {"content": 7}},
            {
                "type": "human",
                "data": {"content": ["Hello", {"type": "text", "text": "world"}]},
            },
        ]
    )
    assert [(e.role, e.text) for e in entries] == [
        ("unreadable", views.UNREADABLE),
        ("unreadable", views.UNREADABLE),
        ("unreadable", views.UNREADABLE),
        ("human", "Hello\n\nworld"),
    ]


def test_the_chat_shows_as_unreadable_exactly_what_the_prompt_leaves_out(
    alice_client: Client, session_id: str
) -> None:
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "one"}},
            message_to_dict(RemoveMessage(id="m-1")),
            {"type": "human", "data": {"content": "two", "name": 5}},
            {"type": "ai", "data": {"content": "three", "tool_calls": "bad"}},
            {"type": "ai", "data": {"content": "four"}},
            {"type": "system", "data": {"content": "five", "id": 7}},
            message_to_dict(ToolMessage(content="six", tool_call_id="c")),
            {"type": "ai", "data": {"content": 5}},
            {"type": "human", "data": {"content": "seven"}},
        ],
    )
    entries = views.transcript(store.read_records(session_id))
    assert [e.role for e in entries] == [
        "human",
        "unreadable",
        "unreadable",
        "unreadable",
        "ai",
        "system",  # a number id is taken (LangChain makes it text)
        "other",
        "unreadable",
        "human",
    ]
    model = HistoryModel(seen=[])
    ChatTurn(session_id, "q", model=model).run()
    # The prompt, without the system prompt and the question.
    prompt = [m.text for m in model.seen[0][1:-1]]
    assert prompt == [e.text for e in entries if e.role != "unreadable"]
    html = alice_client.get(f"/chat/{session_id}/").content.decode()
    assert html.count("cm-msg cm-unreadable") == 4
    assert html.count("Unreadable entry") == 4
    assert "Note" in html  # the tool message


# --- sending without JavaScript ------------------------------------------------


@both_modes
def test_send_runs_a_turn_and_redirects_to_the_transcript(
    alice_client: Client, session_id: str
) -> None:
    url = reverse("chatmemory:send", args=[session_id])
    response = alice_client.post(url, {"message": "I like <tea>"}, follow=True)
    assert response.redirect_chain == [(f"/chat/{session_id}/", 302)]
    html = response.content.decode()
    assert "I like &lt;tea&gt;" in html
    assert "first turn of our conversation" in html
    saved = records(session_id)
    assert [r["type"] for r in saved] == ["human", "ai"]
    info = store.get_session(session_id)
    assert info is not None and info.title == "I like <tea>"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "Type a message first"),
        ("   \n ", "Type a message first"),
        ("y" * 41, "Your message is 41 characters long; the limit is 40."),
    ],
)
def test_bad_input_is_a_form_error_and_keeps_the_text(
    alice_client: Client, session_id: str, text: str, error: str
) -> None:
    with override_settings(CHATMEMORY_MAX_MESSAGE_LENGTH=40):
        response = alice_client.post(f"/chat/{session_id}/send/", {"message": text})
    html = response.content.decode()
    assert response.status_code == 200
    assert error in html
    assert f">\n{text.strip()}</textarea>" in html or text.strip() == ""
    assert records(session_id) == []


@both_modes
def test_a_model_failure_shows_an_error_and_saves_nothing(
    alice_client: Client, session_id: str
) -> None:
    with override_settings(CHATMEMORY_CHAT_MODEL=FAILING):
        response = alice_client.post(
            f"/chat/{session_id}/send/", {"message": "keep me"}
        )
    html = response.content.decode()
    assert response.status_code == 200
    assert "The model failed (RuntimeError); nothing was saved." in html
    assert ">\nkeep me</textarea>" in html
    assert records(session_id) == []
    info = store.get_session(session_id)
    assert info is not None and info.title == ""  # a failed turn names nothing


@both_modes
def test_a_model_that_cannot_be_built(alice_client: Client, session_id: str) -> None:
    with override_settings(CHATMEMORY_CHAT_MODEL={"factory": "nope.Model"}):
        page = alice_client.get(f"/chat/{session_id}/").content.decode()
        sent = alice_client.post(f"/chat/{session_id}/send/", {"message": "hi"})
        streamed = alice_client.post(f"/chat/{session_id}/stream/", {"message": "hi"})
    assert "The chat model cannot be used" in page and "nope" in page
    assert "not configured correctly" in sent.content.decode()
    assert streamed.status_code == 500
    assert events(streamed.content)[0][0] == "error"
    assert records(session_id) == []


# --- streaming ------------------------------------------------------------------


@both_modes
def test_stream_sends_tokens_then_done_and_saves_the_turn(
    alice_client: Client, session_id: str
) -> None:
    response = alice_client.post(
        f"/chat/{session_id}/stream/", {"message": "hello <there>"}
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert not response.is_async  # WSGI: a sync iterator
    got = events(body_of(response))
    tokens = [data for name, data in got if name == "token"]
    assert len(tokens) > 10
    # The page names the chat as the store did.
    title = store.get_session(session_id).title  # type: ignore[union-attr]
    assert title == "hello <there>"
    assert got[-1] == ("done", json.dumps({"message_count": 2, "title": title}))
    saved = records(session_id)
    assert saved[0]["data"]["content"] == "hello <there>"
    assert saved[1]["data"]["content"] == "".join(tokens)


@pytest.mark.django_db(transaction=True)
@both_modes
async def test_stream_under_asgi_uses_an_async_iterator(
    alice: AbstractBaseUser, session_id: str
) -> None:
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.post(f"/chat/{session_id}/stream/", {"message": "hi"})
    assert response.status_code == 200
    assert response.is_async  # ASGI: an async iterator, served incrementally
    body = b"".join([part async for part in response.streaming_content])
    got = events(body)
    assert got[-1] == ("done", json.dumps({"message_count": 2, "title": "hi"}))
    saved = records(session_id)
    tokens = "".join(data for name, data in got if name == "token")
    assert saved[1]["data"]["content"] == tokens


@pytest.mark.django_db(transaction=True)
@both_modes
async def test_an_async_stream_reports_a_model_failure(
    alice: AbstractBaseUser, session_id: str
) -> None:
    client = AsyncClient()
    await client.aforce_login(alice)
    with override_settings(CHATMEMORY_CHAT_MODEL=FAILING):
        response = await client.post(f"/chat/{session_id}/stream/", {"message": "x"})
        body = b"".join([part async for part in response.streaming_content])
    got = events(body)
    assert [name for name, _ in got] == ["token"] * 3 + ["error"]
    assert records(session_id) == []


@both_modes
def test_a_model_failure_mid_stream_is_an_error_event(
    alice_client: Client, session_id: str
) -> None:
    with override_settings(CHATMEMORY_CHAT_MODEL=FAILING):
        response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "x"})
        got = events(body_of(response))
    assert [name for name, _ in got] == ["token"] * 3 + ["error"]
    assert "nothing was saved" in got[-1][1]
    assert records(session_id) == []


@pytest.mark.parametrize(
    ("text", "error"),
    [("  ", "Type a message first"), ("z" * 41, "41 characters long")],
)
def test_stream_bad_input_is_an_error_event(
    alice_client: Client, session_id: str, text: str, error: str
) -> None:
    with override_settings(CHATMEMORY_MAX_MESSAGE_LENGTH=40):
        response = alice_client.post(f"/chat/{session_id}/stream/", {"message": text})
    assert response.status_code == 400
    [(name, data)] = events(response.content)
    assert name == "error" and error in data


@both_modes
def test_stopping_a_stream_saves_the_reply_as_interrupted(
    alice_client: Client, session_id: str
) -> None:
    response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "go"})
    content = iter(response.streaming_content)
    got = b"".join(next(content) for _ in range(4))  # the opening comment + 3 tokens
    response.close()  # what the server does when the client goes away
    saved = records(session_id)
    assert saved[1]["data"]["response_metadata"]["interrupted"] is True
    tokens = "".join(data for name, data in events(got) if name == "token")
    assert saved[1]["data"]["content"] == tokens


@both_modes
def test_stream_is_never_gzipped(alice_client: Client, session_id: str) -> None:
    middleware = ["django.middleware.gzip.GZipMiddleware", *settings.MIDDLEWARE]
    with override_settings(MIDDLEWARE=middleware):
        response = alice_client.post(
            f"/chat/{session_id}/stream/",
            {"message": "hi"},
            headers={"accept-encoding": "gzip"},
        )
        page = alice_client.get(
            f"/chat/{session_id}/", headers={"accept-encoding": "gzip"}
        )
    assert page["Content-Encoding"] == "gzip"  # the middleware is active
    assert not response.has_header("Content-Encoding")
    assert events(body_of(response))[-1][0] == "done"


# --- rename and delete -----------------------------------------------------------


def test_rename_my_session(alice_client: Client, session_id: str) -> None:
    response = alice_client.post(
        f"/chat/{session_id}/rename/", {"title": "  Holiday <plans> "}
    )
    assert response.status_code == 302
    info = store.get_session(session_id)
    assert info is not None and info.title == "Holiday <plans>"
    html = alice_client.get(f"/chat/{session_id}/").content.decode()
    assert "Holiday &lt;plans&gt;" in html


def test_rename_to_nothing_is_an_error(alice_client: Client, session_id: str) -> None:
    response = alice_client.post(f"/chat/{session_id}/rename/", {"title": " "})
    assert response.status_code == 200
    assert "A title cannot be empty." in response.content.decode()
    assert '<details class="cm-manage" open>' in response.content.decode()


def test_delete_asks_then_deletes(alice_client: Client, session_id: str) -> None:
    store.append_records(session_id, [{"type": "human", "data": {"content": "x"}}])
    page = alice_client.get(f"/chat/{session_id}/delete/").content.decode()
    assert "Delete this chat?" in page and "1 message " in page
    assert store.get_session(session_id) is not None
    response = alice_client.post(f"/chat/{session_id}/delete/")
    assert response["Location"] == "/chat/"
    assert store.get_session(session_id) is None
    assert alice_client.get(f"/chat/{session_id}/").status_code == 404


@both_modes
def test_a_session_id_with_a_slash_works(
    alice_client: Client, alice: AbstractBaseUser
) -> None:
    store.create_session("team/42", owner=owner_id(alice), title="Slashed")
    listing = alice_client.get("/chat/").content.decode()
    assert 'href="/chat/team_2F42/"' in listing  # escaped as the admin does
    assert alice_client.get("/chat/team_2F42/").status_code == 200
    response = alice_client.post("/chat/team_2F42/send/", {"message": "hi"})
    assert response["Location"] == "/chat/team_2F42/"
    assert len(records("team/42")) == 2


def test_any_session_id_is_listed_and_opened(
    alice_client: Client, alice: AbstractBaseUser
) -> None:
    odd = ["line\nbreak", "a/../b", "x/send", "100%_sure?#"]
    for session_id in odd:
        store.create_session(session_id, owner=owner_id(alice), title=session_id)
    listing = alice_client.get("/chat/")
    assert listing.status_code == 200
    for session_id in odd:
        url = reverse("chatmemory:chat", args=[session_id])
        assert f'href="{url}"' in listing.content.decode()
        assert url.count("/") == 3  # one path segment
        page = alice_client.get(url)
        assert page.status_code == 200 and page.context["session"].session_id == (
            session_id
        )


@pytest.mark.parametrize("action", ["send", "stream", "rename"])
def test_get_on_a_post_only_url_goes_back_to_the_chat(
    alice_client: Client, session_id: str, action: str
) -> None:
    response = alice_client.get(f"/chat/{session_id}/{action}/")
    assert response.status_code == 302
    assert response["Location"] == f"/chat/{session_id}/"


def test_per_user_pages_are_private_and_never_framed(
    alice_client: Client, session_id: str
) -> None:
    pages = [
        alice_client.get("/chat/"),
        alice_client.get(f"/chat/{session_id}/"),
        alice_client.get(f"/chat/{session_id}/delete/"),
        alice_client.post(f"/chat/{session_id}/send/", {"message": ""}),
        alice_client.post(f"/chat/{session_id}/rename/", {"title": ""}),
        alice_client.get("/chat/_all/delete/"),
        alice_client.get("/chat/_all/download/"),
    ]
    for page in pages:
        assert page.status_code == 200
        cache = {part.strip() for part in page["Cache-Control"].split(",")}
        assert {"private", "no-store"} <= cache
        assert page["X-Frame-Options"] == "DENY"


def test_pages_past_any_listing_are_404(alice_client: Client, session_id: str) -> None:
    for page in ["368934881474191034", str(2**63), "2"]:
        assert alice_client.get(f"/chat/?page={page}").status_code == 404


# --- one reply at a time -------------------------------------------------------


@both_modes
def test_a_second_stream_on_a_session_gets_a_clear_message(
    alice_client: Client, session_id: str
) -> None:
    assert store.lock_turn(session_id, "another-tab", seconds=30)
    streamed = alice_client.post(f"/chat/{session_id}/stream/", {"message": "hi"})
    [(name, data)] = events(body_of(streamed)[len(b": stream open\n\n") :])
    assert name == "error" and "already being written" in data
    sent = alice_client.post(f"/chat/{session_id}/send/", {"message": "hi"})
    assert sent.status_code == 200
    assert "already being written" in sent.content.decode()
    assert records(session_id) == []
    assert store.unlock_turn(session_id, "another-tab")
    # Released after each turn: two turns in a row both run.
    for _ in range(2):
        body = body_of(
            alice_client.post(f"/chat/{session_id}/stream/", {"message": "x"})
        )
        assert events(body)[-1][0] == "done"
    assert len(records(session_id)) == 4


# --- Redis down ----------------------------------------------------------------


@both_modes
def test_redis_down_gives_a_503_page_not_a_traceback(
    alice_client: Client, session_id: str
) -> None:
    with override_settings(CACHES=DOWN, CHATMEMORY_CACHE_ALIAS="down"):
        # A new chat touches no Redis until its first message.
        assert alice_client.post("/chat/").status_code == 302
        pages = [
            alice_client.get("/chat/"),
            alice_client.get(f"/chat/{session_id}/"),
            alice_client.post(f"/chat/{session_id}/send/", {"message": "x"}),
            alice_client.post(f"/chat/{session_id}/rename/", {"title": "x"}),
            alice_client.get(f"/chat/{session_id}/delete/"),
            alice_client.post(f"/chat/{session_id}/stop/", {"turn": "a" * 32}),
        ]
        streamed = alice_client.post(f"/chat/{session_id}/stream/", {"message": "x"})
    for page in pages:
        assert page.status_code == 503
        assert page["Retry-After"] == "60"
        html = page.content.decode()
        assert "chat history store is not reachable" in html
        assert "Traceback" not in html
    assert streamed.status_code == 503
    [(name, data)] = events(streamed.content)
    assert name == "error" and "not reachable" in data


@both_modes
def test_redis_going_down_mid_turn_is_an_error_event(
    alice_client: Client, session_id: str
) -> None:
    response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "x"})
    with override_settings(CACHES=DOWN, CHATMEMORY_CACHE_ALIAS="down"):
        got = events(body_of(response))
    assert got == [("error", str(STORE_DOWN))]


@pytest.mark.django_db(transaction=True)
@both_modes
async def test_redis_going_down_mid_async_turn_is_an_error_event(
    alice: AbstractBaseUser, session_id: str
) -> None:
    client = AsyncClient()
    await client.aforce_login(alice)
    response = await client.post(f"/chat/{session_id}/stream/", {"message": "x"})
    with override_settings(CACHES=DOWN, CHATMEMORY_CACHE_ALIAS="down"):
        store._reset_async_clients()
        got = events(b"".join([part async for part in response.streaming_content]))
    assert got == [("error", str(STORE_DOWN))]


# --- real servers: gunicorn (WSGI) and uvicorn (ASGI) ------------------------------

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SETUP = """
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
call_command("migrate", verbosity=0)
from chatmemory.owners import owner_id
print(owner_id(get_user_model().objects.create_user("streamer", password="pw")))
"""


@pytest.fixture(scope="module", params=["chain", "agent"])
def server_env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Environment of the servers: a file database with a user, a key prefix,
    a chat mode (each server test runs in both)."""
    prefix = f"cmtest-srv-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings_server",
        "CHATMEMORY_TEST_DB": str(tmp_path_factory.mktemp("servers") / "db.sqlite3"),
        "CHATMEMORY_TEST_KEY_PREFIX": prefix,
        "CHATMEMORY_TEST_CHAT_MODE": request.param,
        "CHATMEMORY_TEST_TOKEN_DELAY": "0.05",
        "PYTHONPATH": str(ROOT),
    }
    setup = subprocess.run(
        [sys.executable, "-c", SETUP],
        env=env,
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    env["CHATMEMORY_TEST_OWNER"] = setup.stdout.strip()
    yield env
    client = redis.Redis.from_url(settings.CACHES["chatmemory"]["LOCATION"])
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


def server_command(kind: str, port: int) -> list[str]:
    if kind == "gunicorn":
        return [
            str(BIN / "gunicorn"),
            "project.wsgi:application",
            "--bind", f"127.0.0.1:{port}",
            "--workers", "2",
            "--log-level", "warning",
            # its default control socket is one path per machine: concurrent
            # test runs would fight over it
            "--no-control-socket",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", "project.asgi:application",
        "--host", "127.0.0.1", "--port", str(port),
        "--lifespan", "off", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip


@pytest.fixture(scope="module", params=["gunicorn", "uvicorn"])
def live_url(
    request: pytest.FixtureRequest, server_env: dict[str, str]
) -> Iterator[str]:
    """The base URL of a real server running the demo URLs on the test settings."""
    port = free_port()
    process = subprocess.Popen(
        server_command(request.param, port), env=server_env, cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    # generous: a loaded 2-core machine takes seconds to boot the workers
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(url + "/accounts/login/", timeout=10)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait(timeout=10)
                pytest.fail(f"{request.param} did not start")
            time.sleep(0.1)
    yield url
    process.terminate()
    process.wait(timeout=10)


def logged_in(url: str, env: dict[str, str]) -> tuple[httpx.Client, str, str]:
    """A client logged in as the servers' user, its CSRF token, a new chat's id."""
    client = httpx.Client(base_url=url, timeout=10)
    client.get("/accounts/login/")
    token = client.cookies["csrftoken"]
    response = client.post(
        "/accounts/login/",
        data={"username": "streamer", "password": "pw", "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302, response.text
    token = client.cookies["csrftoken"]  # logging in rotates it
    # A chat of the servers' user (the first in their database), made here.
    session_id = uuid.uuid4().hex
    with override_settings(CHATMEMORY_KEY_PREFIX=env["CHATMEMORY_TEST_KEY_PREFIX"]):
        assert store.create_session(session_id, owner=env["CHATMEMORY_TEST_OWNER"])
    return client, token, session_id


def test_tokens_arrive_incrementally_under_real_servers(
    live_url: str, server_env: dict[str, str]
) -> None:
    client, token, session_id = logged_in(live_url, server_env)
    arrivals: list[tuple[float, bytes]] = []
    start = time.monotonic()
    with client.stream(
        "POST",
        f"/chat/{session_id}/stream/",
        data={"message": "stream me", "csrfmiddlewaretoken": token},
        headers={"Accept": "text/event-stream", "Accept-Encoding": "gzip"},
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in response.headers
        for part in response.iter_raw():
            arrivals.append((time.monotonic() - start, part))
    client.close()
    got = events(b"".join(part for _, part in arrivals))
    assert got[-1] == (
        "done",
        json.dumps({"message_count": 2, "title": "stream me"}),
    )
    token_reads = [at for at, part in arrivals if b"event: token" in part]
    total = arrivals[-1][0]
    # About 40 tokens 50 ms apart: the first arrives long before the end, and
    # they come in many separate reads, not one buffered lump.
    assert len(token_reads) >= 10
    assert token_reads[0] < total - 1.0
    with override_settings(
        CHATMEMORY_KEY_PREFIX=server_env["CHATMEMORY_TEST_KEY_PREFIX"]
    ):
        saved = records(session_id)
    tokens = "".join(data for name, data in got if name == "token")
    assert [r["data"]["content"] for r in saved] == ["stream me", tokens]


def test_a_client_that_stops_reading_gets_its_reply_saved_as_interrupted(
    live_url: str, server_env: dict[str, str]
) -> None:
    client, token, session_id = logged_in(live_url, server_env)
    received = b""
    with client.stream(
        "POST",
        f"/chat/{session_id}/stream/",
        data={"message": "stop me", "csrfmiddlewaretoken": token},
    ) as response:
        for part in response.iter_raw():
            received += part
            if received.count(b"event: token") >= 3:
                break  # leaving the block closes the connection
    client.close()
    prefix = server_env["CHATMEMORY_TEST_KEY_PREFIX"]
    deadline = time.monotonic() + 10
    saved: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(saved) < 2:
        time.sleep(0.1)
        with override_settings(CHATMEMORY_KEY_PREFIX=prefix):
            saved = records(session_id)
    assert [r["type"] for r in saved] == ["human", "ai"]
    reply = saved[1]["data"]
    assert reply["response_metadata"][INTERRUPTED] is True
    seen = "".join(data for name, data in events(received) if name == "token")
    assert reply["content"].startswith(seen)  # the server got at least that far
    full = llm.demo_reply([SystemMessage("s"), HumanMessage("stop me")])
    assert len(reply["content"]) < len(full)


def test_a_stopped_reply_is_saved_as_the_page_showed_it_under_real_servers(
    live_url: str, server_env: dict[str, str]
) -> None:
    prefix = server_env["CHATMEMORY_TEST_KEY_PREFIX"]
    client, token, session_id = logged_in(live_url, server_env)
    turn = uuid.uuid4().hex
    received = b""
    with client.stream(
        "POST",
        f"/chat/{session_id}/stream/",
        data={"message": "stop me", "csrfmiddlewaretoken": token, "turn": turn},
    ) as response:
        for part in response.iter_raw():
            received += part
            if received.count(b"event: token") >= 3:
                break  # the page stops: the connection closes
    shown = "".join(data for name, data in events(received) if name == "token")
    answer = client.post(
        f"/chat/{session_id}/stop/",
        data={"turn": turn, "shown": shown, "csrfmiddlewaretoken": token},
    )
    assert answer.status_code == 204
    client.close()
    deadline = time.monotonic() + 10
    saved: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        with override_settings(CHATMEMORY_KEY_PREFIX=prefix):
            saved = records(session_id)
        if len(saved) == 2 and saved[1]["data"]["content"] == shown:
            break
        time.sleep(0.1)  # the server saves when it notices the closed stream
    assert [r["type"] for r in saved] == ["human", "ai"]
    assert saved[1]["data"]["content"] == shown  # exactly, not a word more
    assert saved[1]["data"]["response_metadata"][INTERRUPTED] is True


def test_every_post_needs_the_csrf_token(
    alice: AbstractBaseUser, session_id: str
) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    for url, data in [
        ("/chat/", {}),
        (f"/chat/{session_id}/send/", {"message": "hi"}),
        (f"/chat/{session_id}/stream/", {"message": "hi"}),
        (f"/chat/{session_id}/rename/", {"title": "x"}),
        (f"/chat/{session_id}/delete/", {}),
    ]:
        assert client.post(url, data).status_code == 403, url
    info = store.get_session(session_id)
    assert info is not None and info.message_count == 0 and info.title == ""


@both_modes
def test_a_new_chat_whose_first_turn_fails_can_be_sent_to_again(
    alice_client: Client,
) -> None:
    session_id = new_chat(alice_client)
    with override_settings(CHATMEMORY_CHAT_MODEL=FAILING):
        body = body_of(
            alice_client.post(f"/chat/{session_id}/stream/", {"message": "hi"})
        )
    assert events(body)[-1][0] == "error"
    assert store.get_session(session_id) is None  # nothing stored
    assert alice_client.get(f"/chat/{session_id}/").status_code == 200
    body = body_of(alice_client.post(f"/chat/{session_id}/stream/", {"message": "hi"}))
    assert events(body)[-1][0] == "done"


# --- limits -----------------------------------------------------------------


@override_settings(CHATMEMORY_TURNS_PER_MINUTE=2)
@both_modes
def test_a_turn_past_the_limit_is_a_429_saying_when_to_retry(
    alice_client: Client, session_id: str
) -> None:
    for _ in range(2):
        response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
        assert events(body_of(response))[-1][0] == "done"
    response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert response.status_code == 429
    assert 55 <= int(response["Retry-After"]) <= 60
    ((name, message),) = events(body_of(response))
    assert name == "error"
    assert "2 messages in the last minute" in message
    assert "Try again in 1 minute" in message or "seconds" in message
    page = alice_client.post(f"/chat/{session_id}/send/", {"message": "q"})
    assert page.status_code == 429
    assert "in the last minute" in page.content.decode()
    assert "Retry-After" in page
    assert len(records(session_id)) == 4  # the refused turns saved nothing


@override_settings(CHATMEMORY_CONCURRENT_STREAMS=1)
@both_modes
def test_a_stream_holds_its_slot_until_it_ends(
    alice_client: Client, session_id: str
) -> None:
    first = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert first.status_code == 200
    content = iter(first.streaming_content)
    next(content)  # the stream is open, the model not done
    second = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert second.status_code == 429
    assert "1 reply being written" in events(body_of(second))[0][1]
    list(content)  # the first stream ends and gives its slot back
    third = alice_client.post(f"/chat/{session_id}/send/", {"message": "q"})
    assert third.status_code == 302
    assert (
        alice_client.post(f"/chat/{session_id}/send/", {"message": "q"}).status_code
        == 302
    )


@override_settings(CHATMEMORY_TOKENS_PER_DAY=50)
@both_modes
def test_tokens_per_day_and_staff_exemption(
    alice: AbstractBaseUser, alice_client: Client, session_id: str
) -> None:
    usage = {"input_tokens": 40, "output_tokens": 10, "total_tokens": 50}
    store.append_records(
        "spent-today",
        [{"type": "ai", "data": {"content": "x", "usage_metadata": usage}}],
        owner=views.owner_of_user(alice),
    )
    response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert response.status_code == 429
    assert "today's allowance of 50 tokens" in events(body_of(response))[0][1]
    alice.is_staff = True  # type: ignore[attr-defined]
    alice.save()
    response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert events(body_of(response))[-1][0] == "done"
    with override_settings(CHATMEMORY_QUOTA_EXEMPT_STAFF=False):
        assert (
            alice_client.post(
                f"/chat/{session_id}/stream/", {"message": "q"}
            ).status_code
            == 429
        )


@pytest.mark.django_db(transaction=True)
@override_settings(CHATMEMORY_CONCURRENT_STREAMS=1)
@both_modes
async def test_an_async_stream_gives_its_slot_back(
    alice: AbstractBaseUser, session_id: str
) -> None:
    client = AsyncClient()
    await client.aforce_login(alice)
    for _ in range(2):
        response = await client.post(f"/chat/{session_id}/stream/", {"message": "q"})
        body = b"".join([part async for part in response.streaming_content])
        assert events(body)[-1][0] == "done"


def test_wait_words() -> None:
    assert views._wait_words(3725) == "1 hour 2 minutes"
    assert views._wait_words(61) == "1 minute 1 second"
    assert views._wait_words(5) == "5 seconds"


# --- the sidebar, going back, times ------------------------------------------------


def test_the_chat_page_lists_my_chats_newest_first(
    alice_client: Client, alice: AbstractBaseUser, bob: AbstractBaseUser
) -> None:
    for name in ("older", "newer"):
        store.append_records(
            name,
            [{"type": "human", "data": {"content": f"<{name}>"}}],
            owner=owner_id(alice),
        )
        time.sleep(0.002)  # distinct activity times
    store.append_records(
        "bobs", [{"type": "human", "data": {"content": "Bob's"}}], owner=owner_id(bob)
    )
    html = alice_client.get("/chat/older/").content.decode()
    sidebar = html[html.index('id="cm-sidebar"') : html.index("</aside>")]
    assert sidebar.index("&lt;newer&gt;") < sidebar.index("&lt;older&gt;")
    assert 'aria-current="page">&lt;older&gt;' in sidebar
    assert "Bob" not in sidebar
    assert "All my chats" not in sidebar
    with override_settings():
        views.SIDEBAR_LENGTH, saved = 1, views.SIDEBAR_LENGTH
        try:
            html = alice_client.get("/chat/older/").content.decode()
        finally:
            views.SIDEBAR_LENGTH = saved
    sidebar = html[html.index('id="cm-sidebar"') : html.index("</aside>")]
    assert "All my chats" in sidebar
    # This chat is not among the most recent: its entry waits, hidden, for
    # its next reply to make it the most recent.
    assert sidebar.count("&lt;older&gt;</a>") == 1
    assert '<li data-title="&lt;older&gt;" class="cm-current" hidden>' in sidebar


def test_a_new_chat_waits_hidden_in_the_sidebar(alice_client: Client) -> None:
    session_id = new_chat(alice_client)
    html = alice_client.get(f"/chat/{session_id}/").content.decode()
    sidebar = html[html.index('id="cm-sidebar"') : html.index("</aside>")]
    assert '<li data-title="" class="cm-current" hidden>' in sidebar
    assert (
        f'href="/chat/{session_id}/" aria-current="page">Untitled chat</a>' in sidebar
    )
    stream_turn(alice_client, session_id, message="First words")
    html = alice_client.get(f"/chat/{session_id}/").content.decode()
    sidebar = html[html.index('id="cm-sidebar"') : html.index("</aside>")]
    listed = sidebar[sidebar.index('id="cm-chat-list"') :]
    assert listed.index('<li data-title="First words" class="cm-current">') < (
        listed.index("</li>")
    )


def test_rename_and_delete_go_back_where_the_form_says(
    alice_client: Client, session_id: str
) -> None:
    store.create_session("other", owner=store.get_session(session_id).owner)  # type: ignore[union-attr]
    here = f"/chat/{session_id}/"
    response = alice_client.post(
        "/chat/other/rename/", {"title": "Renamed", "next": here}
    )
    assert response.status_code == 302 and response["Location"] == here
    assert store.get_session("other").title == "Renamed"  # type: ignore[union-attr]
    # Another site is never a target.
    response = alice_client.post(
        "/chat/other/rename/", {"title": "Again", "next": "https://evil.example/"}
    )
    assert response["Location"] == "/chat/other/"
    response = alice_client.post("/chat/other/delete/", {"next": here})
    assert response.status_code == 302 and response["Location"] == here
    assert store.get_session("other") is None
    response = alice_client.post(f"{here}delete/", {"next": "//evil.example/"})
    assert response["Location"] == "/chat/"


def test_every_message_shows_when_it_was_stored(
    alice_client: Client, session_id: str
) -> None:
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "timed"}, "at": 1_700_000_000_000},
            {"type": "ai", "data": {"content": "untimed"}},
            {"type": "ai", "data": {"content": "odd"}, "at": "yesterday"},
        ],
    )
    html = alice_client.get(f"/chat/{session_id}/").content.decode()
    assert html.count('class="cm-time"') == 1
    stamp = html.split('class="cm-time" datetime="')[1].split('"')[0]
    assert datetime.fromisoformat(stamp) == datetime(
        2023, 11, 14, 22, 13, 20, tzinfo=UTC
    )


def test_the_javascript_catalog_is_served(alice_client: Client) -> None:
    response = alice_client.get(reverse("chatmemory:jsi18n"))
    assert response.status_code == 200
    assert b"django.gettext" in response.content
    with translation.override("es"):
        spanish = alice_client.get(reverse("chatmemory:jsi18n")).content.decode()
    assert '"Copy this reply": "Copiar esta respuesta"' in spanish


# --- regenerate, edit, continue; Stop saves what the page showed -------------------

SCRIPTED = "tests.chat_models.ScriptedModel"


def scripted(reply: str) -> Any:
    return override_settings(
        CHATMEMORY_CHAT_MODEL={"factory": SCRIPTED, "reply": reply, "chunk_size": 3}
    )


def stream_turn(client: Client, session_id: str, **data: str) -> list[tuple[str, str]]:
    response = client.post(f"/chat/{session_id}/stream/", data)
    return events(body_of(response))


def contents(session_id: str) -> list[Any]:
    return [r["data"]["content"] for r in records(session_id)]


@both_modes
def test_regenerate_replaces_the_last_reply_only(
    alice_client: Client, session_id: str
) -> None:
    with scripted("first answer"):
        stream_turn(alice_client, session_id, message="q1")
        stream_turn(alice_client, session_id, message="q2")
    question_before = records(session_id)[2]
    with scripted("a better answer"):
        got = stream_turn(
            alice_client, session_id, message="ignored", action="regenerate"
        )
    # Only a reply was saved: it names nothing (the chat keeps "q1").
    assert got[-1] == ("done", json.dumps({"message_count": 4, "title": ""}))
    assert contents(session_id) == ["q1", "first answer", "q2", "a better answer"]
    assert records(session_id)[2] == question_before  # the question, as stored


@both_modes
def test_edit_replaces_the_last_question_and_reply(
    alice_client: Client, session_id: str
) -> None:
    with scripted("answer"):
        stream_turn(alice_client, session_id, message="q1")
        stream_turn(alice_client, session_id, message="q2 with a typo")
        got = stream_turn(alice_client, session_id, message="q2 fixed", action="edit")
    assert got[-1][0] == "done"
    assert contents(session_id) == ["q1", "answer", "q2 fixed", "answer"]
    # The history the model saw had the old turn taken out.
    with override_settings(
        CHATMEMORY_CHAT_MODEL={"factory": "tests.chat_models.HistoryModel"}
    ):
        got = stream_turn(alice_client, session_id, message="again", action="edit")
    said = "".join(data for name, data in got if name == "token")
    assert "q1 | again" in said and "typo" not in said and "fixed" not in said


def test_continue_extends_a_stopped_reply(
    alice_client: Client, session_id: str
) -> None:
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "tell me"}},
            {
                "type": "ai",
                "data": {
                    "content": "Once upon",
                    "response_metadata": {"interrupted": True},
                },
            },
        ],
    )
    with override_settings(
        CHATMEMORY_CHAT_MODEL={"factory": "tests.chat_models.HistoryModel"}
    ):
        got = stream_turn(
            alice_client, session_id, message="tell me", action="continue"
        )
    tokens = "".join(data for name, data in got if name == "token")
    saved = records(session_id)
    assert len(saved) == 2 and saved[0]["data"]["content"] == "tell me"
    assert saved[1]["data"]["content"] == "Once upon" + tokens
    assert "interrupted" not in saved[1]["data"].get("response_metadata", {})
    # The model saw the stopped reply and was asked to go on.
    assert CONTINUE_PROMPT in tokens and "tell me" in tokens


@both_modes
def test_a_rewrite_needs_a_last_turn_to_redo(
    alice_client: Client, session_id: str
) -> None:
    got = stream_turn(alice_client, session_id, message="x", action="regenerate")
    assert [name for name, _ in got] == ["error"]
    assert "not a reply that can be redone" in got[-1][1]
    response = alice_client.post(
        f"/chat/{session_id}/stream/", {"message": "x", "action": "rewrite-all"}
    )
    assert response.status_code == 400
    response = alice_client.post(
        f"/chat/{session_id}/stream/", {"message": "x", "turn": "not-an-id"}
    )
    assert response.status_code == 400
    assert records(session_id) == []


MALFORMED_TURNS = {
    "a question without content": (
        {"type": "human", "data": {}},
        {"type": "ai", "data": {"content": "answer"}},
    ),
    "a question whose content is a number": (
        {"type": "human", "data": {"content": 5}},
        {"type": "ai", "data": {"content": "answer"}},
    ),
    "a reply whose content is a number": (
        {"type": "human", "data": {"content": "question"}},
        {"type": "ai", "data": {"content": 5}},
    ),
    "a reply with tool calls that are not a list": (
        {"type": "human", "data": {"content": "question"}},
        {"type": "ai", "data": {"content": "answer", "tool_calls": "bad"}},
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED_TURNS))
@pytest.mark.parametrize("action", ["regenerate", "continue", "edit"])
def test_a_rewrite_of_a_malformed_last_turn_is_an_error_or_works(
    alice_client: Client, session_id: str, case: str, action: str
) -> None:
    question, reply = MALFORMED_TURNS[case]
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "q1"}},
            {"type": "ai", "data": {"content": "a1"}},
            question,
            reply,
        ],
    )
    before = store.read_records(session_id)
    with scripted("new answer"):
        got = stream_turn(alice_client, session_id, message="edited", action=action)
    assert got[-1][0] in ("done", "error"), got  # never a cut stream
    # Which of the two a model can take (the malformed one cannot).
    usable = {"human": "question" not in case, "ai": "reply" not in case}
    needs = {"regenerate": ["human"], "continue": ["human", "ai"], "edit": []}
    if not all(usable[kind] for kind in needs[action]):
        # The turn it needs cannot be read: the user is told, nothing is lost.
        assert got[-1] == ("error", str(CANNOT_REDO))
        assert store.read_records(session_id) == before
    elif action == "edit":
        assert contents(session_id) == ["q1", "a1", "edited", "new answer"]
    elif action == "regenerate":
        assert contents(session_id) == ["q1", "a1", "question", "new answer"]
    else:
        assert contents(session_id) == ["q1", "a1", "question", "answernew answer"]


def test_a_rewrite_of_a_changed_chat_saves_nothing(
    alice_client: Client, session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with scripted("answer"):
        stream_turn(alice_client, session_id, message="q1")
    real = store.read_snapshot

    def then_another_tab_writes(sid: str, count: int = 0) -> store.Snapshot:
        snapshot = real(sid, count)
        store.append_records(sid, [{"type": "human", "data": {"content": "tab 2"}}])
        return snapshot

    monkeypatch.setattr(store, "read_snapshot", then_another_tab_writes)
    with scripted("new answer"):
        got = stream_turn(alice_client, session_id, message="q1", action="regenerate")
    assert got[-1][0] == "error" and "another tab" in got[-1][1]
    assert contents(session_id) == ["q1", "answer", "tab 2"]


@both_modes
def test_stop_saves_what_the_page_showed(alice_client: Client, session_id: str) -> None:
    turn = uuid.uuid4().hex
    with scripted("The whole reply, which the user never saw in full."):
        response = alice_client.post(
            f"/chat/{session_id}/stream/", {"message": "q", "turn": turn}
        )
        stream = iter(response.streaming_content)  # type: ignore[arg-type]
        for _ in range(4):  # the opening comment and three tokens
            next(stream)
        response.close()  # the page stopped: the server saves what it had
    saved = records(session_id)
    assert saved[1]["data"]["response_metadata"]["interrupted"] is True
    assert turn_of(saved[1]) == turn
    answer = alice_client.post(
        f"/chat/{session_id}/stop/", {"turn": turn, "shown": "The whole"}
    )
    assert answer.status_code == 204
    assert contents(session_id) == ["q", "The whole"]
    # Bad or foreign requests change nothing.
    assert alice_client.post(f"/chat/{session_id}/stop/", {}).status_code == 400
    assert alice_client.get(f"/chat/{session_id}/stop/").status_code == 302


@both_modes
def test_stop_reported_before_the_save_is_applied(
    alice_client: Client, session_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "STOP_WAIT", 0.2)  # the turn is not even started
    turn = uuid.uuid4().hex
    answer = alice_client.post(
        f"/chat/{session_id}/stop/", {"turn": turn, "shown": "The wh"}
    )
    assert answer.status_code == 204
    with scripted("The whole reply."):
        response = alice_client.post(
            f"/chat/{session_id}/stream/", {"message": "q", "turn": turn}
        )
        stream = iter(response.streaming_content)  # type: ignore[arg-type]
        for _ in range(4):
            next(stream)
        response.close()
    assert contents(session_id) == ["q", "The wh"]


def test_another_user_cannot_stop_my_reply(bob_client: Client, session_id: str) -> None:
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "q"}},
            {"type": "ai", "data": {"content": "mine"}, "turn": "a" * 32},
        ],
    )
    answer = bob_client.post(
        f"/chat/{session_id}/stop/", {"turn": "a" * 32, "shown": "m"}
    )
    assert answer.status_code == 404
    assert contents(session_id) == ["q", "mine"]


def test_stop_waits_for_the_stopped_turn_to_be_saved(
    alice_client: Client, session_id: str
) -> None:
    turn = uuid.uuid4().hex
    saver = threading.Timer(
        0.3,
        store.append_records,
        [
            session_id,
            [
                {"type": "human", "data": {"content": "q"}},
                {"type": "ai", "data": {"content": "late and long"}, "turn": turn},
            ],
        ],
    )
    saver.start()
    answer = alice_client.post(
        f"/chat/{session_id}/stop/", {"turn": turn, "shown": "late"}
    )
    saver.join()
    assert answer.status_code == 204
    # By the time the page hears back, the reply is saved as it was shown.
    assert contents(session_id) == ["q", "late"]


# --- tool calls; searching all my chats -------------------------------------------


def test_a_reply_of_only_tool_calls_shows_them(
    alice_client: Client, session_id: str
) -> None:
    arguments = {"city": "<Paris>", "days": 2}
    store.append_records(
        session_id,
        [
            {"type": "human", "data": {"content": "Weather?"}},
            {
                "type": "ai",
                "data": {
                    "content": "",
                    "tool_calls": [
                        {"name": "get_weather", "args": arguments, "id": "c1"},
                        {"name": "<clock>", "args": {}, "id": "c2"},
                    ],
                },
            },
        ],
    )
    html = alice_client.get(f"/chat/{session_id}/").content.decode()
    shown = json.dumps(arguments, sort_keys=True).replace('"', "&quot;")
    shown = shown.replace("<", "&lt;").replace(">", "&gt;")
    assert (
        f"<li>Called tool <code>get_weather</code> with <code>{shown}</code></li>"
        in html
    )
    assert (
        "<li>Called tool <code>&lt;clock&gt;</code> with <code>{}</code></li>" in html
    )
    with translation.override("es"):
        spanish = alice_client.get(f"/chat/{session_id}/").content.decode()
    assert "Llamó a la herramienta <code>get_weather</code> con" in spanish


def search(client: Client, **query: Any) -> Any:
    return client.get(reverse("chatmemory:search"), query)


def test_search_finds_any_of_my_chats_by_title(
    alice_client: Client, alice: AbstractBaseUser, bob: AbstractBaseUser
) -> None:
    store.create_session("needle-old", owner=owner_id(alice), title="An old NEEDLE")
    time.sleep(0.002)
    for number in range(views.SIDEBAR_LENGTH + 5):
        store.create_session(
            f"hay{number}", owner=owner_id(alice), title=f"Hay {number}"
        )
    store.create_session("bobs", owner=owner_id(bob), title="Bob's needle")
    page = alice_client.get("/chat/hay0/").content.decode()
    assert "An old NEEDLE" not in page  # past the sidebar's most recent chats
    response = search(alice_client, q="  needle OLD ")
    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"
    assert response.json() == {
        "results": [{"title": "An old NEEDLE", "url": "/chat/needle-old/"}],
        "found": 1,
        "searched": views.SIDEBAR_LENGTH + 6,
        "total": views.SIDEBAR_LENGTH + 6,
        "next": None,
    }
    assert search(alice_client, q="nothing like it").json()["results"] == []


def test_search_reads_a_bounded_window_per_request(
    alice_client: Client, alice: AbstractBaseUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(views, "SEARCH_SCANNED", 10)
    monkeypatch.setattr(views, "SEARCH_RESULTS", 3)
    for number in range(25):
        title = f"chat {number}" + (" match" if number % 2 == 0 else "")
        store.create_session(f"c{number:02}", owner=owner_id(alice), title=title)
        time.sleep(0.002)
    windows = []
    real = store.search_titles

    def spy(words: list[str], **options: Any) -> store.TitleMatches:
        windows.append((options["start"], options["size"]))
        return real(words, **options)

    monkeypatch.setattr(store, "search_titles", spy)
    first = search(alice_client, q="MATCH chat").json()
    # The ten most recent (c24..c15) hold five matches; the newest three listed.
    assert [r["title"] for r in first["results"]] == [
        "chat 24 match",
        "chat 22 match",
        "chat 20 match",
    ]
    assert (first["found"], first["searched"], first["total"]) == (5, 10, 25)
    assert first["next"] == 10 and windows == [(0, 10)]
    middle = search(alice_client, q="match", **{"from": 10}).json()
    assert [r["title"] for r in middle["results"]] == [
        "chat 14 match",
        "chat 12 match",
        "chat 10 match",
    ]
    assert (middle["found"], middle["searched"], middle["next"]) == (5, 20, 20)
    last = search(alice_client, q="match", **{"from": 20}).json()
    assert [r["title"] for r in last["results"]] == [
        "chat 4 match",
        "chat 2 match",
        "chat 0 match",
    ]
    assert (last["found"], last["searched"], last["next"]) == (3, 25, None)
    assert windows[1:] == [(10, 10), (20, 10)]
    # Each word anywhere in the title, in any order.
    words = search(alice_client, q="match 2").json()["results"]
    assert [r["title"] for r in words] == [
        "chat 24 match",
        "chat 22 match",
        "chat 20 match",
    ]


def test_search_never_lists_a_chat_made_again_by_someone_else(
    alice_client: Client,
    alice: AbstractBaseUser,
    bob: AbstractBaseUser,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store.create_session("reused", owner=owner_id(alice), title="Secret plans")
    real = store.search_titles

    def then_made_again(words: list[str], **options: Any) -> store.TitleMatches:
        window = real(words, **options)
        # Between the title read and the listing: deleted, made again by Bob.
        store.delete_session("reused")
        store.create_session("reused", owner=owner_id(bob), title="Bob's secrets")
        return window

    monkeypatch.setattr(store, "search_titles", then_made_again)
    answer = search(alice_client, q="secret").json()
    assert answer["results"] == [] and answer["found"] == 0
    assert "Bob" not in json.dumps(answer)


def test_search_refuses_what_it_cannot_do(alice_client: Client) -> None:
    for query, status in [
        ({"q": ""}, 400),
        ({"q": "   "}, 400),
        ({"q": "x" * (views.SEARCH_LENGTH + 1)}, 400),
        ({"q": "x", "from": "-1"}, 400),
        ({"q": "x", "from": "nope"}, 400),
        ({"q": "x", "from": str(views.MAX_OFFSET + 1)}, 400),
    ]:
        response = search(alice_client, **query)
        assert response.status_code == status, query
        assert response.json()["error"], query
    assert "at most 200 characters" in search(alice_client, q="x" * 201).json()["error"]
    anonymous = Client().get(reverse("chatmemory:search"), {"q": "x"})
    assert anonymous.status_code == 302
    with override_settings(CACHES=DOWN, CHATMEMORY_CACHE_ALIAS="down"):
        down = search(alice_client, q="x")
    assert down.status_code == 503 and down.json() == {"error": str(STORE_DOWN)}


@override_settings(CHATMEMORY_CONCURRENT_STREAMS=1)
def test_a_turn_on_someone_elses_chat_gives_its_slot_back(
    alice_client: Client, bob: AbstractBaseUser, session_id: str
) -> None:
    theirs = uuid.uuid4().hex
    assert store.create_session(theirs, owner=owner_id(bob))
    refused = alice_client.post(f"/chat/{theirs}/stream/", {"message": "q"})
    assert refused.status_code == 404
    # the slot the read counted is free again: her own turn runs
    response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert events(body_of(response))[-1][0] == "done"


@override_settings(CHATMEMORY_CONCURRENT_STREAMS=1)
def test_a_stream_that_finds_its_chat_busy_gives_its_slot_back(
    alice_client: Client, session_id: str
) -> None:
    assert store.lock_turn(session_id, "another", seconds=30)
    busy = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert busy.status_code == 200
    assert events(body_of(busy))[-1][0] == "error"  # the turn in progress
    store.unlock_turn(session_id, "another")
    response = alice_client.post(f"/chat/{session_id}/stream/", {"message": "q"})
    assert events(body_of(response))[-1][0] == "done"
