"""All of chatmemory's Redis I/O: keys, (de)serialisation, writes, reads, indexes.

Nothing else in chatmemory talks to Redis. The sync path uses the client of the
configured django-redis cache alias (``django_redis.get_redis_connection``); the
async path uses a ``redis.asyncio`` client built from the same CACHES entry, one
per event loop.

Data model (``P`` is ``CHATMEMORY_KEY_PREFIX``, ``S`` the escaped session id)::

    P:{S}:messages   list    one JSON document per message (message_to_dict form)
    P:{S}:meta       hash    created, updated (epoch ms), count, title, owner
    P:sessions       zset    session id -> last activity (epoch ms), every session
    P:owner:<owner>  zset    session id -> last activity, one owner's sessions
    P:session-ids    zset    session id (score 0): lexicographic index for prefix search

Every write is one Lua script, so it is atomic and one round trip. The scripts
touch the index keys, which Redis Cluster would refuse; django-redis has no
cluster client, so that is not a limit in practice.

Messages cross this module as plain ``dict`` records, so it does not import
LangChain (the admin must survive LangChain 2.0).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import redis
import redis.asyncio
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from .conf import conf
from .exceptions import StoreUnavailable

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript, Script

try:
    # Optional, for writes only (see _append_call): langchain-core brings it in
    # (through langsmith) on CPython; without it json does all the work.
    import orjson

    _ORJSON = True
except ImportError:  # pragma: no cover - e.g. on PyPy
    _ORJSON = False

logger = logging.getLogger("chatmemory")

Record = dict[str, Any]
"""One message in ``langchain_core.messages.message_to_dict`` form."""

TITLE_LENGTH = 80
"""Titles are the first human message, cut to this many characters."""


# ---------------------------------------------------------------------------
# Results


@dataclass(frozen=True, slots=True)
class UnreadableEntry:
    """A stored entry that is not a message record (bad JSON, not an object)."""

    position: int
    raw: bytes
    reason: str


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What the metadata hash says about one session."""

    session_id: str
    title: str
    owner: str | None
    message_count: int
    created: datetime
    updated: datetime
    last_activity: datetime
    expires_in: timedelta | None
    """Time left before Redis expires the session; None when it has no TTL."""


@dataclass(frozen=True, slots=True)
class SessionPage:
    """One page of a session listing."""

    sessions: list[SessionInfo]
    total: int
    """Sessions in the whole listing (all pages), as the index counts them."""


# ---------------------------------------------------------------------------
# Session ids and keys


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is a usable id, else raise ``ValueError``.

    Any non-empty ``str`` of at most ``CHATMEMORY_MAX_SESSION_ID_LENGTH``
    characters that encodes to UTF-8 is accepted.
    """
    if not isinstance(session_id, str):
        raise ValueError(
            f"session_id must be a str, not {type(session_id).__name__}: {session_id!r}"
        )
    if not session_id:
        raise ValueError("session_id must not be empty")
    limit = conf.MAX_SESSION_ID_LENGTH
    if len(session_id) > limit:
        raise ValueError(
            f"session_id is {len(session_id)} characters long; the limit is "
            f"{limit} (CHATMEMORY_MAX_SESSION_ID_LENGTH)"
        )
    try:
        session_id.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"session_id is not valid Unicode text: {exc}") from None
    return session_id


def _escape(session_id: str) -> str:
    # Percent-encoding the escape char and the braces is injective, and keeps the
    # id braces-free so the hash tag {S} is always exactly the whole id. ("%"
    # first; chained replace is ten times faster than str.translate here.)
    return session_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def messages_key(session_id: str) -> str:
    """The list holding the session's messages."""
    return f"{conf.KEY_PREFIX}:{{{_escape(session_id)}}}:messages"


def meta_key(session_id: str) -> str:
    """The hash holding the session's metadata."""
    return f"{conf.KEY_PREFIX}:{{{_escape(session_id)}}}:meta"


def sessions_key() -> str:
    """The sorted set of every session, by last activity."""
    return f"{conf.KEY_PREFIX}:sessions"


def ids_key() -> str:
    """The sorted set of every session id, all scored 0, for prefix search."""
    return f"{conf.KEY_PREFIX}:session-ids"


def owner_key_prefix() -> str:
    """Owner index keys are this plus the owner id."""
    return f"{conf.KEY_PREFIX}:owner:"


def owner_key(owner: str) -> str:
    """The sorted set of one owner's sessions, by last activity."""
    return owner_key_prefix() + owner


