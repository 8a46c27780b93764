"""Tests of chatmemory.admin: the Redis-backed admin pages for chat sessions."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.conf import settings
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import Client, override_settings
from django.urls import reverse
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    messages_from_dict,
)

from chatmemory import admin as chat_admin
from chatmemory import store
from chatmemory.exceptions import StoreUnavailable
from chatmemory.history import DjangoRedisChatMessageHistory
from chatmemory.models import ChatSession
from tests.redis_server import free_port

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

pytestmark = pytest.mark.django_db

LIST_URL = "/admin/chatmemory/chatsession/"


def transcript_url(session_id: str) -> str:
    return reverse("admin:chatmemory_chatsession_change", args=[quote(session_id)])


def export_url(session_id: str) -> str:
    return reverse("admin:chatmemory_chatsession_export", args=[quote(session_id)])


def delete_url(session_id: str) -> str:
    return reverse("admin:chatmemory_chatsession_delete", args=[quote(session_id)])


def text(response: Response) -> str:
    return response.content.decode()


def make_user(
    username: str, *perms: str, staff: bool = True, superuser: bool = False
) -> User:
    user = User.objects.create_user(
        username,
        email=f"{username}@example.com",
        password="pw",
        is_staff=staff,
        is_superuser=superuser,
    )
    if perms:
        content_type = ContentType.objects.get_for_model(ChatSession)
        user.user_permissions.set(
            Permission.objects.filter(content_type=content_type, codename__in=perms)
        )
    return user


def client_for(user: User | None) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


@pytest.fixture
def admin_user() -> User:
    return make_user("root", staff=True, superuser=True)


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    return client_for(admin_user)


def chat(session_id: str, *messages: BaseMessage, owner: User | None = None) -> None:
    history = DjangoRedisChatMessageHistory(
        session_id, owner=None if owner is None else owner.pk
    )
    history.add_messages(list(messages))


def rows(response: Response) -> list[str]:
    """The session ids listed on a list page, in order."""
    return [row.info.session_id for row in response.context["rows"]]


def set_activity(redis_client: redis.Redis, session_id: str, when: datetime) -> None:
    """Move a session's last activity back in time, in its meta and indexes."""
    millis = int(when.timestamp() * 1000)
    meta = store.meta_key(session_id)
    redis_client.hset(meta, "updated", millis)
    redis_client.zadd(store.sessions_key(), {session_id: millis})
    owner: bytes | None = redis_client.hget(meta, "owner")  # type: ignore[assignment]
    if owner is not None:
        redis_client.zadd(store.owner_key(owner.decode()), {session_id: millis})


# --- permissions -------------------------------------------------------------

ROLES: dict[str, tuple[tuple[str, ...], bool, bool]] = {
    # role: (permissions, is_staff, is_superuser)
    "anonymous": ((), False, False),
    "staff": ((), True, False),
    "viewer": (("view_chatsession",), True, False),
    "deleter": (("view_chatsession", "delete_chatsession"), True, False),
    "superuser": ((), True, True),
}
CAN_VIEW = {"viewer", "deleter", "superuser"}
CAN_DELETE = {"deleter", "superuser"}

PAGES: dict[str, Callable[[Client, str], Response]] = {
    "list": lambda c, sid: c.get(LIST_URL),
    "transcript": lambda c, sid: c.get(transcript_url(sid)),
    "export": lambda c, sid: c.get(export_url(sid)),
    "delete confirm": lambda c, sid: c.get(delete_url(sid)),
    "delete": lambda c, sid: c.post(delete_url(sid), {"post": "yes"}),
    "bulk confirm": lambda c, sid: c.post(
        LIST_URL, {"action": "delete_selected", "_selected_action": [sid]}
    ),
    "bulk delete": lambda c, sid: c.post(
        LIST_URL,
        {"action": "delete_selected", "_selected_action": [sid], "post": "yes"},
    ),
}
DELETING = {"delete confirm", "delete", "bulk confirm", "bulk delete"}


@pytest.mark.parametrize("page", list(PAGES))
@pytest.mark.parametrize("role", list(ROLES))
def test_permission_matrix(role: str, page: str) -> None:
    perms, staff, superuser = ROLES[role]
    user = (
        None
        if role == "anonymous"
        else make_user(role, *perms, staff=staff, superuser=superuser)
    )
    chat("matrix-1", HumanMessage("hello"), AIMessage("hi"))
    response = PAGES[page](client_for(user), "matrix-1")
    allowed = role in (CAN_DELETE if page in DELETING else CAN_VIEW)

    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    elif not allowed:
        assert response.status_code == 403
    elif page in ("delete", "bulk delete"):
        assert response.status_code == 302
    else:
        assert response.status_code == 200

    still_there = store.get_session("matrix-1") is not None
    assert still_there is not (allowed and page in ("delete", "bulk delete"))


