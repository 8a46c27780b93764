"""Throwaway Redis topologies for the tests: one server, Sentinel, Cluster.

``CHATMEMORY_TEST_TOPOLOGY`` picks the topology the test settings point the
``chatmemory`` cache at:

- ``single`` (the default): one redis-server (see tests/redis_server.py);
- ``sentinel``: a master, one replica and three sentinels, service ``mymaster``,
  reached through django-redis's SentinelClient;
- ``cluster``: three masters, each with one replica, reached through
  chatmemory's cluster connection factory.

Every process listens on a free loopback port (never 6379), runs without
persistence in a temporary directory, and is stopped when the test process
exits, even when it is killed outright (PR_SET_PDEATHSIG). The topology is
started once per test process; its description goes into
``CHATMEMORY_TEST_TOPOLOGY_SPEC`` so that servers the tests start as
subprocesses (gunicorn, uvicorn) reach the same Redis instead of starting their
own. Tests that kill servers (the failover tests) start a topology of their own
with :func:`start`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.cluster
import redis.sentinel

from tests.redis_server import (
    OWNER_ENV,
    _die_with_parent,
    _owner,
    free_port,
    test_redis_url,
)

TOPOLOGY_ENV = "CHATMEMORY_TEST_TOPOLOGY"
SPEC_ENV = "CHATMEMORY_TEST_TOPOLOGY_SPEC"
KINDS = ("single", "sentinel", "cluster")
SERVICE = "mymaster"
CLUSTER_FACTORY = "chatmemory.store.cluster.ClusterConnectionFactory"
HOST = "127.0.0.1"
# Short enough that a failover test takes seconds, long enough that a loaded
# 2-core machine does not make healthy nodes look dead.
DOWN_AFTER_MS = 1500
TIMEOUTS = {"SOCKET_CONNECT_TIMEOUT": 2, "SOCKET_TIMEOUT": 5}


@dataclass
class Server:
    """One redis-server (or sentinel) process of a topology."""

    port: int
    role: str
    """"master", "replica", "sentinel", or "node" (cluster)."""
    process: subprocess.Popen[bytes] | None = None
    """None when the topology was inherited from the parent test process."""
    argv: list[str] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return HOST, self.port

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """Kill the process outright (SIGKILL): a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - stuck server
                self.process.kill()
                self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start the same server again (same port, config and directory)."""
        self.stop()
        self.process = _spawn(self.argv)


@dataclass
class Topology:
    """A running Redis topology and how to reach it."""

    kind: str
    servers: list[Server]
    workdir: str | None = None
    url: str | None = None
    """A single server's URL when given by CHATMEMORY_TEST_REDIS_URL."""
    service: str = SERVICE
    """The Sentinel service name. django-redis keeps Sentinel pools per URL for
    the whole process, so two Sentinel topologies need two names."""

    # -- reaching it --------------------------------------------------------

    @property
    def sentinels(self) -> list[Server]:
        return [s for s in self.servers if s.role == "sentinel"]

    @property
    def data_servers(self) -> list[Server]:
        return [s for s in self.servers if s.role != "sentinel"]

    def caches_entry(self) -> dict[str, Any]:
        """The CACHES entry of a django-redis alias on this topology."""
        backend = "django_redis.cache.RedisCache"
        if self.kind == "single":
            return {
                "BACKEND": backend,
                "LOCATION": f"{self.single_url()}/0",
                "OPTIONS": dict(TIMEOUTS),
            }
        if self.kind == "sentinel":
            return {
                "BACKEND": backend,
                "LOCATION": f"redis://{self.service}/0",
                "OPTIONS": {
                    "CLIENT_CLASS": "django_redis.client.SentinelClient",
                    "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
                    "SENTINELS": [s.address for s in self.sentinels],
                    **TIMEOUTS,
                },
            }
        return {
            "BACKEND": backend,
            "LOCATION": f"redis://{HOST}:{self.data_servers[0].port}",
            "OPTIONS": {"CONNECTION_FACTORY": CLUSTER_FACTORY, **TIMEOUTS},
        }

    def client(self) -> Any:
        """A plain redis-py client of the data (the current master, or the cluster).

        For asserting on keys; the caller closes it.
        """
        if self.kind == "single":
            return redis.Redis.from_url(f"{self.single_url()}/0")
        if self.kind == "sentinel":
            return self.sentinel().master_for(self.service)  # type: ignore[no-untyped-call]
        node = redis.cluster.ClusterNode
        nodes = [node(*s.address) for s in self.data_servers]  # type: ignore[no-untyped-call]
        return redis.cluster.RedisCluster(startup_nodes=nodes)

    def single_url(self) -> str:
        return self.url or f"redis://{HOST}:{self.servers[0].port}"

    def sentinel(self) -> redis.sentinel.Sentinel:
        return redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            [s.address for s in self.sentinels], socket_timeout=1
        )

    def master(self) -> Server:
        """The server that is master now (single, sentinel)."""
        if self.kind == "single":
            return self.servers[0]
        host, port = self.sentinel().discover_master(self.service)  # type: ignore[no-untyped-call]
        return next(s for s in self.data_servers if s.port == int(port))

    def replica_holding(self, key: str) -> Server:
        """A replica of the master that holds ``key``."""
        if self.kind == "cluster":
            client = self.client()
            try:
                port = int(client.get_node_from_key(key).port)
            finally:
                client.close()
        else:
            port = self.master().port
        for server in self.data_servers:
            with redis.Redis(*server.address, socket_timeout=1) as node:
                role = node.execute_command("ROLE")
            if role[0] == b"slave" and int(role[2]) == port:
                return server
        raise LookupError(f"no replica of the master on port {port}")

    def primaries(self) -> list[Server]:
        """The servers that hold writable data now (every cluster master)."""
        if self.kind != "cluster":
            return [self.master()]
        ports = set()
        for server in self.data_servers:
            if not server.alive() and server.process is not None:
                continue
            with contextlib.suppress(redis.RedisError):
                with redis.Redis(*server.address, socket_timeout=1) as node:
                    role = node.execute_command("ROLE")
                    if role[0] == b"master":
                        ports.add(server.port)
        return [s for s in self.data_servers if s.port in ports]

    # -- spec (for subprocesses) ------------------------------------------

    def spec(self) -> str:
        return json.dumps(
            {
                "kind": self.kind,
                "servers": [[s.port, s.role] for s in self.servers],
                "service": self.service,
            }
        )

    @classmethod
    def from_spec(cls, spec: str) -> Topology:
        data = json.loads(spec)
        return cls(data["kind"], [Server(port, role) for port, role in data["servers"]])

    # -- teardown -----------------------------------------------------------

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )


