"""Benchmark: export and import at 1,000,000 messages; the turn limits' cost per turn.

Run by hand (never a test), from the project root::

    .venv/bin/python bench/bench_lifecycle.py                 # 1,000,000 messages
    .venv/bin/python bench/bench_lifecycle.py --messages 200000 --turns 200

Cases:

- ``chatmemory_export`` of every session to a file, and ``chatmemory_import`` of
  that file into an empty prefix: messages per second, and the peak memory of the
  process doing it (each runs in a forked child; its peak resident size is
  printed next to an idle child's, the anchor). Both run at a tenth of the
  messages too: the same peak at both sizes shows memory stays flat.
- one chat turn (the offline demo model, no token delay, through
  ``chains.ChatTurn``) with and without the turn-limit check the views make
  (``store.admit_turn`` + ``store.release_turn``, all three limits on): the
  median time per turn and the ratio (target <= 1.05). Blocks alternate, so
  drift in machine load hits both alike.

Redis: a throwaway ``redis-server`` on a free loopback port, or ``BENCH_REDIS_URL``
(only keys under the benchmark's random prefixes are touched).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_admin  # noqa: E402  (its throwaway Redis and Django settings)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def in_child(work: Any) -> tuple[float, float, Any]:
    """Run ``work()`` in a forked child: (seconds, peak MB, result)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        started = time.perf_counter()
        result = work()
        elapsed = time.perf_counter() - started
        os.write(write, repr((elapsed, peak_mb(), result)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    elapsed, peak, result = eval(data)  # our own child's repr of numbers
    return elapsed, peak, result


def seed(messages: int, per_session: int) -> None:
    from chatmemory import store

    text = "A question or an answer of some ordinary length, about forty tokens. " * 3

    def sessions() -> Any:
        for s in range(messages // per_session):
            records = [
                {
                    "type": "human" if i % 2 == 0 else "ai",
                    "data": {"content": f"{i} {text}", "type": "human"},
                }
                for i in range(per_session)
            ]
            yield store.ImportedSession(f"s{s:07d}", records, owner=f"u{s % 50}")

    store.import_sessions(sessions(), batch_size=100)


def lifecycle(messages: int, per_session: int) -> None:
    from django.core.management import call_command
    from django.test import override_settings

    prefix = f"{bench_admin.PREFIX}-{messages}"
    copy = f"{prefix}-copy"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.ndjson"
        with override_settings(CHATMEMORY_KEY_PREFIX=prefix):
            seed(messages, per_session)
            idle = in_child(lambda: None)[1]

            def export() -> int:
                call_command("chatmemory_export", "-o", str(path), verbosity=0)
                return path.stat().st_size

            seconds, peak, size = in_child(export)
            print(
                f"export {messages:>9,} messages: {messages / seconds:>9,.0f} msg/s "
                f"({seconds:.1f} s, {size / 1e6:,.0f} MB file), peak memory "
                f"{peak:,.0f} MB (idle process {idle:,.0f} MB)"
            )
        with override_settings(CHATMEMORY_KEY_PREFIX=copy):

            def load() -> None:
                call_command("chatmemory_import", str(path), verbosity=0)

            seconds, peak, _ = in_child(load)
            print(
                f"import {messages:>9,} messages: {messages / seconds:>9,.0f} msg/s "
                f"({seconds:.1f} s), peak memory {peak:,.0f} MB "
                f"(idle process {idle:,.0f} MB)"
            )
    client = __import__("chatmemory.store.client", fromlist=["x"]).sync_client()
    for pattern in (f"{prefix}:*", f"{copy}:*"):
        batch = []
        for key in client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.delete(*batch)
                batch = []
        if batch:
            client.delete(*batch)


def quota_cost(turns: int, block: int) -> None:
    from django.test import override_settings

    from chatmemory import chains, store
    from chatmemory.store.quota import Limits

    model = chains.DemoChatModel(token_delay=0)
    limits = Limits(
        turns_per_minute=10**9, concurrent_streams=10**6, tokens_per_day=10**12
    )

    def plain(i: int) -> None:
        chains.ChatTurn(
            f"q{i % 20}", "How are you today?", owner="bench", model=model
        ).run()

    def limited(i: int) -> None:
        admission = store.admit_turn("bench", limits)
        assert admission.admitted
        try:
            plain(i)
        finally:
            store.release_turn("bench", admission)

    times: dict[str, list[float]] = {"plain": [], "limited": []}
    with override_settings(CHATMEMORY_MAX_MESSAGES=40):
        for i in range(40):  # warm up both paths
            plain(i)
            limited(i)
        done = 0
        while done < turns:
            for name, turn in (("plain", plain), ("limited", limited)):
                for i in range(block):
                    started = time.perf_counter()
                    turn(done + i)
                    times[name].append(time.perf_counter() - started)
            done += block
    plain_ms = statistics.median(times["plain"]) * 1000
    limited_ms = statistics.median(times["limited"]) * 1000
    print(
        f"turn without limits {plain_ms:.2f} ms, with the limit check "
        f"{limited_ms:.2f} ms: ratio {limited_ms / plain_ms:.3f} (target <= 1.05; "
        f"{len(times['plain'])} turns each)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--per-session", type=int, default=100)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--block", type=int, default=50)
    options = parser.parse_args()
    bench_admin.configure_django(bench_admin.redis_url())
    quota_cost(options.turns, options.block)
    for messages in (options.messages // 10, options.messages):
        lifecycle(messages, options.per_session)


if __name__ == "__main__":
    main()
