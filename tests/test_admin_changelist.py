"""Tests of chatmemory.admin.changelist: search, filters, paging and counts."""

from __future__ import annotations

import html
import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import quote_plus

import pytest
import redis
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
)

from chatmemory import store
from chatmemory.admin import ChatSessionAdmin, changelist
from chatmemory.history import DjangoRedisChatMessageHistory
from chatmemory.owners import owner_id

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse as Response

from tests.admin_helpers import (
    LIST_URL,
    chat,
    client_for,
    make_user,
    rows,
    set_activity,
    text,
    transcript_url,
)
from tests.topologies import command_calls

pytestmark = pytest.mark.django_db


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
    assert "deleted user (#999999)" in page
    assert "deleted user (#not-a-pk)" in page


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
    # out of range or nonsense page numbers are 404, without reaching Redis
    # with a number past its 64-bit integers
    for bad in ("4", "99", "x", "-4", "0", "368934881474191034", "9" * 30):
        assert admin_client.get(LIST_URL, {"p": bad}).status_code == 404, bad
    assert rows(admin_client.get(LIST_URL, {"p": ""})) == ["s0", "s1", "s2"]


def test_page_one_of_an_empty_list_exists(admin_client: Client) -> None:
    assert admin_client.get(LIST_URL, {"p": "1"}).status_code == 200
    assert admin_client.get(LIST_URL, {"p": "2"}).status_code == 404


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
    assert count_line(response) == "2 results"


def count_line(response: Response) -> str:
    """The result count the page shows next to the search box."""
    page = text(response)
    start = page.index('<span class="small quiet">') + len('<span class="small quiet">')
    return page[start : page.index(" (<a", start)]


