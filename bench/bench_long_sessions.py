"""Benchmark: a chat turn's cost on sessions of 10, 1,000 and 100,000 messages.

Run by hand (never a test), with the app's venv::

    .venv/bin/python bench/bench_long_sessions.py [--turns N] [--sizes 10,1000,100000]

Each session is imported whole (``store.import_sessions``), then a chat turn
(``ChatTurn.run`` with the offline demo model, no token delay: load the tail
the prompt can use, trim, answer, save) runs ``--turns`` times on each,
interleaved across the sizes so drift in the machine's load hits them alike.
It prints the median turn time per size and its ratio to the 10-message
session (the target is within 1.2x), then the longest command Redis ran during
the turns (SLOWLOG with a 0 us threshold), which is how long any other client
of that Redis could have been kept waiting.

Redis: a throwaway ``redis-server`` on a free loopback port (persistence off).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

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
    from chatmemory.turn import ChatTurn

    def record(i: int) -> store.Record:
        kind = "human" if i % 2 == 0 else "ai"
        text = f"message {i}: " + "some words of a long chat " * 4
        return {"type": kind, "data": {"content": text, "type": kind}}

    sessions = {size: f"long-{size}" for size in sizes}
    store.import_sessions(
        store.ImportedSession(sid, [record(i) for i in range(size)])
        for size, sid in sessions.items()
    )
    model = DemoChatModel(token_delay=0)
    raw = redis.Redis.from_url(url)
    for sid in sessions.values():  # warm-up
        ChatTurn(sid, "warm up", model=model).run()
    raw.config_set("slowlog-log-slower-than", 0)
    raw.config_set("slowlog-max-len", 100_000)
    raw.slowlog_reset()

    times: dict[int, list[float]] = {size: [] for size in sizes}
    for _ in range(options.turns):
        for size, sid in sessions.items():
            start = time.perf_counter()
            ChatTurn(sid, "What did I say first?", model=model).run()
            times[size].append(time.perf_counter() - start)

    slowest = max(raw.slowlog_get(100_000), key=lambda entry: entry["duration"])
    anchor = statistics.median(times[sizes[0]])
    print(f"chat turn, median of {options.turns} (demo model, no token delay):")
    for size in sizes:
        median = statistics.median(times[size])
        print(
            f"  {size:>7,} messages: {median * 1000:7.2f} ms  "
            f"{median / anchor:5.2f}x the {sizes[0]:,}-message session"
        )
    command = slowest["command"]
    if isinstance(command, bytes):
        command = command.decode(errors="replace")
    print(
        f"longest Redis command during the turns: {slowest['duration']} us "
        f"({str(command)[:60]})"
    )


if __name__ == "__main__":
    main()
