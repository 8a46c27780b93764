"""The store on Sentinel and Cluster: telling them apart, and reaching them.

These tests start a Sentinel and a Cluster of their own (once per module), so
they run whatever CHATMEMORY_TEST_TOPOLOGY says.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.cluster
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from django_redis import get_redis_connection

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable
from chatmemory.store import client
from chatmemory.store.cluster import ClusterConnectionFactory
from tests.redis_server import free_port
from tests.topologies import CLUSTER_FACTORY, Topology, start

LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
RECORDS = [
    {"type": "human", "data": {"content": "hello"}},
    {"type": "ai", "data": {"content": "hi there"}},
]


@pytest.fixture(scope="module")
def sentinel() -> Iterator[Topology]:
    topology = start("sentinel")
    yield topology
    topology.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[Topology]:
    topology = start("cluster")
    yield topology
    topology.stop()


def on(cache: dict[str, Any]) -> Any:
    return override_settings(CACHES={"default": LOCMEM, "chatmemory": cache})


# -- telling topologies apart ------------------------------------------------


class SentinelFactorySubclass:
    pass


@pytest.mark.parametrize(
    ("options", "setting", "kind"),
    [
        ({}, None, "single"),
        ({"CLIENT_CLASS": "django_redis.client.DefaultClient"}, None, "single"),
        ({"CLIENT_CLASS": "django_redis.client.SentinelClient"}, None, "sentinel"),
        (
            {"CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory"},
            None,
            "sentinel",
        ),
        ({}, "django_redis.pool.SentinelConnectionFactory", "sentinel"),
        ({"CONNECTION_FACTORY": CLUSTER_FACTORY}, None, "cluster"),
        ({}, CLUSTER_FACTORY, "cluster"),
        ({"CONNECTION_FACTORY": f"{__name__}.ClusterSubclass"}, None, "cluster"),
        ({"CONNECTION_FACTORY": "no.such.Factory"}, None, "single"),
    ],
)
def test_topology_of_a_caches_entry(
    options: dict[str, Any], setting: str | None, kind: str
) -> None:
    entry = {"BACKEND": "django_redis.cache.RedisCache", "OPTIONS": options}
    overrides = {} if setting is None else {"DJANGO_REDIS_CONNECTION_FACTORY": setting}
    with override_settings(**overrides):
        assert client.topology_of(entry) == kind


class ClusterSubclass(ClusterConnectionFactory):
    pass


def test_is_class_refuses_what_is_not_a_class() -> None:
    assert not client.is_class(f"{__name__}.LOCMEM", CLUSTER_FACTORY)
    assert not client.is_class(ClusterSubclass, CLUSTER_FACTORY, exact=True)
    assert client.is_class(ClusterSubclass, CLUSTER_FACTORY)


def test_topology_follows_settings(cluster: Topology) -> None:
    assert client.topology() == client.topology_of(
        __import__("django.conf").conf.settings.CACHES["chatmemory"]
    )
    with on(cluster.caches_entry()):
        assert client.topology() == "cluster"
        assert client.is_cluster()


def test_topology_of_a_missing_alias_is_a_configuration_error() -> None:
    with override_settings(CHATMEMORY_CACHE_ALIAS="nope"):
        with pytest.raises(ImproperlyConfigured, match="nope"):
            client.topology()


# -- Cluster: the connection factory -------------------------------------------


def test_the_alias_connection_is_one_process_wide_cluster_client(
    cluster: Topology,
) -> None:
    with on(cluster.caches_entry()):
        connection = get_redis_connection("chatmemory")
        assert isinstance(connection, redis.cluster.RedisCluster)
        assert get_redis_connection("chatmemory") is connection
        # Every master is known, whichever node LOCATION names.
        assert len(connection.get_primaries()) == 3


def test_startup_nodes_are_other_ways_in(cluster: Topology) -> None:
    entry = cluster.caches_entry()
    entry["LOCATION"] = f"redis://127.0.0.1:{free_port()}"  # nobody there
    entry["OPTIONS"]["CLUSTER_STARTUP_NODES"] = [
        server.address for server in cluster.data_servers
    ]
    with on(entry):
        assert store.append_records("via-startup-nodes", RECORDS) == 2


def test_cluster_kwargs_reach_redis_cluster(cluster: Topology) -> None:
    entry = cluster.caches_entry()
    entry["OPTIONS"]["CLUSTER_KWARGS"] = {"client_name": "chatmemory-test"}
    with on(entry):
        connection = get_redis_connection("chatmemory")
        node = connection.get_default_node()
        assert connection.client_getname(target_nodes=node) == "chatmemory-test"


@pytest.mark.parametrize("nodes", [[("a",)], "x", [("a", "b")]])
def test_bad_startup_nodes_are_a_configuration_error(
    cluster: Topology, nodes: object
) -> None:
    entry = cluster.caches_entry()
    entry["OPTIONS"]["CLUSTER_STARTUP_NODES"] = nodes
    with on(entry):
        with pytest.raises(ImproperlyConfigured, match="CLUSTER_STARTUP_NODES"):
            store.get_session("x")


def test_disconnect_closes_connections_that_reopen(cluster: Topology) -> None:
    entry = cluster.caches_entry()
    with on(entry):
        store.append_records("reopen", RECORDS)
        factory = ClusterConnectionFactory(entry["OPTIONS"])
        connection = get_redis_connection("chatmemory")
        factory.disconnect(connection)
        assert len(store.read_records("reopen")) == 2


def test_an_unreachable_cluster_is_store_unavailable() -> None:
    entry = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{free_port()}",
        "OPTIONS": {"CONNECTION_FACTORY": CLUSTER_FACTORY, "SOCKET_TIMEOUT": 1},
    }
    with on(entry):
        with pytest.raises(StoreUnavailable, match="Redis Cluster via redis://"):
            store.read_records("x")


async def test_an_unreachable_cluster_is_store_unavailable_async() -> None:
    entry = {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": f"redis://127.0.0.1:{free_port()}",
        "OPTIONS": {"CONNECTION_FACTORY": CLUSTER_FACTORY, "SOCKET_TIMEOUT": 1},
    }
    with on(entry):
        with pytest.raises(StoreUnavailable, match="Redis Cluster"):
            await store.aread_records("x")


# -- the async clients -------------------------------------------------------


async def test_async_cluster_client(cluster: Topology) -> None:
    with on(cluster.caches_entry()):
        assert isinstance(client.async_client(), redis.asyncio.cluster.RedisCluster)
        assert await store.aappend_records("async-cluster", RECORDS) == 2
        assert len(store.read_records("async-cluster")) == 2
        assert len(await store.aread_records("async-cluster")) == 2


@pytest.mark.parametrize("kind", ["single", "sentinel"])
async def test_async_connections_pack_commands_with_hiredis(
    kind: str, request: pytest.FixtureRequest
) -> None:
    # As the sync client does: the same bytes as redis-py's Python packer.
    args = ("EVALSHA", "0" * 40, 2, "k:{s\u00e9}", b"\x00raw", 17, -1, "t\u00eate")
    python = redis.asyncio.connection.Connection().pack_command(*args)
    settings = (
        on(request.getfixturevalue("sentinel").caches_entry())
        if kind == "sentinel"
        else override_settings()
    )
    with settings:
        pool = client.async_client().connection_pool
        assert pool.connection_class.__name__.startswith("Hiredis")
        packed = pool.make_connection().pack_command(*args)
        assert b"".join(packed) == b"".join(python)
        assert await store.aappend_records(f"packed-{kind}", RECORDS) == 2


def moved_replies(cluster: Topology) -> int:
    """MOVED replies the cluster's primaries have sent so far."""
    total = 0
    for server in cluster.primaries():
        with redis.Redis(*server.address) as plain:
            stats = plain.info("errorstats")
        total += stats.get("errorstat_MOVED", {}).get("count", 0)
    return total


