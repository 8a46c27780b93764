"""A stored message record's bytes: encoding for writes, decoding for reads.

Messages cross the store as plain ``dict`` records in
``langchain_core.messages.message_to_dict`` form, so the store does not import
LangChain (the admin must survive LangChain 2.0).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

try:
    # Optional: langchain-core brings it in (through langsmith) on CPython;
    # without it json does all the work.
    import orjson

    _ORJSON = True
except ImportError:  # pragma: no cover - e.g. on PyPy
    _ORJSON = False

from ..records import TITLE_LENGTH as TITLE_LENGTH
from ..records import Record as Record
from ..records import shorten as shorten
from ..records import title as records_title


@dataclass(frozen=True, slots=True)
class UnreadableEntry:
    """A stored entry that is not a message record (bad JSON, not an object)."""

    position: int
    raw: bytes
    reason: str


def encode_record(record: Record) -> bytes:
    """Serialise one message record for storage."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


class EncodedRecord(dict[str, Any]):
    """A record that carries its stored bytes (worked out by :func:`encode_exact`).

    Writers that already have the bytes (the history checks them while it
    builds the record) hand this over, and the store does not encode twice.
    """

    __slots__ = ("encoded",)

    def __init__(self, record: Record, encoded: bytes) -> None:
        super().__init__(record)
        self.encoded = encoded


