"""Token usage per owner per day, paged over a range of days (store.usage)."""

from __future__ import annotations

import random
import time
from datetime import date, timedelta

import pytest
import redis

from chatmemory import store
from chatmemory.store import keys

Row = tuple[str, str, int, int, int]
"""(owner, day, input, output, total)"""


def seed_usage(
    redis_client: redis.Redis, owner: str, day: str, tokens: tuple[int, int]
) -> None:
    """Add tokens to an owner's day as append.lua does (past days need this)."""
    usage_key = keys.usage_key(owner, day)
    redis_client.hincrby(usage_key, "input", tokens[0])
    redis_client.hincrby(usage_key, "output", tokens[1])
    redis_client.hincrby(usage_key, "total", sum(tokens))
    redis_client.zincrby(keys.usage_day_key(day), sum(tokens), owner)


def days_back(count: int, end: date = date(2026, 3, 31)) -> list[str]:
    return [(end - timedelta(days=i)).isoformat() for i in range(count)]


def seeded(redis_client: redis.Redis, days: list[str], owners: int) -> list[Row]:
    """Random usage, ties on purpose (the same total on a day and across days)."""
    rng = random.Random(7)
    rows: list[Row] = []
    for day in days:
        for o in rng.sample(range(owners), rng.randint(0, owners)):
            tokens = (rng.choice([1, 2, 5, 50]), rng.choice([0, 5]))
            owner = f"{o}:owner"
            seed_usage(redis_client, owner, day, tokens)
            rows.append((owner, day, *tokens, sum(tokens)))
    return rows


def walk(days: list[str], by: str, limit: int) -> list[Row]:
    """Every row, following the pages' cursors."""
    rows: list[Row] = []
    after = None
    while True:
        page = store.usage_page(days, by=by, after=after, limit=limit)
        rows += [
            (u.owner, u.day, u.input_tokens, u.output_tokens, u.total_tokens)
            for u in page.rows
        ]
        assert len(page.rows) <= limit
        if page.next is None:
            return rows
        assert len(page.rows) == limit
        after = store.UsageCursor.decode(page.next.encode())


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_pages_by_total_list_every_row_once_most_tokens_first(
    redis_client: redis.Redis, limit: int
) -> None:
    days = days_back(5)
    expected = seeded(redis_client, days, owners=12)
    assert len({row[4] for row in expected}) < len(expected)  # ties exist
    rows = walk(days, store.BY_TOTAL, limit)
    assert sorted(rows) == sorted(expected)
    totals = [(row[4], row[1]) for row in rows]
    assert totals == sorted(totals, reverse=True)
    assert store.usage_page(days, limit=limit).count == len(expected)


@pytest.mark.parametrize("limit", [1, 4])
def test_pages_by_day_list_every_row_once_newest_day_first(
    redis_client: redis.Redis, limit: int
) -> None:
    days = days_back(4)
    expected = seeded(redis_client, days, owners=9)
    rows = walk(days, store.BY_DAY, limit)
    assert sorted(rows) == sorted(expected)
    order = [(row[1], row[4]) for row in rows]
    assert order == sorted(order, reverse=True)


def test_figures_are_the_writes_own(redis_client: redis.Redis) -> None:
    usage = {"input_tokens": 120, "output_tokens": 30, "total_tokens": 150}
    ai = {"type": "ai", "data": {"content": "a", "usage_metadata": usage}}
    store.append_records("s", [ai, ai], owner="7")
    store.append_records("t", [ai], owner="8")
    today = store.day_of(store.operations.now_ms())
    page = store.usage_page([today, *days_back(2)])
    figures = [(u.input_tokens, u.output_tokens, u.total_tokens) for u in page.rows]
    assert [u.owner for u in page.rows] == ["7", "8"]
    assert figures == [(240, 60, 300), (120, 30, 150)]
    assert (page.count, page.next) == (2, None)


def test_an_empty_range() -> None:
    page = store.usage_page(days_back(3))
    assert (page.rows, page.count, page.next) == ([], 0, None)


def test_a_cursor_whose_owner_spent_more_since_goes_on_below_its_old_total(
    redis_client: redis.Redis,
) -> None:
    (day,) = days_back(1)
    for owner, tokens in (("a", 30), ("b", 20), ("c", 10)):
        seed_usage(redis_client, owner, day, (tokens, 0))
    first = store.usage_page([day], limit=1)
    assert [u.owner for u in first.rows] == ["a"]
    assert first.next is not None
    seed_usage(redis_client, "a", day, (5, 0))  # "a" moved on
    rest = store.usage_page([day], after=first.next, limit=5)
    assert [u.owner for u in rest.rows] == ["b", "c"]


def test_bad_arguments_are_refused() -> None:
    days = days_back(2)
    with pytest.raises(ValueError, match="by must be"):
        store.usage_page(days, by="owner")
    with pytest.raises(ValueError, match="limit"):
        store.usage_page(days, limit=0)
    outside = store.UsageCursor(5, "1999-01-01", "a")
    with pytest.raises(ValueError, match="not in the range"):
        store.usage_page(days, after=outside)
    for value in ("", "x:2026-01-01:a", "5:2026-1-1:a", "5:2026-01-01"):
        with pytest.raises(ValueError):
            store.UsageCursor.decode(value)
    # an owner id holding the separator comes back whole
    cursor = store.UsageCursor(5, "2026-01-01", "42:5f3a:x")
    assert store.UsageCursor.decode(cursor.encode()) == cursor


def _elements_read(days: list[str], after: store.UsageCursor | None) -> int:
    """Members the page's range reads return (run on the real server)."""
    client = store.client.sync_client()
    operation = store.usage.usage_page_op(days, after=after, limit=10)
    read = 0
    try:
        request = next(operation)
        while True:
            reply = store.operations._execute(client, request)
            for command, answer in zip(request.commands, reply, strict=True):
                if command[0].startswith("ZREV") and command[0] != "ZREVRANK":
                    read += len(answer)
            request = operation.send(reply)
    except StopIteration:
        return read


def test_a_deep_page_reads_what_the_first_one_does(redis_client: redis.Redis) -> None:
    days = days_back(3)
    for day in days:
        for o in range(2_000):
            seed_usage(redis_client, f"u{o:05d}", day, (o % 97 + 1, 0))
    assert store.usage_page(days, limit=10).count == 6_000
    # u00097 has 1 token: near the very end, most tokens first
    deep = store.UsageCursor(1, days[1], "u00097")
    assert store.usage_page(days, after=deep, limit=10).rows
    for after in (None, deep):
        assert _elements_read(days, after) <= len(days) * 11


async def test_tokens_counted_outside_a_write_count_once_per_write_id() -> None:
    today = store.day_of(int(time.time() * 1000))
    write_id = store.new_write_id()
    store.add_usage("7", (30, 10, 40), write_id)
    store.add_usage("7", (30, 10, 40), write_id)  # a retry: not counted again
    await store.aadd_usage("7", (1, 2, 3), store.new_write_id())
    store.add_usage("", (5, 5, 10), store.new_write_id())  # no owner: nothing
    [usage] = store.owner_usage("7", [today])
    spent = (usage.input_tokens, usage.output_tokens, usage.total_tokens)
    assert spent == (31, 12, 43)
    rows, total = store.day_usage(today)
    assert total == 1 and rows[0].owner == "7"