async def test_a_new_async_cluster_client_routes_its_first_commands(
    cluster: Topology,
) -> None:
    # Concurrent first commands on a client that has not read the slot map
    # yet: redis-py would send them to one node, whose MOVED replies make it
    # close every connection under the other commands (a TypeError).
    with on(cluster.caches_entry()):
        client.reset_async_clients()
        before = moved_replies(cluster)
        ids = [f"fresh-{i}" for i in range(30)]
        reads = await asyncio.gather(*(store.aread_records(i) for i in ids))
        assert reads == [[] for _ in ids]
        assert moved_replies(cluster) == before
        await store.aclose_clients()


async def test_async_sentinel_client_reaches_the_master(sentinel: Topology) -> None:
    with on(sentinel.caches_entry()):
        async_client = client.async_client()
        assert isinstance(async_client, redis.asyncio.Redis)
        assert await store.aappend_records("async-sentinel", RECORDS) == 2
        assert len(store.read_records("async-sentinel")) == 2
        master = sentinel.master()
        with redis.Redis(*master.address) as plain:
            assert plain.exists(store.messages_key("async-sentinel"))


async def test_async_sentinel_with_a_dead_service_is_store_unavailable(
    sentinel: Topology,
) -> None:
    entry = sentinel.caches_entry()
    entry["LOCATION"] = "redis://no-such-service/0"
    with on(entry):
        with pytest.raises(
            StoreUnavailable, match="Sentinel service 'no-such-service'"
        ):
            await store.aread_records("x")