@pytest.mark.parametrize("role", list(ROLES))
def test_admin_index_shows_the_entry_only_to_those_allowed(role: str) -> None:
    perms, staff, superuser = ROLES[role]
    user = make_user(role, *perms, staff=staff, superuser=superuser)
    response = client_for(user).get("/admin/")
    if not staff:
        assert response.status_code == 302
        return
    assert response.status_code == 200
    assert (LIST_URL in text(response)) is (role in CAN_VIEW)
    assert ("Chat sessions" in text(response)) is (role in CAN_VIEW)
    # never an "Add" link: sessions are created by chatting
    assert "/admin/chatmemory/chatsession/add/" not in text(response)


def test_viewer_sees_no_delete_controls() -> None:
    chat("view-only", HumanMessage("hello"))
    client = client_for(make_user("viewer", "view_chatsession"))
    listing = text(client.get(LIST_URL))
    assert "view-only" in listing
    assert "delete_selected" not in listing
    assert 'name="_selected_action"' not in listing
    transcript = text(client.get(transcript_url("view-only")))
    assert delete_url("view-only") not in transcript
    assert export_url("view-only") in transcript


def test_add_and_history_pages_do_not_exist(admin_client: Client) -> None:
    chat("a", HumanMessage("x"))
    # (bare object URLs redirect to the transcript, which has no such session)
    assert admin_client.get(LIST_URL + "add/", follow=True).status_code == 404
    assert admin_client.get(LIST_URL + "a/history/", follow=True).status_code == 404


# --- the list ------------------------------------------------------------------


