"""Benchmark: export and import at 1,000,000 messages; the turn limits' cost per turn.

Run by hand (never a test), from the project root::

    .venv/bin/python bench/bench_lifecycle.py                 # 1,000,000 messages
    .venv/bin/python bench/bench_lifecycle.py --messages 200000 --turns 200
    .venv/bin/python bench/bench_lifecycle.py --quota-only --turns 2000 --block 50

Cases:

- ``chatmemory_export`` of every session to a file, and ``chatmemory_import`` of
  that file into an empty prefix: messages per second, and the peak memory of the
  process doing it (each runs in a forked child; its peak resident size is
  printed next to an idle child's, the anchor). Both run at a tenth of the
  messages too: the same peak at both sizes shows memory stays flat.
- one chat turn as the stream view runs it (the offline demo model, no token
  delay): without limits, with the turn-limit check folded into round trips
  the turn makes anyway (all three limits on), and with the check in round
  trips of its own; the ratio of each to the plain turn (target <= 1.05), as
  the median of per-round ratios with its spread. Blocks alternate, so drift in
  machine load hits all three alike; then pairs of a plain and a folded turn,
  one after the other: the median difference, which load drift cancels out of
  (``--quota-only``: this case alone).

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


def spread(ratios: list[float]) -> str:
    """Median and spread of per-round ratios: interquartile range, min, max."""
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return (
        f"{statistics.median(ratios):.3f} (rounds: IQR {quartiles[0]:.3f}-"
        f"{quartiles[2]:.3f}, min {min(ratios):.3f}, max {max(ratios):.3f})"
    )


def quota_cost(turns: int, block: int) -> None:
    """The turn limits' cost per turn, the store work of the stream view's turn.

    A turn here is what ``views.stream`` does with Redis around the model: read
    the session, take the turn lock, read the history, (the model), save,
    release the lock. Three ways, in alternating blocks of ``block`` turns:

    - plain: no limits (the session read is ``store.get_session``);
    - folded: all three limits on, as the view checks them: the session read
      and the limit check in one round trip (``store.get_session_and_admit``),
      the stream slot given back with the lock (``ChatTurn.admission``);
    - separate: the check as its own round trips (``store.admit_turn`` before,
      ``store.release_turn`` after), as the view did before.

    Each round (one block of each) gives a ratio of medians against plain; the
    line prints the median ratio over the rounds and its spread.
    """
    from django.test import override_settings

    from chatmemory import store
    from chatmemory.llm import DemoChatModel
    from chatmemory.store.quota import Limits
    from chatmemory.turn import ChatTurn

    model = DemoChatModel(token_delay=0)
    limits = Limits(
        turns_per_minute=10**9, concurrent_streams=10**6, tokens_per_day=10**12
    )
    owner = "bench"

    def turn(i: int) -> ChatTurn:
        return ChatTurn(
            f"q{i % 20}", "How are you today?", owner=owner, model=model,
            exclusive=True,
        )  # fmt: skip

    def plain(i: int) -> None:
        store.get_session(f"q{i % 20}")
        turn(i).run()

    def folded(i: int) -> None:
        _, admission = store.get_session_and_admit(f"q{i % 20}", owner, limits)
        assert admission.admitted
        this = turn(i)
        this.admission = admission
        this.run()
        assert this.admission is None

    def separate(i: int) -> None:
        store.get_session(f"q{i % 20}")
        admission = store.admit_turn(owner, limits)
        assert admission.admitted
        try:
            turn(i).run()
        finally:
            store.release_turn(owner, admission)

    ways = {"plain": plain, "folded": folded, "separate": separate}
    times: dict[str, list[float]] = {name: [] for name in ways}
    ratios: dict[str, list[float]] = {"folded": [], "separate": []}
    with override_settings(CHATMEMORY_MAX_MESSAGES=40):
        for i in range(40):  # warm up every path
            for way in ways.values():
                way(i)
        done = 0
        while done < turns:
            medians = {}
            for name, way in ways.items():
                taken = []
                for i in range(block):
                    started = time.perf_counter()
                    way(done + i)
                    taken.append(time.perf_counter() - started)
                times[name] += taken
                medians[name] = statistics.median(taken)
            for name in ratios:
                ratios[name].append(medians[name] / medians["plain"])
            done += block
        # Paired: each plain turn next to a folded one (which goes first
        # alternates), so drift in machine load cancels out of each difference.
        differences = []
        for i in range(turns):
            pair = (plain, folded) if i % 2 else (folded, plain)
            taken = {}
            for way in pair:
                started = time.perf_counter()
                way(i)
                taken[way] = time.perf_counter() - started
            differences.append(taken[folded] - taken[plain])
    plain_ms = statistics.median(times["plain"]) * 1000
    print(
        f"turn (the stream view's store work, demo model) without limits "
        f"{plain_ms:.2f} ms; {len(times['plain'])} turns each way, "
        f"{len(ratios['folded'])} rounds of {block}"
    )
    print(
        "  with the limit check folded into the session read and the unlock: "
        f"ratio {spread(ratios['folded'])} (target <= 1.05)"
    )
    low, _, high = statistics.quantiles(differences, n=4)
    extra = statistics.median(differences)
    print(
        f"  paired ({turns} pairs of a plain and a folded turn, one after the "
        f"other): the check adds {extra * 1e6:+.0f} us a turn (IQR "
        f"{low * 1e6:+.0f} .. {high * 1e6:+.0f}), ratio "
        f"{1 + extra / statistics.median(times['plain']):.3f} (target <= 1.05)"
    )
    print(
        "  with the limit check in round trips of its own: "
        f"ratio {spread(ratios['separate'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--per-session", type=int, default=100)
    parser.add_argument("--turns", type=int, default=1000)
    parser.add_argument("--block", type=int, default=50)
    parser.add_argument(
        "--quota-only", action="store_true", help="only the turn limits' cost"
    )
    options = parser.parse_args()
    bench_admin.configure_django(bench_admin.redis_url())
    quota_cost(options.turns, options.block)
    if options.quota_only:
        return
    for messages in (options.messages // 10, options.messages):
        lifecycle(messages, options.per_session)


if __name__ == "__main__":
    main()
