"""Benchmark: chatmemory's history against the anchor and a raw redis-py reference.

Run by hand (never a test)::

    bench/run                      # builds bench/.venv, then runs this script
    bench/run --quick              # fewer repetitions
    bench/run --profile            # also cProfile chatmemory in each case
    bench/run --block 1            # switch implementations on every call

Three implementations, on the same Redis, in one run:

chatmemory
    ``DjangoRedisChatMessageHistory`` on the django-redis ``chatmemory`` alias,
    with chatmemory's default settings but for ``CHATMEMORY_TTL``.
anchor
    ``langchain_community``'s ``RedisChatMessageHistory``: one round trip per
    message (two with a TTL: LPUSH then EXPIRE), a new connection per object.
raw
    The physical limit with redis-py: one RPUSH+EXPIRE pipeline per write, one
    LRANGE per read, ``message_to_dict`` + ``json.dumps`` per written message
    and ``json.loads`` per read item (no message objects are built). The
    "raw, orjson" row (no target) serialises with orjson instead, as chatmemory
    does when orjson is installed, to show what the serialiser alone is worth.

Cases: (a) ``add_messages`` of 10 messages; (b) a chat turn through a per-turn
factory (build the history object, read, then add human + AI in one call);
(c) reading a 10,000-message history. The implementations are interleaved
(see :func:`measure`) so drift in the machine's load hits them alike, after
warm-up, and medians are reported. Both chatmemory and the anchor set a TTL
of 3600 s.

Redis: a throwaway ``redis-server`` on a free loopback port (persistence off),
or the server of ``BENCH_REDIS_URL`` (e.g. ``redis://127.0.0.1:6379/15``); the
benchmark then deletes only the keys under its own random prefix.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import pstats
import random
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TTL = 3600
PREFIX = f"bench-{uuid.uuid4().hex[:10]}"


# ---------------------------------------------------------------------------
# Set-up


def redis_url() -> tuple[str, bool]:
    """The Redis URL, and whether it is a throwaway server of our own."""
    url = os.environ.get("BENCH_REDIS_URL", "").rstrip("/")
    if url:
        return url, False
    from tests.redis_server import start_redis_server

    _, url = start_redis_server()  # stopped at exit
    return f"{url}/0", True


def configure_django(url: str, *, own_server: bool) -> None:
    import django
    from django.conf import settings

    # chatmemory's defaults but for the TTL, as a project would run it; on a
    # server of the user's (BENCH_REDIS_URL), keys go under a random prefix.
    extra = {} if own_server else {"CHATMEMORY_KEY_PREFIX": f"{PREFIX}:cm"}
    settings.configure(
        INSTALLED_APPS=["chatmemory"],
        DATABASES={},
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            # As in project/settings.py.
            "chatmemory": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
                "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5},
            },
        },
        CHATMEMORY_TTL=TTL,
        USE_TZ=True,
        **extra,
    )
    django.setup()


# ---------------------------------------------------------------------------
# Messages


def conversation_messages(count: int, *, seed: int = 0) -> list[Any]:
    """A realistic mix: human questions, AI answers with metadata, a few tool calls."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    rng = random.Random(seed)
    words = [
        "the",
        "a",
        "redis",
        "django",
        "history",
        "session",
        "message",
        "model",
        "token",
        "answer",
        "question",
        "python",
        "list",
        "cache",
        "key",
        "value",
        "time",
        "stream",
        "user",
        "chat",
        "reply",
        "context",
        "prompt",
    ]

    def text(low: int, high: int) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(low, high)))

    messages: list[Any] = []
    turn = 0
    while len(messages) < count:
        turn += 1
        messages.append(HumanMessage(content=text(5, 40)))
        usage = {
            "input_tokens": rng.randint(50, 3000),
            "output_tokens": rng.randint(10, 600),
        }
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        metadata = {
            "model_name": "gpt-4o-mini-2024-07-18",
            "finish_reason": "stop",
            "system_fingerprint": "fp_0ba0d124f1",
        }
        if turn % 10 == 0:
            call_id = f"call_{uuid.UUID(int=rng.getrandbits(128)).hex[:24]}"
            messages.append(
                AIMessage(
                    content="",
                    tool_calls=[
                        {
                            "name": "search",
                            "args": {"query": text(2, 6)},
                            "id": call_id,
                            "type": "tool_call",
                        }
                    ],
                    response_metadata={**metadata, "finish_reason": "tool_calls"},
                    usage_metadata=usage,  # type: ignore[arg-type]
                    id=f"run-{uuid.UUID(int=rng.getrandbits(128))}-0",
                )
            )
            messages.append(ToolMessage(content=text(10, 60), tool_call_id=call_id))
        messages.append(
            AIMessage(
                content=text(20, 150),
                response_metadata=metadata,
                usage_metadata=usage,  # type: ignore[arg-type]
                id=f"run-{uuid.UUID(int=rng.getrandbits(128))}-0",
            )
        )
    return messages[:count]


