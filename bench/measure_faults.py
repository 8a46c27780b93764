"""Issue 8's fault measurements, rerun: counts, not timings.

Run by hand (never a test), with the app's venv::

    .venv/bin/python bench/measure_faults.py [--only KIND,...]  (default: all)

Each measurement gets a throwaway ``redis-server`` of its own (a free loopback
port, persistence off unless it needs AOF) and prints what issue 8 measured
(the KINDs):

- leak: Redis clients and this process's open file descriptors after 1,000
  ``asyncio.run(aread_records(...))`` and 1,000 ``async_to_sync`` calls;
- timeout: 20 writes that time out on a paused Redis (SIGSTOP), each retried
  with the same write id after it resumes: how many turns end up doubled;
- restart: 50 concurrent async and 20 threaded sync reads on pooled
  connections after Redis restarts: how many fail;
- ttl: 50,000 sessions that all expire (``CHATMEMORY_TTL``): index entries
  left, the count a listing shows, entries after 100 writes and after one
  listing, and whether an id search finds a live match behind expired ids;
- idle: 50,000 sessions of 5,000 owners that all expire while nobody writes
  again: index entries, keys and memory left once Redis has expired them;
- reindex: ``rebuild_indexes`` at 200,000 sessions while a writer adds and
  deletes sessions: sessions dropped from the indexes, and the longest
  command Redis ran meanwhile (SLOWLOG).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KINDS = ("leak", "timeout", "restart", "ttl", "idle", "reindex")


class Redis:
    """A redis-server of the measurement's own, to pause, restart and stop."""

    def __init__(self, *args: str) -> None:
        from tests.redis_server import free_port

        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatmemory-measure-")
        self.argv = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", str(self.port),
            "--save", "", "--dir", self.dir, *args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        import redis

        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port)
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                time.sleep(0.05)
        client.close()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        assert self.process is not None
        self.signal(signal.SIGCONT)
        self.process.terminate()
        self.process.wait(timeout=30)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def caches(url: str, **options: Any) -> dict[str, Any]:
    return {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"{url}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5, **options},
        },
    }


def human(text: str) -> dict[str, Any]:
    return {"type": "human", "data": {"content": text}}


def ai(text: str) -> dict[str, Any]:
    return {"type": "ai", "data": {"content": text}}


def measure_leak() -> None:
    import redis
    from asgiref.sync import async_to_sync
    from django.test import override_settings

    from chatmemory import store

    own = Redis()
    try:
        with override_settings(CACHES=caches(own.url)):
            store.append_records("s", [human("x")])
            raw = redis.Redis(port=own.port)
            before = len(raw.client_list()), len(os.listdir("/proc/self/fd"))
            for _ in range(1000):
                asyncio.run(store.aread_records("s"))
            after_run = len(raw.client_list()), len(os.listdir("/proc/self/fd"))
            for _ in range(1000):
                async_to_sync(store.aread_records)("s")
            after_bridge = len(raw.client_list()), len(os.listdir("/proc/self/fd"))
            raw.close()
        print("leak: Redis clients / open file descriptors")
        print(f"  before:                      {before[0]} / {before[1]}")
        print(f"  after 1,000 asyncio.run:     {after_run[0]} / {after_run[1]}")
        print(f"  after 1,000 async_to_sync:   {after_bridge[0]} / {after_bridge[1]}")
    finally:
        own.close()


def measure_timeout() -> None:
    from django.test import override_settings

    from chatmemory import store
    from chatmemory.exceptions import StoreTimeout

    own = Redis()
    timed_out = doubled = 0
    try:
        with override_settings(CACHES=caches(own.url, SOCKET_TIMEOUT=0.3)):
            for n in range(20):
                session_id = f"t{n}"
                store.append_records(session_id, [human("q1"), ai("a1")])
                write_id = store.new_write_id()
                turn = [human("q2"), ai("a2")]
                own.signal(signal.SIGSTOP)
                try:
                    store.append_records(session_id, turn, write_id=write_id)
                except StoreTimeout:
                    timed_out += 1
                finally:
                    own.signal(signal.SIGCONT)
                store.append_records(session_id, turn, write_id=write_id)  # retry
                if len(store.read_records(session_id)) != 4:
                    doubled += 1
        print(f"timeout: {timed_out} of 20 writes timed out; {doubled} of 20 doubled")
    finally:
        own.close()


