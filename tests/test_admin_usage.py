"""Tests of chatmemory.admin.usage and the token figures on the list and transcript."""

from __future__ import annotations

import html
import re
from datetime import date, timedelta
from urllib.parse import urlencode

import pytest
import redis
from django.test import Client
from django.urls import reverse
from django.utils.formats import date_format
from langchain_core.messages import AIMessage, HumanMessage

from chatmemory import store
from chatmemory.admin import ChatSessionAdmin, usage
from chatmemory.owners import owner_id
from tests.admin_helpers import (
    LIST_URL,
    chat,
    client_for,
    make_user,
    rows,
    text,
    transcript_url,
)
from tests.test_store_usage import seed_usage

pytestmark = pytest.mark.django_db

USAGE_URL = "/admin/chatmemory/chatsession/usage/"


def reply(text: str, tokens_in: int, tokens_out: int) -> AIMessage:
    return AIMessage(
        text,
        usage_metadata={
            "input_tokens": tokens_in,
            "output_tokens": tokens_out,
            "total_tokens": tokens_in + tokens_out,
        },
    )


def usage_rows(page: str) -> list[list[str]]:
    """The usage table's rows as the text of their cells."""
    body = page[page.index("<tbody>") : page.index("</tbody>")]
    return [
        [html.unescape(re.sub("<[^>]+>", "", cell)).strip() for cell in cells]
        for cells in (
            re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
            for row in re.findall(r"<tr>(.*?)</tr>", body, re.S)
        )
    ]


def test_the_list_and_the_transcript_show_each_sessions_tokens(
    admin_client: Client,
) -> None:
    alice = make_user("alice")
    chat("paid", HumanMessage("q"), reply("a", 1200, 345), owner=alice)
    chat("paid", HumanMessage("q"), reply("b", 800, 55), owner=alice)
    chat("free", HumanMessage("q"), AIMessage("no usage reported"))
    info = store.get_session("paid")
    assert info is not None
    assert (info.input_tokens, info.output_tokens, info.total_tokens) == (
        2000,
        400,
        2400,
    )

    page = text(admin_client.get(LIST_URL))
    paid = page[page.index(transcript_url("paid")) :]
    paid = paid[: paid.index("</tr>")]
    assert "2,400" in paid and "(2,000 in, 400 out)" in paid
    free = page[page.index(transcript_url("free")) :]
    free = free[: free.index("</tr>")]
    cell = free[free.index('class="field-tokens"') :]
    assert cell.startswith(
        'class="field-tokens"><span class="chatmemory-tokens">0</span></td>'
    )

    response = admin_client.get(transcript_url("paid"))
    page = text(response)
    assert "2,400" in page and "(2,000 in, 400 out)" in page
    owner_usage = USAGE_URL + "?" + urlencode({"owner": owner_id(alice)})
    assert f'href="{html.escape(owner_usage)}"' in page
    used = [t.name for t in response.templates]
    assert "admin/chatmemory/chatsession/session_tokens.html" in used
    assert f'href="{USAGE_URL}"' in text(admin_client.get(LIST_URL))