def test_exact_id_search_counts_its_one_row(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    # issue 10: "2 results" above 1 row
    response = admin_client.get(LIST_URL, {"q": "other"})
    assert rows(response) == ["other"]
    assert response.context["total"] == 1
    assert count_line(response) == "1 result"


def test_search_with_owner_filter_says_its_count_is_an_upper_bound(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    # issue 10: "10 results" for 5 with a search and the owner filter
    alice, bob = make_user("alice"), make_user("bob")
    for i in range(10):
        chat(f"team-{i}", HumanMessage("x"), owner=(alice, bob)[i % 2])
    response = admin_client.get(LIST_URL, {"q": "team-", "owner": owner_id(bob)})
    assert rows(response) == [f"team-{i}" for i in (1, 3, 5, 7, 9)]
    assert count_line(response) == "at most 10 results"
    assert "at most 10 results" in text(response).split('class="paginator"')[-1]
    # without the filter the same search is counted exactly
    response = admin_client.get(LIST_URL, {"q": "team-"})
    assert response.context["total"] == 10
    assert count_line(response) == "10 results"


def test_search_counts_are_exact_when_one_kind_of_match_is_found(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    by_owner = admin_client.get(LIST_URL, {"q": "bob@example.com"})
    assert count_line(by_owner) == "2 results"
    by_prefix = admin_client.get(LIST_URL, {"q": "support-"})
    assert count_line(by_prefix) == "3 results"
    # "alice" is a username and an id prefix: a session could be both
    both = admin_client.get(LIST_URL, {"q": "alice"})
    assert count_line(both) == "at most 3 results"
    alice = searchable["alice"]
    mine = admin_client.get(LIST_URL, {"q": "alice", "owner": owner_id(alice)})
    assert rows(mine) == ["support-1", "sales-1"]
    assert count_line(mine) == "at most 3 results"


def test_search_prefix(admin_client: Client, searchable: dict[str, User]) -> None:
    response = admin_client.get(LIST_URL, {"q": "support-"})
    assert rows(response) == ["support-1", "support-10", "support-2"]
    assert rows(admin_client.get(LIST_URL, {"q": "nothing"})) == []
    assert "No chat session matches." in text(admin_client.get(LIST_URL, {"q": "zz"}))


def test_search_by_owner_username(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    response = admin_client.get(LIST_URL, {"q": "alice"})
    # the ids starting with "alice", then alice's sessions by activity
    assert rows(response) == ["alice-notes", "support-1", "sales-1"]
    # usernames and title words match in any case; session ids only as written
    assert rows(admin_client.get(LIST_URL, {"q": "ALICE"})) == [
        "support-1",
        "sales-1",
        "alice-notes",  # its title, "about alice-notes"
    ]


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
    assert pages == [["alice-notes", "support-1"], ["sales-1"]]


@pytest.fixture
def titled(redis_client: redis.Redis) -> dict[str, User]:
    """Sessions with titles (their first question), newest first as listed."""
    alice, bob = make_user("alice"), make_user("bob")
    now = datetime.now(UTC)
    sessions = [
        ("t1", "Deploying the staging server", alice),
        ("t2", "Why does deployment fail on Staging?", bob),
        ("t3", "Lunch ideas", alice),
        ("t4", "Staging: deploy again, Über-fast", None),
        ("t5", "staging notes", bob),
    ]
    for minutes, (sid, title, owner) in enumerate(sessions):
        chat(sid, HumanMessage(title), AIMessage("ok"), owner=owner)
        set_activity(redis_client, sid, now - timedelta(minutes=minutes))
    return {"alice": alice, "bob": bob}


def test_search_by_title_words(admin_client: Client, titled: dict[str, User]) -> None:
    # every word, anywhere in the title, any case; newest activity first
    response = admin_client.get(LIST_URL, {"q": "staging DEPLOY"})
    assert rows(response) == ["t1", "t2", "t4"]
    assert count_line(response) == "3 results"
    assert rows(admin_client.get(LIST_URL, {"q": "über"})) == ["t4"]
    assert rows(admin_client.get(LIST_URL, {"q": "deploy lunch"})) == []
    # every title was read: no caveat under the count
    assert "Titles searched" not in text(response)
    # combined with the filters
    bob = owner_id(titled["bob"])
    assert rows(admin_client.get(LIST_URL, {"q": "staging", "owner": bob})) == [
        "t2",
        "t5",
    ]
    ownerless = admin_client.get(LIST_URL, {"q": "staging", "owner__isnull": "1"})
    assert rows(ownerless) == ["t4"]
    assert count_line(ownerless) == "1 result"


def test_title_matches_are_not_listed_twice(
    admin_client: Client, titled: dict[str, User]
) -> None:
    chat("lunch-2", HumanMessage("lunch again"))
    # "lunch-2" is found by its id first; "t3" by its title only
    response = admin_client.get(LIST_URL, {"q": "lunch"})
    assert rows(response) == ["lunch-2", "t3"]
    assert count_line(response) == "2 results"
    # bob's sessions by his username, then titles holding "bob" (none)
    chat("b", HumanMessage("ask bob about staging"), owner=titled["bob"])
    response = admin_client.get(LIST_URL, {"q": "bob"})
    assert sorted(rows(response)) == ["b", "t2", "t5"]
    assert count_line(response) == "3 results"


def test_title_search_says_which_sessions_it_read(
    admin_client: Client, titled: dict[str, User], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChatSessionAdmin, "title_search_window", 2)
    response = admin_client.get(LIST_URL, {"q": "staging"})
    assert rows(response) == ["t1", "t2"]
    page = text(response)
    assert "Titles searched: sessions 1–2 of 5, by last activity" in page
    older = re.search(r'<a href="([^"]+)">Search older sessions', page)
    assert older is not None
    response = admin_client.get(LIST_URL + html.unescape(older[1]))
    assert rows(response) == ["t4"]  # t3's title does not match
    assert count_line(response) == "1 result"
    page = text(response)
    assert "Titles searched: sessions 3–4 of 5" in page
    assert "Back to the most recent" in page
    response = admin_client.get(LIST_URL, {"q": "staging", "tw": "3"})
    assert rows(response) == ["t5"]
    assert "Search older sessions" not in text(response)
    assert admin_client.get(LIST_URL, {"q": "staging", "tw": "4"}).status_code == 404
    assert admin_client.get(LIST_URL, {"q": "staging", "tw": "x"}).status_code == 404


def test_filter_by_owner(admin_client: Client, searchable: dict[str, User]) -> None:
    alice = searchable["alice"]
    response = admin_client.get(LIST_URL, {"owner": owner_id(alice)})
    assert rows(response) == ["support-1", "sales-1"]
    choices = response.context["owner_choices"]
    assert [label for label, _, _ in choices] == ["All", "No owner", "alice", "bob"]
    assert [selected for _, _, selected in choices] == [False, False, True, False]
    page = text(response)
    assert "Clear all filters" in page
    assert f'href="?owner={quote_plus(owner_id(alice))}"' in page


def test_filter_by_owner_combined_with_search(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    bob = searchable["bob"]
    response = admin_client.get(LIST_URL, {"q": "support-", "owner": owner_id(bob)})
    assert rows(response) == ["support-10"]
    response = admin_client.get(LIST_URL, {"q": "alice", "owner": owner_id(bob)})
    assert rows(response) == ["alice-notes"]
    # the search form keeps the filters
    assert f'<input type="hidden" name="owner" value="{owner_id(bob)}">' in text(
        response
    )


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
    params = {"owner": owner_id(alice), "active": "30d"}
    assert rows(admin_client.get(LIST_URL, params)) == ["recent"]
    params["q"] = "alice"
    assert rows(admin_client.get(LIST_URL, params)) == ["recent"]


def test_filter_sessions_without_an_owner(
    admin_client: Client, searchable: dict[str, User]
) -> None:
    response = admin_client.get(LIST_URL, {"owner__isnull": "1"})
    assert rows(response) == ["support-2", "other"]
    assert response.context["total"] == 2
    assert "2 chat sessions" in text(response)
    choices = response.context["owner_choices"]
    assert [(label, selected) for label, _, selected in choices][:2] == [
        ("All", False),
        ("No owner", True),
    ]
    assert "Clear all filters" in text(response)
    # with a search: filtered on the page, the count labelled
    searched = admin_client.get(LIST_URL, {"q": "support-", "owner__isnull": "1"})
    assert rows(searched) == ["support-2"]
    assert count_line(searched) == "at most 3 results"
    assert rows(admin_client.get(LIST_URL, {"q": "alice", "owner__isnull": "1"})) == []
    # picking an owner leaves the no-owner filter
    alice = searchable["alice"]
    link = next(link for label, link, _ in choices if label == "alice")
    assert link == f"?owner={quote_plus(owner_id(alice))}"


def test_owner_filter_names_a_selected_unknown_owner(admin_client: Client) -> None:
    response = admin_client.get(LIST_URL, {"owner": "4242"})
    assert rows(response) == []
    labels = [label for label, _, _ in response.context["owner_choices"]]
    assert labels == ["All", "No owner", "deleted user (#4242)"]


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
    assert rows(admin_client.get(LIST_URL, {"owner": owner_id(alice)})) == ["alive"]
    assert rows(admin_client.get(LIST_URL, {"q": "exp"})) == []
    assert admin_client.get(transcript_url("expired")).status_code == 404


def test_concatenate_pages_across_sources() -> None:
    def source(ids: list[str]) -> changelist.Fetch:
        def fetch(offset: int, limit: int) -> store.SessionPage:
            infos = [info(sid) for sid in ids[offset : offset + limit]]
            return store.SessionPage(infos, len(ids))

        return fetch

    def info(sid: str) -> store.SessionInfo:
        moment = datetime.now(UTC)
        return store.SessionInfo(sid, "", None, 0, moment, moment, moment, None)

    sources = [source(["a", "b", "c"]), source([]), source(["d", "e"])]
    got = [
        [s.session_id for s in changelist.concatenate(sources, off, 2)[0].sessions]
        for off in (0, 2, 4, 6)
    ]
    assert got == [["a", "b"], ["c", "d"], ["e"], []]
    page, totals = changelist.concatenate(sources, 0, 2)
    assert page.total == 5
    assert totals == [3, 0, 2]


def seed(count: int, users: list[User]) -> None:
    now = datetime.now(UTC)
    store.import_sessions(
        store.ImportedSession(
            session_id=f"session-{i:06d}",
            records=[{"type": "human", "data": {"content": f"question {i}"}}],
            owner=owner_id(users[i % len(users)]) if i % 3 else None,
            updated=now - timedelta(seconds=i),
        )
        for i in range(count)
    )


def commands_for(
    client: Client, redis_client: redis.Redis, params: dict[str, str]
) -> dict[str, int]:
    """Redis commands (by name, scripts' commands included) that one page costs."""
    client.get(LIST_URL, params)  # warm up: connections, script loading
    before = command_calls(redis_client)
    response = client.get(LIST_URL, params)
    after = command_calls(redis_client)
    assert response.status_code == 200
    calls = {name: n - before.get(name, 0) for name, n in after.items()}
    return {name: n for name, n in calls.items() if n}


@pytest.mark.slow
def test_list_page_costs_the_same_at_100_and_100000_sessions(
    admin_client: Client,
    redis_client: redis.Redis,
    key_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A search reads the titles of a window of sessions: its bound.
    monkeypatch.setattr(ChatSessionAdmin, "title_search_window", 30)
    users = [make_user(f"user{i}") for i in range(2)]
    variants = [
        {},
        {"p": "3"},
        {"owner": owner_id(users[1])},
        {"owner__isnull": "1"},
        {"active": "today"},
        {"q": "session-0000"},
        {"q": "user1"},
        {"q": "QUESTION 7"},
        {"q": "question", "owner": owner_id(users[0])},
    ]
    measured = {}
    for count in (100, 100_000):
        with override_settings(CHATMEMORY_KEY_PREFIX=f"{key_prefix}:{count}"):
            seed(count, users)
            assert redis_client.zcard(store.sessions_key()) == count
            measured[count] = [
                commands_for(admin_client, redis_client, params) for params in variants
            ]
            first_page = admin_client.get(LIST_URL)
            assert len(first_page.context["rows"]) == 25
            assert first_page.context["total"] == count
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
