"""Benchmark: chatmemory's LangGraph checkpointer against other checkpointers.

Run by hand (never a test)::

    bench/run --help >/dev/null                 # builds bench/.venv once
    bench/.venv/bin/python bench/bench_langgraph.py [--quick] [--turns N]

Savers, in one run, on the same recorded workload:

chatmemory
    ``DjangoRedisSaver`` on the django-redis ``chatmemory`` alias (no TTL).
memory
    LangGraph's ``InMemorySaver``: the floor (it serializes like the others,
    but keeps the bytes in dicts).
postgres
    ``langgraph-checkpoint-postgres``'s ``PostgresSaver`` on the local
    PostgreSQL (``BENCH_POSTGRES_URL``, default
    ``postgresql://postgres@127.0.0.1:5432/postgres``), in a database of its own
    that is dropped at the end. Skipped, with the reason, when unreachable.
plainredis
    ``langgraph-checkpoint-plainredis``'s ``RedisSaver`` on the same Redis
    (skipped when not installed).

The workload is recorded once: a LangChain ``create_agent`` agent with an
offline fake model (every third turn calls two tools in parallel) runs on a
recording ``InMemorySaver``; every ``put`` and ``put_writes`` it made is then
replayed, in order, against each saver on a fresh thread. Cases:

(a) agent step: ``put`` + ``get_tuple`` of the thread's latest checkpoint, per
    recorded checkpoint (the writes are replayed too, untimed);
(b) ``list`` of a 1,000-checkpoint thread (the same replay, cut at 1,000).

Target (issue 11): chatmemory within 1.3x of ``InMemorySaver`` plus one Redis
round trip per step, and faster than Postgres. The round trip is measured in
the same run (median of PINGs on the same client). The savers are interleaved
round by round, so drift in the machine's load hits them alike; medians.

Redis: a throwaway ``redis-server`` on a free loopback port, or the server of
``BENCH_REDIS_URL``; only keys under the benchmark's own prefix are deleted.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = f"bench-lg-{uuid.uuid4().hex[:10]}"


def redis_url() -> str:
    url = os.environ.get("BENCH_REDIS_URL", "").rstrip("/")
    if url:
        return url
    from tests.redis_server import start_redis_server

    _, url = start_redis_server()  # stopped at exit
    return f"{url}/0"


def configure_django(url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        # chatmemory's signals import the user model.
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "chatmemory",
        ],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "chatmemory": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": url,
            },
        },
        CHATMEMORY_KEY_PREFIX=PREFIX,
        USE_TZ=True,
    )
    django.setup()


# ---------------------------------------------------------------------------
# The workload


def record_agent(turns: int) -> list[tuple[str, tuple[Any, ...]]]:
    """Every put / put_writes an agent makes over ``turns`` turns, in order."""
    from langchain.agents import create_agent
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool
    from langgraph.checkpoint.memory import InMemorySaver

    class Model(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "bench"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Model:  # type: ignore[override]
            return self

        def _generate(
            self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any
        ) -> ChatResult:
            last = messages[-1]
            if isinstance(last, ToolMessage):
                reply = AIMessage(content="The tools said: " + last.text)
            elif "weather" in last.text:
                reply = AIMessage(
                    content="",
                    tool_calls=[
                        {"name": "weather", "args": {"city": city}, "id": f"c{i}"}
                        for i, city in enumerate(("Paris", "Oslo"))
                    ],
                )
            else:
                reply = AIMessage(
                    content="A reply of about the length of a short answer from a "
                    f"chat model, to message number {len(messages)}."
                )
            return ChatResult(generations=[ChatGeneration(message=reply)])

    @tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    calls: list[tuple[str, tuple[Any, ...]]] = []

    class Recording(InMemorySaver):
        def put(
            self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any
        ) -> Any:
            calls.append(
                ("put", copy.deepcopy((config, checkpoint, metadata, new_versions)))
            )
            return super().put(config, checkpoint, metadata, new_versions)

        def put_writes(
            self, config: Any, writes: Any, task_id: str, task_path: str = ""
        ) -> None:
            calls.append(
                ("put_writes", copy.deepcopy((config, writes, task_id, task_path)))
            )
            super().put_writes(config, writes, task_id, task_path)

    agent = create_agent(Model(), [weather], checkpointer=Recording())
    config = {"configurable": {"thread_id": "recorded"}}
    for turn in range(turns):
        text = "what is the weather?" if turn % 3 == 2 else f"a question, turn {turn}"
        agent.invoke({"messages": [("user", text)]}, config)
    return calls


class Replay:
    """Replays recorded calls onto one thread, under fresh checkpoint ids.

    Fresh ids (increasing, as LangGraph makes them) let one recording be
    replayed several times onto the same thread, each time as new checkpoints.
    """

    def __init__(self, thread_id: str) -> None:
        self.thread_id = thread_id
        self.ids: dict[str, str] = {}

    def new_id(self, old: str) -> str:
        from langgraph.checkpoint.base.id import uuid6

        return self.ids.setdefault(old, str(uuid6(clock_seq=len(self.ids))))

    def config(self, config: Any) -> Any:
        configurable = dict(config["configurable"])
        configurable["thread_id"] = self.thread_id
        if "checkpoint_id" in configurable:
            configurable["checkpoint_id"] = self.new_id(configurable["checkpoint_id"])
        return {**config, "configurable": configurable}

    def run(
        self, saver: Any, calls: Sequence[tuple[str, tuple[Any, ...]]], *, timed: bool
    ) -> list[float]:
        """Replay the calls; the time of each put + get_tuple."""
        self.ids = {}
        latest = {"configurable": {"thread_id": self.thread_id, "checkpoint_ns": ""}}
        steps: list[float] = []
        clock = time.perf_counter
        for kind, args in calls:
            if kind == "put_writes":
                config, writes, task_id, task_path = args
                saver.put_writes(self.config(config), writes, task_id, task_path)
                continue
            config, checkpoint, metadata, new_versions = args
            checkpoint = {**checkpoint, "id": self.new_id(checkpoint["id"])}
            config = self.config(config)
            start = clock()
            saver.put(config, checkpoint, metadata, new_versions)
            got = saver.get_tuple(latest) if timed else None
            steps.append(clock() - start)
            if timed and (got is None or got.checkpoint["id"] != checkpoint["id"]):
                raise AssertionError(f"{type(saver).__name__} lost the checkpoint")
        return steps


def replay(
    saver: Any,
    calls: Sequence[tuple[str, tuple[Any, ...]]],
    thread_id: str,
    *,
    timed: bool,
) -> list[float]:
    """Replay the calls on a new thread; the time of each put + get_tuple."""
    return Replay(thread_id).run(saver, calls, timed=timed)


def puts(calls: Sequence[tuple[str, Any]]) -> int:
    return sum(1 for kind, _ in calls if kind == "put")


class PingingMemorySaver:
    """``InMemorySaver`` plus one PING on chatmemory's Redis client per call.

    The floor of a Redis-backed saver in this run's conditions: the in-memory
    work plus one round trip per call, with the same CPU contention between
    the two as a real saver meets (a PING in a tight loop is cheaper than one
    between bursts of serialisation on a busy machine).
    """

    def __init__(self) -> None:
        from langgraph.checkpoint.memory import InMemorySaver

        from chatmemory.store.client import sync_client

        self.saver = InMemorySaver()
        self.ping = sync_client().ping

    def put(self, *args: Any) -> Any:
        self.ping()
        return self.saver.put(*args)

    def put_writes(self, *args: Any) -> None:
        self.saver.put_writes(*args)

    def get_tuple(self, config: Any) -> Any:
        self.ping()
        return self.saver.get_tuple(config)

    def list(self, config: Any) -> Any:
        self.ping()
        return self.saver.list(config)


# ---------------------------------------------------------------------------
# The savers


def build_savers(url: str, stack: ExitStack) -> tuple[dict[str, Any], dict[str, str]]:
    from langgraph.checkpoint.memory import InMemorySaver

    from chatmemory.langgraph import DjangoRedisSaver

    savers: dict[str, Any] = {
        "chatmemory": DjangoRedisSaver(),
        "memory": InMemorySaver(),
        "memory+rtt": PingingMemorySaver(),
    }
    skipped: dict[str, str] = {}
    try:
        savers["postgres"] = postgres_saver(stack)
    except Exception as exc:  # any failure only skips the row, with its reason
        skipped["postgres"] = f"{type(exc).__name__}: {exc}".strip()
    try:
        import redis
        from langgraph_checkpoint_plainredis import RedisSaver
    except ImportError as exc:
        skipped["plainredis"] = f"not installed ({exc})"
    else:
        client = redis.Redis.from_url(url)
        stack.callback(client.close)
        savers["plainredis"] = RedisSaver(client, prefix=f"{PREFIX}-plain")
    return savers, skipped


def postgres_saver(stack: ExitStack) -> Any:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    base = os.environ.get(
        "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"chatmemory_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    stack.callback(drop)
    conn = psycopg.connect(
        base.rsplit("/", 1)[0] + "/" + name,
        autocommit=True,
        prepare_threshold=0,
        row_factory=dict_row,
    )
    stack.callback(conn.close)
    saver = PostgresSaver(conn)
    saver.setup()
    return saver


def round_trip(samples: int = 2000) -> float:
    """The median time of one PING on chatmemory's own client."""
    from chatmemory.store.client import sync_client

    client = sync_client()
    times = []
    for _ in range(samples):
        start = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def cleanup(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    for pattern in (f"{PREFIX}:*", f"{PREFIX}-plain:*"):
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 1000):
            client.delete(*batch[start : start + 1000])
    client.close()


