"""Fault tests: a real redis-server of each test's own, made to misbehave.

Each test starts its own server (a free loopback port, a temporary directory)
with the configuration the fault needs, points the ``chatmemory`` cache at it,
and stops it afterwards. Every scenario checks that the caller gets a
chatmemory error (never a raw redis-py one, never a 500) and that nothing
acknowledged is lost or written twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client, override_settings
from django.urls import reverse

from chatmemory import store
from chatmemory.exceptions import (
    PoolExhausted,
    SessionNotFound,
    StoreCommandUnavailable,
    StoreFull,
    StorePermissionDenied,
    StoreReadOnly,
    StoreTimeout,
    StoreUnavailable,
)
from chatmemory.owners import owner_id
from tests.redis_server import _die_with_parent, free_port


class Server:
    """One throwaway redis-server that a test may stop, pause and restart."""

    def __init__(self, *args: str) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chatmemory-fault-")
        self.argv = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--dir", self.dir,
            *args,
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> redis.Redis:
        return redis.Redis(port=self.port, **kwargs)

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        client = self.client()
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=20)

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.resume()
        self.stop(signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def caches_for(url: str, **options: Any) -> dict[str, Any]:
    """CACHES with the chatmemory alias on ``url``."""
    return {
        **settings.CACHES,
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"{url}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5, **options},
        },
    }


@contextmanager
def server(*args: str, **options: Any) -> Iterator[Server]:
    """A server of the test's own, with the chatmemory cache on it."""
    own = Server(*args)
    try:
        with override_settings(CACHES=caches_for(own.url, **options)):
            yield own
    finally:
        store._reset_async_clients()
        own.close()


def human(text: str) -> dict[str, Any]:
    return {"type": "human", "data": {"content": text}}


def ai(text: str) -> dict[str, Any]:
    return {"type": "ai", "data": {"content": text}}


def texts(session_id: str) -> list[str]:
    return [r["data"]["content"] for r in store.read_records(session_id)]  # type: ignore[index]


def assert_consistent() -> None:
    """The indexes, metadata and lists agree (chatmemory_doctor's checker)."""
    report = store.check_consistency()
    assert report.ok, report.counts


# ---------------------------------------------------------------------------
# Every Redis error is ours


def make_full(raw: redis.Redis) -> None:
    """Set maxmemory below the memory in use: Redis refuses every write."""
    raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) // 2)


def test_out_of_memory_under_noeviction_is_store_full(key_prefix: str) -> None:
    with server("--maxmemory-policy", "noeviction") as own:
        store.append_records("s", [human("kept")], owner="1")
        raw = own.client()
        make_full(raw)

        with pytest.raises(StoreFull, match="out of memory.*noeviction"):
            store.append_records("s", [human("lost")], owner="1")
        with pytest.raises(StoreFull):
            store.create_session("new", owner="1")
        assert texts("s") == ["kept"]  # reads still work
        assert_consistent()
        raw.close()


def test_a_read_only_replica_refuses_writes_with_advice(key_prefix: str) -> None:
    primary = Server()
    try:
        with server("--replicaof", "127.0.0.1", str(primary.port)):
            with pytest.raises(StoreReadOnly, match="read-only replica.*primary"):
                store.append_records("s", [human("x")])
            with pytest.raises(StoreReadOnly):
                store.create_session("s")
    finally:
        primary.close()


def test_an_acl_user_without_scripting(key_prefix: str) -> None:
    with server() as own:
        raw = own.client()
        raw.acl_setuser(
            "chat",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            commands=["+@all", "-@scripting"],
        )
        url = f"redis://chat:pw@127.0.0.1:{own.port}"
        with override_settings(CACHES=caches_for(url)):
            with pytest.raises(StorePermissionDenied, match="EVALSHA"):
                store.append_records("s", [human("x")])
            with pytest.raises(StorePermissionDenied):
                store.list_sessions()
        raw.close()


def test_renamed_scripting_commands(key_prefix: str) -> None:
    with server("--rename-command", "EVAL", "", "--rename-command", "EVALSHA", ""):
        with pytest.raises(StoreCommandUnavailable, match="rename-command"):
            store.append_records("s", [human("x")])


