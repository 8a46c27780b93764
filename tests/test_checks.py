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


@pytest.mark.parametrize(
    "cache",
    [
        LOCMEM,
        {**REDIS, "OPTIONS": {"CLIENT_CLASS": "django_redis.client.ShardClient"}},
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "x"},
    ],
)
def test_e002_not_django_redis_default_client(cache: dict[str, Any]) -> None:
    assert ids(CACHES={"default": LOCMEM, "chatmemory": cache}) == ["chatmemory.E002"]


def test_default_client_named_explicitly_is_fine() -> None:
    cache = {**REDIS, "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"}}
    assert ids(CACHES={"default": LOCMEM, "chatmemory": cache}) == []


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
