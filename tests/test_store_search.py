"""Finding sessions by title words within a window of recent ones (store.search)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from django.test import override_settings

from chatmemory import store


def write(session_id: str, title: str, owner: str | None = None) -> None:
    store.append_records(
        session_id, [{"type": "human", "data": {"content": title}}], owner=owner
    )


def set_score(redis_client: redis.Redis, session_id: str, when: datetime) -> None:
    redis_client.zadd(store.sessions_key(), {session_id: int(when.timestamp() * 1000)})


def test_words_and_matching() -> None:
    assert store.title_words("  Staging  DEPLOY staging ") == ["staging", "deploy"]
    assert store.title_words(" ") == []
    assert store.title_matches("Deploying to Staging", ["staging", "deploy"])
    assert not store.title_matches("Deploying", ["staging", "deploy"])
    assert store.title_matches("STRASSE", store.title_words("straße"))
    assert not store.title_matches("anything", [])


def test_a_window_at_a_time_newest_first(redis_client: redis.Redis) -> None:
    now = datetime.now(UTC)
    for i in range(7):
        write(f"s{i}", f"note {i} {'even' if i % 2 == 0 else 'odd'}", owner="7")
        set_score(redis_client, f"s{i}", now - timedelta(minutes=i))
    first = store.search_titles(["even"], size=3)
    assert [sid for sid, _ in first.matches] == ["s0", "s2"]
    assert (first.start, first.searched, first.indexed, first.complete) == (
        0,
        3,
        7,
        False,
    )
    last = store.search_titles(["even"], start=6, size=3)
    assert last.matches == [("s6", "7")]
    assert (last.searched, last.complete) == (1, True)
    whole = store.search_titles(["note"], size=100)
    assert len(whole.matches) == 7 and whole.complete
    recent = store.search_titles(
        ["note"], active_since=now - timedelta(minutes=2, seconds=30)
    )
    assert [sid for sid, _ in recent.matches] == ["s0", "s1", "s2"]
    assert recent.indexed == 3


def test_owner_and_ownerless_indexes(redis_client: redis.Redis) -> None:
    write("a", "plan", owner="7")
    write("b", "plan", owner="8")
    write("c", "plan")
    assert store.search_titles(["plan"], owner="7").matches == [("a", "7")]
    assert store.search_titles(["plan"], ownerless=True).matches == [("c", None)]
    # a stray entry in an owner's index is not that owner's
    redis_client.zadd(store.owner_key("7"), {"b": 1})
    assert store.search_titles(["plan"], owner="7").matches == [("a", "7")]


def test_expired_and_vanished_sessions_are_not_matched(
    redis_client: redis.Redis,
) -> None:
    write("kept", "plan")
    write("gone", "plan")
    redis_client.delete(store.meta_key("gone"))
    assert store.search_titles(["plan"]).matches == [("kept", None)]
    with override_settings(CHATMEMORY_TTL=60):
        set_score(redis_client, "kept", datetime.now(UTC) - timedelta(minutes=5))
        found = store.search_titles(["plan"])
        assert found.matches == [] and found.indexed == 1  # "gone" still indexed


def test_bad_windows_are_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        store.search_titles(["x"], size=0)
    with pytest.raises(ValueError, match="start"):
        store.search_titles(["x"], start=-1)
