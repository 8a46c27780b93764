"""Rewriting a session's last turn, and saving a stopped reply as it was seen.

- :func:`read_snapshot_op` reads a session with its entries as stored, so that
  a regenerated, edited or continued turn can replace the old one with
  ``append_records_op(..., replace=snapshot.tail(n))``: one script that takes
  the old turn off and appends the new one, or writes nothing if the session
  changed meanwhile.
- A stopped reply: the page posts the text it showed (:func:`note_stop_op`),
  and the turn, once it has saved what it had (:func:`apply_stop_op`), cuts
  the saved reply to that text. Whichever of the two comes second finds the
  other's work, so the saved reply is the text shown, in either order.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from . import keys
from .codec import Record, UnreadableEntry, decode_records, encode_record
from .operations import Batch, Command, Eval, Operation

TURN_FIELD = "turn"
"""The record field (beside ``type`` and ``data``) naming the turn that wrote
an AI record: the id the page gave it, so a Stop can find its reply."""

StopResult = Literal["cut", "kept", "missing"]
"""What became of a stopped reply: cut to the text shown; kept (saved, and
already no longer than that text); or missing (not saved yet)."""

STOP_TTL_MS = 10 * 60 * 1000
"""How long what a page showed at Stop is kept for its turn to pick up."""

# A stopped reply is among the last few entries (its question before it).
_TAIL = 4

_TURN_ID = re.compile(r"[0-9a-f]{32}")


def validate_turn_id(turn: object) -> str:
    """Return ``turn`` if it is a turn id (32 lowercase hex digits), else raise."""
    if not isinstance(turn, str) or not _TURN_ID.fullmatch(turn):
        raise ValueError(f"a turn id is 32 lowercase hex digits, not {turn!r}")
    return turn


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A session's last entries as read, decoded and raw, and its length then."""

    records: list[Record | UnreadableEntry]
    raw: list[bytes]
    length: int
    """How many entries the session held (``raw`` may be only its last ones)."""

    def tail(self, count: int) -> tuple[int, list[bytes]]:
        """``replace=`` for append_records_op: the last ``count`` entries."""
        if count > len(self.raw):
            raise ValueError(f"the snapshot holds {len(self.raw)} entries, not {count}")
        return self.length, self.raw[len(self.raw) - count :] if count else []

    @property
    def complete(self) -> bool:
        """Whether the snapshot holds every entry of the session."""
        return len(self.raw) == self.length


def read_snapshot_op(session_id: str, count: int = 0) -> Operation[Snapshot]:
    """The session's last ``count`` entries (0: all), decoded and as stored,
    and its length, together (one transaction, one round trip): Redis's work
    follows ``count``, not the session's length."""
    keys.validate_session_id(session_id)
    messages = keys.messages_key(session_id)
    if count < 0:
        raise ValueError(f"count must be at least 0, not {count}")
    length, raw = yield Batch(
        [("LLEN", messages), ("LRANGE", messages, -count if count else 0, -1)],
        transaction=True,
    )
    entries = [bytes(item) for item in raw]
    return Snapshot(decode_records(entries), entries, int(length))


def note_stop_op(session_id: str, turn: str, shown: str) -> Operation[StopResult]:
    """Keep what the page showed at Stop; cut the reply now if it is saved."""
    keys.validate_session_id(session_id)
    validate_turn_id(turn)
    stop = keys.stop_key(session_id, turn)
    _, tail = yield Batch(
        [
            ("SET", stop, shown.encode(), "PX", STOP_TTL_MS),
            ("LRANGE", keys.messages_key(session_id), -_TAIL, -1),
        ]
    )
    return (yield from _cut_op(session_id, turn, shown, tail))


def apply_stop_op(session_id: str, turn: str) -> Operation[StopResult]:
    """Cut turn ``turn``'s saved reply to what its page showed, if it said.

    "missing" when the page said nothing (yet) or the reply is not saved yet.
    """
    keys.validate_session_id(session_id)
    validate_turn_id(turn)
    shown, tail = yield Batch(
        [
            ("GET", keys.stop_key(session_id, turn)),
            ("LRANGE", keys.messages_key(session_id), -_TAIL, -1),
        ]
    )
    if shown is None:
        return "missing"
    return (yield from _cut_op(session_id, turn, bytes(shown).decode(), tail))


def stop_note_op(session_id: str, turn: str) -> Operation[str | None]:
    """What the page said it showed when it stopped turn ``turn`` (None: nothing).

    For replies saved elsewhere than the session's list (a LangGraph thread's,
    see :mod:`chatmemory.agent`), which cut them themselves.
    """
    keys.validate_session_id(session_id)
    validate_turn_id(turn)
    shown = yield Command(("GET", keys.stop_key(session_id, turn)))
    return None if shown is None else bytes(shown).decode()


def _cut_op(
    session_id: str, turn: str, shown: str, tail: Sequence[bytes]
) -> Operation[StopResult]:
    messages = keys.messages_key(session_id)
    for _ in range(3):
        found = _find_reply(tail, turn)
        if found is None:
            return "missing"
        position, old, record = found
        cut = cut_reply(record, shown)
        if cut is None:
            return "kept"
        index = position - len(tail)
        replaced = yield Eval("set_entry", [messages], [index, old, encode_record(cut)])
        if replaced:
            return "cut"
        tail = yield Command(("LRANGE", messages, -_TAIL, -1))
    # Rewritten three times under our feet: whoever wrote last decides.
    return "kept"


def _find_reply(tail: Sequence[bytes], turn: str) -> tuple[int, bytes, Record] | None:
    for position in range(len(tail) - 1, -1, -1):
        raw = bytes(tail[position])
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get(TURN_FIELD) == turn:
            return position, raw, record
    return None


def cut_reply(record: Record, shown: str) -> Record | None:
    """``record`` with its text cut to ``shown``; None unless that is a real cut.

    Only a cut is allowed: ``shown`` must be where the stored text starts (line
    breaks compared loosely, as forms send them), so a page can shorten its
    own reply but never put other words in the model's mouth.
    """
    data = record.get("data")
    if record.get("type") != "ai" or not isinstance(data, dict):
        return None
    content = data.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(
            str(block.get("text", ""))
            for block in content
            if isinstance(block, dict) and block.get("type") == "text"
        )
    else:
        return None
    shown = shown.replace("\r\n", "\n")
    if len(shown) >= len(text) or not text.startswith(shown):
        return None
    return {**record, "data": {**data, "content": shown}}