def test_sync_sentinel_with_a_dead_service_is_store_unavailable(
    sentinel: Topology,
) -> None:
    entry = sentinel.caches_entry()
    entry["LOCATION"] = "redis://no-such-service2/0"
    with on(entry):
        with pytest.raises(
            StoreUnavailable, match="Sentinel service 'no-such-service2'"
        ):
            store.read_records("x")


# -- Cluster: the second step ------------------------------------------------


def index_entries(plain: Any, session_id: str, *owners: str) -> dict[str, Any]:
    """Where the session is in each index (score or None)."""
    entries = {
        "sessions": plain.zscore(store.sessions_key(), session_id),
        "ids": plain.zscore(store.ids_key(), session_id),
    }
    for owner in owners:
        entries[owner] = plain.zscore(store.owner_key(owner), session_id)
    return entries


@pytest.fixture
def on_cluster(cluster: Topology) -> Iterator[Any]:
    plain = cluster.client()
    with on(cluster.caches_entry()):
        yield plain
    plain.close()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_cluster_writes_update_every_index(
    on_cluster: Any, use_async: bool
) -> None:
    append = store.aappend_records if use_async else None
    for turn in range(3):  # the first write is new to the process, the others fused
        if append is None:
            store.append_records("c1", RECORDS, owner="alice")
        else:
            await append("c1", RECORDS, owner="alice")
        updated = store.get_session("c1").updated  # type: ignore[union-attr]
        millis = int(updated.timestamp() * 1000)
        assert index_entries(on_cluster, "c1", "alice") == {
            "sessions": millis,
            "ids": 0,
            "alice": millis,
        }, turn
    assert [s.session_id for s in store.list_sessions(owner="alice").sessions] == ["c1"]


def test_cluster_owner_mismatch_touches_no_index(on_cluster: Any) -> None:
    from chatmemory.exceptions import OwnerMismatch
    from chatmemory.store import operations

    store.append_records("c2", RECORDS, owner="alice")
    before = index_entries(on_cluster, "c2", "alice", "bob")
    # Unknown to the process, known, and known wrongly (the session was made
    # again by another owner behind this process's back).
    for known in (None, "alice", "bob"):
        operations._known_owners.pop("c2", None)
        if known is not None:
            operations._known_owners["c2"] = known
        with pytest.raises(OwnerMismatch):
            store.append_records("c2", RECORDS, owner="bob")
        after = index_entries(on_cluster, "c2", "alice", "bob")
        if known == "bob":
            # Sent with the script, the all-sessions entry moved up (it is
            # only an order); no owner index changed.
            del before["sessions"], after["sessions"]
        assert after == before, known
    assert len(store.read_records("c2")) == 2