def test_list_newest_activity_first_with_columns(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    alice = make_user("alice")
    chat("older", HumanMessage("first question"), owner=alice)
    chat("newer", HumanMessage("second question"), AIMessage("answer"))
    set_activity(redis_client, "older", datetime.now(UTC) - timedelta(hours=2))

    response = admin_client.get(LIST_URL)
    assert response.status_code == 200
    assert rows(response) == ["newer", "older"]
    page = text(response)
    assert f'href="{transcript_url("newer")}"' in page
    assert "first question" in page and "second question" in page
    # the owner links to the user's admin page; no owner shows a dash
    user_url = reverse("admin:auth_user_change", args=[alice.pk])
    assert f'<a href="{user_url}">alice</a>' in page
    newer_row = page[page.index(transcript_url("newer")) :]
    newer_row = newer_row[: newer_row.index("</tr>")]
    assert '<td class="field-owner">—</td>' in newer_row
    assert '<td class="field-message_count">2</td>' in newer_row
    assert "2 chat sessions" in page
    # native look: the admin's base template, breadcrumbs, the app's section
    assert '<ol class="breadcrumbs">' in page
    assert 'href="/admin/chatmemory/"' in page
    assert "admin/css/base.css" in page
    assert "dark_mode.css" in page
    # no TTL configured: no "time left" column
    assert "Time left" not in page


def test_owner_without_the_users_admin_permission_is_plain_text() -> None:
    alice = make_user("alice")
    chat("mine", HumanMessage("x"), owner=alice)
    client = client_for(make_user("viewer", "view_chatsession"))
    page = text(client.get(LIST_URL))
    assert '<td class="field-owner">alice</td>' in page
    assert reverse("admin:auth_user_change", args=[alice.pk]) not in page


def test_owner_that_is_no_user(admin_client: Client) -> None:
    chat("orphan", HumanMessage("x"))
    store.append_records("orphan2", [{"type": "human", "data": {"content": "x"}}])
    store.create_session("by-id", owner="999999")
    store.create_session("by-name", owner="not-a-pk")
    page = text(admin_client.get(LIST_URL))
    assert "#999999 (no such user)" in page
    assert "#not-a-pk (no such user)" in page


@override_settings(CHATMEMORY_TTL=3600)
def test_time_left_column_with_a_ttl(admin_client: Client) -> None:
    chat("short-lived", HumanMessage("x"))
    response = admin_client.get(LIST_URL)
    page = text(response)
    assert "Time left" in page
    assert response.context["rows"][0].expires_at is not None
    assert "59\xa0minutes" in page or "1\xa0hour" in page


def test_sessions_created_from_code_are_listed(admin_client: Client) -> None:
    history = DjangoRedisChatMessageHistory("foo")
    history.add_user_message("hi!")
    history.add_ai_message("whats up?")
    response = admin_client.get(LIST_URL)
    assert rows(response) == ["foo"]
    assert "hi!" in text(response)


def test_empty_list(admin_client: Client) -> None:
    page = text(admin_client.get(LIST_URL))
    assert "No chat sessions yet." in page
    assert "0 chat sessions" in page


@override_settings(CHATMEMORY_SESSIONS_PER_PAGE=3)
def test_pagination(admin_client: Client, redis_client: redis.Redis) -> None:
    now = datetime.now(UTC)
    for i in range(8):
        chat(f"s{i}", HumanMessage(f"q{i}"))
        set_activity(redis_client, f"s{i}", now - timedelta(minutes=i))
    seen = []
    for number in (1, 2, 3):
        response = admin_client.get(LIST_URL, {"p": number})
        seen.append(rows(response))
        assert response.context["total"] == 8
    assert seen == [["s0", "s1", "s2"], ["s3", "s4", "s5"], ["s6", "s7"]]
    page = text(admin_client.get(LIST_URL, {"p": 2}))
    assert 'href="?p=3"' in page and 'href="?p=1"' in page
    assert 'aria-current="page">2</a>' in page
    # out of range or nonsense page numbers do not fail
    assert rows(admin_client.get(LIST_URL, {"p": 99})) == []
    assert rows(admin_client.get(LIST_URL, {"p": "x"})) == ["s0", "s1", "s2"]
    assert rows(admin_client.get(LIST_URL, {"p": "-4"})) == ["s0", "s1", "s2"]


# --- search and filters ---------------------------------------------------------


@pytest.fixture
def searchable(redis_client: redis.Redis) -> dict[str, User]:
    alice = make_user("alice")
    bob = make_user("bob")
    now = datetime.now(UTC)
    sessions = [
        ("support-1", alice, 1),
        ("support-10", bob, 2),
        ("support-2", None, 3),
        ("sales-1", alice, 4),
        ("alice-notes", bob, 5),
        ("other", None, 6),
    ]
    for sid, owner, minutes in sessions:
        chat(sid, HumanMessage(f"about {sid}"), owner=owner)
        set_activity(redis_client, sid, now - timedelta(minutes=minutes))
    return {"alice": alice, "bob": bob}


def test_search_exact_id(admin_client: Client, searchable: dict[str, User]) -> None:
    response = admin_client.get(LIST_URL, {"q": "support-1"})
    # the exact id first, then the other ids starting with it
    assert rows(response) == ["support-1", "support-10"]


def test_search_prefix(admin_client: Client, searchable: dict[str, User]) -> None:
    response = admin_client.get(LIST_URL, {"q": "support-"})
    assert rows(response) == ["support-1", "support-10", "support-2"]
    assert rows(admin_client.get(LIST_URL, {"q": "nothing"})) == []
    assert "No chat session matches." in text(admin_client.get(LIST_URL, {"q": "zz"}))


def test_search_by_owner_username(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    response = admin_client.get(LIST_URL, {"q": "alice"})
    # alice's sessions by activity, then the ids starting with "alice"
    assert rows(response) == ["support-1", "sales-1", "alice-notes"]
    # usernames match in any case; session ids only as written
    assert rows(admin_client.get(LIST_URL, {"q": "ALICE"})) == ["support-1", "sales-1"]


def test_search_by_owner_email(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    response = admin_client.get(LIST_URL, {"q": "bob@example.com"})
    assert rows(response) == ["support-10", "alice-notes"]


def test_search_with_too_long_query(admin_client: Client) -> None:
    chat("x", HumanMessage("x"))
    response = admin_client.get(LIST_URL, {"q": "x" * 500})
    assert response.status_code == 200
    assert rows(response) == []


@override_settings(CHATMEMORY_SESSIONS_PER_PAGE=2)
def test_search_pages_through_every_source(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    pages = [rows(admin_client.get(LIST_URL, {"q": "alice", "p": n})) for n in (1, 2)]
    assert pages == [["support-1", "sales-1"], ["alice-notes"]]


def test_filter_by_owner(admin_client: Client, searchable: dict[str, User]) -> None:
    alice = searchable["alice"]
    response = admin_client.get(LIST_URL, {"owner": str(alice.pk)})
    assert rows(response) == ["support-1", "sales-1"]
    choices = response.context["owner_choices"]
    assert [label for label, _, _ in choices] == ["All", "alice", "bob"]
    assert [selected for _, _, selected in choices] == [False, True, False]
    page = text(response)
    assert "Clear all filters" in page
    assert f'href="?owner={alice.pk}"' in page


def test_filter_by_owner_combined_with_search(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    bob = searchable["bob"]
    response = admin_client.get(LIST_URL, {"q": "support-", "owner": str(bob.pk)})
    assert rows(response) == ["support-10"]
    response = admin_client.get(LIST_URL, {"q": "alice", "owner": str(bob.pk)})
    assert rows(response) == ["alice-notes"]
    # the search form keeps the filters
    assert f'<input type="hidden" name="owner" value="{bob.pk}">' in text(response)


def test_filter_by_last_activity(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    now = datetime.now(UTC)
    ages = {
        "today": timedelta(0),
        "week": timedelta(days=3),
        "month": timedelta(days=20),
    }
    ages["ancient"] = timedelta(days=90)
    for sid, age in ages.items():
        chat(sid, HumanMessage(sid))
        set_activity(redis_client, sid, now - age)
    listed = {
        choice: rows(admin_client.get(LIST_URL, {"active": choice}))
        for choice in ("today", "7d", "30d", "", "bogus")
    }
    assert listed["today"] == ["today"]
    assert listed["7d"] == ["today", "week"]
    assert listed["30d"] == ["today", "week", "month"]
    assert listed[""] == listed["bogus"] == ["today", "week", "month", "ancient"]
    # combined with a search (filtered on the page) and with an owner
    assert rows(admin_client.get(LIST_URL, {"q": "week", "active": "today"})) == []
    assert rows(admin_client.get(LIST_URL, {"q": "mon", "active": "30d"})) == ["month"]
    choices = admin_client.get(LIST_URL, {"active": "7d"}).context["activity_choices"]
    assert [(label, selected) for label, _, selected in choices] == [
        ("Any date", False),
        ("Today", False),
        ("Past 7 days", True),
        ("Past 30 days", False),
    ]


def test_filter_by_owner_and_activity(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    alice = make_user("alice")
    chat("recent", HumanMessage("x"), owner=alice)
    chat("old", HumanMessage("x"), owner=alice)
    set_activity(redis_client, "old", datetime.now(UTC) - timedelta(days=40))
    params = {"owner": str(alice.pk), "active": "30d"}
    assert rows(admin_client.get(LIST_URL, params)) == ["recent"]
    params["q"] = "alice"
    assert rows(admin_client.get(LIST_URL, params)) == ["recent"]


def test_owner_filter_names_a_selected_unknown_owner(admin_client: Client) -> None:
    response = admin_client.get(LIST_URL, {"owner": "4242"})
    assert rows(response) == []
    labels = [label for label, _, _ in response.context["owner_choices"]]
    assert labels == ["All", "#4242 (no such user)"]


# --- transcript -------------------------------------------------------------------


def rich_conversation() -> list[BaseMessage]:
    return [
        SystemMessage("You are terse."),
        HumanMessage("What's the weather in Paris?", id="msg-1"),
        AIMessage(
            "",
            tool_calls=[
                {
                    "name": "get_weather",
                    "args": {"city": "Paris", "unit": "celsius"},
                    "id": "call_42",
                    "type": "tool_call",
                }
            ],
            usage_metadata={
                "input_tokens": 12,
                "output_tokens": 7,
                "total_tokens": 19,
                "input_token_details": {"cache_read": 3},
            },
            response_metadata={"model_name": "demo-model", "finish_reason": "tool"},
        ),
        ToolMessage("18 degrees, sunny", tool_call_id="call_42", name="get_weather"),
        AIMessage(
            [{"type": "text", "text": "It is sunny."}, {"type": "image", "url": "x"}],
            additional_kwargs={"refusal": None, "custom": "value"},
        ),
        HumanMessage("long " * 400),
    ]


def test_a_sessions_bare_url_redirects_to_its_transcript(admin_client: Client) -> None:
    chat("a/b c", HumanMessage("hi"))
    bare = transcript_url("a/b c").removesuffix("change/")

    response = admin_client.get(bare, follow=True)

    assert response.redirect_chain == [(transcript_url("a/b c"), 302)]
    assert response.status_code == 200
    assert "<code>a/b c</code>" in text(response)


def test_transcript_shows_every_message_readably(admin_client: Client) -> None:
    alice = make_user("alice")
    chat("weather", *rich_conversation(), owner=alice)
    response = admin_client.get(transcript_url("weather"))
    assert response.status_code == 200
    page = text(response)
    # session metadata on top
    head = page[: page.index('<ol class="chatmemory-transcript">')]
    assert "<code>weather</code>" in head
    assert "What&#x27;s the weather in Paris?" in head  # the title
    assert "<dt>Messages</dt><dd>6</dd>" in head
    assert reverse("admin:auth_user_change", args=[alice.pk]) in head
    # every message with its role
    entries = response.context["entries"]
    assert [m.role for m in entries] == ["System", "Human", "AI", "Tool", "AI", "Human"]
    assert page.count('<li class="') >= 6
    assert "You are terse." in page
    # the tool call with its arguments, the tool result, the usage
    assert "Tool call: get_weather" in page
    assert "call_42" in page
    assert "&quot;city&quot;: &quot;Paris&quot;" in page
    assert "result of tool call call_42" in page
    assert "18 degrees, sunny" in page
    assert "input tokens: 12" in page and "total tokens: 19" in page
    assert "input token details: cache read 3" in page
    assert "demo-model" in page  # under the message's details
    # content blocks: text shown as text, other blocks as JSON
    assert "It is sunny." in page
    assert "&quot;image&quot;" in page
    # long content collapsible
    assert entries[5].collapsed and not entries[1].collapsed
    assert "<details><summary>long long" in page
    assert "msg-1" in page
    # breadcrumbs back to the list, export and delete buttons
    assert f'<a href="{LIST_URL}">Chat sessions</a>' in page
    assert export_url("weather") in page
    assert delete_url("weather") in page


def test_transcript_of_an_empty_session(admin_client: Client) -> None:
    store.create_session("empty", title="Nothing yet")
    page = text(admin_client.get(transcript_url("empty")))
    assert "This session has no messages." in page
    assert "Nothing yet" in page


def test_corrupt_entries_show_as_unreadable_rows(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    chat("broken", HumanMessage("before"))
    key = store.messages_key("broken")
    redis_client.rpush(key, b"{not json <b>")
    redis_client.rpush(key, b"[1, 2]")
    redis_client.rpush(key, b'{"no": "type"}')
    redis_client.rpush(key, b'{"type": "alien", "data": {"content": "zork"}}')
    chat("broken", AIMessage("after"))
    response = admin_client.get(transcript_url("broken"))
    assert response.status_code == 200
    page = text(response)
    entries = response.context["entries"]
    assert [m.kind for m in entries] == [
        "human",
        "unreadable",
        "unreadable",
        "unreadable",
        "other",
        "ai",
    ]
    assert page.count("Unreadable entry") == 3
    assert "not JSON" in page
    assert "{not json &lt;b&gt;" in page
    assert "a JSON list" in page
    assert "not a message record" in page
    assert "zork" in page and "before" in page and "after" in page
    assert "3 unreadable entries" in page
    # the export leaves unreadable entries out
    exported = json.loads(admin_client.get(export_url("broken")).content)
    assert [r.get("data", {}).get("content") for r in exported] == [
        "before",
        None,
        "zork",
        "after",
    ]


def test_escaping(admin_client: Client) -> None:
    evil = "<script>alert(1)</script>"
    chat(f"x{evil}", HumanMessage(evil), AIMessage(f"**{evil}**"))
    store.create_session("titled", title=evil)
    for url in (LIST_URL, transcript_url(f"x{evil}"), transcript_url("titled")):
        page = text(admin_client.get(url))
        assert "<script>alert(1)" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    page = text(admin_client.get(delete_url(f"x{evil}")))
    assert "<script>alert(1)" not in page


def test_session_ids_with_slashes_and_odd_characters(admin_client: Client) -> None:
    odd = "user/7/chat_2F %{x}?#"
    chat(odd, HumanMessage("odd one"))
    chat("user", HumanMessage("plain one"))
    listing = text(admin_client.get(LIST_URL))
    assert transcript_url(odd) in listing
    response = admin_client.get(transcript_url(odd))
    assert response.status_code == 200
    assert response.context["session"].session_id == odd
    assert admin_client.get(export_url(odd)).status_code == 200
    admin_client.post(delete_url(odd), {"post": "yes"})
    assert store.get_session(odd) is None
    assert store.get_session("user") is not None


@pytest.mark.parametrize("make_url", [transcript_url, export_url, delete_url])
def test_unknown_or_bad_session_id_is_404(
    admin_client: Client, make_url: Callable[[str], str]
) -> None:
    assert admin_client.get(make_url("no-such-session")).status_code == 404
    assert admin_client.get(make_url("x" * 500)).status_code == 404
    assert admin_client.post(
        make_url("no-such-session"), {"post": "yes"}
    ).status_code in (
        404,
        405,
    )


# --- export -----------------------------------------------------------------------


def test_export_round_trips_through_messages_from_dict(admin_client: Client) -> None:
    messages = rich_conversation()
    chat("export-me", *messages)
    response = admin_client.get(export_url("export-me"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="chat-session-export-me.json"'
    )
    loaded = messages_from_dict(json.loads(response.content))
    assert loaded == messages
    assert loaded == DjangoRedisChatMessageHistory("export-me").messages


def test_export_filename_of_an_odd_id(admin_client: Client) -> None:
    chat("caf\xe9/1", HumanMessage("x"))
    response = admin_client.get(export_url("caf\xe9/1"))
    assert "chat-session-caf" in response["Content-Disposition"]
    assert "attachment" in response["Content-Disposition"]
    assert "/" not in response["Content-Disposition"].split("filename", 1)[1]


# --- deletion -----------------------------------------------------------------------


def test_delete_confirmation_then_post(
    admin_client: Client, admin_user: User, redis_client: redis.Redis
) -> None:
    alice = make_user("alice")
    chat("doomed", HumanMessage("bye"), AIMessage("ok"), owner=alice)
    chat("kept", HumanMessage("stay"), owner=alice)
    confirm = admin_client.get(delete_url("doomed"))
    page = text(confirm)
    assert "Are you sure you want to delete the chat session “doomed”?" in page
    assert "2 messages" in page
    assert 'name="post" value="yes"' in page
    assert store.get_session("doomed") is not None

    response = admin_client.post(delete_url("doomed"), {"post": "yes"}, follow=True)
    assert response.redirect_chain[-1][0] == LIST_URL
    assert "was deleted successfully" in text(response)
    assert rows(response) == ["kept"]
    assert store.get_session("doomed") is None
    assert not redis_client.exists(store.messages_key("doomed"))
    assert redis_client.zscore(store.sessions_key(), "doomed") is None
    assert redis_client.zscore(store.ids_key(), "doomed") is None
    assert redis_client.zscore(store.owner_key(str(alice.pk)), "doomed") is None
    assert redis_client.zscore(store.owner_key(str(alice.pk)), "kept") is not None

    entry = LogEntry.objects.get()
    assert entry.action_flag == DELETION
    assert entry.object_id == "doomed"
    assert entry.object_repr == "doomed"
    assert entry.user == admin_user
    assert entry.content_type == ContentType.objects.get_for_model(ChatSession)


def test_bulk_delete_action(admin_client: Client, admin_user: User) -> None:
    for sid in ("b1", "b2", "b3"):
        chat(sid, HumanMessage(sid))
    listing = text(admin_client.get(LIST_URL))
    assert '<option value="delete_selected">' in listing
    assert 'value="b2" class="action-select"' in listing
    assert "admin/js/actions.js" in listing

    selected = {"action": "delete_selected", "_selected_action": ["b1", "b3", "gone"]}
    confirm = admin_client.post(LIST_URL, selected)
    assert confirm.status_code == 200
    page = text(confirm)
    assert "Are you sure you want to delete the selected chat sessions?" in page
    assert [s.session_id for s in confirm.context["sessions"]] == ["b1", "b3"]
    assert store.get_session("b1") is not None

    done = admin_client.post(LIST_URL, {**selected, "post": "yes"}, follow=True)
    assert "Successfully deleted 2 chat sessions." in text(done)
    assert rows(done) == ["b2"]
    logged = LogEntry.objects.order_by("object_id")
    assert [(e.object_id, e.action_flag, e.user_id) for e in logged] == [
        ("b1", DELETION, admin_user.pk),
        ("b3", DELETION, admin_user.pk),
    ]


def test_bulk_action_without_selection_or_action(admin_client: Client) -> None:
    chat("b1", HumanMessage("x"))
    response = admin_client.post(LIST_URL, {"action": "delete_selected"}, follow=True)
    assert "Items must be selected" in text(response)
    response = admin_client.post(LIST_URL, {"_selected_action": ["b1"]}, follow=True)
    assert "No action selected." in text(response)
    assert store.get_session("b1") is not None
    response = admin_client.post(
        LIST_URL, {"action": "delete_selected", "_selected_action": ["x" * 500]}
    )
    assert response.status_code == 302
    response = admin_client.post(
        LIST_URL, {"action": "delete_selected", "_selected_action": ["gone"]}
    )
    assert "None of the selected chat sessions exists any more." in text(response)
    assert not LogEntry.objects.exists()


def test_deleting_a_session_that_vanished_meanwhile(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    chat("racy", HumanMessage("x"))
    real_delete = store.delete_session

    def delete_twice(session_id: str) -> bool:
        real_delete(session_id)  # someone else got there first
        return real_delete(session_id)

    monkeypatch.setattr(store, "delete_session", delete_twice)
    response = admin_client.post(delete_url("racy"), {"post": "yes"}, follow=True)
    assert "was already gone" in text(response)
    assert not LogEntry.objects.exists()


def test_only_deleted_sessions_are_logged_when_redis_fails_half_way(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sid in ("f1", "f2"):
        chat(sid, HumanMessage(sid))
    real_delete = store.delete_session

    def failing_delete(session_id: str) -> bool:
        if session_id == "f2":
            raise StoreUnavailable("chatmemory", "127.0.0.1:1", "boom")
        return real_delete(session_id)

    monkeypatch.setattr(store, "delete_session", failing_delete)
    response = admin_client.post(
        LIST_URL,
        {"action": "delete_selected", "_selected_action": ["f1", "f2"], "post": "yes"},
    )
    assert response.status_code == 503
    assert [e.object_id for e in LogEntry.objects.all()] == ["f1"]


# --- robustness --------------------------------------------------------------------


def test_ghost_sessions_disappear(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    alice = make_user("alice")
    for sid in ("alive", "deleted-behind", "expired"):
        chat(sid, HumanMessage(sid), owner=alice)
    # keys gone behind the admin's back: the indexes still name them
    redis_client.delete(
        store.meta_key("deleted-behind"), store.messages_key("deleted-behind")
    )
    redis_client.pexpire(store.meta_key("expired"), 1)
    time.sleep(0.01)
    response = admin_client.get(LIST_URL)
    assert response.status_code == 200
    assert rows(response) == ["alive"]
    assert response.context["total"] == 1
    assert redis_client.zscore(store.sessions_key(), "expired") is None
    assert rows(admin_client.get(LIST_URL, {"owner": str(alice.pk)})) == ["alive"]
    assert rows(admin_client.get(LIST_URL, {"q": "e"})) == []
    assert admin_client.get(transcript_url("expired")).status_code == 404


def closed_port_caches() -> dict[str, Any]:
    return {
        **settings.CACHES,
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        },
    }


@pytest.mark.parametrize("page", list(PAGES))
def test_redis_down_is_a_clear_admin_error_not_a_500(
    admin_client: Client, page: str
) -> None:
    with override_settings(CACHES=closed_port_caches()):
        response = PAGES[page](admin_client, "any-session")
    assert response.status_code == 503
    body = text(response)
    assert "The chat history store (Redis) cannot be reached" in body
    assert "127.0.0.1:" in body
    assert '<ol class="breadcrumbs">' in body
    # and it recovers once Redis is back
    assert admin_client.get(LIST_URL).status_code == 200


def test_redis_down_on_a_separate_alias(admin_client: Client) -> None:
    caches = {**closed_port_caches(), "chat-down": closed_port_caches()["chatmemory"]}
    with override_settings(CACHES=caches, CHATMEMORY_CACHE_ALIAS="chat-down"):
        response = admin_client.get(LIST_URL, {"q": "bob"})
    assert response.status_code == 503
    assert "“chat-down”" in text(response)


# --- unit helpers -------------------------------------------------------------------


def test_concatenate_pages_across_sources() -> None:
    def source(ids: list[str]) -> chat_admin.Fetch:
        def fetch(offset: int, limit: int) -> store.SessionPage:
            infos = [info(sid) for sid in ids[offset : offset + limit]]
            return store.SessionPage(infos, len(ids))

        return fetch

    def info(sid: str) -> store.SessionInfo:
        moment = datetime.now(UTC)
        return store.SessionInfo(sid, "", None, 0, moment, moment, moment, None)

    sources = [source(["a", "b", "c"]), source([]), source(["d", "e"])]
    got = [
        [s.session_id for s in chat_admin.concatenate(sources, off, 2).sessions]
        for off in (0, 2, 4, 6)
    ]
    assert got == [["a", "b"], ["c", "d"], ["e"], []]
    assert chat_admin.concatenate(sources, 0, 2).total == 5


def test_message_view_of_odd_records() -> None:
    view = chat_admin.message_view
    assert view(
        0, {"type": "chat", "data": {"content": "x", "role": "critic"}}
    ).role == ("critic")
    assert view(0, {"type": "AIMessageChunk", "data": {"content": "x"}}).kind == "ai"
    assert view(0, {"type": "human", "data": {"content": 42}}).blocks == ["42"]
    assert view(0, {"type": "human", "data": {"content": ["a", "b"]}}).text == "a\n\nb"
    assert view(0, {"type": 3, "data": {}}).kind == "unreadable"
    lines = view(0, {"type": "human", "data": {"content": "l\n" * 20}})
    assert lines.collapsed
    raw = store.UnreadableEntry(3, b"x" * 5000, "not JSON")
    unreadable = view(3, raw)
    assert unreadable.kind == "unreadable"
    assert len(unreadable.raw) == chat_admin.RAW_PREVIEW + 1


# --- scale ---------------------------------------------------------------------------


def seed(count: int, users: list[User]) -> None:
    now = datetime.now(UTC)
    store.import_sessions(
        store.ImportedSession(
            session_id=f"session-{i:06d}",
            records=[{"type": "human", "data": {"content": f"question {i}"}}],
            owner=str(users[i % len(users)].pk) if i % 3 else None,
            updated=now - timedelta(seconds=i),
        )
        for i in range(count)
    )


def commands_for(
    client: Client, redis_client: redis.Redis, params: dict[str, str]
) -> dict[str, int]:
    """Redis commands (by name, scripts' commands included) that one page costs."""
    client.get(LIST_URL, params)  # warm up: connections, script loading
    before = redis_client.info("commandstats")
    response = client.get(LIST_URL, params)
    after = redis_client.info("commandstats")
    assert response.status_code == 200
    calls = {
        name: stats["calls"] - before.get(name, {}).get("calls", 0)
        for name, stats in after.items()
    }
    # the measuring INFO commands themselves
    calls["cmdstat_info"] = calls.get("cmdstat_info", 0) - 1
    return {name: n for name, n in calls.items() if n}


@pytest.mark.slow
def test_list_page_costs_the_same_at_100_and_100000_sessions(
    admin_client: Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    users = [make_user(f"user{i}") for i in range(2)]
    variants = [
        {},
        {"p": "3"},
        {"owner": str(users[1].pk)},
        {"active": "today"},
        {"q": "session-0000"},
        {"q": "user1"},
    ]
    measured = {}
    for count in (100, 100_000):
        with override_settings(CHATMEMORY_KEY_PREFIX=f"{key_prefix}:{count}"):
            started = time.monotonic()
            seed(count, users)
            seeding = time.monotonic() - started
            assert redis_client.zcard(store.sessions_key()) == count
            measured[count] = [
                commands_for(admin_client, redis_client, params) for params in variants
            ]
            first_page = admin_client.get(LIST_URL)
            assert len(first_page.context["rows"]) == 25
            assert first_page.context["total"] == count
    assert seeding < 30, f"seeding 100,000 sessions took {seeding:.1f}s"
    for params, small, big in zip(
        variants, measured[100], measured[100_000], strict=True
    ):
        assert small == big, params
        assert sum(small.values()) < 200, (params, small)


def test_owner_is_plain_text_when_users_are_not_in_the_admin(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.contrib import admin

    alice = make_user("alice")
    chat("mine", HumanMessage("x"), owner=alice)
    real = admin.site.is_registered
    monkeypatch.setattr(
        admin.site, "is_registered", lambda model: model is not User and real(model)
    )
    page = text(admin_client.get(LIST_URL))
    assert '<td class="field-owner">alice</td>' in page


@override_settings(USE_TZ=False)
def test_activity_filter_without_time_zones(admin_client: Client) -> None:
    chat("now", HumanMessage("x"))
    assert rows(admin_client.get(LIST_URL, {"active": "today"})) == ["now"]


def test_message_view_skips_malformed_tool_calls_and_no_content() -> None:
    view = chat_admin.message_view(
        0, {"type": "ai", "data": {"tool_calls": ["junk", {"args": {"a": 1}}]}}
    )
    assert view.text == "" and view.blocks == []
    assert [(c.name, c.arguments) for c in view.tool_calls] == [("?", '{"a": 1}')]


@pytest.mark.parametrize("role", ["staff", "viewer"])
def test_app_index(role: str) -> None:
    perms, staff, superuser = ROLES[role]
    client = client_for(make_user(role, *perms, staff=staff, superuser=superuser))
    response = client.get("/admin/chatmemory/")
    assert response.status_code == (200 if role in CAN_VIEW else 404)
