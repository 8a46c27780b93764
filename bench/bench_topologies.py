"""Benchmark: chatmemory on each Redis topology against raw redis-py on the same.

Run by hand (never a test), with the project's venv::

    .venv/bin/python bench/bench_topologies.py            # every topology
    .venv/bin/python bench/bench_topologies.py --quick    # fewer repetitions
    .venv/bin/python bench/bench_topologies.py --topology cluster

It starts its own throwaway topologies on free loopback ports (see
tests/topologies.py): one server; Sentinel (a master, a replica, three
sentinels); Cluster (three masters with a replica each). On each, two
implementations do the same per-session work:

chatmemory
    ``DjangoRedisChatMessageHistory`` on a django-redis alias for that topology
    (``CHATMEMORY_TTL`` 3600 s, every other setting at its default), so each
    write also keeps the indexes the admin lists sessions with.
raw
    redis-py on the same topology (``Redis``, Sentinel's ``master_for``,
    ``RedisCluster``): one ``RPUSH`` + ``EXPIRE`` pipeline per write, one
    ``LRANGE`` per read, ``message_to_dict`` + ``json.dumps`` per written
    message and ``json.loads`` per read item (no message objects are built).

Cases: (a) ``add_messages`` of 10 messages; (b) a chat turn (a new history
object, read the history, add the human and AI messages); (c) the same turn on
the async path, 50 asyncio sessions at once in one event loop, reported as
turns per second. Turn i goes to session i // 10, so every history read grows
from 0 to 18 messages alike. Cases (a) and (b) interleave the two
implementations in blocks and report medians, and the ratio as the median of
the blocks' ratios with its spread; (c) alternates the two implementations
for several rounds and reports the best round of each, and the median of the
rounds' ratios with its spread.

Targets (from issue 7): one server, turn <= 1.3x raw and batch of 10 <= 1.2x
raw; Cluster, turn <= 1.5x raw; async >= 70% of raw turns/s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TTL = 3600
KINDS = ("single", "sentinel", "cluster")
TARGETS = {
    # (topology, case): the most chatmemory may cost, as a multiple of raw.
    ("single", "a"): 1.2,
    ("single", "b"): 1.3,
    ("cluster", "b"): 1.5,
}
ASYNC_TARGET = 0.70
"""chatmemory's async turns/s as a fraction of raw redis.asyncio's."""
CONCURRENCY = 50
ASYNC_ROUNDS = 5


def configure_django(topologies: dict[str, Any]) -> None:
    import django
    from django.conf import settings

    caches: dict[str, Any] = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }
    for kind, topology in topologies.items():
        caches[kind] = topology.caches_entry()
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "chatmemory",
        ],
        DATABASES={},
        CACHES=caches,
        CHATMEMORY_TTL=TTL,
        CHATMEMORY_KEY_PREFIX=f"bench-{uuid.uuid4().hex[:8]}",
        USE_TZ=True,
    )
    django.setup()


def messages(count: int, seed: int) -> list[Any]:
    """Human questions and AI answers with realistic metadata."""
    from langchain_core.messages import AIMessage, HumanMessage

    rng = random.Random(seed)
    words = ["the", "a", "redis", "django", "history", "session", "model", "chat"]

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    out: list[Any] = []
    while len(out) < count:
        out.append(HumanMessage(content=text(5, 40)))
        out.append(
            AIMessage(
                content=text(20, 150),
                response_metadata={
                    "model_name": "gpt-4o-mini",
                    "finish_reason": "stop",
                },
                usage_metadata={
                    "input_tokens": rng.randint(50, 3000),
                    "output_tokens": rng.randint(10, 600),
                    "total_tokens": 3600,
                },
                id=f"run-{uuid.UUID(int=rng.getrandbits(128))}-0",
            )
        )
    return out[:count]


def encode(message: Any) -> str:
    from langchain_core.messages import message_to_dict

    return json.dumps(message_to_dict(message))


class Timings(dict[str, float]):
    """Median seconds per call of each case, with each block's median call."""

    blocks: dict[str, list[float]]


def measure(
    cases: dict[str, Callable[[int], Any]], *, reps: int, warmup: int, block: int
) -> Timings:
    """Median seconds per call of each case, interleaved in shuffled blocks."""
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    blocks: dict[str, list[float]] = {name: [] for name in names}
    shuffle = random.Random(0).shuffle
    clock = time.perf_counter
    calls = 0
    while calls < warmup + reps:
        shuffle(names)
        for name in names:
            fn = cases[name]
            gc.collect()
            kept = []
            for i in range(calls, calls + block):
                start = clock()
                fn(i)
                elapsed = clock() - start
                if i >= warmup:
                    kept.append(elapsed)
            times[name].extend(kept)
            if kept:
                blocks[name].append(statistics.median(kept))
        calls += block
    result = Timings({name: statistics.median(v) for name, v in times.items()})
    result.blocks = blocks
    return result


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """Median, and p10/p90 (min/max with fewer than 10 values)."""
    ordered = sorted(values)
    if len(ordered) >= 10:
        low, *_, high = statistics.quantiles(ordered, n=10)
    else:
        low, high = ordered[0], ordered[-1]
    return statistics.median(ordered), low, high


