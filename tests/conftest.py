from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from django.contrib.auth.models import AbstractBaseUser, User
from django.test import Client, override_settings

from chatmemory import store
from tests.admin_helpers import client_for, make_user
from tests.topologies import test_topology

# The browser tests' shared fixtures (one Chromium per module).
pytest_plugins = ["tests.browser"]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    """A plain client on the tests' chatmemory database (for asserting on keys).

    A ``redis.Redis`` on the master, or a ``RedisCluster`` on a cluster.
    """
    client = test_topology().client()
    yield client
    client.close()


@pytest.fixture(autouse=True)
def key_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """Give each test its own key prefix, and delete only its keys afterwards.

    The tests never flush a database: with CHATMEMORY_TEST_REDIS_URL they may be
    running against a server that holds someone else's data.
    """
    prefix = f"cmtest-{uuid.uuid4().hex[:12]}"
    with override_settings(CHATMEMORY_KEY_PREFIX=prefix):
        yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 1000):
        redis_client.delete(*keys[start : start + 1000])


@pytest.fixture(autouse=True)
async def close_async_redis_clients() -> AsyncIterator[None]:
    """Close the async Redis clients a test opened, before its event loop closes.

    Without it, a client outlives its loop and warns of unclosed connections.
    """
    yield
    await store.aclose_clients()


@pytest.fixture
def alice(django_user_model: Any) -> AbstractBaseUser:
    """A user (not staff) of the chat views."""
    user: AbstractBaseUser = django_user_model.objects.create_user(
        "alice", password="pw"
    )
    return user


@pytest.fixture
def alice_client(alice: AbstractBaseUser) -> Client:
    """A client logged in as ``alice``."""
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def admin_user() -> User:
    """A superuser (the admin tests' own, in place of pytest-django's)."""
    return make_user("root", staff=True, superuser=True)


@pytest.fixture
def admin_client(admin_user: User) -> Client:
    """A client logged in as ``admin_user``."""
    return client_for(admin_user)