async def test_async_errors_are_translated_too(key_prefix: str) -> None:
    with server("--rename-command", "EVALSHA", ""):
        with pytest.raises(StoreCommandUnavailable):
            await store.aappend_records("s", [human("x")])


def test_views_answer_503_and_error_events_on_a_full_store(
    key_prefix: str, django_user_model: Any
) -> None:
    user: User = django_user_model.objects.create_user("alice", password="pw")
    client = Client()
    client.force_login(user)
    with server("--maxmemory-policy", "noeviction") as own:
        store.create_session("mine", owner=owner_id(user))
        raw = own.client()
        make_full(raw)

        new = client.post(reverse("chatmemory:sessions"))  # stores nothing yet
        new_id = new["Location"].rstrip("/").rsplit("/", 1)[-1]
        rename = client.post(
            reverse("chatmemory:rename", args=["mine"]), {"title": "t"}
        )
        bodies = []
        for session_id in ("mine", new_id):
            streamed = client.post(
                reverse("chatmemory:stream", args=[session_id]), {"message": "hello"}
            )
            assert streamed.status_code == 200
            bodies.append(b"".join(streamed.streaming_content))  # type: ignore[attr-defined]

        assert new.status_code == 302
        assert rename.status_code == 503
        assert "full" in rename.content.decode()
        for body in bodies:
            assert b"event: error\ndata: The chat history store is full" in body
            assert b"event: done" not in body
        assert store.read_records("mine") == []  # no partial turn
        assert store.get_session(new_id) is None
        raw.close()


# ---------------------------------------------------------------------------
# Async clients live as long as their loop


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
def test_async_clients_die_with_their_event_loop(key_prefix: str) -> None:
    with server() as own:
        store.append_records("s", [human("x")])
        raw = own.client()
        clients_before, fds_before = len(raw.client_list()), _open_fds()

        for _ in range(1000):
            asyncio.run(store.aread_records("s"))
        after_run = len(raw.client_list()), _open_fds()
        for _ in range(1000):
            async_to_sync(store.aread_records)("s")
        after_bridge = len(raw.client_list()), _open_fds()

        # Each loop closed its connection on the way out: nothing piles up.
        assert after_run[0] <= clients_before + 2
        assert after_bridge[0] <= clients_before + 2
        assert after_run[1] <= fds_before + 5
        assert after_bridge[1] <= fds_before + 5
        raw.close()


def test_a_loop_closed_by_hand_leaves_nothing_behind(key_prefix: str) -> None:
    with server() as own:
        raw = own.client()
        before = len(raw.client_list())
        for _ in range(20):
            loop = asyncio.new_event_loop()
            loop.run_until_complete(store.aread_records("s"))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        assert len(raw.client_list()) <= before + 1
        raw.close()


# ---------------------------------------------------------------------------
# Timed-out writes are applied at most once


def test_a_write_timed_out_on_a_paused_redis_is_applied_once(key_prefix: str) -> None:
    with server("--appendonly", "yes", SOCKET_TIMEOUT=0.5) as own:
        store.append_records("s", [human("q1"), ai("a1")])
        write_id = store.new_write_id()
        turn = [human("q2"), ai("a2")]
        own.pause()
        try:
            with pytest.raises(StoreTimeout, match="may or may not"):
                store.append_records("s", turn, write_id=write_id)
        finally:
            own.resume()
        # The paused write is applied when Redis resumes; the user's retry,
        # with the same write id, is not applied again.
        count = store.append_records("s", turn, write_id=write_id)
        assert count == 4
        assert texts("s") == ["q1", "a1", "q2", "a2"]
        assert_consistent()


def test_the_turn_save_retries_a_timeout_with_its_write_id(key_prefix: str) -> None:
    with server(SOCKET_TIMEOUT=0.5) as own:
        store.append_records("s", [human("q1"), ai("a1")])
        write_id = store.new_write_id()
        threading.Timer(0.8, own.resume).start()
        own.pause()
        with pytest.raises(StoreTimeout):
            store.append_records("s", [human("q2")], write_id=write_id)
        time.sleep(0.6)
        assert store.append_records("s", [human("q2")], write_id=write_id) == 3
        assert texts("s") == ["q1", "a1", "q2"]


# ---------------------------------------------------------------------------
# Restarts