# ---------------------------------------------------------------------------
# (De)serialisation


def encode_record(record: Record) -> bytes:
    """Serialise one message record for storage."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def decode_records(raw: Sequence[bytes]) -> list[Record | UnreadableEntry]:
    """Decode stored entries; entries that are not JSON objects come back unreadable.

    Decoding is the cost of reading a long history, so the common case parses
    all entries as one JSON array (one call instead of one per entry), with the
    garbage collector paused: the objects it builds are all young and all kept.
    """
    if not raw:
        return []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            decoded = json.loads(b"[" + b",".join(raw) + b"]")
        # RecursionError: an entry nested deeper than the parser goes.
        except (ValueError, RecursionError):
            decoded = None
        # A corrupt entry can shift the array's boundaries; only trust the fast
        # parse when it yields one object per entry.
        if (
            decoded is not None
            and len(decoded) == len(raw)
            and all(type(item) is dict for item in decoded)
        ):
            return decoded  # type: ignore[no-any-return]
        return [_decode_one(position, item) for position, item in enumerate(raw)]
    finally:
        if gc_was_enabled:
            gc.enable()


def _decode_one(position: int, raw: bytes) -> Record | UnreadableEntry:
    try:
        item = json.loads(raw)
    except ValueError as exc:
        return UnreadableEntry(position, raw, f"not JSON ({exc})")
    except RecursionError:
        return UnreadableEntry(position, raw, "JSON nested too deep to read")
    if type(item) is not dict:
        return UnreadableEntry(position, raw, f"a JSON {type(item).__name__}")
    record: Record = item
    return record


def title_from_records(records: Sequence[Record]) -> str:
    """The session title: the first human message's text, cut to TITLE_LENGTH."""
    for record in records:
        if record.get("type") not in ("human", "HumanMessageChunk"):
            continue
        content = record.get("data", {}).get("content", "")
        if isinstance(content, list):
            content = " ".join(
                block if isinstance(block, str) else str(block.get("text", ""))
                for block in content
                if isinstance(block, str)
                or (isinstance(block, dict) and block.get("type") == "text")
            )
        text = " ".join(str(content).split())
        if text:
            return shorten(text, TITLE_LENGTH)
    return ""


def shorten(text: str, length: int) -> str:
    """Cut ``text`` to ``length`` characters, marking a cut with an ellipsis."""
    return text if len(text) <= length else text[: length - 1].rstrip() + "\u2026"


# ---------------------------------------------------------------------------
# Lua scripts: each write is atomic and one round trip.

_APPEND = """
-- KEYS: messages, meta, sessions, ids
-- ARGV: session id, now ms, ttl ms (0: none), cap (0: none), title, owner,
--       owner key prefix, records...
local now = ARGV[2]
local ttl = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local n = #ARGV
-- unpack() has a stack limit: push in slices.
local i = 8
local count = 0
while i <= n do
  local j = math.min(i + 999, n)
  count = redis.call('RPUSH', KEYS[1], unpack(ARGV, i, j))
  i = j + 1
end
if cap > 0 and count > cap then
  redis.call('LTRIM', KEYS[1], -cap, -1)
  count = cap
end
redis.call('HSETNX', KEYS[2], 'created', now)
redis.call('HSET', KEYS[2], 'updated', now, 'count', count)
if ARGV[5] ~= '' then redis.call('HSETNX', KEYS[2], 'title', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSETNX', KEYS[2], 'owner', ARGV[6]) end
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
local owner = redis.call('HGET', KEYS[2], 'owner')
if owner then redis.call('ZADD', ARGV[7] .. owner, now, ARGV[1]) end
return count
"""

_CREATE = """
-- KEYS: messages, meta, sessions, ids
-- ARGV: session id, now ms, ttl ms (0: none), title, owner, owner key prefix
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local now = ARGV[2]
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[2], 'created', now, 'updated', now, 'count', 0)
-- No title field for an untitled session: the first human message names it.
if ARGV[4] ~= '' then redis.call('HSET', KEYS[2], 'title', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[2], 'owner', ARGV[5]) end
if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZADD', KEYS[4], 0, ARGV[1])
if ARGV[5] ~= '' then redis.call('ZADD', ARGV[6] .. ARGV[5], now, ARGV[1]) end
return 1
"""

