"""Finding sessions by the words of their titles, within a window of recent ones.

There is no word index: titles are read from the sessions' metadata, a window
of an activity index at a time (the ``size`` most recently active sessions,
then the next ``size``, ...). A search therefore costs a bound fixed by the
window, whatever the number of sessions, adds nothing to the write path, and
its count is exact *for the window it searched*, which the result says
(:attr:`TitleMatches.searched` of :attr:`TitleMatches.indexed`). A title
matches when each of the query's words occurs in it, ignoring case.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import keys
from .operations import Batch, Operation, ms, now_ms, ttl_ms


@dataclass(frozen=True, slots=True)
class TitleMatches:
    """The sessions of one window whose titles hold every word."""

    matches: list[tuple[str, str | None]]
    """(session id, owner) of each match, most recently active first."""
    start: int
    """The window's first position in the index (0: the most recent session)."""
    searched: int
    """Index entries the window covered."""
    indexed: int
    """Entries in the index (within the activity filter): all windows together."""

    @property
    def complete(self) -> bool:
        """Whether this window reached the end of the index."""
        return self.start + self.searched >= self.indexed


def title_words(query: str) -> list[str]:
    """The words a title must hold, case-folded; empty for a blank query."""
    return list(dict.fromkeys(query.casefold().split()))


def title_matches(title: str, words: list[str]) -> bool:
    """Whether ``title`` holds each of ``words`` (from :func:`title_words`)."""
    folded = title.casefold()
    return bool(words) and all(word in folded for word in words)


def search_titles_op(
    words: list[str],
    *,
    owner: str | None = None,
    ownerless: bool = False,
    active_since: datetime | None = None,
    start: int = 0,
    size: int = 5000,
) -> Operation[TitleMatches]:
    """The sessions among the index's ``size`` entries from ``start`` (most
    recent first) whose titles hold every word: two round trips, ``size``
    metadata reads.

    The index is every session's, one owner's, or (``ownerless``) that of the
    sessions without one; ``active_since`` keeps those active since then.
    """
    if size < 1 or start < 0:
        raise ValueError(f"need size >= 1 and start >= 0, not {size} and {start}")
    if ownerless:
        index = keys.no_owner_key()
    else:
        index = keys.sessions_key() if owner is None else keys.owner_key(owner)
    low = 0 if active_since is None else ms(active_since)
    ttl = ttl_ms()
    if ttl:  # entries older than the TTL have expired (listings prune them)
        low = max(low, now_ms() - ttl)
    floor: int | str = low if low else "-inf"
    indexed, raw_ids = yield Batch(
        [
            ("ZCOUNT", index, floor, "+inf"),
            ("ZREVRANGEBYSCORE", index, "+inf", floor, "LIMIT", start, size),
        ]
    )
    ids = [raw.decode() for raw in raw_ids]
    matches: list[tuple[str, str | None]] = []
    if ids and words:
        commands: list[tuple[Any, ...]] = [
            ("HMGET", keys.meta_key(session_id), "title", "owner") for session_id in ids
        ]
        metas = yield Batch(commands)
        for session_id, (title, session_owner) in zip(ids, metas, strict=True):
            if title is None or not title_matches(title.decode(), words):
                continue
            found_owner = None if session_owner is None else session_owner.decode()
            if found_owner != owner and not ownerless and owner is not None:
                continue  # a stray in an owner's index (see list_sessions)
            if ownerless and found_owner is not None:
                continue
            matches.append((session_id, found_owner))
    return TitleMatches(matches, start, len(ids), int(indexed))


__all__ = ["TitleMatches", "search_titles_op", "title_matches", "title_words"]
