"""Benchmark: a chat turn's cost on sessions of 10, 1,000 and 100,000 messages.

Run by hand (never a test), with the app's venv::

    .venv/bin/python bench/bench_long_sessions.py [--turns N] [--sizes 10,1000,100000]

Each session is imported whole (``store.import_sessions``), then a chat turn
(``ChatTurn.run`` with the offline demo model, no token delay: load the tail
the prompt can use, trim, answer, save) runs ``--turns`` times on each,
interleaved across the sizes so drift in the machine's load hits them alike.
A session under 10,000 messages is imported afresh after each of its turns
(not timed), and a longer one has the turn's two records taken off its list
(``LTRIM``, not timed), so every turn sees the size and the tail it is named
by (the 10-message one would otherwise hold 70 by the end); a garbage
collection before each turn (not timed) keeps the import's garbage out of the
timed turns. It prints the
median turn time per size with its interquartile range, and the median's
ratio to the 10-message session (the target is within 1.2x).

One more line, for information (not part of the target): a session of 10
long messages that fill the prompt budget as the long sessions' tails do, so
the prompt the model is handed is as large; the gap between it and the
10-message line is the cost of a larger prompt (formatting it, the model
reading it), not of a longer session.

Last, the longest command Redis ran during the turns (SLOWLOG with a 0 us
threshold; off while sessions are imported), which is how long any other
client of that Redis could have been kept waiting.

Redis: a throwaway ``redis-server`` on a free loopback port (persistence off).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--sizes", default="10,1000,100000")
    options = parser.parse_args()
    sizes = [int(size) for size in options.sizes.split(",")]

    from tests.redis_server import start_redis_server

    _, url = start_redis_server()
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "chatmemory",
        ],
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "chatmemory": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"{url}/0",
            },
        },
        CHATMEMORY_KEY_PREFIX=f"bench-{uuid.uuid4().hex[:8]}",
        USE_TZ=True,
    )
    django.setup()
    import redis

    from chatmemory import store
    from chatmemory.llm import DemoChatModel
    from chatmemory.store.keys import messages_key
    from chatmemory.turn import ChatTurn

    def record(i: int) -> store.Record:
        kind = "human" if i % 2 == 0 else "ai"
        text = f"message {i}: " + "some words of a long chat " * 4
        return {"type": kind, "data": {"content": text, "type": kind}}

    def long_record(i: int) -> store.Record:
        # A question of ~100 tokens and a reply of ~480: ten fill 3,000.
        if i % 2 == 0:
            text = f"question {i}: " + "a question in a long chat " * 15
            return {"type": "human", "data": {"content": text}}
        text = f"reply {i}: " + "some words of a long reply " * 70
        return {"type": "ai", "data": {"content": text}}

    full = "10, filling the budget"
    contents = {size: [record(i) for i in range(size)] for size in sizes}
    contents[full] = [long_record(i) for i in range(10)]
    sessions = {size: f"long-{size}" for size in contents}
    store.import_sessions(
        store.ImportedSession(sid, contents[size]) for size, sid in sessions.items()
    )
    model = DemoChatModel(token_delay=0)
    raw = redis.Redis.from_url(url)

    def restore(size: int | str) -> None:
        raw.config_set("slowlog-log-slower-than", -1)
        if size == full or int(size) < 10_000:
            store.import_sessions(
                [store.ImportedSession(sessions[size], contents[size])]
            )
        else:
            # Too long to import per turn: the turn's two records come off.
            raw.ltrim(messages_key(sessions[size]), 0, -3)
        raw.config_set("slowlog-log-slower-than", 0)

    for size, sid in sessions.items():  # warm-up
        ChatTurn(sid, "warm up", model=model).run()
        restore(size)
    raw.config_set("slowlog-log-slower-than", 0)
    raw.config_set("slowlog-max-len", 100_000)
    raw.slowlog_reset()

    times: dict[int | str, list[float]] = {size: [] for size in sessions}
    for _ in range(options.turns):
        for size, sid in sessions.items():
            gc.collect()
            start = time.perf_counter()
            ChatTurn(sid, "What did I say first?", model=model).run()
            times[size].append(time.perf_counter() - start)
            restore(size)

    log = raw.slowlog_get(100_000)
    slowest = max(log, key=lambda entry: entry["duration"])
    anchor = statistics.median(times[sizes[0]])
    print(f"chat turn, median of {options.turns} (demo model, no token delay):")
    for size in sessions:
        median = statistics.median(times[size])
        low, _, high = statistics.quantiles(times[size], n=4)
        label = f"{size:>7,} messages" if size != full else f"({full})"
        print(
            f"  {label}: {median * 1000:7.2f} ms (IQR {low * 1000:.2f}-"
            f"{high * 1000:.2f})  {median / anchor:5.2f}x the {sizes[0]:,}-message "
            "session"
        )

    def name(entry: dict[str, Any]) -> str:
        command = entry["command"]
        if isinstance(command, bytes):
            command = command.decode(errors="replace")
        return str(command)

    # The same command (the same script, for EVALSHA) on any key: its usual time.
    words = name(slowest).split()
    kind = " ".join(words[:2] if words[0] == "EVALSHA" else words[:1])
    alike = [entry["duration"] for entry in log if name(entry).startswith(kind)]
    print(
        f"longest Redis command during the turns: {slowest['duration']} us "
        f"({name(slowest)[:60]}); that command's median: "
        f"{statistics.median(alike):.0f} us over {len(alike)}"
    )


if __name__ == "__main__":
    main()
