"""Sessions in and out: the NDJSON form of a session, export, LangChain's Redis data.

The NDJSON form (one session per line) is defined here and nowhere else::

    {"id": "foo", "owner": "42" or null, "title": "...",
     "created": "2026-11-29T16:14:50.123+00:00", "updated": "...",
     "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0},
     "messages": [<message_to_dict record>, ...]}

A LangGraph thread (see :mod:`chatmemory.langgraph`) has the same line with
``"kind": "thread"``; its messages are those of its latest checkpoint (the
rest of a graph's state, and the older checkpoints, are not exported). A
line without ``kind`` is a chat history session.

Export streams: a session's messages are read and written a slice at a time,
so memory stays flat however many sessions and messages there are. Import
holds one line (one session) at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import redis

from . import keys
from .codec import Record, decode_records, encode_records
from .maintenance import ImportedSession
from .operations import Batch, Command, Operation, SessionInfo, _parse_info, ms, run

SLICE = 1000
"""Messages read (and written) per round trip while exporting a session."""


class Writer(Protocol):
    """Where an export goes: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> object: ...


class BadLine(ValueError):
    """A line of an NDJSON file that is not a session; nothing of it was imported."""

    def __init__(self, line_number: int, reason: str) -> None:
        self.line_number = line_number
        self.reason = reason
        super().__init__(f"line {line_number}: {reason}")


# ---------------------------------------------------------------------------
# The NDJSON form


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


THREAD = "thread"
"""The ``kind`` of a LangGraph thread's line."""


def session_header(info: SessionInfo) -> dict[str, Any]:
    """Every field of a session's line but its messages."""
    kind = {"kind": THREAD} if info.kind == THREAD else {}
    return {
        **kind,
        "id": info.session_id,
        "owner": info.owner,
        "title": info.title,
        "created": _when(info.created),
        "updated": _when(info.updated),
        "usage": {
            "input_tokens": info.input_tokens,
            "output_tokens": info.output_tokens,
            "total_tokens": info.total_tokens,
        },
    }


def session_line(info: SessionInfo, records: Iterable[Record]) -> bytes:
    """A whole session as one NDJSON line (for small sessions and tests)."""
    return b"".join(_line_parts(info, [encode_records(list(records))]))


def _line_parts(info: SessionInfo, slices: Iterable[list[bytes]]) -> Iterator[bytes]:
    head = json.dumps(session_header(info), ensure_ascii=False, separators=(",", ":"))
    yield head[:-1].encode() + b',"messages":['
    first = True
    for encoded in slices:
        if not encoded:
            continue
        if not first:
            yield b","
        yield b",".join(encoded)
        first = False
    yield b"]}\n"