def measure_restart() -> None:
    from django.test import override_settings

    from chatmemory import store
    from chatmemory.exceptions import ChatMemoryError

    own = Redis()
    try:
        with override_settings(CACHES=caches(own.url)):
            store.append_records("s", [human("x")])
            loop = asyncio.new_event_loop()

            async def burst() -> list[Any]:
                calls = (store.aread_records("s") for _ in range(50))
                return await asyncio.gather(*calls, return_exceptions=True)

            def sync_burst() -> int:
                failures: list[BaseException] = []

                def one() -> None:
                    try:
                        store.read_records("s")
                    except ChatMemoryError as exc:
                        failures.append(exc)

                threads = [threading.Thread(target=one) for _ in range(20)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                return len(failures)

            loop.run_until_complete(burst())
            sync_burst()  # both pools hold idle connections now
            own.stop()
            own.start()  # persistence off: the session is gone, reads still work
            failed_async = sum(
                isinstance(r, BaseException) for r in loop.run_until_complete(burst())
            )
            failed_sync = sync_burst()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        print(
            f"restart: {failed_async} of 50 async calls and {failed_sync} of 20 "
            "sync calls failed after a restart"
        )
    finally:
        own.close()


def index_entries(raw: Any) -> tuple[int, int, int]:
    """Entries in the activity, id and no-owner indexes; in the owners'
    indexes; and how many owner indexes there are."""
    from chatmemory import store

    names = [store.sessions_key(), store.ids_key(), store.no_owner_key()]
    shared = sum(int(raw.zcard(name)) for name in names)
    owners = [k.decode() for k in raw.scan_iter(match="*:owner:*", count=1000)]
    return shared, sum(int(raw.zcard(name)) for name in owners), len(owners)


def measure_ttl(sessions: int = 50_000) -> None:
    import redis
    from django.test import override_settings

    from chatmemory import store

    own = Redis()
    try:
        raw = redis.Redis(port=own.port)

        def entries() -> str:
            shared, owned, _ = index_entries(raw)
            return (
                f"{shared + owned:,} ({shared:,} in the activity, id and "
                f"no-owner indexes, {owned:,} in the owners' indexes)"
            )

        with override_settings(CACHES=caches(own.url), CHATMEMORY_TTL=3):
            for n in range(sessions):
                store.append_records(f"old-{n:06}", [human("x")], owner=str(n % 50))
            # Wait until every one has expired; "old-zlive" (after them all in
            # id order) is kept alive meanwhile.
            while raw.exists(store.meta_key(f"old-{sessions - 1:06}")):
                store.append_records("old-zlive", [human("y")], owner="0")
                time.sleep(0.2)
            store.append_records("old-zlive", [human("y")], owner="0")
            left = entries()
            shown = store.list_sessions(limit=10)
            found = store.search_session_ids("old-", limit=10)
            for n in range(100):
                store.append_records(f"new-{n}", [human("z")], owner=str(n % 50))
            after_writes = entries()
            store.list_sessions(limit=10)
            after_listing = entries()
            visits = 1
            while raw.zcount(store.sessions_key(), "-inf", "+inf") > 101 + 1:
                store.list_sessions(limit=10)
                visits += 1
                if visits > 1000:
                    break
        print(f"ttl: {sessions:,} sessions expired")
        print(f"  index entries left:                   {left}")
        print(
            f"  a listing shows:                      total {shown.total:,}, "
            f"{len(shown.sessions)} rows"
        )
        print(
            "  id search 'old-' behind expired ids:  "
            f"{[i.session_id for i in found.sessions]} (total {found.total})"
        )
        print(f"  entries after 100 writes:             {after_writes}")
        print(f"  entries after one listing:            {after_listing}")
        print(f"  listings until the activity index is clean: {visits}")
        raw.close()
    finally:
        own.close()


def measure_idle(sessions: int = 50_000, owners: int = 5_000, ttl: int = 45) -> None:
    import redis
    from django.test import override_settings

    from chatmemory import store

    own = Redis()
    try:
        raw = redis.Redis(port=own.port)
        empty = int(raw.info("memory")["used_memory"])
        with override_settings(CACHES=caches(own.url), CHATMEMORY_TTL=ttl):
            started = time.monotonic()
            for n in range(sessions):
                store.append_records(
                    f"idle-{n:06}", [human("x")], owner=str(n % owners)
                )
            wrote = time.monotonic() - started
            full = int(raw.info("memory")["used_memory"]) - empty
            shared, owned, owner_keys = index_entries(raw)
            print(
                f"idle: {sessions:,} sessions of {owners:,} owners written in "
                f"{wrote:.0f} s (TTL {ttl} s)"
            )
            print(
                f"  with every session:  {shared + owned:,} index entries, "
                f"{raw.dbsize():,} keys, {full:,} bytes"
            )
            # Nobody writes again. Wait until the last session has expired and
            # Redis's active expiry has taken every key with a TTL (the key
            # count stops falling).
            time.sleep(max(ttl - (time.monotonic() - started - wrote), 0) + 1)
            last, still = -1, 0
            while still < 5:
                keys = int(raw.dbsize())
                still = still + 1 if keys == last else 0
                last = keys
                time.sleep(0.5)
            left = int(raw.info("memory")["used_memory"]) - empty
            # ZCARD and SCAN expire a key they meet whose time is up.
            shared, owned, owner_keys = index_entries(raw)
        print(
            f"  all expired:         {shared + owned:,} index entries "
            f"({shared:,} in the activity, id and no-owner indexes, {owned:,} "
            f"in {owner_keys:,} owner indexes), {last:,} keys, {left:,} bytes"
        )
        raw.close()
    finally:
        own.close()


def measure_reindex(sessions: int = 200_000) -> None:
    import redis
    from django.test import override_settings

    from chatmemory import store
    from chatmemory.store import scripts

    own = Redis()
    try:
        raw = redis.Redis(port=own.port)
        with override_settings(CACHES=caches(own.url, SOCKET_TIMEOUT=30)):
            store.import_sessions(
                (
                    store.ImportedSession(f"old-{n}", [human("x")], owner=str(n % 50))
                    for n in range(sessions)
                ),
                batch_size=2000,
            )
            raw.config_set("slowlog-log-slower-than", 0)
            raw.config_set("slowlog-max-len", 1_000_000)
            raw.slowlog_reset()
            stop = threading.Event()
            written: list[str] = []

            def writer() -> None:
                n = 0
                while not stop.is_set():
                    session_id = f"new-{n}"
                    store.append_records(session_id, [human("q")], owner=str(n % 7))
                    written.append(session_id)
                    n += 1

            thread = threading.Thread(target=writer)
            thread.start()
            started = time.monotonic()
            try:
                store.rebuild_indexes()
            finally:
                took = time.monotonic() - started
                stop.set()
                thread.join()
            slowest = max(raw.slowlog_get(1_000_000), key=lambda e: e["duration"])
            listed = {
                info.session_id
                for info in store.list_sessions(limit=len(written)).sessions
            }
            dropped = len(set(written) - listed)
            report = store.check_consistency()
        command = slowest["command"]
        if isinstance(command, bytes):
            command = command.decode(errors="replace")
        names = {
            hashlib.sha1(scripts.source(path.stem).encode()).hexdigest(): path.stem
            for path in (ROOT / "chatmemory" / "store" / "lua").glob("*.lua")
        }
        words = str(command).split()
        if len(words) > 1 and words[0].upper() == "EVALSHA":
            command = f"EVALSHA {names.get(words[1], words[1])}.lua"
        print(
            f"reindex at {sessions:,} sessions ({took:.1f} s): {dropped} of "
            f"{len(written)} sessions written meanwhile dropped from the index; "
            f"longest command {slowest['duration'] / 1000:.2f} ms "
            f"({str(command)[:40]}); consistent: {report.ok}"
        )
        raw.close()
    finally:
        own.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=",".join(KINDS))
    options = parser.parse_args()
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "chatmemory",
        ],
        CACHES=caches("redis://127.0.0.1:1"),
        CHATMEMORY_KEY_PREFIX=f"measure-{uuid.uuid4().hex[:8]}",
        USE_TZ=True,
    )
    django.setup()
    for kind in options.only.split(","):
        globals()[f"measure_{kind}"]()


if __name__ == "__main__":
    main()
