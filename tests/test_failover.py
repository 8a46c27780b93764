"""Failover under load, on real Sentinel and Cluster topologies of the test's own.

Turns keep being written (a human and an AI message per turn, spread over a
few sessions) while the master holding them is killed outright. The app is not
restarted: the writes that fail during the failover raise a chatmemory error,
and later writes reach the promoted replica by themselves. Afterwards every
acknowledged turn is looked for on the new master; the counts are printed
(run with ``-s`` to see them) and, with CHATMEMORY_WAIT_REPLICAS, none may be
lost.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.test import override_settings

from chatmemory import store
from chatmemory.exceptions import ChatMemoryError
from tests.topologies import Server, Topology, start, wait_cluster_ready

SESSIONS = 8
BEFORE_KILL = 1.0
"""Seconds of writing before the kill."""
RECOVERY_TIMEOUT = 40.0
RESTART_AFTER = 6.0
"""Seconds after the kill when the dead master is started again."""
AFTER_RECOVERY = 50
"""Turns acknowledged after the first post-kill success, to prove recovery."""

pytestmark = pytest.mark.topology


@dataclass
class Tally:
    acked: dict[str, list[str]] = field(default_factory=dict)
    """Session id -> the turn markers written with success, in order."""
    failures: int = 0
    errors: set[str] = field(default_factory=set)
    killed_at: float | None = None
    failed_after_kill: bool = False
    recovered_at: float | None = None
    """The first success after a failure that followed the kill."""
    after: int = 0

    def record(self, session_id: str, marker: str) -> None:
        self.acked.setdefault(session_id, []).append(marker)
        if self.failed_after_kill:
            if self.recovered_at is None:
                self.recovered_at = time.monotonic()
            self.after += 1

    def fail(self, exc: Exception) -> None:
        self.failures += 1
        self.errors.add(type(exc).__name__)
        if self.killed_at is not None:
            self.failed_after_kill = True

    @property
    def total(self) -> int:
        return sum(len(markers) for markers in self.acked.values())


def turn(marker: str) -> list[dict[str, Any]]:
    return [
        {"type": "human", "data": {"content": f"q {marker}"}},
        {"type": "ai", "data": {"content": f"a {marker}"}},
    ]


def lost_turns(tally: Tally) -> int:
    """Acknowledged turns missing from what the (new) master holds now."""
    lost = 0
    for session_id, markers in tally.acked.items():
        stored = {
            record["data"]["content"][2:]
            for record in store.read_records(session_id)
            if isinstance(record, dict) and record["type"] == "human"
        }
        lost += sum(1 for marker in markers if marker not in stored)
    return lost


def kill_a_master(topology: Topology) -> Server:
    """Kill the master holding the sessions (on Cluster: every master's slots
    get writes; the one holding the first session dies)."""
    if topology.kind == "sentinel":
        victim = topology.master()
    else:
        client = topology.client()
        try:
            port = int(client.get_node_from_key(store.messages_key("s0")).port)
        finally:
            client.close()
        victim = next(s for s in topology.data_servers if s.port == port)
    victim.kill()
    return victim


def write_until_recovered(topology: Topology, *, use_async: bool) -> Tally:
    tally = Tally()
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            session_id = f"s{i % SESSIONS}"
            marker = str(i)
            try:
                store.append_records(session_id, turn(marker))
            except ChatMemoryError as exc:
                tally.fail(exc)
                time.sleep(0.02)
            else:
                tally.record(session_id, marker)
            i += 1

    async def awriter() -> None:
        i = 0
        try:
            while not stop.is_set():
                session_id = f"s{i % SESSIONS}"
                marker = str(i)
                try:
                    await store.aappend_records(session_id, turn(marker))
                except ChatMemoryError as exc:
                    tally.fail(exc)
                    await asyncio.sleep(0.02)
                else:
                    tally.record(session_id, marker)
                i += 1
        finally:
            await store.aclose_clients()

    thread = threading.Thread(
        target=(lambda: asyncio.run(awriter())) if use_async else writer
    )
    thread.start()
    try:
        time.sleep(BEFORE_KILL)
        assert tally.total > 0, "nothing was written before the kill"
        tally.killed_at = time.monotonic()
        victim = kill_a_master(topology)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        restarted = False
        while tally.after < AFTER_RECOVERY and time.monotonic() < deadline:
            # The dead master comes back as an operator would bring it back,
            # after the failover: it rejoins as a replica, so writes that wait
            # for a replica can be confirmed again.
            if not restarted and time.monotonic() > tally.killed_at + RESTART_AFTER:
                victim.restart()
                restarted = True
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    return tally


@pytest.fixture(params=["sentinel", "cluster"])
def topology(request: pytest.FixtureRequest) -> Iterator[Topology]:
    topology = start(request.param)
    try:
        yield topology
    finally:
        topology.stop()


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("wait_replicas", [0, 1], ids=["no-wait", "wait-1"])
def test_writes_survive_a_failover(
    topology: Topology, use_async: bool, wait_replicas: int
) -> None:
    overrides: dict[str, Any] = {
        "CACHES": {
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "chatmemory": topology.caches_entry(),
        },
        "CHATMEMORY_WAIT_REPLICAS": wait_replicas,
        "CHATMEMORY_WAIT_TIMEOUT": 2.0,
    }
    with override_settings(**overrides):
        store.append_records("s0", turn("warm-up"))
        tally = write_until_recovered(topology, use_async=use_async)
        assert tally.recovered_at is not None, (
            f"no write succeeded within {RECOVERY_TIMEOUT} s of the kill "
            f"({tally.failures} failed: {sorted(tally.errors)})"
        )
        assert tally.after >= AFTER_RECOVERY
        if topology.kind == "cluster":
            wait_cluster_ready(topology)
        lost = lost_turns(tally)
        print(
            f"\nfailover {topology.kind} {'async' if use_async else 'sync'} "
            f"wait={wait_replicas}: {tally.total} turns acknowledged, {lost} lost; "
            f"{tally.failures} writes failed ({', '.join(sorted(tally.errors))}); "
            f"writes resumed {tally.recovered_at - tally.killed_at:.1f} s "
            "after the kill"
        )
        if wait_replicas:
            assert lost == 0
