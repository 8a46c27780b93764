"""What the operator should know about the chat data's Redis.

:func:`server_facts_op` reads the server's own account of itself (INFO) and
runs harmless probes of every command family chatmemory needs on a scratch
key; :func:`findings` turns the facts into warnings. :func:`check_consistency_op`
compares the indexes, the metadata and the message lists. The deploy check
and ``manage.py chatmemory_doctor`` use them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from ..conf import conf
from . import keys
from .operations import Batch, Command, Operation, Scan, now_ms, ttl_ms

# Every command family chatmemory sends, probed on a scratch key. Each probe is
# one Command or Eval; none touches a session.
_SCRIPT_PROBE = "return redis.call('TYPE', KEYS[1])"


def _probes(key: str) -> list[tuple[str, Any]]:
    return [
        ("scripts (EVAL/EVALSHA)", Command(("EVAL", _SCRIPT_PROBE, 1, key))),
        ("lists (RPUSH/LRANGE)", Command(("RPUSH", key, "probe"))),
        ("lists (RPUSH/LRANGE)", Command(("LRANGE", key, 0, -1))),
        ("keys (DEL/PEXPIRE)", Command(("PEXPIRE", key, 60_000))),
        ("keys (DEL/PEXPIRE)", Command(("DEL", key))),
        ("hashes (HSET/HGETALL)", Command(("HSET", key, "probe", 1))),
        ("hashes (HSET/HGETALL)", Command(("HGETALL", key))),
        ("keys (DEL/PEXPIRE)", Command(("DEL", key))),
        ("sorted sets (ZADD/ZRANGE)", Command(("ZADD", key, 1, "probe"))),
        ("sorted sets (ZADD/ZRANGE)", Command(("ZREVRANGEBYSCORE", key, "+inf", 0))),
        ("keys (DEL/PEXPIRE)", Command(("DEL", key))),
    ]


@dataclass(frozen=True, slots=True)
class ServerFacts:
    """What the server says about itself, and what it refused."""

    info: dict[str, Any]
    refused: dict[str, str]
    """Command family -> the error the server gave for it."""

    @property
    def version(self) -> str:
        """The server's version."""
        return str(self.info.get("redis_version", "unknown"))

    @property
    def mode(self) -> str:
        """standalone, sentinel or cluster, as the server says."""
        return str(self.info.get("redis_mode", "standalone"))

    @property
    def maxmemory(self) -> int:
        """The memory limit in bytes; 0 is none."""
        return int(self.info.get("maxmemory", 0))

    @property
    def policy(self) -> str:
        """The eviction policy (maxmemory-policy)."""
        return str(self.info.get("maxmemory_policy", "unknown"))

    @property
    def aof(self) -> bool:
        """Whether the append-only file is on."""
        return bool(int(self.info.get("aof_enabled", 0)))

    @property
    def read_only(self) -> bool:
        """Whether this node is a read-only replica."""
        return self.info.get("role") == "slave" and bool(
            int(self.info.get("slave_read_only", 1))
        )

    @property
    def used_memory(self) -> int:
        """Bytes in use."""
        return int(self.info.get("used_memory", 0))