def test_cluster_write_moves_a_wrongly_known_owner(on_cluster: Any) -> None:
    from chatmemory.store import operations

    store.append_records("c3", RECORDS, owner="alice")
    operations._known_owners["c3"] = "bob"  # stale
    store.append_records("c3", RECORDS)
    entries = index_entries(on_cluster, "c3", "alice", "bob")
    assert entries["alice"] is not None
    assert entries["bob"] is None


def test_cluster_delete_removes_every_index_entry(on_cluster: Any) -> None:
    from chatmemory.store import operations

    for known in (True, False):
        store.append_records("c4", RECORDS, owner="alice")
        if not known:
            operations._known_owners.pop("c4", None)
        assert store.delete_session("c4")
        assert index_entries(on_cluster, "c4", "alice") == {
            "sessions": None,
            "ids": None,
            "alice": None,
        }
    operations._known_owners["c4"] = "bob"  # stale: the real owner is alice
    store.append_records("c4", RECORDS, owner="alice")
    operations._known_owners["c4"] = "bob"
    assert store.delete_session("c4")
    assert index_entries(on_cluster, "c4", "alice", "bob")["alice"] is None


def test_cluster_listings_heal_what_a_crash_between_the_steps_leaves(
    on_cluster: Any,
) -> None:
    # A crash after the script, before the index step: the session is
    # missing from the indexes until its next write.
    store.append_records("c5", RECORDS, owner="alice")
    on_cluster.zrem(store.sessions_key(), "c5")
    on_cluster.zrem(store.owner_key("alice"), "c5")
    assert "c5" not in [s.session_id for s in store.list_sessions().sessions]
    store.append_records("c5", RECORDS, owner="alice")
    assert "c5" in [s.session_id for s in store.list_sessions().sessions]
    assert "c5" in [s.session_id for s in store.list_sessions(owner="alice").sessions]
    # A crash after a delete's script: the listings drop the ghost.
    store.delete_session("c5")
    on_cluster.zadd(store.sessions_key(), {"c5": 1})
    on_cluster.zadd(store.owner_key("alice"), {"c5": 1})
    assert "c5" not in [s.session_id for s in store.list_sessions().sessions]
    assert "c5" not in [
        s.session_id for s in store.list_sessions(owner="alice").sessions
    ]
    assert index_entries(on_cluster, "c5", "alice") == {
        "sessions": None,
        "ids": None,
        "alice": None,
    }


def test_an_owner_listing_never_shows_another_owners_session(
    on_cluster: Any,
) -> None:
    store.append_records("c6", RECORDS, owner="alice")
    on_cluster.zadd(store.owner_key("bob"), {"c6": 1})
    assert store.list_sessions(owner="bob").sessions == []
    assert on_cluster.zscore(store.owner_key("bob"), "c6") is None


def test_cluster_reindex_scans_every_primary(on_cluster: Any) -> None:
    sessions = [f"r{i}" for i in range(30)]  # spread over the three masters
    for i, session_id in enumerate(sessions):
        store.append_records(session_id, RECORDS, owner=str(i % 3))
    index_keys = [store.sessions_key(), store.ids_key()] + [
        store.owner_key(str(i)) for i in range(3)
    ]

    def indexes() -> dict[str, Any]:
        return {k: on_cluster.zrange(k, 0, -1, withscores=True) for k in index_keys}

    before = indexes()
    masters = {on_cluster.get_node_from_key(store.meta_key(s)).name for s in sessions}
    assert len(masters) == 3
    on_cluster.delete(store.sessions_key())
    on_cluster.delete(store.owner_key("1"))
    on_cluster.zadd(store.ids_key(), {"ghost": 0})
    on_cluster.zadd(store.owner_key("9"), {"ghost": 1})
    assert store.rebuild_indexes() == 30
    assert indexes() == before
    assert not on_cluster.exists(store.owner_key("9"))


# -- token usage on Cluster: the owner's day, at most once per write id --------

