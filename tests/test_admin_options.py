"""Tests of chatmemory.admin.options: URLs, permissions, deletion, errors."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis
from django.conf import settings
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client, override_settings
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
)

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable
from chatmemory.models import ChatSession
from chatmemory.owners import owner_id
from tests.redis_server import free_port

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

from tests.admin_helpers import (
    LIST_URL,
    chat,
    client_for,
    delete_url,
    export_url,
    make_user,
    rows,
    text,
    transcript_url,
)

pytestmark = pytest.mark.django_db


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


def test_a_sessions_bare_url_redirects_to_its_transcript(admin_client: Client) -> None:
    chat("a/b c", HumanMessage("hi"))
    bare = transcript_url("a/b c").removesuffix("change/")

    response = admin_client.get(bare, follow=True)

    assert response.redirect_chain == [(transcript_url("a/b c"), 302)]
    assert response.status_code == 200
    assert "<code>a/b c</code>" in text(response)


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
    assert redis_client.zscore(store.owner_key(owner_id(alice)), "doomed") is None
    assert redis_client.zscore(store.owner_key(owner_id(alice)), "kept") is not None

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


@pytest.mark.parametrize("role", ["staff", "viewer"])
def test_app_index(role: str) -> None:
    perms, staff, superuser = ROLES[role]
    client = client_for(make_user(role, *perms, staff=staff, superuser=superuser))
    response = client.get("/admin/chatmemory/")
    assert response.status_code == (200 if role in CAN_VIEW else 404)
