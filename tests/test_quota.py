"""Per-owner turn limits (store.quota) and token usage totals."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from typing import Any

import pytest
import redis
from django.test import override_settings

from chatmemory import store
from chatmemory.store import quota


def ai(tokens: tuple[int, int]) -> dict[str, object]:
    usage = {"input_tokens": tokens[0], "output_tokens": tokens[1]}
    usage["total_tokens"] = sum(tokens)
    return {"type": "ai", "data": {"content": "a", "usage_metadata": usage}}


HUMAN = {"type": "human", "data": {"content": "q"}}


def test_each_write_adds_usage_to_the_session_and_the_owners_day() -> None:
    store.append_records("s", [HUMAN, ai((100, 20))], owner="7")
    store.append_records("s", [HUMAN, ai((150, 30)), ai((1, 1))], owner="7")
    store.append_records("t", [HUMAN, ai((5, 5))], owner="8")
    store.append_records("nobody", [HUMAN, ai((9, 9))])
    info = store.get_session("s")
    assert info is not None
    assert (info.input_tokens, info.output_tokens, info.total_tokens) == (251, 51, 302)
    today = store.day_of(store.operations.now_ms())
    (usage,) = store.owner_usage("7", [today])
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (
        251, 51, 302,
    )  # fmt: skip
    page, owners = store.day_usage(today)
    assert owners == 2
    assert [(u.owner, u.total_tokens) for u in page] == [("7", 302), ("8", 10)]
    nobody = store.get_session("nobody")
    assert nobody is not None and nobody.total_tokens == 18
    assert store.day_usage("1999-01-01") == ([], 0)


def test_usage_found_when_the_writer_does_not_know_the_owner(
    redis_client: redis.Redis,
) -> None:
    store.append_records("s", [HUMAN], owner="7")
    store.operations._known_owners.clear()
    store.append_records("s", [ai((3, 4))])
    today = store.day_of(store.operations.now_ms())
    assert store.owner_usage("7", [today])[0].total_tokens == 7
    usage_key = store.keys.usage_key("7", today)
    assert 0 < redis_client.pttl(usage_key) <= 400 * 86_400_000


def test_usage_of_odd_records() -> None:
    odd = [
        {"type": "ai", "data": {"usage_metadata": {"input_tokens": 2}}},
        {"type": "ai", "data": {"usage_metadata": {"input_tokens": True}}},
        {"type": "ai", "data": {"usage_metadata": {"output_tokens": -5}}},
        {"type": "ai", "data": {"usage_metadata": "lots"}},
        {"type": "ai", "data": "not a dict"},
    ]
    assert store.codec.usage_of_records(odd) == (2, 0, 2)


def test_no_limits_admit_everything_without_touching_redis(
    redis_client: redis.Redis, key_prefix: str
) -> None:
    for _ in range(5):
        admission = store.admit_turn("7")
        assert admission.admitted and not admission.holds_stream
        store.release_turn("7", admission)
    assert list(redis_client.scan_iter(match=f"{key_prefix}:quota:*")) == []


def test_turns_per_minute() -> None:
    limits = quota.Limits(turns_per_minute=3)
    assert [store.admit_turn("7", limits).admitted for _ in range(4)] == [
        True, True, True, False,
    ]  # fmt: skip
    refused = store.admit_turn("7", limits)
    assert refused.refused == "turns"
    assert timedelta(seconds=59) < refused.retry_after <= timedelta(seconds=60)
    assert quota.seconds_until(refused) == 60
    assert store.admit_turn("8", limits).admitted  # per owner


def test_concurrent_streams_are_released() -> None:
    limits = quota.Limits(concurrent_streams=2)
    first, second = store.admit_turn("7", limits), store.admit_turn("7", limits)
    assert first.holds_stream and second.admitted
    refused = store.admit_turn("7", limits)
    assert refused.refused == "streams"
    assert refused.retry_after <= timedelta(milliseconds=quota.STREAM_RETRY_MS)
    store.release_turn("7", first)
    store.release_turn("7", refused)  # a refused turn holds nothing
    assert store.admit_turn("7", limits).admitted
    assert not store.admit_turn("7", limits).admitted


def test_a_stream_slot_lapses_at_its_lease(redis_client: redis.Redis) -> None:
    limits = quota.Limits(concurrent_streams=1)
    assert store.admit_turn("7", limits).admitted
    # a worker died mid-reply: its slot's lease ran out
    key = store.keys.quota_streams_key("7")
    (member,) = redis_client.zrange(key, 0, -1)
    redis_client.zadd(key, {member: 1})
    assert store.admit_turn("7", limits).admitted


def test_tokens_per_day() -> None:
    limits = quota.Limits(tokens_per_day=100)
    store.append_records("s", [HUMAN, ai((60, 30))], owner="7")
    assert store.admit_turn("7", limits).admitted
    store.append_records("s", [HUMAN, ai((5, 5))], owner="7")
    refused = store.admit_turn("7", limits)
    assert refused.refused == "tokens"
    assert timedelta(0) < refused.retry_after <= timedelta(days=1)


def test_limits_from_settings() -> None:
    assert not quota.Limits.from_settings()
    with override_settings(
        CHATMEMORY_TURNS_PER_MINUTE=1,
        CHATMEMORY_CONCURRENT_STREAMS=2,
        CHATMEMORY_TOKENS_PER_DAY=3,
    ):
        assert quota.Limits.from_settings() == quota.Limits(1, 2, 3)
        assert store.admit_turn("7").admitted
        assert store.admit_turn("7").refused == "turns"


@pytest.mark.parametrize(
    ("limits", "allowed"),
    [(quota.Limits(turns_per_minute=5), 5), (quota.Limits(concurrent_streams=3), 3)],
)
def test_parallel_attempts_past_a_limit_admit_exactly_the_limit(
    limits: quota.Limits, allowed: int
) -> None:
    attempts = 40
    barrier = threading.Barrier(attempts)
    results: list[bool] = []
    lock = threading.Lock()

    def attempt() -> None:
        barrier.wait()
        admitted = store.admit_turn("7", limits).admitted
        with lock:
            results.append(admitted)

    threads = [threading.Thread(target=attempt) for _ in range(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == attempts
    assert sum(results) == allowed


async def test_parallel_async_attempts_admit_exactly_the_limit() -> None:
    limits = quota.Limits(turns_per_minute=4)
    admissions = await asyncio.gather(
        *(store.aadmit_turn("7", limits) for _ in range(30))
    )
    assert sum(a.admitted for a in admissions) == 4
    held = await store.aadmit_turn("8", quota.Limits(concurrent_streams=1))
    assert not (
        await store.aadmit_turn("8", quota.Limits(concurrent_streams=1))
    ).admitted
    await store.arelease_turn("8", held)
    assert (await store.aadmit_turn("8", quota.Limits(concurrent_streams=1))).admitted


def _requests(operation: object) -> int:
    """Round trips an operation makes (each request it yields is one), run on
    the real server."""
    client = store.client.sync_client()
    count = 0
    op: Any = operation
    try:
        request = next(op)
        while True:
            count += 1
            try:
                reply = store.operations._execute(client, request)
            except redis.RedisError as exc:
                request = op.throw(exc)
            else:
                request = op.send(reply)
    except StopIteration:
        return count


def test_reading_a_session_and_admitting_its_turn_is_one_round_trip(
    redis_client: redis.Redis,
) -> None:
    store.append_records("s", [HUMAN], owner="7")
    limits = quota.Limits(turns_per_minute=2, concurrent_streams=5)
    info, first = store.get_session_and_admit("s", "7", limits)
    assert info is not None and info.owner == "7" and info.message_count == 1
    assert first.admitted and first.holds_stream and first.owner == "7"
    missing, second = store.get_session_and_admit("nothing", "7", limits)
    assert missing is None and second.admitted  # counted all the same
    _, third = store.get_session_and_admit("s", "7", limits)
    assert third.refused == "turns"
    assert _requests(quota.get_session_and_admit_op("s", "8", limits)) == 1
    assert _requests(quota.get_session_and_admit_op("s", "8", quota.Limits())) == 1
    # A server that lost its scripts: on one server the script is loaded
    # and run again within the request; on Redis Cluster (a pipeline)
    # refused, loaded, read, this once.
    redis_client.script_flush()
    requests = _requests(quota.get_session_and_admit_op("s", "9", limits))
    assert requests == (3 if store.client.is_cluster() else 1)
    info, admission = store.get_session_and_admit("s", "9", limits)
    assert info is not None and admission.admitted


async def test_reading_a_session_and_admitting_its_turn_async() -> None:
    limits = quota.Limits(turns_per_minute=1)
    info, admission = await store.aget_session_and_admit("none", "7", limits)
    assert info is None and admission.admitted
    _, refused = await store.aget_session_and_admit("none", "7", limits)
    assert refused.refused == "turns"


def test_the_turn_lock_gives_the_stream_slot_back_in_its_round_trip() -> None:
    limits = quota.Limits(concurrent_streams=1)
    held = store.admit_turn("7", limits)
    assert store.lock_turn("s", "token", seconds=5)
    assert not store.admit_turn("7", limits).admitted
    assert store.unlock_turn("s", "token", release=held)
    assert store.admit_turn("7", limits).admitted
    op = store.locks.unlock_turn_op("s", "t", ("7", "x"))
    assert _requests(op) == 1


async def test_the_turn_lock_gives_the_stream_slot_back_async() -> None:
    limits = quota.Limits(concurrent_streams=1)
    held = await store.aadmit_turn("7", limits)
    assert await store.alock_turn("s", "token", seconds=5)
    assert await store.aunlock_turn("s", "token", release=held)
    assert (await store.aadmit_turn("7", limits)).admitted