async def turns_per_second(
    turn: Callable[[int, int], Awaitable[Any]], *, turns: int
) -> float:
    """Run ``turns`` turns per session, CONCURRENCY sessions at once."""

    async def session(worker: int) -> None:
        for i in range(turns):
            await turn(worker, i)

    start = time.perf_counter()
    await asyncio.gather(*(session(w) for w in range(CONCURRENCY)))
    return CONCURRENCY * turns / (time.perf_counter() - start)


def fmt(seconds: float) -> str:
    return f"{seconds * 1e6:8.1f} us" if seconds < 1e-3 else f"{seconds * 1e3:8.2f} ms"


def bench_topology(kind: str, topology: Any, args: argparse.Namespace) -> bool:
    from django.test import override_settings

    from chatmemory.history import DjangoRedisChatMessageHistory

    scale = 0.2 if args.quick else 1.0
    reps = max(int(2000 * scale), args.block)
    raw = topology.client()
    run = uuid.uuid4().hex[:6]
    met = True

    def raw_key(session_id: str) -> str:
        # A hash tag, as chatmemory's keys have: one slot per session.
        return f"bench-raw:{{{run}-{session_id}}}:messages"

    def raw_write(session_id: str, batch: Sequence[Any]) -> None:
        pipe = raw.pipeline(transaction=False)
        key = raw_key(session_id)
        pipe.rpush(key, *[encode(m) for m in batch])
        pipe.expire(key, TTL)
        pipe.execute()

    def raw_read(session_id: str) -> list[Any]:
        return [json.loads(item) for item in raw.lrange(raw_key(session_id), 0, -1)]

    print(f"\n== {kind}")
    with override_settings(CHATMEMORY_CACHE_ALIAS=kind):
        # (a) add_messages of 10 messages
        batch = messages(10, seed=1)
        history_a = DjangoRedisChatMessageHistory(f"{run}-a")
        results = measure(
            {
                "chatmemory": lambda i: history_a.add_messages(batch),
                "raw": lambda i: raw_write("a", batch),
            },
            reps=reps,
            warmup=100,
            block=args.block,
        )
        met &= report(kind, "a", "add_messages of 10 messages", results)

        # (b) a chat turn
        human, ai = messages(2, seed=2)

        def cm_turn(i: int) -> Any:
            history = DjangoRedisChatMessageHistory(f"{run}-b-{i // 10}")
            read = history.messages
            history.add_messages([human, ai])
            return read

        def raw_turn(i: int) -> Any:
            session_id = f"b-{i // 10}"
            read = raw_read(session_id)
            raw_write(session_id, [human, ai])
            return read

        results = measure(
            {"chatmemory": cm_turn, "raw": raw_turn},
            reps=reps,
            warmup=100,
            block=args.block,
        )
        met &= report(
            kind, "b", "chat turn: new history, read, add human + AI", results
        )

        # (d) the cost of waiting for a replica (CHATMEMORY_WAIT_REPLICAS = 1)
        if kind != "single":
            pair = [human, ai]
            plain = DjangoRedisChatMessageHistory(f"{run}-d")
            waiting = DjangoRedisChatMessageHistory(f"{run}-d-wait")
            plain.add_messages(pair)
            waiting.add_messages(pair)

            # Settings changes reset the clients: each setting gets a run of
            # its own, one after the other.
            waits: dict[str, float] = {}
            for name, replicas, history in (
                ("no wait", 0, plain),
                ("wait 1", 1, waiting),
            ):
                with override_settings(CHATMEMORY_WAIT_REPLICAS=replicas):
                    waits.update(
                        measure(
                            {name: lambda i, h=history: h.add_messages(pair)},
                            reps=reps,
                            warmup=50,
                            block=args.block,
                        )
                    )
            print("  (d) add human + AI, waiting for 1 replica or not (median)")
            for name, seconds in waits.items():
                print(f"      {name:<10} {fmt(seconds)}")
            print(f"      wait/no wait = {waits['wait 1'] / waits['no wait']:.2f}x")

        # (c) async turns, CONCURRENCY sessions at once
        met &= asyncio.run(async_case(kind, topology, run, human, ai, scale))
    raw.close()
    return met