_DELETE = """
-- KEYS: messages, meta, sessions, ids
-- ARGV: session id, owner key prefix
local owner = redis.call('HGET', KEYS[2], 'owner')
local existed = redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if owner then redis.call('ZREM', ARGV[2] .. owner, ARGV[1]) end
return existed
"""

_READ_REFRESH = """
-- KEYS: messages, meta, sessions
-- ARGV: session id, now ms, ttl ms, owner key prefix
local items = redis.call('LRANGE', KEYS[1], 0, -1)
if redis.call('EXISTS', KEYS[2]) == 1 then
  local ttl = tonumber(ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('ZADD', KEYS[3], 'XX', ARGV[2], ARGV[1])
  local owner = redis.call('HGET', KEYS[2], 'owner')
  if owner then redis.call('ZADD', ARGV[4] .. owner, 'XX', ARGV[2], ARGV[1]) end
end
return items
"""

_SET_TITLE = """
-- KEYS: meta.  ARGV: title
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[1])
return 1
"""

_PAGE = """
-- One page of an activity index, after dropping entries older than the TTL
-- (their keys have expired; at most 1000 per call, so a call stays short).
-- KEYS: the activity index, ids
-- ARGV: cutoff ms (0: no TTL), also drop from ids (1/0), lowest score, offset, limit
local cutoff = tonumber(ARGV[1])
if cutoff > 0 then
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. cutoff,
                          'LIMIT', 0, 1000)
  if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
    if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], unpack(gone)) end
  end
end
local total = redis.call('ZCOUNT', KEYS[1], ARGV[3], '+inf')
local ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[3],
                       'LIMIT', ARGV[4], ARGV[5])
table.insert(ids, 1, total)
return ids
"""

_SCRIPTS = {
    "append": _APPEND,
    "create": _CREATE,
    "delete": _DELETE,
    "read_refresh": _READ_REFRESH,
    "set_title": _SET_TITLE,
    "page": _PAGE,
}


# ---------------------------------------------------------------------------
# Clients


def _alias() -> str:
    return conf.CACHE_ALIAS


_cached_client: redis.Redis | None = None


def _forget_client(**kwargs: Any) -> None:
    global _cached_client
    _cached_client = None


# override_settings and pytest-django's settings fixture send it; Django's own
# cache handler is rebuilt on the same signal when CACHES changes.
setting_changed.connect(_forget_client, dispatch_uid="chatmemory.store")


def _client() -> redis.Redis:
    # Looking the client up costs more than the rest of a small command's
    # Python side (settings reads, Django's per-context cache lookup,
    # django-redis's client selection), so it is kept, process-wide, until a
    # setting changes. A redis-py client is thread-safe, and django-redis pools
    # connections per server process-wide anyway; ASGI runs each request's sync
    # code in a thread of its own, so a per-thread cache would never hit there.
    global _cached_client
    if _cached_client is not None:
        return _cached_client
    alias = _alias()
    caches_setting = settings.CACHES
    from django_redis import get_redis_connection

    if alias not in caches_setting:
        raise ImproperlyConfigured(
            f"CHATMEMORY_CACHE_ALIAS is {alias!r}, which is not in CACHES "
            "(run 'manage.py check' for details)"
        )
    try:
        client: redis.Redis = get_redis_connection(alias)
    except NotImplementedError:
        raise ImproperlyConfigured(
            f"CACHES[{alias!r}] is not a django-redis cache with its default "
            "client (run 'manage.py check' for details)"
        ) from None
    _cached_client = client
    return client


_sync_scripts: dict[tuple[int, str], Script] = {}


def _script(client: redis.Redis, name: str) -> Script:
    # Script objects cache the SHA; EVALSHA falls back to loading on NOSCRIPT.
    key = (id(client), name)
    script = _sync_scripts.get(key)
    if script is None or script.registered_client is not client:
        script = _sync_scripts[key] = client.register_script(_SCRIPTS[name])
    return script


def _location(alias: str) -> tuple[str, dict[str, Any]]:
    """The first server URL and the redis-py keyword arguments of a CACHES entry."""
    cache = cast("dict[str, Any]", settings.CACHES[alias])
    location = cache.get("LOCATION", "")
    if isinstance(location, str):
        location = location.split(",")
    url = str(location[0]).strip()
    options = cache.get("OPTIONS", {})
    kwargs: dict[str, Any] = dict(options.get("CONNECTION_POOL_KWARGS", {}))
    for option, kwarg in (
        ("PASSWORD", "password"),
        ("USERNAME", "username"),
        ("SOCKET_TIMEOUT", "socket_timeout"),
        ("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout"),
    ):
        if option in options:
            kwargs[kwarg] = options[option]
    return url, kwargs