def _redis_server() -> str:
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError(
            "The topology tests need redis-server (apt-get install redis-server)."
        )
    return executable


def _wait(what: str, ready: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(redis.RedisError, OSError):
            if ready():
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis topology: timed out waiting for {what}")
        time.sleep(0.05)


def _ping(server: Server) -> bool:
    with redis.Redis(*server.address, socket_timeout=1) as client:
        return bool(client.ping())


def _server_argv(port: int, workdir: str, *extra: str) -> list[str]:
    return [
        _redis_server(),
        "--bind", HOST,
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", workdir,
        *extra,
    ]  # fmt: skip


def _start_server(port: int, role: str, argv: list[str]) -> Server:
    server = Server(port, role, _spawn(argv), argv)
    _wait(f"redis-server on port {port}", lambda: _ping(server), timeout=10)
    return server


_sentinels_started = 0


def start_single() -> Topology:
    """One redis-server."""
    workdir = tempfile.mkdtemp(prefix="chatmemory-single-")
    topology = Topology("single", [], workdir)
    try:
        port = free_port()
        topology.servers.append(
            _start_server(port, "master", _server_argv(port, workdir))
        )
    except BaseException:
        topology.stop()
        raise
    return topology


def start_sentinel(
    replicas: int = 1, sentinels: int = 3, service: str = ""
) -> Topology:
    """A master, its replicas and a quorum of sentinels watching it.

    The service name defaults to ``mymaster``, then ``mymaster2``, ... for
    the next topologies the process starts (see Topology.service).
    """
    global _sentinels_started
    _sentinels_started += 1
    if not service:
        service = SERVICE + (str(_sentinels_started) if _sentinels_started > 1 else "")
    workdir = tempfile.mkdtemp(prefix="chatmemory-sentinel-")
    topology = Topology("sentinel", [], workdir, service=service)
    try:
        master_port = free_port()
        topology.servers.append(
            _start_server(
                master_port, "master", _server_argv(master_port, f"{workdir}")
            )
        )
        for i in range(replicas):
            port = free_port()
            directory = os.path.join(workdir, f"replica{i}")
            os.mkdir(directory)
            topology.servers.append(
                _start_server(
                    port,
                    "replica",
                    _server_argv(
                        port, directory, "--replicaof", HOST, str(master_port)
                    ),
                )
            )
        quorum = sentinels // 2 + 1
        for i in range(sentinels):
            port = free_port()
            directory = os.path.join(workdir, f"sentinel{i}")
            os.mkdir(directory)
            config = os.path.join(directory, "sentinel.conf")
            # Sentinels rewrite their config file (what they learn), so each
            # has its own, writable.
            with open(config, "w") as file:
                file.write(
                    f"bind {HOST}\nport {port}\ndir {directory}\n"
                    f"sentinel monitor {service} {HOST} {master_port} {quorum}\n"
                    f"sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {service} 10000\n"
                    f"sentinel parallel-syncs {service} 1\n"
                )
            topology.servers.append(
                _start_server(port, "sentinel", [_redis_server(), config, "--sentinel"])
            )
        wait_sentinel_ready(topology)
    except BaseException:
        topology.stop()
        raise
    return topology


def wait_sentinel_ready(topology: Topology, timeout: float = 30) -> None:
    """Wait until every replica is in sync and every sentinel knows them all."""
    replicas = len(topology.data_servers) - 1
    others = len(topology.sentinels) - 1
    master = topology.master()

    def synced() -> bool:
        with redis.Redis(*master.address, socket_timeout=1) as client:
            info = client.info("replication")
        online = [
            value
            for key, value in info.items()
            if key.startswith("slave") and isinstance(value, dict)
        ]
        return (
            info["role"] == "master"
            and len(online) == replicas
            and all(v.get("state") == "online" for v in online)
        )

    def known() -> bool:
        for sentinel in topology.sentinels:
            with redis.Redis(*sentinel.address, socket_timeout=1) as client:
                state = client.sentinel_master(topology.service)
                if int(state["num-slaves"]) != replicas:
                    return False
                if int(state["num-other-sentinels"]) != others:
                    return False
                if int(state["port"]) != master.port:
                    return False
        return True

    _wait("the replicas to sync", synced, timeout)
    _wait("the sentinels to know each other", known, timeout)


def _two_free_ports() -> tuple[int, int]:
    while True:
        port, bus = free_port(), free_port()
        if port != bus:
            return port, bus


def start_cluster(masters: int = 3, replicas: int = 1) -> Topology:
    """A Redis Cluster of ``masters`` masters with ``replicas`` replicas each."""
    workdir = tempfile.mkdtemp(prefix="chatmemory-cluster-")
    topology = Topology("cluster", [], workdir)
    try:
        for i in range(masters * (1 + replicas)):
            port, bus = _two_free_ports()
            directory = os.path.join(workdir, f"node{i}")
            os.mkdir(directory)
            argv = _server_argv(
                port,
                directory,
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(DOWN_AFTER_MS),
            )  # fmt: skip
            topology.servers.append(_start_server(port, "node", argv))
        redis_cli = shutil.which("redis-cli")
        if redis_cli is None:
            raise RuntimeError("The cluster tests need redis-cli (Debian: redis-tools)")
        subprocess.run(
            [
                redis_cli,
                "--cluster", "create",
                *(f"{HOST}:{s.port}" for s in topology.servers),
                "--cluster-replicas", str(replicas),
                "--cluster-yes",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )  # fmt: skip
        wait_cluster_ready(topology)
    except BaseException:
        topology.stop()
        raise
    return topology


def wait_cluster_ready(topology: Topology, timeout: float = 30) -> None:
    """Wait until every live node sees the cluster as OK, all slots served."""
    expected = len([s for s in topology.data_servers if s.alive()])

    def ok() -> bool:
        for server in topology.data_servers:
            if not server.alive():
                continue
            with redis.Redis(*server.address, socket_timeout=1) as client:
                info = client.cluster("info")
                if info["cluster_state"] != "ok":
                    return False
                if int(info["cluster_slots_ok"]) != 16384:
                    return False
                if int(info["cluster_known_nodes"]) < expected:
                    return False
                role = client.execute_command("ROLE")
                # A replica counts once its link to its master is up and synced.
                if role[0] == b"slave" and role[3] != b"connected":
                    return False
        return True

    _wait("the cluster to be ready", ok, timeout)


def start(kind: str, **kwargs: Any) -> Topology:
    """Start a topology of this kind; it is stopped at exit if not before."""
    starter = {
        "single": start_single,
        "sentinel": start_sentinel,
        "cluster": start_cluster,
    }[kind]
    topology = starter(**kwargs)
    atexit.register(topology.stop)
    return topology


@contextlib.contextmanager
def running(kind: str, **kwargs: Any) -> Iterator[Topology]:
    """A topology for the duration of a ``with`` block."""
    topology = start(kind, **kwargs)
    try:
        yield topology
    finally:
        topology.stop()


def selected_kind() -> str:
    kind = os.environ.get(TOPOLOGY_ENV, "single") or "single"
    if kind not in KINDS:
        raise RuntimeError(
            f"{TOPOLOGY_ENV} must be one of {', '.join(KINDS)}, not {kind!r}"
        )
    return kind


_test_topology: Topology | None = None


def test_topology() -> Topology:
    """The topology of this test run (and of its subprocesses), started once."""
    global _test_topology
    if _test_topology is not None:
        return _test_topology
    kind = selected_kind()
    spec = os.environ.get(SPEC_ENV)
    # as in tests/redis_server.py: a pytest-xdist worker gets a topology of its own
    started_by = os.environ.get(OWNER_ENV)
    if spec and started_by is not None and started_by != _owner():
        spec = None
    if spec:
        _test_topology = Topology.from_spec(spec)
    elif kind == "single":
        # tests/redis_server.py keeps honouring CHATMEMORY_TEST_REDIS_URL.
        _test_topology = Topology("single", [], url=test_redis_url())
    else:
        _test_topology = start(kind)
        os.environ[SPEC_ENV] = _test_topology.spec()
        os.environ[OWNER_ENV] = _owner()
    return _test_topology


def command_calls(client: Any) -> dict[str, int]:
    """Calls so far of each command (``cmdstat_<name>``) on the tests' Redis.

    On a cluster, summed over its primaries. The INFO commands that measure
    are left out.
    """
    per_node: list[dict[str, Any]]
    if isinstance(client, redis.cluster.RedisCluster):
        nodes = client.PRIMARIES
        per_node = list(client.info("commandstats", target_nodes=nodes).values())
    else:
        per_node = [client.info("commandstats")]
    calls: dict[str, int] = {}
    for stats in per_node:
        for name, value in stats.items():
            calls[name] = calls.get(name, 0) + value["calls"]
    # Not the clients': the measuring INFO, replicas' acknowledgements, and
    # the sentinels' hello messages (PUBLISH to __sentinel__:hello, every 2 s)
    # and their PINGs.
    calls.pop("cmdstat_info", None)
    calls.pop("cmdstat_replconf", None)
    calls.pop("cmdstat_publish", None)
    calls.pop("cmdstat_ping", None)
    return calls
