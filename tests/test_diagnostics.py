"""chatmemory.store.diagnostics: server facts, findings, the consistency check.

Each misbehaving Redis is a real redis-server of its own, started here.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.test import override_settings

from chatmemory import store
from tests.redis_server import free_port
from tests.topologies import Server, _server_argv, _start_server


def record(text: str, kind: str = "human") -> dict[str, Any]:
    return {"type": kind, "data": {"content": text}}


@pytest.fixture
def start_server() -> Iterator[Any]:
    """Start a redis-server with extra arguments; every one is stopped after."""
    started: list[Server] = []

    def start(*extra: str) -> Server:
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="chatmemory-diag-")
        server = _start_server(port, "master", _server_argv(port, workdir, *extra))
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def on(server: Server, **options: Any) -> Any:
    """Settings pointing the chatmemory alias at ``server``."""
    return override_settings(
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "chatmemory": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": f"redis://127.0.0.1:{server.port}/0",
                "OPTIONS": {
                    "SOCKET_CONNECT_TIMEOUT": 2,
                    "SOCKET_TIMEOUT": 5,
                    **options,
                },
            },
        }
    )


def ids(findings: list[store.Finding]) -> list[str]:
    return [finding.id for finding in findings]


def test_a_well_kept_server_has_no_findings(start_server: Any) -> None:
    server = start_server("--appendonly", "yes", "--maxmemory-policy", "noeviction")
    with on(server):
        facts = store.server_facts()
        assert facts.version.startswith(("6.", "7.", "8."))
        assert (facts.mode, facts.policy, facts.aof, facts.read_only) == (
            "standalone",
            "noeviction",
            True,
            False,
        )
        assert facts.refused == {}
        assert store.findings(facts) == []
        # the probes leave nothing behind
        assert redis.Redis(port=server.port).dbsize() == 0


def test_the_tests_own_server_has_persistence_off() -> None:
    assert ids(store.findings(store.server_facts())) == ["chatmemory.W102"]


@pytest.mark.parametrize(
    ("policy", "ttl", "warned"),
    [
        ("allkeys-lru", None, True),
        ("allkeys-lfu", None, True),
        ("allkeys-random", 60, True),
        ("volatile-lru", 60, True),
        ("volatile-ttl", None, False),
        ("noeviction", 60, False),
    ],
)
def test_an_evicting_policy_is_a_finding(
    start_server: Any, policy: str, ttl: int | None, warned: bool
) -> None:
    server = start_server(
        "--appendonly", "yes", "--maxmemory", "8mb", "--maxmemory-policy", policy
    )
    with on(server), override_settings(CHATMEMORY_TTL=ttl):
        findings = store.findings(store.server_facts())
    assert ids(findings) == (["chatmemory.W101"] if warned else [])
    if warned:
        assert policy in findings[0].message
        assert "noeviction" in findings[0].hint


def test_a_user_without_scripting_is_a_finding(start_server: Any) -> None:
    server = start_server("--appendonly", "yes")
    admin = redis.Redis(port=server.port)
    admin.execute_command(
        "ACL", "SETUSER", "app", "on", ">pw", "~*", "+@all", "-@scripting"
    )
    with on(server, USERNAME="app", PASSWORD="pw"):
        findings = store.findings(store.server_facts())
    assert ids(findings) == ["chatmemory.W103"]
    assert "scripts (EVAL/EVALSHA)" in findings[0].message
    assert "NOPERM" in findings[0].message or "permission" in findings[0].message


def test_a_renamed_eval_is_a_finding(start_server: Any) -> None:
    server = start_server("--appendonly", "yes", "--rename-command", "EVAL", "")
    with on(server):
        findings = store.findings(store.server_facts())
    assert ids(findings) == ["chatmemory.W103"]
    assert "unknown command" in findings[0].message


def test_a_read_only_replica_is_a_finding(start_server: Any) -> None:
    primary = start_server("--appendonly", "yes")
    replica = start_server(
        "--appendonly", "yes", "--replicaof", "127.0.0.1", str(primary.port)
    )
    with on(replica):
        findings = store.findings(store.server_facts())
    assert "chatmemory.W104" in ids(findings)
    # every write family is refused too, each named once
    assert set(ids(findings)) == {"chatmemory.W103", "chatmemory.W104"}
    refused = [f.message for f in findings if f.id == "chatmemory.W103"]
    assert len(refused) == 4  # lists, keys, hashes, sorted sets; scripts may read
    assert all("read only replica" in message for message in refused)


async def test_server_facts_async() -> None:
    facts = await store.aserver_facts()
    assert facts.policy == store.server_facts().policy


def test_consistent_data_checks_out() -> None:
    store.append_records("a", [record("hi"), record("yo", "ai")], owner="1")
    store.append_records("b", [record("hi")])
    store.create_session("c", owner="2")
    report = store.check_consistency()
    assert report.ok and report.sessions == 3


def test_every_kind_of_disagreement_is_found(redis_client: redis.Redis) -> None:
    for sid, owner in (("a", "1"), ("b", "1"), ("c", None), ("d", "2"), ("e", None)):
        store.append_records(sid, [record(sid)], owner=owner)
    redis_client.zrem(store.sessions_key(), "a")
    redis_client.zrem(store.ids_key(), "b")
    redis_client.zrem(store.owner_key("2"), "d")
    redis_client.zadd(store.sessions_key(), {"ghost": 1})
    redis_client.zadd(store.owner_key("1"), {"c": 1})  # c has no owner
    redis_client.delete(store.meta_key("e"))  # e's list is an orphan now
    redis_client.rpush(store.messages_key("c"), b"{}")

    report = store.check_consistency(batch=2)

    assert report.sessions == 4
    assert report.counts == {
        "not_in_activity_index": 1,
        "not_in_ids_index": 1,
        "not_in_owner_index": 1,
        "index_ghost": 2,  # ghost, and e (its meta is gone)
        "owner_index_ghost": 2,  # c in 1's index, e in the no-owner index
        "orphan_messages": 1,
        "count_mismatch": 1,
    }
    assert report.samples["not_in_activity_index"] == ["a"]
    assert report.samples["orphan_messages"] == ["e"]
    assert set(report.samples["index_ghost"]) == {"ghost", "e"}
    assert set(store.PROBLEMS) >= set(report.counts)

    store.rebuild_indexes()
    after = store.check_consistency()
    assert after.counts == {"orphan_messages": 1, "count_mismatch": 1}


def test_index_ttls_are_checked(redis_client: redis.Redis) -> None:
    with override_settings(CHATMEMORY_TTL=60):
        store.append_records("a", [record("hi")], owner="1")
        store.append_records("b", [record("hi")])
        assert store.check_consistency().ok
        redis_client.persist(store.owner_key("1"))  # as an older version left it
        report = store.check_consistency()
        assert report.counts == {"index_never_expires": 1}
        assert report.samples["index_never_expires"] == [store.owner_key("1")]
    # Without a TTL setting, a session without a TTL in indexes with one
    # (counted once, though it is in three).
    redis_client.persist(store.meta_key("b"))
    report = store.check_consistency()
    assert report.counts == {"index_expires_first": 1}
    assert report.samples["index_expires_first"] == ["b"]
    assert set(store.PROBLEMS) >= set(report.counts)


async def test_consistency_async() -> None:
    store.append_records("a", [record("hi")], owner="1")
    report = await store.acheck_consistency()
    assert report.ok and report.sessions == 1


def test_samples_are_bounded(redis_client: redis.Redis) -> None:
    for i in range(5):
        redis_client.zadd(store.sessions_key(), {f"ghost{i}": 1})
    report = store.check_consistency(sample=2)
    assert report.counts == {"index_ghost": 5}
    assert len(report.samples["index_ghost"]) == 2
