"""Connections to the Redis of the ``CHATMEMORY_CACHE_ALIAS`` cache.

The sync path uses django-redis's own client for the alias
(``django_redis.get_redis_connection``); the async path builds a
``redis.asyncio`` client from the same CACHES entry, one per event loop.
Redis errors leave this package as :class:`~chatmemory.exceptions.ChatMemoryError`
subclasses (see :func:`translate_errors`).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import redis
import redis.asyncio
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

from ..conf import conf
from ..exceptions import StoreUnavailable

_cached_client: redis.Redis | None = None


def _forget_client(**kwargs: Any) -> None:
    global _cached_client
    _cached_client = None


# override_settings and pytest-django's settings fixture send it; Django's own
# cache handler is rebuilt on the same signal when CACHES changes.
setting_changed.connect(_forget_client, dispatch_uid="chatmemory.store.client")


def alias() -> str:
    """The CACHES alias chat data lives on."""
    return conf.CACHE_ALIAS


def sync_client() -> redis.Redis:
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
        client: redis.Redis = get_redis_connection(name)
    except NotImplementedError:
        raise ImproperlyConfigured(
            f"CACHES[{name!r}] is not a django-redis cache with its default "
            "client (run 'manage.py check' for details)"
        ) from None
    _cached_client = client
    return client


def is_cluster() -> bool:
    """Whether the alias's Redis is a Redis Cluster (index keys in other slots)."""
    return isinstance(sync_client(), redis.RedisCluster)


def location(name: str) -> tuple[str, dict[str, Any]]:
    """The first server URL and the redis-py keyword arguments of a CACHES entry."""
    cache = cast("dict[str, Any]", settings.CACHES[name])
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


_async_clients: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, str], redis.asyncio.Redis]
] = weakref.WeakKeyDictionary()


def async_client() -> redis.asyncio.Redis:
    """The async client of the alias for the running event loop."""
    name = alias()
    if name not in settings.CACHES:
        sync_client()  # raises the same ImproperlyConfigured as the sync path
    url, kwargs = location(name)
    loop = asyncio.get_running_loop()
    clients = _async_clients.setdefault(loop, {})
    key = (name, url, repr(sorted(kwargs.items())))
    client = clients.get(key)
    if client is None:
        client = clients[key] = redis.asyncio.Redis.from_url(url, **kwargs)
    return client


async def aclose_clients() -> None:
    """Close the async Redis clients of the running event loop.

    Call it before closing an event loop that used chatmemory's async API
    (an ASGI server's loop lives as long as the process and needs nothing).
    """
    clients = _async_clients.pop(asyncio.get_running_loop(), {})
    for client in clients.values():
        await client.aclose()


def reset_async_clients() -> None:
    """Forget the async clients (tests use it after changing CACHES)."""
    _async_clients.clear()


def address(client: redis.Redis | redis.asyncio.Redis) -> str:
    """The server a client talks to, for error messages."""
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"


@contextmanager
def translate_errors(client: redis.Redis | redis.asyncio.Redis) -> Iterator[None]:
    """Turn redis-py's errors into chatmemory's."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise StoreUnavailable(alias(), address(client), str(exc) or repr(exc)) from exc