async def async_case(
    kind: str, topology: Any, run: str, human: Any, ai: Any, scale: float
) -> bool:
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.asyncio.sentinel

    from chatmemory import store
    from chatmemory.history import DjangoRedisChatMessageHistory

    if kind == "cluster":
        araw: Any = redis.asyncio.cluster.RedisCluster(
            host=topology.data_servers[0].address[0],
            port=topology.data_servers[0].port,
        )
    elif kind == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(
            [s.address for s in topology.sentinels]
        )
        araw = sentinel.master_for(topology.service)
    else:
        host, port = topology.data_servers[0].address
        araw = redis.asyncio.Redis(host=host, port=port)

    async def cm_turn(worker: int, i: int) -> Any:
        history = DjangoRedisChatMessageHistory(f"{run}-c-{worker}-{i // 10}")
        read = await history.aget_messages()
        await history.aadd_messages([human, ai])
        return read

    async def raw_turn(worker: int, i: int) -> Any:
        key = f"bench-raw:{{{run}-c-{worker}-{i // 10}}}:messages"
        read = [json.loads(item) for item in await araw.lrange(key, 0, -1)]
        pipe = araw.pipeline(transaction=False)
        pipe.rpush(key, encode(human), encode(ai))
        pipe.expire(key, TTL)
        await pipe.execute()
        return read

    turns = max(int(100 * scale), 20)
    if kind == "cluster":
        # The slot map first: redis-py 8.1 sends a new client's first
        # concurrent commands to one node (see chatmemory.store.operations.arun).
        await araw.initialize()
    await turns_per_second(cm_turn, turns=10)  # warm-up: clients, scripts
    await turns_per_second(raw_turn, turns=10)
    rates: dict[str, list[float]] = {"chatmemory": [], "raw": []}
    for _ in range(ASYNC_ROUNDS):
        rates["chatmemory"].append(await turns_per_second(cm_turn, turns=turns))
        rates["raw"].append(await turns_per_second(raw_turn, turns=turns))
    await araw.aclose()
    await store.aclose_clients()
    best = {name: max(values) for name, values in rates.items()}
    # Round by round (the two run one after the other), like the blocks above.
    share, low, high = spread(
        [mine / theirs for mine, theirs in zip(*rates.values(), strict=True)]
    )
    passed = share >= ASYNC_TARGET
    print(
        f"  (c) async turns, {CONCURRENCY} sessions at once "
        f"({turns} turns each, {ASYNC_ROUNDS} rounds; best round)\n"
        f"      chatmemory {best['chatmemory']:8.0f} turns/s\n"
        f"      raw        {best['raw']:8.0f} turns/s\n"
        f"      chatmemory/raw = {share:.0%} [{low:.0%} .. {high:.0%}] (median of "
        f"rounds [min .. max])   target >= {ASYNC_TARGET:.0%}: "
        f"{'MET' if passed else 'MISSED'}"
    )
    return passed


def report(kind: str, case: str, title: str, results: Timings) -> bool:
    # Block by block (blocks run side by side), so load drift hits both alike.
    ratio, low, high = spread(
        [
            mine / theirs
            for mine, theirs in zip(
                results.blocks["chatmemory"], results.blocks["raw"], strict=True
            )
        ]
    )
    target = TARGETS.get((kind, case))
    verdict = ""
    if target is not None:
        verdict = f"   target <= {target}x: {'MET' if ratio <= target else 'MISSED'}"
    print(f"  ({case}) {title} (median)")
    for name, seconds in results.items():
        print(f"      {name:<10} {fmt(seconds)}")
    print(
        f"      chatmemory/raw = {ratio:.2f}x [{low:.2f} .. {high:.2f}] "
        f"(median of {len(results.blocks['raw'])} blocks [p10 .. p90]){verdict}"
    )
    return target is None or ratio <= target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--topology", choices=KINDS, action="append", help="only these (repeatable)"
    )
    parser.add_argument(
        "--block", type=int, default=100, help="consecutive calls per implementation"
    )
    args = parser.parse_args(argv)

    from tests.topologies import start

    kinds = args.topology or list(KINDS)
    topologies = {kind: start(kind) for kind in kinds}
    configure_django(topologies)

    import django_redis
    import redis

    server = redis.Redis(*topologies[kinds[0]].data_servers[0].address)
    version = server.info("server")["redis_version"]
    server.close()
    print(
        f"Python {sys.version.split()[0]}, redis-server {version}, redis-py "
        f"{redis.__version__}, django-redis {django_redis.__version__}; "
        f"TTL {TTL} s; blocks of {args.block}"
    )
    met = True
    for kind in kinds:
        met &= bench_topology(kind, topologies[kind], args)
    print(f"\nAll targets {'met' if met else 'NOT met'}.")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