def encode(message: Any) -> str:
    from langchain_core.messages import message_to_dict

    return json.dumps(message_to_dict(message))


# ---------------------------------------------------------------------------
# Timing


@dataclass
class Result:
    name: str
    times: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def p10(self) -> float:
        return statistics.quantiles(self.times, n=10)[0]

    @property
    def p90(self) -> float:
        return statistics.quantiles(self.times, n=10)[-1]


def measure(
    cases: dict[str, Callable[[int], Any]],
    *,
    reps: int,
    warmup: int,
    block: int = 1,
    collect: bool = False,
) -> dict[str, Result]:
    """Run every case ``warmup + reps`` times, interleaved, in shuffled blocks.

    Rounds run ``block`` consecutive calls of each case, the cases in a new
    shuffled order (fixed seed) every round, so slow drift in the machine's load
    hits all cases alike. Blocks, because the first calls after switching
    implementations run on cold CPU caches, which costs the implementation
    that runs more code (chatmemory: Django settings, pydantic, the script
    call) more than the raw reference: with blocks of 1 or 20 chatmemory's
    turn/raw ratio comes out 0.1 to 0.2 higher than with blocks of 100 or
    more (``--block`` sets it). Every block of more than one call starts on a
    collected heap, so no case pays for collecting another's garbage;
    ``collect`` also collects before each call (outside the timing), so every
    call starts from the same heap state. The collector stays enabled during
    calls, as in a server.
    """
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    clock = time.perf_counter
    shuffle = random.Random(0).shuffle
    calls = 0
    while calls < warmup + reps:
        shuffle(names)
        for name in names:
            fn = cases[name]
            if block > 1:  # per call it would cost more than the calls
                gc.collect()
            for i in range(calls, calls + block):
                if collect and i > calls:
                    gc.collect()
                start = clock()
                result = fn(i)
                elapsed = clock() - start
                del result
                if i >= warmup:
                    times[name].append(elapsed)
        calls += block
    return {name: Result(name, values) for name, values in times.items()}


def fmt(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds * 1e3:8.1f} ms"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds * 1e6:8.1f} us"


def report(
    title: str,
    results: dict[str, Result],
    *,
    target: str,
    passed: bool,
) -> dict[str, float]:
    raw = results["raw"].median
    cm = results["chatmemory"].median
    anchor = results["anchor"].median
    n = len(results["raw"].times)
    print(f"\n{title}  ({n} repetitions, median [p10 .. p90])")
    for name, result in results.items():
        print(
            f"  {name:<14} {fmt(result.median)}   "
            f"[{fmt(result.p10).strip()} .. {fmt(result.p90).strip()}]   "
            f"{result.median / raw:6.2f}x raw"
        )
    ratios = {
        "chatmemory/raw": cm / raw,
        "anchor/raw": anchor / raw,
        "anchor/chatmemory": anchor / cm,
    }
    print("  " + "   ".join(f"{key} = {value:.2f}" for key, value in ratios.items()))
    print(f"  target: {target}: {'MET' if passed else 'MISSED'}")
    return ratios