def test_restart_under_sync_and_async_traffic(key_prefix: str) -> None:
    with server("--appendonly", "yes", "--appendfsync", "always") as own:
        store.append_records("s", [human("x")])
        loop = asyncio.new_event_loop()

        async def burst(n: int) -> list[BaseException | Any]:
            return await asyncio.gather(
                *(store.aread_records("s") for _ in range(n)), return_exceptions=True
            )

        def sync_burst(n: int) -> list[BaseException]:
            errors: list[BaseException] = []

            def one() -> None:
                try:
                    store.read_records("s")
                except StoreUnavailable as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=one) for _ in range(n)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return errors

        try:
            assert not [
                r
                for r in loop.run_until_complete(burst(50))
                if isinstance(r, BaseException)
            ]
            assert not sync_burst(20)  # both pools now hold idle connections
            own.stop()
            own.start()

            after_async = loop.run_until_complete(burst(50))
            after_sync = sync_burst(20)

            assert [r for r in after_async if isinstance(r, BaseException)] == []
            assert after_sync == []
            assert texts("s") == ["x"]  # AOF kept the acknowledged write
            assert_consistent()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()


# ---------------------------------------------------------------------------
# Pool limits wait, then say so


async def test_an_exhausted_async_pool_waits_then_says_so(key_prefix: str) -> None:
    roomy = {"CONNECTION_POOL_KWARGS": {"max_connections": 2, "timeout": 30}}
    with server(SOCKET_TIMEOUT=10, **roomy) as own:
        await store.aappend_records("s", [human("x")])
        # Many more calls than connections, on a healthy server: they queue.
        results = await asyncio.gather(*(store.aread_records("s") for _ in range(200)))
        assert all(len(r) == 1 for r in results)

        tight = {"CONNECTION_POOL_KWARGS": {"max_connections": 2, "timeout": 0.3}}
        with override_settings(CACHES=caches_for(own.url, SOCKET_TIMEOUT=10, **tight)):
            own.pause()  # two calls hold both connections; a third waits, then fails
            try:
                held = [
                    asyncio.ensure_future(store.aread_records("s")) for _ in range(2)
                ]
                await asyncio.sleep(0.2)
                with pytest.raises(PoolExhausted, match="max_connections"):
                    await store.aread_records("s")
            finally:
                own.resume()
            assert all(len(r) == 1 for r in await asyncio.gather(*held))


# ---------------------------------------------------------------------------
# A session deleted while its reply streams stays deleted


def test_a_session_deleted_meanwhile_is_not_recreated(key_prefix: str) -> None:
    store.create_session("s", owner="1")
    store.delete_session("s")
    with pytest.raises(SessionNotFound):
        store.append_records("s", [human("q"), ai("a")], owner="1", must_exist=True)
    assert store.get_session("s") is None
    assert store.list_sessions(owner="1").total == 0
    assert_consistent()


# ---------------------------------------------------------------------------
# Reindex while writers are active


@pytest.mark.slow
def test_reindex_at_100_000_sessions_under_writers_drops_nothing(
    key_prefix: str,
) -> None:
    with server():
        store.import_sessions(
            (
                store.ImportedSession(f"old-{i}", [human("x")], owner=str(i % 50))
                for i in range(100_000)
            ),
            batch_size=2000,
        )
        for i in range(0, 100_000, 1000):  # some sessions deleted before
            store.delete_session(f"old-{i}")
        stop = threading.Event()
        written: list[str] = []
        deleted: list[str] = []

        def writer() -> None:
            n = 0
            while not stop.is_set():
                sid = f"new-{n}"
                store.append_records(sid, [human("q"), ai("a")], owner=str(n % 7))
                written.append(sid)
                if n % 5 == 0:
                    victim = f"old-{n * 3 + 1}"
                    store.delete_session(victim)
                    deleted.append(victim)
                n += 1

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            indexed = store.rebuild_indexes()
        finally:
            stop.set()
            thread.join()

        assert written and deleted  # the writer did run alongside
        assert indexed >= 99_000 - len(deleted)
        listed = store.list_sessions(limit=len(written)).sessions
        assert {info.session_id for info in listed} == set(written)
        for sid in deleted[:20]:
            assert store.get_session(sid) is None
        assert_consistent()
