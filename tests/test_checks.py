"""Every configuration check id, and proof that the checks are registered."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings

from chatmemory.checks import check_chat_model, check_settings

REDIS = {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": "redis://x:1/0"}
LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def ids(**overrides: Any) -> list[str]:
    with override_settings(**overrides):
        return [message.id for message in check_settings()]  # type: ignore[misc]


def test_the_test_settings_pass() -> None:
    assert check_settings() == []


def test_e001_alias_missing() -> None:
    assert ids(CHATMEMORY_CACHE_ALIAS="chat") == ["chatmemory.E001"]
    with override_settings(CHATMEMORY_CACHE_ALIAS="chat"):
        (error,) = check_settings()
    assert "'chat'" in error.msg and error.hint


SENTINEL_CLIENT = "django_redis.client.SentinelClient"
SENTINEL_FACTORY = "django_redis.pool.SentinelConnectionFactory"
CLUSTER_FACTORY = "chatmemory.store.cluster.ClusterConnectionFactory"
SENTINEL = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": "redis://mymaster/0",
    "OPTIONS": {
        "CLIENT_CLASS": SENTINEL_CLIENT,
        "CONNECTION_FACTORY": SENTINEL_FACTORY,
        "SENTINELS": [("127.0.0.1", 26379)],
    },
}
CLUSTER = {
    "BACKEND": "django_redis.cache.RedisCache",
    "LOCATION": "redis://10.0.0.1:7000",
    "OPTIONS": {"CONNECTION_FACTORY": CLUSTER_FACTORY},
}


def with_options(cache: dict[str, Any], **options: Any) -> dict[str, Any]:
    return {**cache, "OPTIONS": {**cache.get("OPTIONS", {}), **options}}


def cache_ids(cache: dict[str, Any], **overrides: Any) -> list[str]:
    return ids(CACHES={"default": LOCMEM, "chatmemory": cache}, **overrides)


@pytest.mark.parametrize(
    "cache",
    [
        LOCMEM,
        with_options(REDIS, CLIENT_CLASS="django_redis.client.ShardClient"),
        with_options(REDIS, CLIENT_CLASS="django_redis.client.HerdClient"),
        with_options(REDIS, CLIENT_CLASS="no.such.Client"),
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "x"},
    ],
)
def test_e002_not_a_supported_topology(cache: dict[str, Any]) -> None:
    assert cache_ids(cache) == ["chatmemory.E002"]
    with override_settings(CACHES={"default": LOCMEM, "chatmemory": cache}):
        (error,) = check_settings()
    # The hint names every supported setup.
    assert error.hint is not None
    for name in (SENTINEL_CLIENT, SENTINEL_FACTORY, CLUSTER_FACTORY):
        assert name in error.hint


@pytest.mark.parametrize(
    "cache",
    [
        REDIS,
        with_options(REDIS, CLIENT_CLASS="django_redis.client.DefaultClient"),
        SENTINEL,
        # django-redis's default client over Sentinel's factory works too.
        {**SENTINEL, "OPTIONS": {**SENTINEL["OPTIONS"], "CLIENT_CLASS": None}},
        CLUSTER,
        {**CLUSTER, "LOCATION": "redis://10.0.0.1:7000/0"},
        {**CLUSTER, "LOCATION": ["redis://10.0.0.1:7000"]},
    ],
)
def test_supported_topologies_pass(cache: dict[str, Any]) -> None:
    options = {k: v for k, v in cache.get("OPTIONS", {}).items() if v is not None}
    assert cache_ids({**cache, "OPTIONS": options}) == []


def test_the_factory_may_come_from_django_redis_setting() -> None:
    options = dict(SENTINEL["OPTIONS"])
    del options["CONNECTION_FACTORY"]
    sentinel = {**SENTINEL, "OPTIONS": options}
    assert cache_ids(sentinel) == ["chatmemory.E007"]
    assert cache_ids(sentinel, DJANGO_REDIS_CONNECTION_FACTORY=SENTINEL_FACTORY) == []
    cluster = {**CLUSTER, "OPTIONS": {}}
    with override_settings(DJANGO_REDIS_CONNECTION_FACTORY=CLUSTER_FACTORY):
        assert cache_ids({**cluster, "LOCATION": "redis://a:1/3"}) == [
            "chatmemory.E008"
        ]


class MySentinelFactory:
    """Not a SentinelConnectionFactory subclass."""


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        ({"CONNECTION_FACTORY": None}, "connection factory"),
        ({"CONNECTION_FACTORY": f"{__name__}.MySentinelFactory"}, "connection factory"),
        ({"SENTINELS": []}, "no SENTINELS"),
        ({"CLIENT_CLASS": None, "SENTINELS": None}, "no SENTINELS"),
    ],
)
def test_e007_sentinel_misconfigured(options: dict[str, Any], reason: str) -> None:
    merged = {**SENTINEL["OPTIONS"], **options}
    cache = {**SENTINEL, "OPTIONS": {k: v for k, v in merged.items() if v is not None}}
    with override_settings(CACHES={"default": LOCMEM, "chatmemory": cache}):
        (error,) = check_settings()
    assert error.id == "chatmemory.E007"
    assert reason in error.msg
    assert error.hint is not None and SENTINEL_FACTORY in error.hint


@pytest.mark.parametrize(
    "location",
    [
        "redis://10.0.0.1:7000/1",
        "redis://10.0.0.1:7000?db=2",
        "redis://10.0.0.1:7000/zero",
        "redis://10.0.0.1:7000,redis://10.0.0.2:7000",
        [],
    ],
)
def test_e008_cluster_location(location: object) -> None:
    assert cache_ids({**CLUSTER, "LOCATION": location}) == ["chatmemory.E008"]


def test_w001_chat_data_on_the_default_cache() -> None:
    assert ids(CACHES={"default": REDIS}, CHATMEMORY_CACHE_ALIAS="default") == [
        "chatmemory.W001"
    ]


@pytest.mark.parametrize("ttl", [0, -5, 1.5, "60", True])
def test_e003_bad_ttl(ttl: object) -> None:
    assert ids(CHATMEMORY_TTL=ttl) == ["chatmemory.E003"]


@pytest.mark.parametrize("ttl", [None, 1, 86400])
def test_good_ttl(ttl: object) -> None:
    assert ids(CHATMEMORY_TTL=ttl) == []


@pytest.mark.parametrize("cap", [0, -1, "10", 2.0])
def test_e004_bad_cap(cap: object) -> None:
    assert ids(CHATMEMORY_MAX_MESSAGES=cap) == ["chatmemory.E004"]


@pytest.mark.parametrize(
    "name",
    [
        "CHATMEMORY_MAX_SESSION_ID_LENGTH",
        "CHATMEMORY_MAX_MESSAGE_LENGTH",
        "CHATMEMORY_PROMPT_MAX_TOKENS",
        "CHATMEMORY_SESSIONS_PER_PAGE",
    ],
)
@pytest.mark.parametrize("value", [0, "5", None])
def test_e005_bad_positive_numbers(name: str, value: object) -> None:
    assert ids(**{name: value}) == ["chatmemory.E005"]


@pytest.mark.parametrize("prefix", ["", "a{b", "x}", 5])
def test_e006_bad_prefix(prefix: object) -> None:
    assert ids(CHATMEMORY_KEY_PREFIX=prefix) == ["chatmemory.E006"]


@pytest.mark.parametrize(
    ("replicas", "timeout"),
    [
        (-1, 1.0),
        (1.5, 1.0),
        ("1", 1.0),
        (True, 1.0),
        (1, 0),
        (1, -2),
        (1, "1"),
        (1, None),
    ],
)
def test_e009_bad_replica_wait(replicas: object, timeout: object) -> None:
    assert ids(CHATMEMORY_WAIT_REPLICAS=replicas, CHATMEMORY_WAIT_TIMEOUT=timeout) == [
        "chatmemory.E009"
    ]


@pytest.mark.parametrize(("replicas", "timeout"), [(0, 1.0), (1, 0.5), (2, 3)])
def test_good_replica_wait(replicas: object, timeout: object) -> None:
    assert ids(CHATMEMORY_WAIT_REPLICAS=replicas, CHATMEMORY_WAIT_TIMEOUT=timeout) == []


def test_checks_are_registered() -> None:
    with override_settings(CHATMEMORY_TTL=-1):
        with pytest.raises(SystemCheckError, match="chatmemory.E003"):
            call_command("check")


def test_deploy_check_reports_the_redis_findings() -> None:
    from chatmemory.checks import check_redis_server

    messages = check_redis_server()
    # the tests' server runs without persistence
    assert [m.id for m in messages] == ["chatmemory.W102"]
    assert "append-only file is off" in messages[0].msg


def test_deploy_check_runs_only_under_deploy() -> None:
    from django.core import checks

    assert "chatmemory.W102" not in {m.id for m in checks.run_checks()}
    assert "chatmemory.W102" in {
        m.id for m in checks.run_checks(include_deployment_checks=True)
    }


def test_deploy_check_when_redis_is_down() -> None:
    from chatmemory.checks import check_redis_server
    from tests.redis_server import free_port

    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "chatmemory": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        },
    }
    with override_settings(CACHES=caches):
        messages = check_redis_server()
    assert [m.id for m in messages] == ["chatmemory.W100"]
    assert "Could not reach" in messages[0].msg


def test_deploy_check_leaves_a_bad_alias_to_the_settings_check() -> None:
    from chatmemory.checks import check_redis_server

    with override_settings(CHATMEMORY_CACHE_ALIAS="nope"):
        assert check_redis_server() == []


# --- W002: the chat model ------------------------------------------------------


def test_w002_when_the_model_cannot_be_built() -> None:
    with override_settings(CHATMEMORY_CHAT_MODEL={"factory": "no_such.Model"}):
        [warning] = check_chat_model()
        assert warning.id == "chatmemory.W002"
        assert "no_such" in warning.msg
        # Registered: a warning fails "check --fail-level WARNING".
        with pytest.raises(SystemCheckError, match="chatmemory.W002"):
            call_command("check", fail_level="WARNING")
    assert check_chat_model() == []


@pytest.mark.django_db
def test_w002_not_a_crash_for_the_readmes_example_without_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = {"factory": "langchain_openai.ChatOpenAI", "model": "gpt-4o-mini"}
    with override_settings(CHATMEMORY_CHAT_MODEL=spec):
        [warning] = check_chat_model()
        assert warning.id == "chatmemory.W002" and "OPENAI_API_KEY" in warning.msg
        call_command("check")  # a warning, not a crash
        call_command("migrate", verbosity=0)


def test_w002_names_arguments_the_factory_does_not_know() -> None:
    spec = {"factory": "tests.chat_models.HistoryModel", "tokn_delay": 1}
    with override_settings(CHATMEMORY_CHAT_MODEL=spec):
        [warning] = check_chat_model()
    assert warning.id == "chatmemory.W002"
    assert "tokn_delay" in warning.msg and warning.hint