def server_facts_op() -> Operation[ServerFacts]:
    """INFO, then one probe of every command family chatmemory needs."""
    info: dict[str, Any] = {}
    for section in ("server", "memory", "persistence", "replication"):
        reply = yield Command(("INFO", section))
        info.update(reply)
    refused: dict[str, str] = {}
    key = keys.probe_key()
    for family, probe in _probes(key):
        if family in refused:
            continue
        try:
            yield probe
        except redis.ResponseError as exc:
            # redis-py drops the error code of an out-of-memory refusal.
            full = isinstance(exc, redis.exceptions.OutOfMemoryError)
            refused[family] = f"OOM {exc}" if full else str(exc)
    return ServerFacts(info, refused)


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing the operator should fix, with a stable id."""

    id: str
    message: str
    hint: str


def findings(facts: ServerFacts) -> list[Finding]:
    """The warnings the facts call for."""
    found: list[Finding] = []
    ttl = bool(conf.TTL)
    policy = facts.policy
    evicts = policy.startswith("allkeys-") or (policy.startswith("volatile-") and ttl)
    if evicts:
        found.append(
            Finding(
                "chatmemory.W101",
                f"Redis's eviction policy is {policy!r} (maxmemory "
                f"{facts.maxmemory or 'unlimited'}): when memory runs out Redis "
                "deletes chat keys, leaving sessions without messages and "
                "indexes pointing at nothing.",
                "Keep chat data on its own Redis instance with "
                "'maxmemory-policy noeviction' (a separate database shares the "
                "instance's memory limit and policy).",
            )
        )
    if not facts.aof:
        found.append(
            Finding(
                "chatmemory.W102",
                "Redis's append-only file is off: a restart loses every chat "
                "message written since the last snapshot (or all of them).",
                "Turn on 'appendonly yes' (appendfsync everysec) on the chat "
                "data's Redis.",
            )
        )
    full = [
        family for family, error in facts.refused.items() if error.startswith("OOM")
    ]
    if full:
        found.append(
            Finding(
                "chatmemory.W105",
                f"Redis is out of memory ({facts.used_memory:,} bytes used, "
                f"maxmemory {facts.maxmemory:,}, policy {policy!r}): it refuses "
                "every write, so no chat message can be saved.",
                "Give Redis more memory (maxmemory), delete old sessions or set "
                "CHATMEMORY_TTL; keep the policy noeviction.",
            )
        )
    for family, error in facts.refused.items():
        if family in full:
            continue
        found.append(
            Finding(
                "chatmemory.W103",
                f"Redis refused a command chatmemory needs, {family}: {error}",
                "Grant the Redis user the scripting, list, hash, sorted-set and "
                "key commands (e.g. ACL '+@scripting +@list +@hash +@sortedset "
                "+@keyspace'), and do not rename EVAL/EVALSHA.",
            )
        )
    if facts.read_only:
        found.append(
            Finding(
                "chatmemory.W104",
                "The chat data's Redis is a read-only replica: every write fails.",
                "Point the CACHES alias at the primary (or use Sentinel, which "
                "follows failovers).",
            )
        )
    return found


@dataclass(slots=True)
class ConsistencyReport:
    """What disagrees between the indexes, the metadata and the message lists.

    Each list holds session ids (index key names for
    ``index_never_expires``), at most ``sample`` of them; the counts are exact.
    """

    sessions: int = 0
    """Sessions with metadata."""
    counts: dict[str, int] = field(default_factory=dict)
    samples: dict[str, list[str]] = field(default_factory=dict)
    sample: int = 20

    def add(self, problem: str, session_id: str) -> None:
        """Record one problem of one session."""
        self.counts[problem] = self.counts.get(problem, 0) + 1
        found = self.samples.setdefault(problem, [])
        if len(found) < self.sample:
            found.append(session_id)

    @property
    def ok(self) -> bool:
        """Whether nothing disagrees."""
        return not self.counts


PROBLEMS = {
    "not_in_activity_index": "sessions missing from the activity index",
    "not_in_ids_index": "sessions missing from the id index",
    "not_in_owner_index": "sessions missing from their owner's (or the no-owner) index",
    "index_ghost": "index entries whose session is gone",
    "owner_index_ghost": "owner index entries whose session is gone or is another's",
    "orphan_messages": "message lists without metadata",
    "count_mismatch": "sessions whose message count disagrees with their list",
    "index_expires_first": "sessions that an index they are in expires before",
    "index_never_expires": (
        "index keys without a TTL though no session in them lives for ever "
        "(with CHATMEMORY_TTL: they would never go)"
    ),
}
"""Problem key -> what it means, for reports."""


def _scan_all(pattern: str, batch: int) -> Operation[list[str]]:
    # Scan: every node's keys on Cluster, where a SCAN cursor is per node.
    names = yield Scan(pattern, batch)
    return [name.decode() for name in names]


def _zset_members(key: str, batch: int) -> Operation[list[tuple[str, float]]]:
    members: list[tuple[str, float]] = []
    start = 0
    while True:
        part = yield Command(("ZRANGE", key, start, start + batch - 1, "WITHSCORES"))
        members += ((member.decode(), float(score)) for member, score in part)
        if len(part) < batch:
            return members
        start += batch


def check_consistency_op(
    batch: int = 1000,
    sample: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> Operation[ConsistencyReport]:
    """Compare every index with the metadata and the message lists, and
    each index's TTL with its sessions'.

    Reads the whole chat database in batches (SCAN and ranges of at most
    ``batch`` entries, so no single command blocks Redis for long); what
    writers change during the check can show up as a passing disagreement.
    ``progress`` (if any) is called with the sessions read so far and their
    total after each batch of them (the part of the work that reads every key).
    """
    report = ConsistencyReport(sample=sample)
    meta: dict[str, str] = {}  # session id -> owner ('' none)
    counts: dict[str, int] = {}
    # Session id -> the earliest its metadata can expire (epoch ms; inf: never).
    expiry: dict[str, float] = {}
    meta_keys = yield from _scan_all(keys.scan_pattern("meta"), batch)
    for start in range(0, len(meta_keys), batch):
        chunk = [
            (key, keys.session_id_from_key(key, "meta"))
            for key in meta_keys[start : start + batch]
        ]
        chunk = [(key, sid) for key, sid in chunk if sid is not None]
        commands: list[tuple[Any, ...]] = []
        for key, sid in chunk:
            assert sid is not None
            commands += (("HMGET", key, "owner", "count", "kind"),)
            commands += (("LLEN", keys.messages_key(sid)), ("PTTL", key))
        sent = now_ms()
        replies = yield Batch(commands)
        for i, (_, sid) in enumerate(chunk):
            assert sid is not None
            (owner, count, kind), length, pttl = replies[3 * i : 3 * i + 3]
            meta[sid] = "" if owner is None else owner.decode()
            expiry[sid] = math.inf if pttl == -1 else sent + max(int(pttl), 0)
            counts[sid] = int(count or 0)
            # A LangGraph thread counts the messages of its latest checkpoint.
            if kind != b"thread" and int(count or 0) != int(length):
                report.add("count_mismatch", sid)
        if progress is not None:
            progress(min(start + batch, len(meta_keys)), len(meta_keys))
    report.sessions = len(meta)
    for key in (yield from _scan_all(keys.scan_pattern("messages"), batch)):
        sid = keys.session_id_from_key(key, "messages")
        if sid is not None and sid not in meta:
            report.add("orphan_messages", sid)
    activity = dict((yield from _zset_members(keys.sessions_key(), batch)))
    ids = dict((yield from _zset_members(keys.ids_key(), batch)))
    owned: dict[str, set[str]] = {}
    indexes = {keys.sessions_key(): set(activity), keys.ids_key(): set(ids)}
    for key in (yield from _scan_all(keys.scan_pattern("owner"), batch)):
        owner = keys.owner_from_key(key)
        if owner is None:
            continue
        members = yield from _zset_members(key, batch)
        owned[owner] = indexes[key] = {sid for sid, _ in members}
        for sid, _ in members:
            if meta.get(sid) != owner:
                report.add("owner_index_ghost", sid)
    no_owner = yield from _zset_members(keys.no_owner_key(), batch)
    owned[""] = indexes[keys.no_owner_key()] = {sid for sid, _ in no_owner}
    for sid, _ in no_owner:
        if meta.get(sid) != "":
            report.add("owner_index_ghost", sid)
    for sid, owner in meta.items():
        if sid not in activity:
            report.add("not_in_activity_index", sid)
        if sid not in ids:
            report.add("not_in_ids_index", sid)
        if sid not in owned.get(owner, ()):
            report.add("not_in_owner_index", sid)
    for sid in activity.keys() | ids.keys():
        if sid not in meta:
            report.add("index_ghost", sid)
    yield from _check_index_ttls(report, indexes, expiry, activity, batch)
    return report


def _check_index_ttls(
    report: ConsistencyReport,
    indexes: dict[str, set[str]],
    expiry: dict[str, float],
    activity: dict[str, float],
    batch: int,
) -> Operation[None]:
    """Whether each index lives as long as its sessions, and no longer.

    The index TTLs are read after the sessions', and a time is only flagged
    when it is wrong whatever happened between the reads. With a TTL, a
    session counts until its activity is that old (a listing drops it then).
    """
    names = list(indexes)
    ends: dict[str, float] = {}
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        pttls = yield Batch([("PTTL", name) for name in chunk])
        received = now_ms()
        for name, pttl in zip(chunk, pttls, strict=True):
            if int(pttl) != -2:  # else gone since its entries were read
                ends[name] = math.inf if int(pttl) == -1 else received + int(pttl)
    ttl = ttl_ms()
    early: set[str] = set()
    for name, members in indexes.items():
        if name not in ends:
            continue
        live = [sid for sid in members if sid in expiry]
        for sid in live:
            counted = expiry[sid]
            if ttl and sid in activity:
                counted = min(counted, activity[sid] + ttl)
            if ends[name] < counted and sid not in early:
                early.add(sid)
                report.add("index_expires_first", sid)
        forever = any(expiry[sid] == math.inf for sid in live)
        if ttl and members and ends[name] == math.inf and not forever:
            report.add("index_never_expires", name)


__all__ = [
    "PROBLEMS",
    "ConsistencyReport",
    "Finding",
    "ServerFacts",
    "check_consistency_op",
    "findings",
    "server_facts_op",
]
