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
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
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
from chatmemory.llm import DemoChatModel
from chatmemory.owners import owner_id
from chatmemory.store.diagnostics import PROBLEMS
from chatmemory.turn import ChatTurn
from tests.admin_helpers import LIST_URL, delete_url, transcript_url
from tests.redis_server import ENV as REDIS_ENV
from tests.redis_server import OWNER_ENV as REDIS_OWNER_ENV
from tests.redis_server import _die_with_parent, free_port
from tests.test_sse import parse
from tests.topologies import SPEC_ENV, TOPOLOGY_ENV


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


def test_a_read_only_replica_serves_reads_and_refuses_writes_in_every_page(
    key_prefix: str, django_user_model: Any
) -> None:
    client, admin, owner = logged_in_clients(django_user_model)
    primary = Server()
    try:
        with override_settings(CACHES=caches_for(primary.url)):
            store.append_records("s", [human("q"), ai("a")], owner=owner)
        with server("--replicaof", "127.0.0.1", str(primary.port)) as replica:
            raw = replica.client()
            deadline = time.monotonic() + 20
            while raw.info("replication")["master_link_status"] != "up":
                assert time.monotonic() < deadline, "the replica did not sync"
                time.sleep(0.05)
            raw.close()
            pages_answer(client, admin, ["s"])
            writes_refused(client, admin, "s")
            assert store.read_records("s") == [human("q"), ai("a")]
    finally:
        primary.close()


def test_an_acl_user_without_scripting_gets_503s_not_500s(
    key_prefix: str, django_user_model: Any
) -> None:
    client, admin, owner = logged_in_clients(django_user_model)
    with server() as own:
        store.append_records("s", [human("q"), ai("a")], owner=owner)
        raw = own.client()
        raw.acl_setuser(
            "chat",
            enabled=True,
            passwords=["+pw"],
            keys=["*"],
            commands=["+@all", "-@scripting"],
        )
        raw.close()
        url = f"redis://chat:pw@127.0.0.1:{own.port}"
        with override_settings(CACHES=caches_for(url)):
            pages_answer(client, admin, ["s"], refused=True)
            streamed = client.post(
                reverse("chatmemory:stream", args=["s"]), {"message": "hi"}
            )
            body = b"".join(streamed.streaming_content)  # type: ignore[attr-defined]
            assert parse(body)[-1] == ("error", str(StoreUnavailable.user_message))
            assert client.post(reverse("chatmemory:sessions")).status_code < 500
        assert store.read_records("s") == [human("q"), ai("a")]


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
# maxmemory under each eviction policy

EVICTING = [
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
]


def pages_answer(
    client: Client, admin: Client, session_ids: list[str], *, refused: bool = False
) -> None:
    """The readers (my chats, chat pages, the admin list and transcripts) never 500.

    ``refused``: the server refuses reads too, so 503 pages are right.
    """
    answers = [client.get(reverse("chatmemory:sessions")), admin.get(LIST_URL)]
    for session_id in session_ids:
        answers.append(client.get(reverse("chatmemory:chat", args=[session_id])))
        answers.append(admin.get(transcript_url(session_id)))
    statuses = [answer.status_code for answer in answers]
    if refused:
        assert set(statuses) <= {200, 503} and 503 in statuses, statuses
        return
    # A page of a session eviction took is "not found"; none fails.
    assert set(statuses) <= {200, 302, 404}, statuses
    assert statuses[:2] == [200, 200]


def writes_refused(client: Client, admin: Client, session_id: str) -> None:
    """Every page that writes answers 503 or an SSE error event; nothing is written."""
    before = store.read_records(session_id)
    streamed = client.post(
        reverse("chatmemory:stream", args=[session_id]), {"message": "hi"}
    )
    body = b"".join(streamed.streaming_content)  # type: ignore[attr-defined]
    events = parse(body)
    assert streamed.status_code in (200, 503)
    assert events[-1][0] == "error" and "store" in events[-1][1]
    assert "done" not in [name for name, _ in events]
    sent = client.post(reverse("chatmemory:send", args=[session_id]), {"message": "x"})
    renamed = client.post(
        reverse("chatmemory:rename", args=[session_id]), {"title": "t"}
    )
    deleted = admin.post(delete_url(session_id), {"post": "yes"})
    assert [sent.status_code, renamed.status_code, deleted.status_code] == [503] * 3
    assert store.read_records(session_id) == before


