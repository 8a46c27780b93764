"""Token usage per owner per day, a page at a time, over a range of UTC days.

Every write adds its tokens to the owner's day (``append.lua``): the hash
``P:usage:{O}:<day>`` holds the exact input, output and total, and the sorted
set ``P:usage-day:<day>`` ranks that day's owners by total. A page of
(owner, day) rows over a range of days is merged from the days' sorted sets
with a cursor (keyset paging): each day gives at most a page of candidates
after the cursor, so a page costs O(days x page) whatever the number of owners
and however deep it is, and the count of rows is the sum of the days' sizes
(exact). The figures shown come from the hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..conf import conf
from . import keys
from .operations import Batch, Operation, Usage, day_of, now_ms

DAY_MS = 86_400_000

BY_TOTAL = "total"
"""Most tokens first (then the newest day)."""

BY_DAY = "day"
"""The newest day first, most tokens first within a day."""


@dataclass(frozen=True, slots=True)
class UsageCursor:
    """Where a page ends: its last row's total, day and owner."""

    total: int
    day: str
    owner: str

    def encode(self) -> str:
        """The cursor as a URL parameter value."""
        return f"{self.total}:{self.day}:{self.owner}"

    @classmethod
    def decode(cls, value: str) -> UsageCursor:
        """The cursor of :meth:`encode`'s value; ``ValueError`` if it is none."""
        total, day, owner = value.split(":", 2)
        if not total.isdigit() or len(day) != 10:
            raise ValueError(f"not a usage cursor: {value!r}")
        return cls(int(total), day, owner)


@dataclass(frozen=True, slots=True)
class UsagePage:
    """One page of (owner, day) usage rows."""

    rows: list[Usage]
    count: int
    """Rows (owner-days with usage) in the whole range: exact."""
    next: UsageCursor | None
    """Where the next page starts; None on the last page."""


def _sort_key(by: str, total: int, day: str, owner: bytes) -> tuple[Any, ...]:
    # Descending in every part: the order ZREVRANGE gives within one day
    # (score, then member bytes).
    return (total, day, owner) if by == BY_TOTAL else (day, total, owner)


def _after_cursor(
    by: str, day_key: str, day: str, cursor: UsageCursor, rank: int | None, n: int
) -> tuple[Any, ...] | None:
    """The command reading up to ``n`` of ``day``'s rows that follow ``cursor``."""
    below = ("ZREVRANGEBYSCORE", day_key, f"({cursor.total}", "-inf")
    if day == cursor.day:
        if rank is None:
            # The cursor's owner changed its total since the page was shown
            # (today's usage grows): continue below its old total.
            return (*below, "WITHSCORES", "LIMIT", 0, n)
        return ("ZREVRANGE", day_key, rank + 1, rank + n, "WITHSCORES")
    if by == BY_DAY:
        # Newer days were shown whole before the cursor's day.
        return (
            None if day > cursor.day else ("ZREVRANGE", day_key, 0, n - 1, "WITHSCORES")
        )
    if day > cursor.day:  # at an equal total a newer day comes first
        return (*below, "WITHSCORES", "LIMIT", 0, n)
    return (
        "ZREVRANGEBYSCORE",
        day_key,
        cursor.total,
        "-inf",
        "WITHSCORES",
        "LIMIT",
        0,
        n,
    )


def usage_page_op(
    days: Sequence[str],
    *,
    by: str = BY_TOTAL,
    after: UsageCursor | None = None,
    limit: int = 50,
) -> Operation[UsagePage]:
    """One page of every owner's usage on ``days`` (``YYYY-MM-DD``), ``by``
    total or day, after the cursor of the previous page.

    Two round trips on a first page, three after a cursor.
    """
    if by not in (BY_TOTAL, BY_DAY):
        raise ValueError(f"by must be {BY_TOTAL!r} or {BY_DAY!r}, not {by!r}")
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    prefix = conf.KEY_PREFIX
    days = sorted(set(days), reverse=True)
    if after is not None and after.day not in days:
        raise ValueError(f"the cursor's day {after.day} is not in the range")
    day_keys = [keys.usage_day_key_in(prefix, day) for day in days]
    n = limit + 1  # one more than a page: is there a next one?
    counts: list[tuple[Any, ...]] = [("ZCARD", key) for key in day_keys]
    reads: list[tuple[Any, ...] | None]
    if after is None:
        reads = [("ZREVRANGE", key, 0, n - 1, "WITHSCORES") for key in day_keys]
        replies = yield Batch(counts + [r for r in reads if r is not None])
        sizes, ranges = replies[: len(days)], replies[len(days) :]
    else:
        cursor_key = keys.usage_day_key_in(prefix, after.day)
        replies = yield Batch(
            [
                *counts,
                ("ZSCORE", cursor_key, after.owner),
                ("ZREVRANK", cursor_key, after.owner),
            ]
        )
        sizes = replies[: len(days)]
        score, rank = replies[len(days) :]
        if score is None or int(float(score)) != after.total:
            rank = None
        reads = [
            _after_cursor(by, key, day, after, rank, n) if size else None
            for key, day, size in zip(day_keys, days, sizes, strict=True)
        ]
        wanted = [r for r in reads if r is not None]
        ranges = (yield Batch(wanted)) if wanted else []
    candidates: list[tuple[tuple[Any, ...], str, bytes, int]] = []
    answered = iter(ranges)
    for day, read in zip(days, reads, strict=True):
        if read is None:
            continue
        for owner, score in next(answered):
            total = int(float(score))
            candidates.append((_sort_key(by, total, day, owner), day, owner, total))
    candidates.sort(key=lambda c: c[0], reverse=True)
    page = candidates[:limit]
    following = None
    if len(candidates) > limit:
        _, day, owner, total = page[-1]
        following = UsageCursor(total, day, owner.decode())
    rows: list[Usage] = []
    if page:
        figures = yield Batch(
            [
                (
                    "HMGET",
                    keys.usage_key_in(prefix, owner.decode(), day),
                    "input",
                    "output",
                    "total",
                )
                for _, day, owner, _ in page
            ]
        )
        rows = [
            Usage(owner.decode(), day, *(int(v or 0) for v in reply))
            for (_, day, owner, _), reply in zip(page, figures, strict=True)
        ]
    return UsagePage(rows, sum(int(size) for size in sizes), following)


__all__ = ["BY_DAY", "BY_TOTAL", "UsageCursor", "UsagePage", "usage_page_op"]


def delete_owner_usage_op(owner: str) -> Operation[int]:
    """Delete one owner's token usage and limit state; return the keys deleted.

    The owner's daily usage hashes (every day that can still hold one: the
    last ``CHATMEMORY_USAGE_DAYS``, as each expires that long after its last
    write), its write ids, its recent turns and open streams go in one ``DEL``
    (all in the owner's slot), and the owner leaves each day's ranking.
    """
    prefix = conf.KEY_PREFIX
    today = now_ms()
    days = [day_of(today - back * DAY_MS) for back in range(-1, conf.USAGE_DAYS + 2)]
    owned = [keys.usage_key_in(prefix, owner, day) for day in days] + [
        keys.usage_write_ids_key_in(prefix, owner),
        keys.quota_turns_key_in(prefix, owner),
        keys.quota_streams_key_in(prefix, owner),
    ]
    replies = yield Batch(
        [("DEL", *owned)]
        + [("ZREM", keys.usage_day_key_in(prefix, day), owner) for day in days]
    )
    return int(replies[0])
