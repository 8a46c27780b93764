"""Redis Cluster behind a django-redis cache alias.

django-redis has no cluster client. This connection factory makes the
connection of its default client a redis-py :class:`~redis.cluster.RedisCluster`,
so ``django_redis.get_redis_connection(alias)`` (and with it chatmemory) reaches
every node of the cluster::

    CACHES["chatmemory"] = {
        "BACKEND": "django_redis.cache.RedisCache",
        # Any node of the cluster: the client discovers the others. Several
        # comma-separated URLs are not startup nodes (django-redis would read
        # them as replicas); list extra ones in CLUSTER_STARTUP_NODES.
        "LOCATION": "redis://10.0.0.1:6379",
        "OPTIONS": {
            "CONNECTION_FACTORY": "chatmemory.store.cluster.ClusterConnectionFactory",
        },
    }

The options django-redis's own factory reads (``PASSWORD``, ``USERNAME``,
``SOCKET_TIMEOUT``, ``SOCKET_CONNECT_TIMEOUT``, ``CONNECTION_POOL_KWARGS``) go
to every node's connections; ``CLUSTER_KWARGS`` go to ``RedisCluster`` itself
(for example ``{"require_full_coverage": False}``), and
``CLUSTER_STARTUP_NODES`` (``[("host", port), ...]``) add startup nodes.
A cluster has one database: the URL's database, if any, must be 0.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

from django.core.exceptions import ImproperlyConfigured
from django_redis.pool import ConnectionFactory
from redis.cluster import ClusterNode, RedisCluster

CONNECTION_FACTORY = "chatmemory.store.cluster.ClusterConnectionFactory"
"""The dotted path to give OPTIONS["CONNECTION_FACTORY"]."""


def cluster_kwargs(options: dict[str, Any]) -> dict[str, Any]:
    """redis-py ``RedisCluster`` keyword arguments from a CACHES entry's OPTIONS.

    The sync and the async cluster clients take the same ones.
    """
    kwargs: dict[str, Any] = dict(options.get("CONNECTION_POOL_KWARGS", {}))
    for option, kwarg in (
        ("PASSWORD", "password"),
        ("USERNAME", "username"),
        ("SOCKET_TIMEOUT", "socket_timeout"),
        ("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout"),
    ):
        if options.get(option):
            kwargs[kwarg] = options[option]
    kwargs.update(options.get("CLUSTER_KWARGS", {}))
    return kwargs


def startup_nodes(options: dict[str, Any]) -> list[tuple[str, int]]:
    """The extra startup nodes of OPTIONS["CLUSTER_STARTUP_NODES"]."""
    nodes = options.get("CLUSTER_STARTUP_NODES", [])
    try:
        return [(str(host), int(port)) for host, port in nodes]
    except (TypeError, ValueError):
        raise ImproperlyConfigured(
            "OPTIONS['CLUSTER_STARTUP_NODES'] must be a list of (host, port) pairs, "
            f"not {nodes!r}"
        ) from None


class ClusterConnectionFactory(ConnectionFactory):  # type: ignore[misc]
    """A django-redis connection factory whose connections are ``RedisCluster``.

    Use it as ``OPTIONS["CONNECTION_FACTORY"]`` of a django-redis cache with its
    default client. One ``RedisCluster`` (which pools connections per node) is
    kept per URL and options for the whole process, as django-redis keeps its
    connection pools: Django builds a new cache client per request.
    """

    _clusters: ClassVar[dict[str, RedisCluster]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def connect(self, url: str) -> RedisCluster:
        """The process-wide cluster client of this URL and these options."""
        kwargs = cluster_kwargs(self.options)
        nodes = startup_nodes(self.options)
        key = repr((url, sorted(kwargs.items()), nodes))
        cluster = self._clusters.get(key)
        if cluster is not None:
            return cluster
        with self._lock:
            cluster = self._clusters.get(key)
            if cluster is None:
                cluster = RedisCluster(
                    url=url,
                    startup_nodes=[
                        ClusterNode(host, port)  # type: ignore[no-untyped-call]
                        for host, port in nodes
                    ],
                    **kwargs,
                )
                self._clusters[key] = cluster
        return cluster

    def disconnect(self, connection: RedisCluster) -> None:
        """Close the connections to every node (they reopen when next used)."""
        connection.disconnect_connection_pools()  # type: ignore[no-untyped-call]