def test_usage_page_ranks_owners_days_with_redis_figures(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    alice, bob = make_user("alice"), make_user("bob")
    chat("a1", HumanMessage("q"), reply("a", 1000, 200), owner=alice)
    chat("b1", HumanMessage("q"), reply("a", 10, 5), owner=bob)
    today = usage.today()
    yesterday = (today - timedelta(days=1)).isoformat()
    seed_usage(redis_client, owner_id(bob), yesterday, (5000, 1))
    seed_usage(redis_client, "9:gone", yesterday, (7, 0))  # an account since deleted

    response = admin_client.get(USAGE_URL)
    assert response.status_code == 200
    page = text(response)
    shown_today = date_format(today, "DATE_FORMAT")
    shown_yesterday = date_format(date.fromisoformat(yesterday), "DATE_FORMAT")
    assert [row[:5] for row in usage_rows(page)] == [
        [shown_yesterday, "bob", "5,000", "1", "5,001"],
        [shown_today, "alice", "1,000", "200", "1,200"],
        [shown_today, "bob", "10", "5", "15"],
        [shown_yesterday, "deleted user (#9:gone)", "7", "0", "7"],
    ]
    # the figures are the usage hashes' own
    hashed = redis_client.hgetall(store.keys.usage_key(owner_id(bob), yesterday))
    assert hashed == {b"input": b"5000", b"output": b"1", b"total": b"5001"}
    # each owner links to its user, its sessions and its own days
    user_url = reverse("admin:auth_user_change", args=[alice.pk])
    assert f'<a href="{user_url}">alice</a>' in page
    sessions = LIST_URL + "?" + urlencode({"owner": owner_id(alice)})
    assert f'href="{html.escape(sessions)}"' in page
    assert rows(admin_client.get(sessions)) == ["a1"]
    assert "Rows 1–4 of 4" in page
    # the form shows the range in effect: the last 7 UTC days
    week_ago = (today - timedelta(days=6)).isoformat()
    assert f'name="start" value="{week_ago}"' in page
    assert f'name="end" value="{today.isoformat()}"' in page
    used = [t.name for t in response.templates]
    assert used.count("admin/chatmemory/chatsession/usage_row.html") == 4


def test_usage_by_day_and_for_one_owner_with_sums(
    admin_client: Client, redis_client: redis.Redis
) -> None:
    days = [(usage.today() - timedelta(days=i)).isoformat() for i in range(3)]
    for i, day in enumerate(days):
        seed_usage(redis_client, "7:a", day, (10 * (i + 1), 1))
        seed_usage(redis_client, "8:b", day, (100, 0))
    page = text(admin_client.get(USAGE_URL, {"o": "day"}))
    owners_by_day = [row[1] for row in usage_rows(page)]
    assert owners_by_day == ["deleted user (#8:b)", "deleted user (#7:a)"] * 3

    page = text(admin_client.get(USAGE_URL, {"owner": "7:a"}))
    assert [row[4] for row in usage_rows(page)] == ["31", "21", "11"]
    assert "Whole range" in page
    sums = page[page.index('class="chatmemory-sums"') :]
    assert '<td class="field-input_tokens">60</td>' in sums
    assert '<td class="field-total_tokens">63</td>' in sums
    # the range form keeps the owner
    assert '<input type="hidden" name="owner" value="7:a">' in page


def test_usage_pages_follow_their_cursor(
    admin_client: Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ChatSessionAdmin, "usage_per_page", 2)
    day = usage.today().isoformat()
    for i in range(5):
        seed_usage(redis_client, f"{i}:x", day, (i + 1, 0))
    seen: list[str] = []
    url: str | None = USAGE_URL
    pages = 0
    while url is not None:
        page = text(admin_client.get(url))
        seen += [row[1] for row in usage_rows(page)]
        pages += 1
        found = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = None if found is None else USAGE_URL + html.unescape(found[1])
        if pages == 2:
            assert "Rows 3–4 of 5" in page and "First page" in page
    assert pages == 3
    assert seen == [f"deleted user (#{i}:x)" for i in reversed(range(5))]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"start": "2026-02-10", "end": "2026-02-01"}, "must start on or before"),
        ({"start": "2026-01-01", "end": "2026-12-31"}, "at most 92 days"),
        ({"start": "yesterday"}, "Enter a valid date"),
        ({"o": "owner"}, "Select a valid choice"),
    ],
)
def test_a_bad_range_is_said_so(
    admin_client: Client, params: dict[str, str], error: str
) -> None:
    response = admin_client.get(USAGE_URL, params)
    assert response.status_code == 200
    page = text(response)
    assert error in page
    assert "<tbody>" not in page


@pytest.mark.parametrize(
    "params",
    [
        {"after": "garbage"},
        {"after": "5:1999-01-01:x"},
        {"after": "5:" + usage.today().isoformat() + ":x", "n": "-1"},
    ],
)
def test_a_forged_cursor_is_404(admin_client: Client, params: dict[str, str]) -> None:
    assert admin_client.get(USAGE_URL, params).status_code == 404


def test_usage_needs_the_view_permission() -> None:
    assert client_for(make_user("staff")).get(USAGE_URL).status_code == 403
    viewer = client_for(make_user("viewer", "view_chatsession"))
    assert viewer.get(USAGE_URL).status_code == 200


def test_a_session_called_usage_keeps_its_transcript(admin_client: Client) -> None:
    chat("usage", HumanMessage("hello"))
    response = admin_client.get(transcript_url("usage"))
    assert response.status_code == 200
    assert "hello" in text(response)


def test_a_usage_page_costs_the_same_commands_at_102_and_6000_owner_days(
    admin_client: Client, redis_client: redis.Redis, key_prefix: str
) -> None:
    from django.test import override_settings

    from tests.topologies import command_calls

    days = [(usage.today() - timedelta(days=i)).isoformat() for i in range(3)]
    measured = []
    for owners in (34, 2000):
        with override_settings(CHATMEMORY_KEY_PREFIX=f"{key_prefix}:{owners}"):
            for day in days:
                for o in range(owners):
                    seed_usage(redis_client, f"{o}:x", day, (o % 89 + 1, 1))
            first = text(admin_client.get(USAGE_URL))
            found = re.search(r'<a href="([^"]+)" rel="next">', first)
            assert found is not None
            costs = []
            for url in (USAGE_URL, USAGE_URL + html.unescape(found[1])):
                admin_client.get(url)  # warm up
                before = command_calls(redis_client)
                assert admin_client.get(url).status_code == 200
                after = command_calls(redis_client)
                costs.append(
                    {
                        k: n - before.get(k, 0)
                        for k, n in after.items()
                        if n - before.get(k, 0)
                    }
                )
            measured.append(costs)
    assert measured[0] == measured[1]
