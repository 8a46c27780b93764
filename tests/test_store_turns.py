"""Rewriting a session's last turn, and cutting a stopped reply to what was shown."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from chatmemory import store
from chatmemory.exceptions import SessionChanged
from chatmemory.store import keys
from chatmemory.store.turns import cut_reply


def human(text: str) -> dict[str, Any]:
    return {"type": "human", "data": {"content": text}}


def ai(text: str, turn: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "ai", "data": {"content": text}}
    if turn is not None:
        record[store.TURN_FIELD] = turn
    return record


def texts(session_id: str) -> list[str]:
    return [
        r["data"]["content"]
        for r in store.read_records(session_id)
        if isinstance(r, dict)
    ]


def evalsha_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_the_last_turn_is_replaced_in_one_script(redis_client: redis.Redis) -> None:
    store.append_records("s", [human("q1"), ai("a1"), human("q2"), ai("a2")], owner="7")
    snapshot = store.read_snapshot("s")
    assert len(snapshot.raw) == 4 and snapshot.records[3] == ai("a2")
    before = evalsha_calls(redis_client)

    count = store.replace_last_records(
        "s", snapshot, 2, [human("q2 edited"), ai("a2 again")], owner="7"
    )

    after = evalsha_calls(redis_client)
    assert count == 4
    assert texts("s") == ["q1", "a1", "q2 edited", "a2 again"]
    assert after - before <= 2  # one script (plus a reload at most)
    info = store.get_session("s")
    assert info is not None and info.message_count == 4 and info.title == "q1"


def test_nothing_is_written_when_the_session_changed() -> None:
    store.append_records("s", [human("q1"), ai("a1")])
    snapshot = store.read_snapshot("s")
    store.append_records("s", [human("meanwhile"), ai("other tab")])
    with pytest.raises(SessionChanged):
        store.replace_last_records("s", snapshot, 2, [human("x"), ai("y")])
    assert texts("s") == ["q1", "a1", "meanwhile", "other tab"]
    # Same length, different entries: refused too.
    snapshot = store.read_snapshot("s")
    store.replace_last_records("s", snapshot, 1, [ai("replaced")])
    with pytest.raises(SessionChanged):
        store.replace_last_records("s", snapshot, 1, [ai("stale")])
    assert texts("s")[-1] == "replaced"


def test_a_whole_session_can_be_replaced() -> None:
    store.append_records("s", [human("q"), ai("a")], owner="7")
    snapshot = store.read_snapshot("s")
    assert store.replace_last_records("s", snapshot, 2, [human("Q"), ai("A")]) == 2
    assert texts("s") == ["Q", "A"]
    info = store.get_session("s")
    assert info is not None and info.owner == "7"


def test_a_snapshot_of_the_last_entries_replaces_them_on_a_long_session() -> None:
    store.append_records("s", [human(str(i)) for i in range(1000)])
    store.append_records("s", [human("q"), ai("a")])

    snapshot = store.read_snapshot("s", 3)

    assert snapshot.length == 1002 and not snapshot.complete
    assert [r["data"]["content"] for r in snapshot.records] == ["999", "q", "a"]  # type: ignore[index]
    assert store.replace_last_records("s", snapshot, 2, [human("Q"), ai("A")]) == 1002
    assert texts("s")[-3:] == ["999", "Q", "A"]
    with pytest.raises(ValueError, match="holds 3 entries"):
        snapshot.tail(4)
    with pytest.raises(ValueError, match="at least 0"):
        store.read_snapshot("s", -1)
    whole = store.read_snapshot("s")
    assert whole.complete and len(whole.raw) == whole.length == 1002


def test_a_tail_snapshot_of_a_changed_session_is_refused() -> None:
    store.append_records(
        "s", [human(str(i)) for i in range(10)] + [human("q"), ai("a")]
    )
    snapshot = store.read_snapshot("s", 2)
    store.append_records("s", [human("meanwhile"), ai("a")])
    with pytest.raises(SessionChanged):
        store.replace_last_records("s", snapshot, 1, [ai("b")])
    assert texts("s")[-2:] == ["meanwhile", "a"]


async def test_async_replace_and_snapshot() -> None:
    await store.aappend_records("s", [human("q"), ai("a")])
    snapshot = await store.aread_snapshot("s")
    assert await store.areplace_last_records("s", snapshot, 1, [ai("b")]) == 2
    assert texts("s") == ["q", "b"]


def test_a_plain_append_is_unchanged() -> None:
    assert store.append_records("s", [human("a")]) == 1
    assert store.append_records("s", [human("b"), ai("c")]) == 3


# --- Stop: the saved reply is what the page showed ------------------------------


def test_stop_after_the_save_cuts_the_reply() -> None:
    turn = uuid.uuid4().hex
    store.append_records("s", [human("q"), ai("Hello there, friend", turn)])
    assert store.note_stop("s", turn, "Hello the") == "cut"
    assert texts("s") == ["q", "Hello the"]
    record = store.read_records("s")[1]
    assert isinstance(record, dict) and record[store.TURN_FIELD] == turn
    # Told again (a retry), nothing more to cut.
    assert store.note_stop("s", turn, "Hello the") == "kept"


def test_stop_before_the_save_is_applied_by_the_turn() -> None:
    turn = uuid.uuid4().hex
    store.append_records("s", [human("q0"), ai("a0")])
    assert store.note_stop("s", turn, "Partial") == "missing"  # not saved yet
    store.append_records("s", [human("q"), ai("Partial reply and more", turn)])
    assert store.apply_stop("s", turn) == "cut"
    assert texts("s") == ["q0", "a0", "q", "Partial"]


async def test_the_stop_note_is_read_back_for_replies_kept_elsewhere() -> None:
    turn = uuid.uuid4().hex
    assert store.stop_note("thread", turn) is None
    assert store.note_stop("thread", turn, "What the page\nshowed") == "missing"
    assert store.stop_note("thread", turn) == "What the page\nshowed"
    assert await store.astop_note("thread", turn) == "What the page\nshowed"
    assert await store.astop_note("thread", uuid.uuid4().hex) is None
    with pytest.raises(ValueError, match="32 lowercase hex"):
        store.stop_note("thread", "not-a-turn")


async def test_async_stop_both_orders() -> None:
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    await store.aappend_records("s", [human("q"), ai("one two three", first)])
    assert await store.anote_stop("s", first, "one") == "cut"
    assert await store.anote_stop("s", second, "four") == "missing"
    await store.aappend_records("s", [human("q"), ai("four five", second)])
    assert await store.aapply_stop("s", second) == "cut"
    assert texts("s") == ["q", "one", "q", "four"]


def test_a_turn_nobody_stopped_is_left_alone() -> None:
    turn = uuid.uuid4().hex
    store.append_records("s", [human("q"), ai("complete", turn)])
    assert store.apply_stop("s", turn) == "missing"
    assert texts("s") == ["q", "complete"]


def test_the_page_can_only_cut_never_rewrite() -> None:
    turn = uuid.uuid4().hex
    store.append_records("s", [human("q"), ai("The real reply", turn)])
    assert store.note_stop("s", turn, "Something else entirely") == "kept"
    assert store.note_stop("s", turn, "The real reply, longer") == "kept"
    # another turn's id finds nothing
    assert store.note_stop("s", uuid.uuid4().hex, "The") == "missing"
    assert texts("s") == ["q", "The real reply"]


def test_a_reply_changed_between_read_and_write_is_read_again(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatmemory.store import turns

    turn = uuid.uuid4().hex
    store.append_records("s", [human("q"), ai("abc def ghi", turn)])
    real = turns.cut_reply
    calls = []

    def racing(record: dict[str, Any], shown: str) -> dict[str, Any] | None:
        if not calls:  # another writer changes the entry under our feet
            changed = {**record, "response_metadata": {"x": 1}}
            redis_client.lset(store.messages_key("s"), -1, json.dumps(changed))
        calls.append(shown)
        return real(record, shown)

    monkeypatch.setattr(turns, "cut_reply", racing)
    assert store.note_stop("s", turn, "abc") == "cut"
    assert len(calls) == 2
    assert texts("s") == ["q", "abc"]


def test_line_breaks_from_a_form_compare_loosely() -> None:
    record = ai("one\ntwo\nthree")
    assert cut_reply(record, "one\r\ntwo") == ai("one\ntwo")
    blocks = {
        "type": "ai",
        "data": {"content": [{"type": "text", "text": "alpha beta"}, {"type": "x"}]},
    }
    cut = cut_reply(blocks, "alpha")
    assert cut is not None and cut["data"]["content"] == "alpha"
    assert cut_reply(human("question"), "q") is None
    assert cut_reply({"type": "ai", "data": {"content": 5}}, "") is None
    assert cut_reply({"type": "ai", "data": "x"}, "") is None


def test_turn_ids_are_checked() -> None:
    for bad in ["", "x" * 32, uuid.uuid4().hex.upper(), 5, uuid.uuid4().hex + "0"]:
        with pytest.raises(ValueError):
            store.validate_turn_id(bad)
        with pytest.raises(ValueError):
            store.note_stop("s", bad, "x")  # type: ignore[arg-type]
    turn = uuid.uuid4().hex
    assert store.validate_turn_id(turn) == turn


def test_an_unreadable_entry_in_the_tail_is_skipped(redis_client: redis.Redis) -> None:
    turn = uuid.uuid4().hex
    store.append_records("s", [human("q"), ai("long reply", turn)])
    redis_client.rpush(store.messages_key("s"), b"{not json")
    assert store.note_stop("s", turn, "long") == "cut"
    assert texts("s") == ["q", "long"]


def test_the_stop_text_expires(redis_client: redis.Redis) -> None:
    turn = uuid.uuid4().hex
    store.note_stop("s", turn, "x")
    ttl = redis_client.pttl(keys.stop_key("s", turn))
    assert 0 < ttl <= 10 * 60 * 1000
