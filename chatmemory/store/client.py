"""Connections to the Redis of the ``CHATMEMORY_CACHE_ALIAS`` cache.

The alias may reach one server, a Sentinel-managed master or a Redis Cluster
(see :func:`topology`). The sync path uses django-redis's own client for the
alias (``django_redis.get_redis_connection``: a ``redis.Redis``, or a
``RedisCluster`` through :mod:`chatmemory.store.cluster`); the async path builds
the matching ``redis.asyncio`` client from the same CACHES entry, one per event
loop: ``Redis`` (with a blocking pool: a busy pool waits for a free
connection), a Sentinel's ``master_for`` client, or ``RedisCluster``; a loop's
clients are closed when it shuts down. Redis errors leave this package as
:class:`~chatmemory.exceptions.StoreUnavailable` subclasses (see
:func:`translate_errors`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any, NoReturn, cast

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.sentinel
import redis.cluster
import redis.exceptions
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.utils.module_loading import import_string
from redis.connection import HiredisRespSerializer, parse_url
from redis.utils import HIREDIS_AVAILABLE

from .. import exceptions as exc_
from ..conf import conf

SyncClient = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

SINGLE, SENTINEL, CLUSTER = "single", "sentinel", "cluster"
SENTINEL_CLIENT = "django_redis.client.SentinelClient"
SENTINEL_FACTORY = "django_redis.pool.SentinelConnectionFactory"
CLUSTER_FACTORY = "chatmemory.store.cluster.ClusterConnectionFactory"

_cached_client: SyncClient | None = None
_cached_topology: str | None = None
_async_key: tuple[object, tuple[str, str]] | None = None
"""The last CACHES entry an async client was looked up for, and its key."""


def _forget_client(**kwargs: Any) -> None:
    global _cached_client, _cached_topology, _async_key
    _cached_client = _cached_topology = _async_key = None


# override_settings and pytest-django's settings fixture send it; Django's own
# cache handler is rebuilt on the same signal when CACHES changes.
setting_changed.connect(_forget_client, dispatch_uid="chatmemory.store.client")


def alias() -> str:
    """The CACHES alias chat data lives on."""
    return conf.CACHE_ALIAS


def sync_client() -> SyncClient:
    """The alias's django-redis client (kept process-wide until a setting changes)."""
    # Looking the client up costs more than the rest of a small command's
    # Python side (settings reads, Django's per-context cache lookup,
    # django-redis's client selection), so it is kept, process-wide, until a
    # setting changes. A redis-py client is thread-safe, and django-redis pools
    # connections per server process-wide anyway; ASGI runs each request's sync
    # code in a thread of its own, so a per-thread cache would never hit there.
    global _cached_client
    if _cached_client is not None:
        return _cached_client
    name = alias()
    from django_redis import get_redis_connection

    if name not in settings.CACHES:
        raise ImproperlyConfigured(
            f"CHATMEMORY_CACHE_ALIAS is {name!r}, which is not in CACHES "
            "(run 'manage.py check' for details)"
        )
    try:
        # A cluster client connects as it is built (it reads the slot map).
        with translate_errors(None):
            client: SyncClient = get_redis_connection(name)
    except NotImplementedError:
        raise ImproperlyConfigured(
            f"CACHES[{name!r}] is not a django-redis cache with its default "
            "client (run 'manage.py check' for details)"
        ) from None
    _cached_client = client
    return client


def topology() -> str:
    """SINGLE, SENTINEL or CLUSTER: what the alias's CACHES entry reaches.

    Read from its configuration (connection factory and client class), never
    from Redis, so the async path need not build the sync client to know.
    """
    global _cached_topology
    if _cached_topology is None:
        name = alias()
        if name not in settings.CACHES:
            sync_client()  # raises the same ImproperlyConfigured as the sync path
        _cached_topology = topology_of(settings.CACHES[name])
    return _cached_topology