_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, str], redis.asyncio.Redis]
] = weakref.WeakKeyDictionary()


def _aclient() -> redis.asyncio.Redis:
    """The async client of the alias for the running event loop."""
    alias = _alias()
    if alias not in settings.CACHES:
        _client()  # raises the same ImproperlyConfigured as the sync path
    url, kwargs = _location(alias)
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    key = (alias, url, repr(sorted(kwargs.items())))
    client = clients.get(key)
    if client is None:
        client = clients[key] = redis.asyncio.Redis.from_url(url, **kwargs)
    return client


_async_scripts: weakref.WeakKeyDictionary[
    redis.asyncio.Redis, dict[str, AsyncScript]
] = weakref.WeakKeyDictionary()


def _ascript(client: redis.asyncio.Redis, name: str) -> AsyncScript:
    scripts = _async_scripts.setdefault(client, {})
    script = scripts.get(name)
    if script is None:
        script = scripts[name] = client.register_script(_SCRIPTS[name])
    return script


def _address(client: redis.Redis | redis.asyncio.Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextmanager
def _unavailable_as_error(client: redis.Redis | redis.asyncio.Redis) -> Iterator[None]:
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(
            _alias(), _address(client), str(exc) or repr(exc)
        ) from exc


# ---------------------------------------------------------------------------
# Operations: one function builds the call, one parses the answer; the sync and
# async entry points below only differ in how they run the call.


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _ttl_ms() -> int:
    ttl = conf.TTL
    return int(ttl * 1000) if ttl else 0


def _append_call(
    session_id: str, records: Sequence[Record], owner: str | None
) -> tuple[list[str], list[Any]]:
    validate_session_id(session_id)
    # The keys of messages_key(), meta_key(), sessions_key(), ids_key() and
    # owner_key_prefix(), reading the prefix setting once instead of five times
    # (a settings read costs microseconds, more when the setting is not set).
    prefix = conf.KEY_PREFIX
    session = f"{prefix}:{{{_escape(session_id)}}}"
    keys = [
        f"{session}:messages",
        f"{session}:meta",
        f"{prefix}:sessions",
        f"{prefix}:session-ids",
    ]
    args: list[Any] = [
        session_id,
        _now_ms(),
        _ttl_ms(),
        conf.MAX_MESSAGES or 0,
        title_from_records(records),
        "" if owner is None else str(owner),
        f"{prefix}:owner:",
    ]
    # encode_record's JSON, with one encoder for the whole call instead of one
    # per record (json.dumps builds one per call).
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    if not _ORJSON:
        args.extend([encode(record).encode() for record in records])
        return keys, args
    # orjson writes the same compact UTF-8 JSON (floats may be spelt
    # differently) more than ten times faster, but writes NaN and infinities
    # as null: its bytes are kept only when they read back as the record.
    # Whatever it refuses (ints past 64 bits, non-str keys, subclasses, dates,
    # dataclasses) goes to json, which then writes or rejects it as before.
    dumps, loads = orjson.dumps, orjson.loads
    option = (
        orjson.OPT_PASSTHROUGH_SUBCLASS
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    for record in records:
        try:
            data = dumps(record, option=option)
        except TypeError:  # orjson.JSONEncodeError: a value it will not write
            data = None
        if data is None or loads(data) != record:
            data = encode(record).encode()
        args.append(data)
    return keys, args


def _read_call(session_id: str) -> tuple[str, list[str], list[Any]] | None:
    """The refresh script's call, or None when a plain LRANGE will do."""
    validate_session_id(session_id)
    ttl = _ttl_ms()
    if not (ttl and conf.REFRESH_TTL_ON_READ):
        return None
    keys = [messages_key(session_id), meta_key(session_id), sessions_key()]
    return "read_refresh", keys, [session_id, _now_ms(), ttl, owner_key_prefix()]


def _delete_call(session_id: str) -> tuple[list[str], list[Any]]:
    validate_session_id(session_id)
    keys = [messages_key(session_id), meta_key(session_id), sessions_key(), ids_key()]
    return keys, [session_id, owner_key_prefix()]


def _parse_info(session_id: str, meta: dict[bytes, bytes], pttl: int) -> SessionInfo:
    def millis(field: bytes) -> datetime:
        return datetime.fromtimestamp(int(meta.get(field, b"0")) / 1000, tz=UTC)

    owner = meta.get(b"owner")
    updated = millis(b"updated")
    return SessionInfo(
        session_id=session_id,
        title=meta.get(b"title", b"").decode(),
        owner=None if owner is None else owner.decode(),
        message_count=int(meta.get(b"count", b"0")),
        created=millis(b"created"),
        updated=updated,
        last_activity=updated,
        expires_in=timedelta(milliseconds=pttl) if pttl >= 0 else None,
    )


# --- sync ------------------------------------------------------------------


def read_records(session_id: str) -> list[Record | UnreadableEntry]:
    """Every message record of the session, oldest first. One round trip."""
    call = _read_call(session_id)
    client = _client()
    with _unavailable_as_error(client):
        raw: list[bytes]
        if call is None:
            raw = client.lrange(messages_key(session_id), 0, -1)  # type: ignore[assignment]
        else:
            name, keys, args = call
            raw = _script(client, name)(keys=keys, args=args, client=client)
    return decode_records(raw)


def append_records(
    session_id: str, records: Sequence[Record], *, owner: str | None = None
) -> int:
    """Append records atomically, in one round trip; return the session's count.

    Also trims to ``CHATMEMORY_MAX_MESSAGES``, sets the metadata (the title and
    owner only if not set yet), restarts the TTL and updates the indexes.
    """
    if not records:
        validate_session_id(session_id)
        return 0
    keys, args = _append_call(session_id, records, owner)
    client = _client()
    with _unavailable_as_error(client):
        return int(_script(client, "append")(keys=keys, args=args, client=client))


def create_session(
    session_id: str, *, owner: str | None = None, title: str = ""
) -> bool:
    """Create an empty session; False if it exists already."""
    validate_session_id(session_id)
    keys = [messages_key(session_id), meta_key(session_id), sessions_key(), ids_key()]
    args: list[Any] = [
        session_id,
        _now_ms(),
        _ttl_ms(),
        shorten(title, TITLE_LENGTH),
        "" if owner is None else str(owner),
        owner_key_prefix(),
    ]
    client = _client()
    with _unavailable_as_error(client):
        return bool(_script(client, "create")(keys=keys, args=args, client=client))


def set_title(session_id: str, title: str) -> bool:
    """Rename a session; False if it does not exist."""
    validate_session_id(session_id)
    client = _client()
    with _unavailable_as_error(client):
        return bool(
            _script(client, "set_title")(
                keys=[meta_key(session_id)],
                args=[shorten(" ".join(title.split()), TITLE_LENGTH)],
                client=client,
            )
        )


def delete_session(session_id: str) -> bool:
    """Delete the session's messages, metadata and index entries; False if none."""
    keys, args = _delete_call(session_id)
    client = _client()
    with _unavailable_as_error(client):
        return bool(_script(client, "delete")(keys=keys, args=args, client=client))


def get_session(session_id: str) -> SessionInfo | None:
    """The session's metadata, or None when it does not exist."""
    validate_session_id(session_id)
    client = _client()
    with _unavailable_as_error(client):
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(meta_key(session_id))
        pipe.pttl(meta_key(session_id))
        meta, pttl = pipe.execute()
    return _parse_info(session_id, meta, pttl) if meta else None


def get_sessions(session_ids: Sequence[str]) -> list[SessionInfo]:
    """The metadata of existing sessions among ``session_ids``, in that order.

    One round trip. Ids whose metadata vanished (expired, deleted behind our
    back) are dropped here and removed from the indexes.
    """
    if not session_ids:
        return []
    client = _client()
    with _unavailable_as_error(client):
        pipe = client.pipeline(transaction=False)
        for session_id in session_ids:
            pipe.hgetall(meta_key(session_id))
            pipe.pttl(meta_key(session_id))
        replies = pipe.execute()
        infos: list[SessionInfo] = []
        ghosts: list[str] = []
        for i, session_id in enumerate(session_ids):
            meta, pttl = replies[2 * i], replies[2 * i + 1]
            if meta:
                infos.append(_parse_info(session_id, meta, pttl))
            else:
                ghosts.append(session_id)
        if ghosts:
            _drop_from_indexes(client, ghosts)
    return infos


def _drop_from_indexes(client: redis.Redis, session_ids: Sequence[str]) -> None:
    # Owner indexes of ghosts are unknown (their meta is gone); they are pruned
    # when that owner's listing meets them.
    pipe = client.pipeline(transaction=False)
    pipe.zrem(sessions_key(), *session_ids)
    pipe.zrem(ids_key(), *session_ids)
    pipe.execute()


def list_sessions(
    *,
    owner: str | None = None,
    offset: int = 0,
    limit: int = 25,
    active_since: datetime | None = None,
) -> SessionPage:
    """Sessions by last activity, newest first: all of them, or one owner's.

    Costs two round trips and work proportional to ``limit``, whatever the
    number of sessions (plus removing entries that expired since last time).
    """
    index = sessions_key() if owner is None else owner_key(str(owner))
    low = "-inf" if active_since is None else int(active_since.timestamp() * 1000)
    ttl = _ttl_ms()
    args = [
        _now_ms() - ttl if ttl else 0,
        1 if owner is None else 0,
        low,
        offset,
        limit,
    ]
    client = _client()
    with _unavailable_as_error(client):
        total, *raw_ids = _script(client, "page")(
            keys=[index, ids_key()], args=args, client=client
        )
        ids = [raw.decode() for raw in raw_ids]
        infos = get_sessions(ids)
        if owner is not None and len(infos) < len(ids):
            alive = {info.session_id for info in infos}
            client.zrem(index, *(sid for sid in ids if sid not in alive))
    return SessionPage(infos, int(total) - (len(ids) - len(infos)))


def search_session_ids(prefix: str, *, offset: int = 0, limit: int = 25) -> SessionPage:
    """Sessions whose id starts with ``prefix``, in id order.

    Uses the lexicographic index: O(log N + limit). ``total`` is only a lower
    bound (the index cannot count a prefix cheaply): it is ``offset`` plus the
    sessions found, plus one when there is a further page.
    """
    low = b"[" + prefix.encode()
    high = b"[" + prefix.encode() + b"\xff"
    client = _client()
    with _unavailable_as_error(client):
        raw_ids: list[bytes] = client.zrangebylex(  # type: ignore[assignment]
            ids_key(), low, high, start=offset, num=limit + 1
        )
    more = len(raw_ids) > limit
    ids = [raw.decode() for raw in raw_ids[:limit]]
    infos = get_sessions(ids)
    return SessionPage(infos, offset + len(infos) + (1 if more else 0))


# --- async -----------------------------------------------------------------


async def aread_records(session_id: str) -> list[Record | UnreadableEntry]:
    """Async :func:`read_records`."""
    call = _read_call(session_id)
    client = _aclient()
    with _unavailable_as_error(client):
        raw: list[bytes]
        if call is None:
            # decode_responses is off: redis-py's str | bytes is always bytes here.
            raw = cast(
                "list[bytes]", await client.lrange(messages_key(session_id), 0, -1)
            )
        else:
            name, keys, args = call
            raw = await _ascript(client, name)(keys=keys, args=args)
    return decode_records(raw)


async def aappend_records(
    session_id: str, records: Sequence[Record], *, owner: str | None = None
) -> int:
    """Async :func:`append_records`."""
    if not records:
        validate_session_id(session_id)
        return 0
    keys, args = _append_call(session_id, records, owner)
    client = _aclient()
    with _unavailable_as_error(client):
        return int(await _ascript(client, "append")(keys=keys, args=args))


async def adelete_session(session_id: str) -> bool:
    """Async :func:`delete_session`."""
    keys, args = _delete_call(session_id)
    client = _aclient()
    with _unavailable_as_error(client):
        return bool(await _ascript(client, "delete")(keys=keys, args=args))


async def aget_session(session_id: str) -> SessionInfo | None:
    """Async :func:`get_session`."""
    validate_session_id(session_id)
    client = _aclient()
    with _unavailable_as_error(client):
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(meta_key(session_id))
        pipe.pttl(meta_key(session_id))
        meta, pttl = await pipe.execute()
    return _parse_info(session_id, meta, pttl) if meta else None


def check_connection() -> None:
    """Ping the alias's Redis; raise StoreUnavailable when it does not answer."""
    client = _client()
    with _unavailable_as_error(client):
        client.ping()


async def aclose_clients() -> None:
    """Close the async Redis clients of the running event loop.

    Call it before closing an event loop that used chatmemory's async API
    (an ASGI server's loop lives as long as the process and needs nothing).
    """
    clients = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


def _reset_async_clients() -> None:
    """Forget the async clients (tests use it after changing CACHES)."""
    _async_clients.clear()


# --- maintenance -----------------------------------------------------------

_UNESCAPES = {"%25": "%", "%7B": "{", "%7D": "}"}


def _unescape(escaped: str) -> str:
    return re.sub("%(25|7B|7D)", lambda m: _UNESCAPES[m.group(0)], escaped)


def rebuild_indexes(*, batch: int = 1000) -> int:
    """Rebuild every index from the sessions' metadata; return the sessions found.

    The indexes are derived data; use this after restoring a backup, or if
    something wrote session keys without going through chatmemory. It scans the
    whole database, so its cost is proportional to the number of keys. The new
    indexes replace the old ones in one transaction.
    """
    prefix = conf.KEY_PREFIX
    pattern = re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":{*}:meta"
    head, tail = f"{prefix}:{{", "}:meta"
    client = _client()
    with _unavailable_as_error(client):
        activity: dict[str, int] = {}
        owners: dict[str, dict[str, int]] = {}
        keys = [k.decode() for k in client.scan_iter(match=pattern, count=batch)]
        for start in range(0, len(keys), batch):
            chunk = keys[start : start + batch]
            pipe = client.pipeline(transaction=False)
            for key in chunk:
                pipe.hmget(key, "updated", "owner")
            for key, (updated, owner) in zip(chunk, pipe.execute(), strict=True):
                if not (key.startswith(head) and key.endswith(tail)) or updated is None:
                    continue
                session_id = _unescape(key[len(head) : -len(tail)])
                activity[session_id] = int(updated)
                if owner is not None:
                    owners.setdefault(owner.decode(), {})[session_id] = int(updated)
        old_owner_keys = list(
            client.scan_iter(match=pattern.replace(":{*}:meta", ":owner:*"))
        )
        pipe = client.pipeline(transaction=True)
        pipe.delete(sessions_key(), ids_key(), *old_owner_keys)
        items = list(activity.items())
        for start in range(0, len(items), batch):
            part = dict(items[start : start + batch])
            pipe.zadd(sessions_key(), part)
            pipe.zadd(ids_key(), dict.fromkeys(part, 0))
        for owner, sessions in owners.items():
            pipe.zadd(owner_key(owner), sessions)
        pipe.execute()
    return len(activity)


# --- added for admin -------------------------------------------------------


def read_session(
    session_id: str,
) -> tuple[SessionInfo | None, list[Record | UnreadableEntry]]:
    """The session's metadata and every record, in one round trip.

    Unlike :func:`read_records` it never restarts the TTL: looking at a
    session in the admin must not keep it alive. The metadata is None when the
    session does not exist.
    """
    validate_session_id(session_id)
    client = _client()
    with _unavailable_as_error(client):
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(meta_key(session_id))
        pipe.pttl(meta_key(session_id))
        pipe.lrange(messages_key(session_id), 0, -1)
        meta, pttl, raw = pipe.execute()
    info = _parse_info(session_id, meta, pttl) if meta else None
    return info, decode_records(raw)


def count_owner_sessions(owners: Sequence[str]) -> dict[str, int]:
    """How many sessions each owner's index holds, in one round trip.

    The counts may include sessions that expired since their owner's listing
    last ran; owners with none are left out.
    """
    if not owners:
        return {}
    client = _client()
    with _unavailable_as_error(client):
        pipe = client.pipeline(transaction=False)
        for owner in owners:
            pipe.zcard(owner_key(str(owner)))
        counts = pipe.execute()
    return {
        str(owner): int(count)
        for owner, count in zip(owners, counts, strict=True)
        if count
    }


@dataclass(frozen=True, slots=True)
class ImportedSession:
    """One whole session for :func:`import_sessions`."""

    session_id: str
    records: Sequence[Record]
    owner: str | None = None
    created: datetime | None = None
    """Defaults to ``updated``."""
    updated: datetime | None = None
    """The last activity; defaults to now."""
    title: str | None = None
    """Defaults to the first human message, as for :func:`append_records`."""


_IMPORT = """
-- Write whole sessions (see import_sessions).
-- KEYS: sessions, ids
-- ARGV: owner key prefix, then per session: session id, messages key, meta key,
--       created, updated, title, owner ('' none), ttl ms left (0 none),
--       record count n, n records
local function zadd_all(key, pairs)
  -- unpack() has a stack limit: add in slices of 500 members.
  for j = 1, #pairs, 1000 do
    redis.call('ZADD', key, unpack(pairs, j, math.min(j + 999, #pairs)))
  end
end
local activity, ids, owners = {}, {}, {}
local i = 2
while i <= #ARGV do
  local sid, mkey, hkey = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local updated, owner = ARGV[i + 4], ARGV[i + 6]
  local ttl, n = tonumber(ARGV[i + 7]), tonumber(ARGV[i + 8])
  redis.call('DEL', mkey, hkey)
  local first = i + 9
  local j = first
  while j < first + n do
    local k = math.min(j + 999, first + n - 1)
    redis.call('RPUSH', mkey, unpack(ARGV, j, k))
    j = k + 1
  end
  if owner ~= '' then
    redis.call('HSET', hkey, 'created', ARGV[i + 3], 'updated', updated,
               'count', n, 'title', ARGV[i + 5], 'owner', owner)
    local scores = owners[owner]
    if not scores then scores = {}; owners[owner] = scores end
    table.insert(scores, updated); table.insert(scores, sid)
  else
    redis.call('HSET', hkey, 'created', ARGV[i + 3], 'updated', updated,
               'count', n, 'title', ARGV[i + 5])
  end
  if ttl > 0 then
    if n > 0 then redis.call('PEXPIRE', mkey, ttl) end
    redis.call('PEXPIRE', hkey, ttl)
  end
  table.insert(activity, updated); table.insert(activity, sid)
  table.insert(ids, 0); table.insert(ids, sid)
  i = first + n
end
zadd_all(KEYS[1], activity)
zadd_all(KEYS[2], ids)
for owner, scores in pairs(owners) do zadd_all(ARGV[1] .. owner, scores) end
return 1
"""
_SCRIPTS["import"] = _IMPORT


def import_sessions(
    sessions: Iterable[ImportedSession], *, batch_size: int = 1000
) -> int:
    """Write whole sessions in batches; return how many were written.

    Meant for loading many sessions into a fresh prefix (imports, benchmarks,
    tests): each session replaces any session of the same id, but the owner
    index of a replaced session's former owner is not cleaned. The keys and
    indexes are the ones :func:`append_records` writes (the messages are cut
    to ``CHATMEMORY_MAX_MESSAGES``); with a TTL, a session whose last activity
    is older than the TTL is skipped, and the others expire TTL after their
    last activity. Each batch is one script call (atomic, one round trip);
    the import as a whole is not atomic.
    """
    ttl = _ttl_ms()
    now = _now_ms()
    cap = conf.MAX_MESSAGES or 0
    client = _client()
    script = _script(client, "import")
    keys = [sessions_key(), ids_key()]
    prefix = conf.KEY_PREFIX
    written = 0
    args: list[Any] = [owner_key_prefix()]
    in_batch = 0
    for session in sessions:
        session_id = validate_session_id(session.session_id)
        updated = now if session.updated is None else _ms(session.updated)
        created = updated if session.created is None else _ms(session.created)
        left = updated + ttl - now if ttl else 0
        if ttl and left <= 0:
            continue
        records = list(session.records)[-cap:] if cap else list(session.records)
        title = (
            title_from_records(records)
            if session.title is None
            else shorten(session.title, TITLE_LENGTH)
        )
        # messages_key() and meta_key(), without reading the settings twice
        # per session (a tenth of the import's time)
        tag = f"{prefix}:{{{_escape(session_id)}}}:"
        args += (
            session_id,
            tag + "messages",
            tag + "meta",
            created,
            updated,
            title,
            "" if session.owner is None else str(session.owner),
            left,
            len(records),
        )
        args += map(encode_record, records)
        written += 1
        in_batch += 1
        if in_batch >= batch_size:
            with _unavailable_as_error(client):
                script(keys=keys, args=args, client=client)
            args, in_batch = [owner_key_prefix()], 0
    if in_batch:
        with _unavailable_as_error(client):
            script(keys=keys, args=args, client=client)
    return written


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


__all__ = [
    "Record",
    "SessionInfo",
    "SessionPage",
    "UnreadableEntry",
    "aappend_records",
    "aclose_clients",
    "adelete_session",
    "aget_session",
    "append_records",
    "aread_records",
    "check_connection",
    "count_owner_sessions",
    "create_session",
    "delete_session",
    "get_session",
    "get_sessions",
    "import_sessions",
    "ImportedSession",
    "list_sessions",
    "read_records",
    "read_session",
    "search_session_ids",
    "set_title",
    "validate_session_id",
]