def profile(title: str, fn: Callable[[int], Any], calls: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(calls):
        fn(i)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(18)
    print(f"\n--- profile of chatmemory, {title} ({calls} calls), by own time")
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    print("\n".join(lines[start - 2 :]).rstrip())


# ---------------------------------------------------------------------------
# Cases


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile chatmemory per case"
    )
    parser.add_argument(
        "--block",
        type=int,
        default=100,
        help="consecutive calls of one implementation in cases (a) and (b)",
    )
    parser.add_argument(
        "--history", type=int, default=10_000, help="messages in case (c)"
    )
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0

    url, own_server = redis_url()
    configure_django(url, own_server=own_server)

    import warnings

    import redis

    with warnings.catch_warnings():
        # langchain-community warns on import that it is being sunset.
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_message_histories import (
            RedisChatMessageHistory,
        )
    import django_redis
    import langchain_community
    import langchain_core
    import orjson
    from langchain_core.messages import AIMessage, HumanMessage, message_to_dict

    from chatmemory.history import DjangoRedisChatMessageHistory

    raw_client = redis.Redis.from_url(url)
    info = raw_client.info("server")
    print(
        f"Python {sys.version.split()[0]}, redis-server {info['redis_version']} at "
        f"{url}, redis-py {redis.__version__}, django-redis "
        f"{django_redis.__version__}, langchain-core {langchain_core.__version__}, "
        f"langchain-community {langchain_community.__version__}; TTL {TTL} s"
    )

    anchor_prefix = f"{PREFIX}:anchor:"

    def anchor(session_id: str) -> RedisChatMessageHistory:
        return RedisChatMessageHistory(
            session_id, url=url, key_prefix=anchor_prefix, ttl=TTL
        )

    def raw_key(session_id: str) -> str:
        return f"{PREFIX}:raw:{session_id}"

    def raw_write(
        session_id: str, messages: Sequence[Any], dumps: Callable[[Any], Any] = encode
    ) -> None:
        pipe = raw_client.pipeline(transaction=False)
        key = raw_key(session_id)
        pipe.rpush(key, *[dumps(m) for m in messages])
        pipe.expire(key, TTL)
        pipe.execute()

    def encode_orjson(message: Any) -> bytes:
        return orjson.dumps(message_to_dict(message))

    def raw_read(session_id: str) -> list[Any]:
        return [
            json.loads(item) for item in raw_client.lrange(raw_key(session_id), 0, -1)
        ]

    summary: dict[str, dict[str, float]] = {}
    targets_met = True

    # --- (a) add_messages of 10 messages -----------------------------------
    batch = conversation_messages(10, seed=1)
    cm_a = DjangoRedisChatMessageHistory("a")
    anchor_a = anchor("a")
    cases_a: dict[str, Callable[[int], Any]] = {
        "chatmemory": lambda i: cm_a.add_messages(batch),
        "anchor": lambda i: anchor_a.add_messages(batch),
        "raw": lambda i: raw_write("a", batch),
        # Not a target: the same, serialised with orjson (as chatmemory does
        # when the result reads back exact), to show what json costs.
        "raw, orjson": lambda i: raw_write("a-orjson", batch, encode_orjson),
    }
    results = measure(cases_a, reps=int(2000 * scale), warmup=100, block=args.block)
    ratio = results["chatmemory"].median / results["raw"].median
    targets_met &= ratio <= 1.2
    summary["a"] = report(
        f"(a) add_messages of 10 messages, one object per implementation, "
        f"blocks of {args.block}",
        results,
        target="chatmemory <= 1.2x raw",
        passed=ratio <= 1.2,
    )
    if args.profile:
        profile("(a)", cases_a["chatmemory"], 2000)

    # --- (b) a chat turn through a per-turn factory ------------------------
    # Conversations of 10 turns: turn i goes to session i // 10, so the history
    # read grows from 0 to 18 messages and is the same for every implementation.
    turn = conversation_messages(2, seed=2)
    human, ai = HumanMessage(content=turn[0].content), turn[1]
    assert isinstance(ai, AIMessage)

    def cm_turn(i: int) -> Any:
        history = DjangoRedisChatMessageHistory(f"b-{i // 10}")
        messages = history.messages
        history.add_messages([human, ai])
        return messages

    def anchor_turn(i: int) -> Any:
        history = anchor(f"b-{i // 10}")
        messages = history.messages
        history.add_messages([human, ai])
        return messages

    def raw_turn(i: int) -> Any:
        session_id = f"b-{i // 10}"
        messages = raw_read(session_id)
        raw_write(session_id, [human, ai])
        return messages

    def raw_orjson_turn(i: int) -> Any:
        session_id = f"b-orjson-{i // 10}"
        messages = raw_read(session_id)
        raw_write(session_id, [human, ai], encode_orjson)
        return messages

    cases_b = {
        "chatmemory": cm_turn,
        "anchor": anchor_turn,
        "raw": raw_turn,
        "raw, orjson": raw_orjson_turn,
    }
    results = measure(cases_b, reps=int(2000 * scale), warmup=100, block=args.block)
    ratio = results["chatmemory"].median / results["raw"].median
    targets_met &= ratio <= 1.3
    summary["b"] = report(
        f"(b) chat turn: new history object, read, add human + AI, "
        f"blocks of {args.block}",
        results,
        target="chatmemory <= 1.3x raw",
        passed=ratio <= 1.3,
    )
    if args.profile:
        profile("(b)", lambda i: cm_turn(100_000 + i), 2000)

    # --- (c) reading a long history ----------------------------------------
    long = conversation_messages(args.history, seed=3)
    cm_c = DjangoRedisChatMessageHistory("c")
    for start in range(0, len(long), 1000):
        cm_c.add_messages(long[start : start + 1000])
    anchor_c = anchor("c")
    # The anchor's own format (newest first, LPUSH), written in one pipeline.
    pipe = raw_client.pipeline(transaction=False)
    pipe.lpush(anchor_c.key, *[encode(m) for m in long])
    pipe.expire(anchor_c.key, TTL)
    pipe.execute()
    for start in range(0, len(long), 1000):
        raw_write("c", long[start : start + 1000])
    # Same data everywhere, and read back equal.
    assert cm_c.messages == long, "chatmemory did not read back what it wrote"
    assert anchor_c.messages == long, "the anchor did not read back its data"
    assert len(raw_read("c")) == len(long)

    cases_c: dict[str, Callable[[int], Any]] = {
        "chatmemory": lambda i: cm_c.messages,
        "anchor": lambda i: anchor_c.messages,
        "raw": lambda i: raw_read("c"),
        "raw LRANGE only": lambda i: raw_client.lrange(raw_key("c"), 0, -1),
    }
    results = measure(cases_c, reps=int(40 * scale) or 5, warmup=3, collect=True)
    speedup = results["anchor"].median / results["chatmemory"].median
    targets_met &= speedup >= 2
    summary["c"] = report(
        f"(c) read a {len(long):,}-message history (full GC pass before each call)",
        results,
        target="chatmemory at least 2x faster than the anchor",
        passed=speedup >= 2,
    )
    if args.profile:
        profile("(c)", cases_c["chatmemory"], 10)

    print("\nSummary (ratios of medians, measured in this run):")
    for case, ratios in summary.items():
        print(
            f"  ({case}) "
            + "   ".join(f"{key} {value:5.2f}" for key, value in ratios.items())
        )
    print(f"All targets {'met' if targets_met else 'NOT met'}.")

    keys = list(raw_client.scan_iter(match=f"{PREFIX}:*", count=1000))
    for start in range(0, len(keys), 1000):
        raw_client.delete(*keys[start : start + 1000])
    raw_client.close()
    return 0 if targets_met else 1


if __name__ == "__main__":
    sys.exit(main())