_ORJSON_OPTION = (
    (
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    if _ORJSON
    else 0
)


def encode_exact_record(kind: str, data: dict[str, Any], at: int) -> bytes | None:
    """:func:`encode_exact` of ``{"type": kind, "data": data, "at": at}``, for
    a ``kind`` that JSON writes as it is (a message type name): only ``data``
    goes through orjson, so the record itself may be any dict (an
    :class:`EncodedRecord` being built)."""
    if type(at) is not int:
        return None
    body = _orjson_exact(data, 1)
    if body is None:
        return None
    return b'{"type":"%s","data":%s,"at":%d}' % (kind.encode(), body, at)


def encode_exact(record: Record) -> bytes | None:
    """orjson's bytes for the record, or None unless they read back as the record.

    orjson writes the same compact UTF-8 JSON as :func:`encode_record` (floats
    may be spelt differently) more than ten times faster, but writes NaN and
    infinities as null, enums and UUIDs as their values, tuples as lists; it
    refuses ints past 64 bits, non-str keys, subclasses, dates and
    dataclasses. So its bytes are read back and compared, unless the record
    holds only str, int, bool and None values in dicts and lists (see
    :func:`_plain`): those it writes exactly or refuses. None too when orjson
    is not installed.
    """
    return _orjson_exact(record, 0)


def _orjson_exact(value: dict[str, Any], depth: int) -> bytes | None:
    """orjson's bytes for ``value`` (a dict ``depth`` deep in its record), or
    None unless they read back as ``value`` (see :func:`encode_exact`)."""
    if not _ORJSON:
        return None
    try:
        data = orjson.dumps(value, option=_ORJSON_OPTION)
    except TypeError:  # orjson.JSONEncodeError: a value it will not write
        return None
    if _plain(value, depth):
        # orjson writes exactly these or refuses them (lone surrogates, ints
        # past 64 bits, non-str keys).
        return data
    return data if orjson.loads(data) == value else None


_PLAIN_DEPTH = 4
"""How deep :func:`_plain` looks (a reply's usage details are 3 deep); past
it, the bytes are read back instead."""


def _plain(container: dict[str, Any] | list[Any], depth: int = 0) -> bool:
    """Whether the dict or list holds only str, int, bool and None values, or
    dicts and lists of them, at most :data:`_PLAIN_DEPTH` deep (exact types: a
    subclass, a tuple or a float is not plain)."""
    for item in container.values() if type(container) is dict else container:
        kind = type(item)
        if kind is str or kind is int:
            continue
        if kind is dict or kind is list:
            if depth == _PLAIN_DEPTH or not _plain(item, depth + 1):  # type: ignore[arg-type]
                return False
        elif kind is not bool and item is not None:
            return False
    return True


def encode_records(records: Sequence[Record]) -> list[bytes]:
    """Serialise records for storage, as :func:`encode_record` would, faster.

    orjson's bytes where they read back as the record (:func:`encode_exact`);
    whatever it refuses goes to json, which then writes or rejects it as
    :func:`encode_record` does.
    """
    encoded = []
    encode = None
    for record in records:
        if type(record) is EncodedRecord:
            encoded.append(record.encoded)
            continue
        data = encode_exact(record)
        if data is None:
            if encode is None:
                # One encoder for the rest of the call (json.dumps builds one
                # per call).
                encode = json.JSONEncoder(
                    ensure_ascii=False, separators=(",", ":")
                ).encode
            data = encode(record).encode()
        encoded.append(data)
    return encoded


# Digits -> "0", everything else -> " ": a run of 19 zeros in the translation
# is a run of 19 digits in the JSON (see decode_records).
_DIGITS = bytes(48 if 48 <= byte <= 57 else 32 for byte in range(256))
_LONG_RUN = b"0" * 19
# Any 19 consecutive bytes hold 6 consecutive multiples of 3: every third byte
# of a run of 19 digits is a run of 6 digits, so no such run goes unseen. The
# converse does not hold: 6 digits every third byte (16 bytes) may have other
# bytes between them (hex ids often do), and the input is then scanned whole. A
# stored time (13 digits between non-digits) gives at most 5.
_SAMPLED_RUN = b"0" * 6
# Past this size the first look is skipped: a long history almost surely has
# 6 digits every third byte somewhere (in hex ids), so it would only add a
# third.
_SAMPLE_BELOW = 65_536


def _has_long_number(joined: bytes) -> bool:
    """Whether ``joined`` has a run of 19 digits or more (maybe a number past
    64 bits). A short input is first looked at on every third byte (a third of
    the work), and wholly only when that finds 6 digits in a row."""
    if len(joined) < _SAMPLE_BELOW and _SAMPLED_RUN not in joined[::3].translate(
        _DIGITS
    ):
        return False
    return _LONG_RUN in joined.translate(_DIGITS)


def decode_records(raw: Sequence[bytes]) -> list[Record | UnreadableEntry]:
    """Decode stored entries; entries that are not JSON objects come back unreadable.

    Decoding is the cost of reading a long history, so the common case parses
    all entries as one JSON array (one call instead of one per entry), by
    orjson when it reads the input as json would, with the garbage collector
    paused: the objects it builds are all young and all kept. Entries come
    back as json reads them.
    """
    if not raw:
        return []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        # One copy of the entries: the brackets go on the first and last
        # (b"[" + b",".join(raw) + b"]" copied them three times, a sixth of a
        # long read).
        count = len(raw)
        joined = (
            b"[" + raw[0] + b"]"
            if count == 1
            else b",".join([b"[" + raw[0], *raw[1 : count - 1], raw[-1] + b"]"])
        )
        decoded = None
        # orjson parses faster and fails where it reads JSON differently (NaN,
        # Infinity, lone surrogates, numbers past a double, a byte-order
        # mark), leaving those to json, but for one case: an integer past 64
        # bits comes back as a float. Such a number has 19 digits or more, so
        # json takes any input with a run that long (a cheap byte scan).
        if _ORJSON and not _has_long_number(joined):
            try:
                decoded = orjson.loads(joined)
            except ValueError:  # orjson.JSONDecodeError
                decoded = None
        if decoded is None:
            try:
                decoded = json.loads(joined)
            # RecursionError: an entry nested deeper than the parser goes.
            except (ValueError, RecursionError):
                decoded = None
        # A corrupt entry can shift the array's boundaries; only trust the fast
        # parse when it yields one object per entry.
        if (
            decoded is not None
            and len(decoded) == len(raw)
            and set(map(type, decoded)) == {dict}
        ):
            return decoded  # type: ignore[no-any-return]
        return [_decode_one(position, item) for position, item in enumerate(raw)]
    finally:
        if gc_was_enabled:
            gc.enable()


def _decode_one(position: int, raw: bytes) -> Record | UnreadableEntry:
    try:
        item = json.loads(raw)
    except ValueError as exc:
        return UnreadableEntry(position, raw, f"not JSON ({exc})")
    except RecursionError:
        return UnreadableEntry(position, raw, "JSON nested too deep to read")
    if type(item) is not dict:
        return UnreadableEntry(position, raw, f"a JSON {type(item).__name__}")
    record: Record = item
    return record


def title_from_records(records: Sequence[Record]) -> str:
    """The session title: the first human message's text, cut to TITLE_LENGTH."""
    return records_title(records)


def usage_of_records(records: Sequence[Record]) -> tuple[int, int, int]:
    """The records' summed ``usage_metadata``: (input, output, total) tokens.

    Messages without usage (human messages, models that report none) add
    nothing; a total missing from a usage is input plus output.
    """
    input_tokens = output_tokens = total_tokens = 0
    for record in records:
        data = record.get("data")
        usage = data.get("usage_metadata") if type(data) is dict else None
        if type(usage) is not dict:
            continue
        # bool is an int; a count below zero or of the wrong type counts as
        # none (inlined: this runs on every write).
        given_in = usage.get("input_tokens")
        if type(given_in) is not int or given_in < 0:
            given_in = 0
        given_out = usage.get("output_tokens")
        if type(given_out) is not int or given_out < 0:
            given_out = 0
        input_tokens += given_in
        output_tokens += given_out
        total = usage.get("total_tokens")
        if total is None:
            total_tokens += given_in + given_out
        elif type(total) is int and total > 0:
            total_tokens += total
    return input_tokens, output_tokens, total_tokens