def logged_in_clients(django_user_model: Any) -> tuple[Client, Client, str]:
    """A user's client, a superuser's client, and the user's owner id."""
    user: User = django_user_model.objects.create_user("alice", password="pw")
    boss: User = django_user_model.objects.create_superuser("boss", password="pw")
    client, admin = Client(), Client()
    client.force_login(user)
    admin.force_login(boss)
    return client, admin, owner_id(user)


@pytest.mark.parametrize("policy", ["noeviction", *EVICTING])
def test_maxmemory_under_each_eviction_policy(
    key_prefix: str, django_user_model: Any, policy: str
) -> None:
    client, admin, owner = logged_in_clients(django_user_model)
    text = "a fairly long chat message " * 40  # about 1 kB
    # With a TTL every chat key has an expiry: volatile-* policies may take them.
    with (
        server("--maxmemory-policy", policy) as own,
        override_settings(CHATMEMORY_TTL=3600),
    ):
        raw = own.client()
        raw.config_set("maxmemory", int(raw.info("memory")["used_memory"]) + 2**21)
        written: list[str] = []
        refused = None
        for i in range(20_000):
            try:
                store.append_records(f"s{i}", [human(text), ai(text)], owner=owner)
            except StoreFull as exc:
                refused = exc
                break
            written.append(f"s{i}")
            if i % 20 == 0 and raw.info("stats")["evicted_keys"] >= 200:
                break
        evicted = raw.info("stats")["evicted_keys"]
        sample = [written[0], written[len(written) // 2], written[-1]]
        pages_answer(client, admin, sample)  # at the memory limit
        if policy != "noeviction":
            raw.config_set("maxmemory", 0)  # no more evictions while we look

        out = StringIO()
        with pytest.raises(CommandError, match="problem"):
            call_command("chatmemory_doctor", stdout=out)  # AOF is off, at least
        report = store.check_consistency()

        if policy == "noeviction":
            assert refused is not None and evicted == 0
            assert "[chatmemory.W101]" not in out.getvalue()
            assert "[chatmemory.W105]" in out.getvalue()  # full: writes refused
            assert report.ok, report.counts  # the refused write left nothing
            assert store.get_session(f"s{len(written)}") is None
            # A turn is refused whole (more pages: test_views_answer_503_...).
            before = len(store.read_records(written[-1]))
            streamed = client.post(
                reverse("chatmemory:stream", args=[written[-1]]), {"message": "hi"}
            )
            body = b"".join(streamed.streaming_content)  # type: ignore[attr-defined]
            assert parse(body)[-1] == ("error", str(StoreFull.user_message))
            assert len(store.read_records(written[-1])) == before
        else:
            assert refused is None and evicted >= 200
            assert "[chatmemory.W101]" in out.getvalue()
            assert policy in out.getvalue()
            # The checker sees the damage eviction did, and the doctor says so.
            assert not report.ok
            assert "Indexes             consistent" not in out.getvalue()
            for problem in report.counts:
                assert f"{report.counts[problem]} {PROBLEMS[problem]}" in out.getvalue()
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


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_turn_whose_save_times_out_retries_it_once_without_a_duplicate(
    key_prefix: str, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    with server(SOCKET_TIMEOUT=1.0) as own:
        store.append_records("s", [human("q1"), ai("a1")])
        calls: list[str] = []
        name = "append_records" if mode == "sync" else "aappend_records"
        real = getattr(store, name)

        def pause_first(*args: Any, **kwargs: Any) -> Any:
            # SIGSTOP just before the turn's save; SIGCONT after the save has
            # timed out and while its retry (same write id) waits for Redis.
            calls.append(kwargs["write_id"])
            if len(calls) == 1:
                own.pause()
                threading.Timer(1.6, own.resume).start()
            return real(*args, **kwargs)

        monkeypatch.setattr(store, name, pause_first)
        turn = ChatTurn("s", "q2", model=DemoChatModel(token_delay=0))
        if mode == "sync":
            turn.run()
        else:
            async_to_sync(turn.arun)()

        assert len(calls) == 2 and calls[0] == calls[1] == turn.write_id
        assert turn.message_count == 4
        assert [r["type"] for r in store.read_records("s")] == [
            "human",
            "ai",
            "human",
            "ai",
        ]
        assert texts("s")[2] == "q2"
        assert_consistent()


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


def test_kill_9_and_restart_with_aof_under_writers_loses_and_doubles_nothing(
    key_prefix: str,
) -> None:
    """Sync and async writers append turns while Redis is killed and restarted.

    A writer retries a failed turn with the same write id until it is
    acknowledged, then starts the next; afterwards every session holds exactly
    its acknowledged turns, in order, each once.
    """
    with server("--appendonly", "yes", "--appendfsync", "always") as own:
        acked: dict[str, int] = {}
        failures: list[BaseException] = []
        stop = threading.Event()

        def turn(session_id: str, k: int) -> list[dict[str, Any]]:
            return [human(f"{session_id} q{k}"), ai(f"{session_id} a{k}")]

        def writer(session_id: str) -> None:
            k = 0
            while not stop.is_set():
                write_id = store.new_write_id()
                deadline = time.monotonic() + 30
                while True:
                    try:
                        store.append_records(
                            session_id, turn(session_id, k), write_id=write_id
                        )
                        break
                    except StoreUnavailable as exc:
                        failures.append(exc)
                        assert time.monotonic() < deadline, "Redis never came back"
                        time.sleep(0.05)
                k += 1
                acked[session_id] = k

        async def awriter(session_id: str) -> None:
            k = 0
            while not stop.is_set():
                write_id = store.new_write_id()
                while True:
                    try:
                        await store.aappend_records(
                            session_id, turn(session_id, k), write_id=write_id
                        )
                        break
                    except StoreUnavailable as exc:
                        failures.append(exc)
                        await asyncio.sleep(0.05)
                k += 1
                acked[session_id] = k

        async def awriters() -> None:
            await asyncio.gather(*(awriter(f"async-{n}") for n in range(4)))

        threads = [
            threading.Thread(target=writer, args=(f"sync-{n}",)) for n in range(4)
        ]
        threads.append(threading.Thread(target=lambda: asyncio.run(awriters())))
        for thread in threads:
            thread.start()
        try:
            for _ in range(2):
                time.sleep(0.5)
                own.stop(signal.SIGKILL)
                time.sleep(0.2)
                own.start()
            before = sum(acked.values())
            deadline = time.monotonic() + 30
            while sum(acked.values()) < before + 8:  # the writers go on after it
                assert time.monotonic() < deadline, "no turn acknowledged after"
                time.sleep(0.05)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)

        assert len(acked) == 8 and min(acked.values()) > 0
        for session_id, count in acked.items():
            expected = [
                r["data"]["content"] for k in range(count) for r in turn(session_id, k)
            ]
            assert texts(session_id) == expected  # none lost, none twice
        assert_consistent()


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


def test_an_exhausted_sync_pool_waits_then_says_so(
    key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py's default pool (not a blocking one) refuses when it is busy:
    # chatmemory waits for a free connection instead, up to the pool timeout.
    with server(
        SOCKET_TIMEOUT=10, CONNECTION_POOL_KWARGS={"max_connections": 2}
    ) as own:
        store.append_records("s", [human("x")])
        errors: list[BaseException] = []

        def read() -> None:
            try:
                assert len(store.read_records("s")) == 1
            except BaseException as exc:  # noqa: BLE001 - collected for the assert
                errors.append(exc)

        own.pause()  # every thread is in flight at once when Redis comes back
        threads = [threading.Thread(target=read) for _ in range(40)]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
        own.resume()
        for thread in threads:
            thread.join()
        assert errors == []

        # The default pool takes no 'timeout': the wait is DEFAULT_POOL_TIMEOUT.
        monkeypatch.setattr("chatmemory.store.client.DEFAULT_POOL_TIMEOUT", 0.3)
        own.pause()  # two calls hold both connections; a third waits, then fails
        held = [threading.Thread(target=read) for _ in range(2)]
        try:
            for thread in held:
                thread.start()
            time.sleep(0.2)
            started = time.monotonic()
            with pytest.raises(PoolExhausted, match="max_connections"):
                store.read_records("s")
            assert time.monotonic() - started >= 0.25
        finally:
            own.resume()
        for thread in held:
            thread.join()
        assert errors == []


STREAMS = 300


@pytest.mark.slow
def test_300_concurrent_streams_on_one_uvicorn_worker(
    key_prefix: str, tmp_path: Path
) -> None:
    """Real HTTP POSTs to the stream view of one uvicorn process, all at once.

    The demo model writes each reply over about two seconds, so all the
    streams are open together; every one completes (none is told the store
    is unreachable: a busy pool waits) and the indexes stay consistent.
    """
    from tests.test_views import ROOT, SETUP, server_command

    with server() as own:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in (TOPOLOGY_ENV, SPEC_ENV)
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": "tests.settings_server",
                "CHATMEMORY_TEST_DB": str(tmp_path / "db.sqlite3"),
                "CHATMEMORY_TEST_KEY_PREFIX": key_prefix,
                "CHATMEMORY_TEST_TOKEN_DELAY": "0.05",
                "PYTHONPATH": str(ROOT),
                REDIS_ENV: own.url,
                REDIS_OWNER_ENV: os.environ.get("PYTEST_XDIST_WORKER", "main"),
            }
        )
        owner = subprocess.run(
            [sys.executable, "-c", SETUP],
            env=env,
            check=True,
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        session_ids = [f"stream-{n}" for n in range(STREAMS)]
        for session_id in session_ids:
            store.create_session(session_id, owner=owner)
        port = free_port()
        process = subprocess.Popen(server_command("uvicorn", port), env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    httpx.get(url + "/accounts/login/", timeout=10)
                    break
                except httpx.TransportError:
                    assert process.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            login = httpx.Client(base_url=url, timeout=30)
            login.get("/accounts/login/")
            login.post(
                "/accounts/login/",
                data={
                    "username": "streamer",
                    "password": "pw",
                    "csrfmiddlewaretoken": login.cookies["csrftoken"],
                },
            )
            cookies, token = login.cookies, login.cookies["csrftoken"]
            login.close()

            async def stream_all() -> list[tuple[int, bytes]]:
                limits = httpx.Limits(max_connections=STREAMS + 10)
                async with httpx.AsyncClient(
                    base_url=url, cookies=cookies, limits=limits, timeout=120
                ) as client:

                    async def one(session_id: str) -> tuple[int, bytes]:
                        answer = await client.post(
                            f"/chat/{session_id}/stream/",
                            data={"message": "hello", "csrfmiddlewaretoken": token},
                        )
                        return answer.status_code, answer.content

                    return await asyncio.gather(*(one(sid) for sid in session_ids))

            started = time.monotonic()
            answers = asyncio.run(stream_all())
            took = time.monotonic() - started
        finally:
            process.terminate()
            process.wait(timeout=30)

        statuses = [status for status, _ in answers]
        assert statuses == [200] * STREAMS
        last = [parse(body)[-1] for _, body in answers]
        unreachable = [e for e in last if "not reachable" in e[1]]
        assert unreachable == []
        assert [name for name, _ in last] == ["done"] * STREAMS
        assert took < 60
        for session_id in session_ids[:: STREAMS // 10]:
            assert texts(session_id)[0] == "hello"
        assert store.list_sessions(owner=owner).total == STREAMS
        assert_consistent()


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