USAGE = {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
PAID = [
    {"type": "human", "data": {"content": "q"}},
    {"type": "ai", "data": {"content": "a", "usage_metadata": USAGE}},
]


def day_usage(plain: Any, owner: str) -> tuple[int, int, int, Any]:
    """The owner's tokens today (input, output, total) and the day's ranking."""
    today = store.day_of(store.operations.now_ms())
    (usage,) = store.owner_usage(owner, [today])
    ranked = plain.zscore(store.keys.usage_day_key(today), owner)
    return usage.input_tokens, usage.output_tokens, usage.total_tokens, ranked


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
async def test_cluster_usage_counts_each_write_id_once(
    on_cluster: Any, use_async: bool
) -> None:
    write_id = store.new_write_id()
    for _ in range(3):  # the write, then two retries of it (its reply was lost)
        if use_async:
            await store.aappend_records("u1", PAID, owner="alice", write_id=write_id)
        else:
            store.append_records("u1", PAID, owner="alice", write_id=write_id)
    store.append_records("u1", PAID, owner="alice")  # another write
    assert day_usage(on_cluster, "alice") == (60, 24, 84, 84.0)
    info = store.get_session("u1")
    assert info is not None and info.total_tokens == 84
    assert len(store.read_records("u1")) == 4


def test_cluster_retry_after_a_crash_between_the_steps_adds_what_was_missing(
    on_cluster: Any,
) -> None:
    write_id = store.new_write_id()
    store.append_records("u2", PAID, owner="alice", write_id=write_id)
    # As if the process died after the script, before the second step.
    today = store.day_of(store.operations.now_ms())
    on_cluster.delete(store.keys.usage_key("alice", today))
    on_cluster.delete(store.keys.usage_write_ids_key("alice"))
    on_cluster.delete(store.keys.usage_day_key(today))
    store.append_records("u2", PAID, owner="alice", write_id=write_id)  # the retry
    assert day_usage(on_cluster, "alice") == (30, 12, 42, 42.0)
    assert len(store.read_records("u2")) == 2  # the messages once


def test_cluster_second_step_replayed_counts_once(on_cluster: Any) -> None:
    from chatmemory.store import operations

    now = operations.now_ms()
    for _ in range(2):
        operations.run(
            operations._cluster_second_step("u3", "alice", now, 0, (5, 3, 8), "w-1")
        )
    operations.run(
        operations._cluster_second_step("u3", "alice", now, 0, (1, 1, 2), "w-2")
    )
    assert day_usage(on_cluster, "alice") == (6, 4, 10, 10.0)
    assert on_cluster.zscore(store.sessions_key(), "u3") == now


def test_cluster_refused_write_counts_no_tokens(on_cluster: Any) -> None:
    from chatmemory.exceptions import OwnerMismatch

    store.append_records("u4", RECORDS, owner="alice")
    with pytest.raises(OwnerMismatch):
        store.append_records("u4", PAID, owner="bob")
    assert day_usage(on_cluster, "alice") == (0, 0, 0, None)
    assert day_usage(on_cluster, "bob") == (0, 0, 0, None)


# -- waiting for replicas ------------------------------------------------------


def test_wait_without_enough_replicas_is_not_replicated() -> None:
    from chatmemory.exceptions import NotReplicated

    # The tests' own single server has no replica.
    with override_settings(CHATMEMORY_WAIT_REPLICAS=1, CHATMEMORY_WAIT_TIMEOUT=0.05):
        if client.topology() != "single":
            pytest.skip("needs a server without replicas")
        with pytest.raises(NotReplicated, match="only 0 of 1 replicas"):
            store.append_records("w1", RECORDS)
    # Applied on the master all the same.
    assert len(store.read_records("w1")) == 2


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("kind", ["sentinel", "cluster"])
async def test_wait_for_a_replica(
    kind: str, use_async: bool, request: pytest.FixtureRequest
) -> None:
    topology: Topology = request.getfixturevalue(kind)
    with on(topology.caches_entry()):
        with override_settings(CHATMEMORY_WAIT_REPLICAS=1, CHATMEMORY_WAIT_TIMEOUT=5):
            if use_async:
                assert await store.aappend_records("w2", RECORDS, owner="o") == 2
                assert await store.adelete_session("w2")
                assert await store.acreate_session("w2", owner="o")
            else:
                assert store.append_records("w2", RECORDS, owner="o") == 2
                assert store.delete_session("w2")
                assert store.create_session("w2", owner="o")
            replica = topology.replica_holding(store.meta_key("w2"))
            with redis.Redis(*replica.address) as plain:
                if kind == "cluster":
                    plain.execute_command("READONLY")  # a replica's own keys
                assert plain.exists(store.meta_key("w2"))


def test_a_pipelined_script_is_loaded_where_missing(redis_client: Any) -> None:
    with override_settings(CHATMEMORY_WAIT_REPLICAS=1, CHATMEMORY_WAIT_TIMEOUT=0.05):
        if client.topology() != "single":
            pytest.skip("flushes the scripts of the tests' own server")
        redis_client.script_flush()
        from chatmemory.exceptions import NotReplicated

        with pytest.raises(NotReplicated):
            store.append_records("w3", RECORDS)
    assert len(store.read_records("w3")) == 2


def test_cluster_ownerless_writes_with_tokens_keep_the_indexes(
    on_cluster: Any,
) -> None:
    # Known to have no owner, a session's writes with tokens send their index
    # updates with the script.
    for _ in range(3):
        store.append_records("u-free", PAID)
    millis = int(store.get_session("u-free").updated.timestamp() * 1000)  # type: ignore[union-attr]
    assert index_entries(on_cluster, "u-free") == {"sessions": millis, "ids": 0}
    assert on_cluster.zscore(store.no_owner_key(), "u-free") == millis
    info = store.get_session("u-free")
    assert info is not None and info.total_tokens == 126 and info.owner is None


def test_cluster_tokens_count_for_an_owner_this_process_did_not_know(
    on_cluster: Any,
) -> None:
    from chatmemory.store import operations

    store.append_records("u-owned", PAID, owner="carol")
    operations._known_owners["u-owned"] = ""  # stale: made again, with an owner
    store.append_records("u-owned", PAID)
    assert day_usage(on_cluster, "carol") == (60, 24, 84, 84.0)
    entries = index_entries(on_cluster, "u-owned", "carol")
    assert entries["carol"] is not None
    assert on_cluster.zscore(store.no_owner_key(), "u-owned") is None


def test_a_cluster_write_that_meets_a_moved_slot_is_applied_once(
    cluster: Topology, on_cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Writes go to their nodes directly, unless a node answers that the slot
    # is elsewhere (a slot the client's map has not seen move): the cluster
    # client then runs the write itself, which is safe (a write id).
    from chatmemory.store import operations

    direct = operations._cluster_direct
    sent: list[Any] = []

    def spy(*args: Any) -> Any:
        sent.append(direct(*args))
        return sent[-1]

    monkeypatch.setattr(operations, "_cluster_direct", spy)
    store.append_records("moved", RECORDS, owner="dora")
    store.append_records("moved", RECORDS, owner="dora")  # fused: sent directly
    assert sent and sent[-1] is not None
    cluster_client = client.sync_client()
    key = store.messages_key("moved")
    real = cluster_client.get_node_from_key
    wrong = next(
        node for node in cluster_client.get_primaries() if node.name != real(key).name
    )

    def stale(name: str, replica: bool = False) -> Any:
        return wrong if name == key else real(name, replica)

    monkeypatch.setattr(cluster_client, "get_node_from_key", stale)
    before = moved_replies(cluster)
    assert store.append_records("moved", RECORDS, owner="dora") == 6
    assert sent[-1] is None  # left to the cluster client
    assert moved_replies(cluster) > before
    assert [r["data"]["content"] for r in store.read_records("moved")] == [
        "hello",
        "hi there",
    ] * 3
    entries = index_entries(on_cluster, "moved", "dora")
    assert entries["sessions"] == entries["dora"] is not None