def topology_of(cache: dict[str, Any]) -> str:
    """SINGLE, SENTINEL or CLUSTER for one CACHES entry (see :func:`topology`)."""
    options = cache.get("OPTIONS", {})
    factory = options.get("CONNECTION_FACTORY") or getattr(
        settings, "DJANGO_REDIS_CONNECTION_FACTORY", None
    )
    if is_class(factory, SENTINEL_FACTORY) or is_class(
        options.get("CLIENT_CLASS"), SENTINEL_CLIENT
    ):
        return SENTINEL
    if is_class(factory, CLUSTER_FACTORY):
        return CLUSTER
    return SINGLE


def is_class(dotted: object, path: str, *, exact: bool = False) -> bool:
    """Whether ``dotted`` names the class at ``path`` (or, unless exact, a subclass)."""
    if not dotted:
        return False
    if dotted == path:
        return True
    try:
        cls = import_string(dotted) if isinstance(dotted, str) else dotted
        base = import_string(path)
    except ImportError:  # a typo names no class
        return False
    if not isinstance(cls, type):
        return False
    return cls is base if exact else issubclass(cls, base)


def is_cluster() -> bool:
    """Whether the alias's Redis is a Redis Cluster (index keys in other slots)."""
    return topology() == CLUSTER


def location(name: str) -> tuple[str, dict[str, Any]]:
    """The first server URL and the redis-py keyword arguments of a CACHES entry."""
    return location_of(cast("dict[str, Any]", settings.CACHES[name]))


