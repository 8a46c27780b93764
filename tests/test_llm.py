from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import override_settings
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
)
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
)
from langchain_openai import ChatOpenAI

from chatmemory import llm, store
from chatmemory.checks import check_chat_model
from tests.chat_models import HistoryModel

DOWN = {
    **settings.CACHES,
    "down": {
        "BACKEND": "django_redis.cache.RedisCache",
        # Port 1 on loopback: nothing listens, so connecting fails at once.
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
    },
}


def stored(session_id: str) -> list[dict[str, Any]]:
    records = store.read_records(session_id)
    assert all(isinstance(record, dict) for record in records)
    return records  # type: ignore[return-value]


def texts(session_id: str) -> list[tuple[str, str]]:
    return [(r["type"], r["data"]["content"]) for r in stored(session_id)]


# --- building the model -----------------------------------------------------


def test_without_settings_or_key_the_demo_model_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    model = llm.build_chat_model(None)
    assert llm.is_demo_model(model)
    assert llm.model_name(model) == "the offline demo model"


def test_with_a_key_chatopenai_answers_and_honours_the_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with override_settings(CHATMEMORY_OPENAI_MODEL="my-local-model"):
        model = llm.build_chat_model(None)
    assert isinstance(model, ChatOpenAI)
    assert model.model_name == "my-local-model"
    assert llm.model_name(model) == "my-local-model"
    assert str(model.root_client.base_url) == "http://127.0.0.1:9/v1/"
    assert not llm.is_demo_model(model)


def test_a_factory_path_with_keyword_arguments() -> None:
    spec = {
        "factory": "langchain_core.language_models.fake_chat_models.FakeListChatModel",
        "responses": ["configured"],
    }
    model = llm.build_chat_model(spec)
    assert isinstance(model, FakeListChatModel)
    assert model.invoke("x").content == "configured"
    assert llm.model_name(model) == "FakeListChatModel"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("langchain_openai.ChatOpenAI", "must be a dict"),
        ({"model": "x"}, "must be a dict"),
        ({"factory": "no_such_module.Model"}, "cannot be imported"),
        ({"factory": "tests.chat_models.not_a_model", "nope": 1}, "failed"),
        ({"factory": "tests.chat_models.HistoryModel", "token_delay": "x"}, "failed"),
        ({"factory": "tests.chat_models.not_a_model"}, "not a LangChain chat model"),
    ],
)
def test_bad_model_settings_are_improperly_configured(spec: object, words: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=words):
        llm.build_chat_model(spec)


def test_get_chat_model_builds_once_per_configuration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = {"factory": "tests.chat_models.HistoryModel"}
    with override_settings(CHATMEMORY_CHAT_MODEL=spec):
        first = llm.get_chat_model()
        assert llm.get_chat_model() is first
        assert isinstance(first, HistoryModel)
    assert llm.is_demo_model(llm.get_chat_model())
    for delay in range(20):  # the cache stays bounded
        with override_settings(CHATMEMORY_CHAT_MODEL={**spec, "token_delay": delay}):
            assert llm.get_chat_model().token_delay == delay  # type: ignore[attr-defined]
    assert len(llm._models) <= 16


def test_check_w002_when_the_model_cannot_be_built() -> None:
    with override_settings(CHATMEMORY_CHAT_MODEL={"factory": "no_such.Model"}):
        [warning] = check_chat_model()
        assert warning.id == "chatmemory.W002"
        assert "no_such" in warning.msg
        # Registered: a warning fails "check --fail-level WARNING".
        with pytest.raises(SystemCheckError, match="chatmemory.W002"):
            call_command("check", fail_level="WARNING")
    assert check_chat_model() == []


# --- failures in words --------------------------------------------------------


class StatusError(Exception):
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code


class ReadTimeout(Exception):
    pass


class ConnectionRefused(ConnectionError):
    pass


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (StatusError(429), "HTTP 429"),
        (StatusError(503), "failed (HTTP 503)"),
        (StatusError(401), "refused the request (HTTP 401)"),
        (TimeoutError(), "did not answer in time"),
        (ReadTimeout(), "did not answer in time"),
        (ConnectionRefused(), "could not be reached"),
        (KeyError("x"), "The model failed (KeyError)"),
    ],
)
def test_describe_failure(exc: BaseException, words: str) -> None:
    assert words in llm.describe_failure(exc)


# --- the offline demo model -------------------------------------------------


def test_demo_reply_uses_the_history() -> None:
    first = llm.demo_reply([SystemMessage("s"), HumanMessage("I like tea")])
    assert "I like tea" in first and "first turn" in first
    later = llm.demo_reply(
        [
            SystemMessage("s"),
            HumanMessage("I like tea"),
            AIMessage("ok"),
            HumanMessage("and cake"),
            AIMessage("ok"),
            HumanMessage("what did I say?"),
        ]
    )
    assert "turn 3" in later
    assert "4 earlier messages" in later
    assert "\u201cI like tea\u201d" in later and "\u201cand cake\u201d" in later
    assert "\u201cwhat did I say?\u201d" in later


def test_demo_model_streams_word_by_word_sync_and_async() -> None:
    model = llm.DemoChatModel(token_delay=0)
    chunks = [chunk.text for chunk in model.stream("hello")]
    assert len(chunks) > 10
    assert "".join(chunks) == model.invoke("hello").text

    async def collect() -> list[str]:
        return [chunk.text async for chunk in model.astream("hello")]

    assert asyncio.run(collect()) == chunks


def test_demo_model_pauses_between_tokens() -> None:
    model = llm.DemoChatModel(token_delay=0.01)
    begin = time.monotonic()
    tokens = list(model.stream("x"))
    assert time.monotonic() - begin >= 0.01 * (len(tokens) - 1)

    async def collect() -> list[object]:
        return [chunk async for chunk in model.astream("x")]

    begin = time.monotonic()
    assert len(asyncio.run(collect())) == len(tokens)
    assert time.monotonic() - begin >= 0.01 * (len(tokens) - 1)