# ---------------------------------------------------------------------------
# Measuring


def measure(
    savers: dict[str, Any], rounds: int, case: Callable[[str, Any], float]
) -> dict[str, list[float]]:
    """Run ``case`` per saver per round, interleaved, rotating the order."""
    results: dict[str, list[float]] = {name: [] for name in savers}
    names = list(savers)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            results[name].append(case(name, savers[name]))
    return results


def report(
    title: str,
    unit: str,
    results: dict[str, list[float]],
    targets: dict[str, float],
    scale: float,
) -> None:
    memory = statistics.median(results["memory"])
    print(f"\n{title}")
    print(f"  {'saver':<12}{'median':>12}  {'x memory':>9}  {'spread':>16}")
    for name, values in results.items():
        med = statistics.median(values)
        spread = f"{min(values) * scale:.1f}-{max(values) * scale:.1f}"
        print(
            f"  {name:<12}{med * scale:>9.1f} {unit:<2}  {med / memory:>8.2f}x"
            f"  {spread:>16}"
        )
    ours = statistics.median(results["chatmemory"])
    for label, target in targets.items():
        verdict = "met" if ours <= target else "MISSED"
        print(f"  target {label}: {target * scale:.1f} {unit}: {verdict}")
    if "postgres" in results:
        pg = statistics.median(results["postgres"])
        print(
            f"  faster than postgres ({pg / ours:.2f}x): "
            + ("met" if ours < pg else "MISSED")
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument(
        "--turns", type=int, default=30, help="agent turns recorded (default 30)"
    )
    args = parser.parse_args(argv)

    url = redis_url()
    configure_django(url)
    calls = record_agent(args.turns)
    n_steps = puts(calls)

    with ExitStack() as stack:
        stack.callback(cleanup, url)
        savers, skipped = build_savers(url, stack)
        rtt = round_trip()
        print(
            f"Redis {url}; one round trip (PING in a loop, median) {rtt * 1e6:.0f} us;"
            f" {args.turns} agent turns recorded = {n_steps} checkpoints"
        )
        for name, reason in skipped.items():
            print(f"  {name}: skipped: {reason}")

        # Warm-up: scripts loaded, connections open, code paths hot.
        for saver in savers.values():
            replay(saver, calls[:20], f"warm-{uuid.uuid4().hex}", timed=True)

        def step(name: str, saver: Any) -> float:
            times = replay(saver, calls, f"step-{uuid.uuid4().hex}", timed=True)
            return statistics.mean(times)

        steps = measure(savers, 3 if args.quick else 7, step)
        memory = statistics.median(steps["memory"])
        per_call = (statistics.median(steps["memory+rtt"]) - memory) / 2
        print(
            "one round trip between serialisations (memory+rtt): "
            f"{per_call * 1e6:.0f} us"
        )
        report(
            f"(a) agent step: put + get_tuple, mean over {n_steps} checkpoints",
            "us",
            steps,
            {
                "1.3 x memory + 1 round trip per step": 1.3 * memory + per_call,
                "1.3 x memory + 1 round trip per call (2 a step)": 1.3 * memory
                + 2 * per_call,
            },
            1e6,
        )

        # The list thread: the recording replayed onto one thread, again and
        # again, under fresh ids, up to 1,000 checkpoints.
        threads: dict[str, str] = {}
        for name, saver in savers.items():
            threads[name] = f"list-{uuid.uuid4().hex}"
            remaining = 1000
            while remaining:
                part: list[tuple[str, Any]] = []
                for call in calls:
                    if call[0] == "put":
                        if remaining == 0:
                            break
                        remaining -= 1
                    part.append(call)
                Replay(threads[name]).run(saver, part, timed=False)

        def listing(name: str, saver: Any) -> float:
            config = {"configurable": {"thread_id": threads[name], "checkpoint_ns": ""}}
            start = time.perf_counter()
            found = sum(1 for _ in saver.list(config))
            elapsed = time.perf_counter() - start
            if found != 1000:
                raise AssertionError(f"{name} listed {found} of 1000 checkpoints")
            return elapsed

        lists = measure(savers, 3 if args.quick else 5, listing)
        memory = statistics.median(lists["memory"])
        report(
            "(b) list of a 1,000-checkpoint thread",
            "ms",
            lists,
            {"1.3 x memory + 1 round trip": 1.3 * memory + per_call},
            1e3,
        )


if __name__ == "__main__":
    main()