def _datetime(value: object, field: str, line_number: int) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadLine(line_number, f"{field!r} must be an ISO 8601 date-time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadLine(
            line_number, f"{field!r} is not an ISO 8601 date-time: {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_session_line(line: bytes | str, line_number: int = 1) -> ImportedSession:
    """One NDJSON line back as a session to import; raises :class:`BadLine`."""
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise BadLine(line_number, f"not JSON ({exc})") from None
    except RecursionError:
        raise BadLine(line_number, "JSON nested too deep to read") from None
    if not isinstance(data, dict):
        raise BadLine(line_number, f"a JSON {type(data).__name__}, not an object")
    session_id = data.get("id")
    try:
        keys.validate_session_id(session_id)
    except ValueError as exc:
        raise BadLine(line_number, f"'id': {exc}") from None
    assert isinstance(session_id, str)
    owner = data.get("owner")
    if owner is not None and (not isinstance(owner, str) or not owner):
        raise BadLine(line_number, "'owner' must be a non-empty string or null")
    title = data.get("title")
    if title is not None and not isinstance(title, str):
        raise BadLine(line_number, "'title' must be a string")
    messages = data.get("messages", [])
    if not isinstance(messages, list):
        raise BadLine(line_number, "'messages' must be a list")
    for position, record in enumerate(messages):
        if not (
            isinstance(record, dict)
            and isinstance(record.get("type"), str)
            and isinstance(record.get("data"), dict)
        ):
            raise BadLine(
                line_number,
                f"message {position} is not a message_to_dict record "
                '({"type": str, "data": {...}})',
            )
    kind = data.get("kind", "session")
    if kind not in ("session", THREAD):
        raise BadLine(
            line_number, f"'kind' must be 'session' or 'thread', not {kind!r}"
        )
    usage = data.get("usage")
    totals: tuple[int, int, int] | None = None
    if usage is not None:
        if not isinstance(usage, dict):
            raise BadLine(line_number, "'usage' must be an object")
        counts = [
            usage.get(f"{kind}_tokens", 0) for kind in ("input", "output", "total")
        ]
        if not all(type(count) is int and count >= 0 for count in counts):
            raise BadLine(line_number, "'usage' counts must be whole numbers >= 0")
        totals = (counts[0], counts[1], counts[2])
    return ImportedSession(
        session_id,
        messages,
        owner=owner,
        created=_datetime(data.get("created"), "created", line_number),
        updated=_datetime(data.get("updated"), "updated", line_number),
        title=title,
        usage=totals,
        kind=kind,
    )


def read_sessions(lines: Iterable[bytes | str]) -> Iterator[ImportedSession]:
    """The sessions of an NDJSON file, lazily; blank lines are skipped."""
    for line_number, line in enumerate(lines, 1):
        if line.strip():
            yield parse_session_line(line, line_number)


# ---------------------------------------------------------------------------
# Export


def scan_index_op(
    owner: str | None, cursor: int, count: int
) -> Operation[tuple[int, list[tuple[str, float]]]]:
    """One ZSCAN step over the activity index (all sessions or one owner's).

    ZSCAN returns every session that is in the index for the whole scan, at
    least once (rarely twice), whatever writes happen meanwhile.
    """
    index = keys.sessions_key() if owner is None else keys.owner_key(owner)
    next_cursor, found = yield Command(("ZSCAN", index, cursor, "COUNT", count))
    # redis-py answers (member, score) pairs
    pairs = [(member.decode(), float(score)) for member, score in found]
    return int(next_cursor), pairs


def count_index_op(
    owner: str | None, since: datetime | None, before: datetime | None = None
) -> Operation[int]:
    """How many sessions the activity index holds (all, or one owner's; active
    since ``since``; last active before ``before``)."""
    return (yield from count_indexes_op([owner], since, before))


def count_indexes_op(
    owners: Sequence[str | None],
    since: datetime | None = None,
    before: datetime | None = None,
) -> Operation[int]:
    """:func:`count_index_op` summed over owners (None: all sessions), one round
    trip."""
    if not owners:
        return 0
    low: int | str = "-inf" if since is None else ms(since)
    high: int | str = "+inf" if before is None else f"({ms(before)}"
    counts = yield Batch(
        [
            (
                "ZCOUNT",
                keys.sessions_key() if owner is None else keys.owner_key(owner),
                low,
                high,
            )
            for owner in owners
        ]
    )
    return sum(int(count) for count in counts)


def session_head_op(
    session_id: str,
) -> Operation[tuple[SessionInfo | None, int, list[bytes]]]:
    """A session's metadata, message count and first slice, in one transaction."""
    meta_key = keys.meta_key(session_id)
    messages = keys.messages_key(session_id)
    meta, pttl, length, first = yield Batch(
        [
            ("HGETALL", meta_key),
            ("PTTL", meta_key),
            ("LLEN", messages),
            ("LRANGE", messages, 0, SLICE - 1),
        ],
        transaction=True,
    )
    info = _parse_info(session_id, meta, pttl) if meta else None
    return info, int(length), list(first)


def message_slice_op(session_id: str, start: int) -> Operation[list[bytes]]:
    """SLICE stored messages of a session from ``start``."""
    raw = yield Command(
        ("LRANGE", keys.messages_key(session_id), start, start + SLICE - 1)
    )
    return list(raw)


def _clean_slice(raw: list[bytes], skipped: list[int]) -> list[bytes]:
    """Stored entries fit for an NDJSON line; unreadable ones are dropped (counted)."""
    records = [r for r in decode_records(raw) if isinstance(r, dict)]
    if len(records) == len(raw) and not any(
        b"\n" in entry or b"\r" in entry for entry in raw
    ):
        return raw  # every entry is a record on one line: written as stored
    skipped.append(len(raw) - len(records))
    return encode_records(records)


@dataclass(slots=True)
class ExportProgress:
    """What an export did so far."""

    total: int = 0
    """Sessions the index holds (active since ``since``, when given): the
    export's estimate of its work."""
    sessions: int = 0
    """Sessions written."""
    messages: int = 0
    """Messages written."""
    unreadable: int = 0
    """Stored entries left out because they were not message records."""
    seen: int = 0
    """Index entries looked at that are counted in ``total`` (sessions written,
    or gone meanwhile); entries left out by ``since`` are not counted."""
    threads: int = 0
    """LangGraph threads written (also counted in ``sessions``)."""
    threads_left_out: int = 0
    """LangGraph threads left out: reading them needs LangGraph."""


def export_sessions(
    out: Writer,
    *,
    owner: str | None = None,
    session_ids: Iterable[str] | None = None,
    since: datetime | None = None,
    progress: Any = None,
    scan_count: int = 500,
    thread_records: Callable[[str], list[Record]] | None = None,
) -> ExportProgress:
    """Write sessions to ``out`` as NDJSON, streaming; return what was written.

    All sessions, one owner's (``owner``), or the given ids; only those active
    since ``since`` when given. ``progress`` (if any) is called with the
    :class:`ExportProgress` after each session. Sessions that vanish during
    the export are left out; a session written to meanwhile may be caught
    between two slices. LangGraph threads are written with the messages
    ``thread_records`` reads (:func:`chatmemory.langgraph.thread_records`;
    the store does not import LangGraph), or left out without it.
    """
    done = ExportProgress()
    for part in export_parts(
        done,
        owner=owner,
        session_ids=session_ids,
        since=since,
        progress=progress,
        scan_count=scan_count,
        thread_records=thread_records,
    ):
        out.write(part)
    return done


def export_parts(
    done: ExportProgress,
    *,
    owner: str | None = None,
    session_ids: Iterable[str] | None = None,
    since: datetime | None = None,
    progress: Any = None,
    scan_count: int = 500,
    thread_records: Callable[[str], list[Record]] | None = None,
) -> Iterator[bytes]:
    """:func:`export_sessions` as the bytes of its NDJSON, lazily: each session
    is read (a slice at a time) only as the bytes are asked for; ``done`` is
    kept up to date. Each session's last part ends its line (``\\n``)."""
    low = None if since is None else ms(since)
    if session_ids is not None:
        ids = list(session_ids)
        done.total = len(ids)
        for session_id in ids:
            done.seen += 1
            yield from _export_one(session_id, low, done, thread_records)
            if progress is not None:
                progress(done)
        return
    done.total = run(count_index_op(owner, since))
    cursor = 0
    while True:
        cursor, pairs = run(scan_index_op(owner, cursor, scan_count))
        for session_id, score in pairs:
            if low is not None and score < low:
                continue  # not counted: the total counts active sessions only
            done.seen += 1
            yield from _export_one(session_id, low, done, thread_records)
            if progress is not None:
                progress(done)
        if cursor == 0:
            return


def json_array(parts: Iterable[bytes]) -> Iterator[bytes]:
    """NDJSON bytes (:func:`export_parts`) as a JSON array, one session a line:
    ``[`` line ``,\\n`` line ... ``]\\n``.

    An NDJSON line holds no line break but its end, so a part ending in one
    ends a session.
    """
    yield b"["
    between = b""
    for part in parts:
        if not part:
            continue
        if between:
            yield between
            between = b""
        if part.endswith(b"\n"):
            yield part[:-1]
            between = b",\n"
        else:
            yield part
    yield b"]\n"


def _export_one(
    session_id: str,
    low: int | None,
    done: ExportProgress,
    thread_records: Callable[[str], list[Record]] | None,
) -> Iterator[bytes]:
    info, length, first = run(session_head_op(session_id))
    if info is None or (low is not None and ms(info.updated) < low):
        return
    if info.kind == THREAD:
        if thread_records is None:
            done.threads_left_out += 1
            return
        records = thread_records(session_id)
        yield session_line(info, records)
        done.sessions += 1
        done.threads += 1
        done.messages += len(records)
        return
    skipped: list[int] = []

    def slices() -> Iterator[list[bytes]]:
        yield _clean_slice(first, skipped)
        for start in range(SLICE, length, SLICE):
            yield _clean_slice(run(message_slice_op(session_id, start)), skipped)

    yield from _line_parts(info, slices())
    done.sessions += 1
    done.messages += length - sum(skipped)
    done.unreadable += sum(skipped)


# ---------------------------------------------------------------------------
# LangChain's RedisChatMessageHistory


@dataclass(frozen=True, slots=True)
class LangChainSession:
    """One ``RedisChatMessageHistory`` session, read from its Redis."""

    session_id: str
    records: list[Record]
    """Oldest first (LangChain stores them newest first)."""
    expires_in: timedelta | None
    unreadable: int


def scan_langchain_keys(
    client: redis.Redis, key_prefix: str, count: int = 500
) -> Iterator[list[str]]:
    """Batches of the list keys under ``key_prefix`` (SCAN: safe on a live server)."""
    pattern = _glob_escape(key_prefix) + "*"
    cursor: int = 0
    while True:
        cursor, found = client.scan(cursor, match=pattern, count=count, _type="list")
        if found:
            yield [k.decode() if isinstance(k, bytes) else str(k) for k in found]
        if int(cursor) == 0:
            return


def count_langchain_keys(client: redis.Redis, key_prefix: str) -> int:
    """How many list keys are under ``key_prefix`` (one SCAN pass, for progress)."""
    return sum(len(batch) for batch in scan_langchain_keys(client, key_prefix, 1000))


def read_langchain_sessions(
    client: redis.Redis, key_prefix: str, names: list[str]
) -> list[LangChainSession]:
    """The sessions stored at ``names`` (keys under ``key_prefix``), one round trip."""
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.lrange(name, 0, -1)
        pipe.pttl(name)
    replies = pipe.execute()
    sessions = []
    for i, name in enumerate(names):
        raw, pttl = replies[2 * i], replies[2 * i + 1]
        if not raw:  # deleted or expired since the scan
            continue
        decoded = decode_records(list(reversed(raw)))
        records = [
            r
            for r in decoded
            if isinstance(r, dict)
            and isinstance(r.get("type"), str)
            and isinstance(r.get("data"), dict)
        ]
        sessions.append(
            LangChainSession(
                session_id=name[len(key_prefix) :],
                records=records,
                expires_in=timedelta(milliseconds=pttl) if pttl > 0 else None,
                unreadable=len(raw) - len(records),
            )
        )
    return sessions


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