def location_of(cache: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The first server URL and the redis-py keyword arguments of a CACHES entry."""
    where = cache.get("LOCATION", "")
    if isinstance(where, str):
        where = where.split(",")
    url = str(where[0]).strip()
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


# Each event loop's clients, keyed by CACHES entry. A client holds its loop (its
# connections' streams do), so this must not be what keeps a loop alive: the
# clients are closed and dropped by a hook that runs while the loop shuts down
# (see _close_with_loop), and entries of loops closed without that step are
# dropped when the next loop asks for a client.
_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str], AsyncClient]
] = weakref.WeakKeyDictionary()
_keepers: dict[int, Any] = {}

DEFAULT_MAX_CONNECTIONS = 100
"""Async connections per event loop when CONNECTION_POOL_KWARGS does not say."""
DEFAULT_POOL_TIMEOUT = 20.0
"""Seconds a call waits for a free pooled connection when the pool is busy."""


def pool_timeout() -> float:
    """Seconds a call waits for a free pooled connection when the pool is busy.

    The alias's ``CONNECTION_POOL_KWARGS['timeout']``, else
    :data:`DEFAULT_POOL_TIMEOUT`.
    """
    cache = cast("dict[str, Any]", settings.CACHES.get(alias(), {}))
    pool_kwargs = cache.get("OPTIONS", {}).get("CONNECTION_POOL_KWARGS", {})
    return float(pool_kwargs.get("timeout", DEFAULT_POOL_TIMEOUT))


async def _close_with_loop(
    loop: asyncio.AbstractEventLoop, clients: dict[tuple[str, str], Any]
) -> AsyncIterator[None]:
    # An async generator suspended at its yield is closed by the loop's
    # shutdown_asyncgens(), which asyncio.run(), asyncio.Runner and asgiref's
    # async_to_sync all call before closing the loop: that is the last moment
    # the clients' connections can still be closed cleanly on their own loop.
    try:
        yield
    finally:
        _async_clients.pop(loop, None)
        _keepers.pop(id(loop), None)
        if not loop.is_closed():
            for client in list(clients.values()):
                await _aclose(client)


def _watch(loop: asyncio.AbstractEventLoop, clients: dict[Any, Any]) -> None:
    keeper = _close_with_loop(loop, clients)
    # The loop's firstiter hook registers the generator on its first step.
    step = cast("Coroutine[Any, Any, None]", keeper.__anext__())
    with suppress(StopIteration):
        step.send(None)
    _keepers[id(loop)] = keeper


def _forget_closed_loops() -> None:
    # A loop closed without shutdown_asyncgens() (a hand-run loop): its clients
    # cannot be closed on it any more; dropping them lets the garbage collector
    # close their sockets. The keeper is finished by hand, so that it is not
    # handed to the closed loop's finalizer.
    for loop in [loop for loop in _async_clients if loop.is_closed()]:
        keeper = _keepers.get(id(loop))
        if keeper is None:
            _async_clients.pop(loop, None)
            continue
        with suppress(StopIteration):
            keeper.aclose().send(None)


def _new_async_client(url: str, kwargs: dict[str, Any]) -> redis.asyncio.Redis:
    kwargs = dict(kwargs)
    max_connections = kwargs.pop("max_connections", DEFAULT_MAX_CONNECTIONS)
    timeout = kwargs.pop("timeout", DEFAULT_POOL_TIMEOUT)
    kwargs.pop("connection_pool_class", None)
    pool = redis.asyncio.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout, **kwargs
    )
    _pack_with_hiredis(pool)
    return redis.asyncio.Redis.from_pool(pool)  # the client owns (closes) the pool


def _pack_with_hiredis(pool: redis.asyncio.ConnectionPool) -> None:
    """Make the pool's connections pack commands with hiredis, as sync ones do.

    redis-py's async connections encode every argument in Python (an append
    sends twenty-odd); its sync connections hand them to hiredis, which writes
    the same bytes (str as UTF-8, numbers as text) in one call.
    """
    if HIREDIS_AVAILABLE:
        pool.connection_class = _hiredis_packing(pool.connection_class)


_packing_classes: dict[type[Any], type[Any]] = {}


def _hiredis_packing(base: type[Any]) -> type[Any]:
    known = _packing_classes.get(base)
    if known is not None:
        return known
    pack = HiredisRespSerializer().pack

    class HiredisPacking(base):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            result: list[bytes] = pack(*args)
            return result

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"Hiredis{base.__name__}"
    _packing_classes[base] = HiredisPacking
    return HiredisPacking


def async_client() -> AsyncClient:
    """The async client of the alias for the running event loop.

    It lives as long as the loop: it is closed while the loop shuts down.
    """
    name = alias()
    if name not in settings.CACHES:
        sync_client()  # raises the same ImproperlyConfigured as the sync path
    cache = cast("dict[str, Any]", settings.CACHES[name])
    loop = asyncio.get_running_loop()
    clients = _async_clients.get(loop)
    if clients is None:
        _forget_closed_loops()
        clients = _async_clients[loop] = {}
        _watch(loop, clients)
    global _async_key
    # The entry's text names its clients (a test may put another entry under
    # the same alias); worked out once per entry, not per call.
    known = _async_key
    if known is not None and known[0] is cache and known[1][0] == name:
        key = known[1]
    else:
        key = (name, repr(cache))
        _async_key = (cache, key)
    client = clients.get(key)
    if client is None:
        client = clients[key] = new_async_client(cache)
    return client


def new_async_client(cache: dict[str, Any]) -> AsyncClient:
    """A ``redis.asyncio`` client reaching what the CACHES entry reaches."""
    url, kwargs = location_of(cache)
    options = cache.get("OPTIONS", {})
    kind = topology_of(cache)
    if kind == CLUSTER:
        from .cluster import cluster_kwargs, startup_nodes

        node = redis.asyncio.cluster.ClusterNode
        return redis.asyncio.cluster.RedisCluster.from_url(
            url,
            startup_nodes=[node(host, port) for host, port in startup_nodes(options)],
            **cluster_kwargs(options),
        )
    if kind == SENTINEL:
        # As django-redis's SentinelConnectionFactory does: the URL's host is
        # the service name and its path the database; the connection options
        # go to the sentinels too unless SENTINEL_KWARGS are given. The pool
        # asks the sentinels for the master at each new connection, so after a
        # failover the next connection reaches the new master.
        params = parse_url(url)  # type: ignore[no-untyped-call]
        service = params.pop("host")
        params.pop("port", None)
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            options.get("SENTINELS", []),
            sentinel_kwargs=options.get("SENTINEL_KWARGS"),
            **kwargs,
        )
        client: redis.asyncio.Redis = sentinel.master_for(service, **params)
        _pack_with_hiredis(client.connection_pool)
        return client
    return _new_async_client(url, kwargs)


async def aclose_clients() -> None:
    """Close the async Redis clients of the running event loop now.

    Not needed for correctness: a loop's clients are closed when it shuts
    down (``asyncio.run``, ``async_to_sync``, an ASGI server's exit).
    """
    clients = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await _aclose(client)


async def _aclose(client: AsyncClient) -> None:
    await client.aclose()
    # A Sentinel-managed client's pool holds the sentinels' clients too.
    manager = getattr(
        getattr(client, "connection_pool", None), "sentinel_manager", None
    )
    for sentinel in getattr(manager, "sentinels", ()):
        await sentinel.aclose()


def reset_async_clients() -> None:
    """Forget the async clients (tests use it after changing CACHES)."""
    _async_clients.clear()


def address(client: SyncClient | AsyncClient | None) -> str:
    """The server a client talks to, for error messages."""
    if client is None or isinstance(
        client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster
    ):
        url, _ = location(alias())
        return f"Redis Cluster via {url}" if topology() == CLUSTER else url
    pool = client.connection_pool
    service = getattr(pool, "service_name", None)
    if service is not None:
        return f"the master of Sentinel service {service!r}"
    kwargs = pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


def _translated(exc: redis.RedisError) -> type[exc_.StoreUnavailable]:
    """The chatmemory error class for a redis-py error."""
    text = str(exc)
    if isinstance(exc, redis.exceptions.MaxConnectionsError) or (
        isinstance(exc, redis.ConnectionError)
        and text.startswith("No connection available")
    ):
        return exc_.PoolExhausted
    if isinstance(exc, redis.TimeoutError):
        return exc_.StoreTimeout
    if isinstance(
        exc,
        redis.ConnectionError
        # Cluster: slots without a live master (a failover in progress), a
        # resharding step.
        | redis.exceptions.ClusterError
        | redis.exceptions.TryAgainError,
    ):
        return exc_.StoreUnavailable
    # A script relays the error of the command that failed inside it, as
    # "<CODE> ..." or "ERR ... <CODE> ..." depending on the server version.
    if isinstance(exc, redis.exceptions.OutOfMemoryError) or "OOM " in text:
        return exc_.StoreFull
    if isinstance(exc, redis.ReadOnlyError) or "READONLY" in text:
        return exc_.StoreReadOnly
    if isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in text:
        return exc_.StorePermissionDenied
    if isinstance(exc, redis.exceptions.NoScriptError) or "unknown command" in text:
        return exc_.StoreCommandUnavailable
    return exc_.StoreError


REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)
"""What redis-py raises (a Cluster client's own errors are not RedisErrors)."""


def translated(exc: Exception, client: SyncClient | AsyncClient | None) -> Exception:
    """The chatmemory error (a StoreUnavailable) for a redis-py error; ``exc``
    itself when it is not one to translate (raise it as it is)."""
    if isinstance(exc, redis.RedisError):
        return _translated(exc)(alias(), address(client), str(exc) or repr(exc))
    if isinstance(exc, redis.exceptions.SlotNotCoveredError):
        return exc_.StoreUnavailable(alias(), address(client), str(exc))
    # No node of the cluster answered (redis-py wraps the connection error).
    cause = exc.__cause__
    if isinstance(exc, redis.exceptions.RedisClusterException) and isinstance(
        cause, redis.ConnectionError | redis.TimeoutError
    ):
        return _translated(cause)(alias(), address(client), str(exc))
    return exc


def raise_translated(
    exc: Exception, client: SyncClient | AsyncClient | None
) -> NoReturn:
    """Raise the chatmemory error for ``exc`` (see :func:`translated`)."""
    error = translated(exc, client)
    if error is exc:
        raise exc
    raise error from exc


@contextmanager
def translate_errors(client: SyncClient | AsyncClient | None) -> Iterator[None]:
    """Turn every redis-py error into a chatmemory one (see :func:`translated`)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise_translated(exc, client)
