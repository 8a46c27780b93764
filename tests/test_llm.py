from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
)
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_openai import ChatOpenAI

from chatmemory import llm, store
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


def raising_factory() -> object:
    raise RuntimeError("no key")


def named_factory(model: str, *, temperature: float = 0) -> object:
    return HistoryModel()


def open_factory(model: str, **kwargs: Any) -> object:
    return HistoryModel()


def test_the_readmes_openai_example_without_a_key_is_improperly_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    spec = {"factory": "langchain_openai.ChatOpenAI", "model": "gpt-4o-mini"}
    with pytest.raises(ImproperlyConfigured, match="OpenAIError"):
        llm.build_chat_model(spec)


@pytest.mark.parametrize(
    ("spec", "unknown"),
    [
        (
            {
                "factory": "langchain_openai.ChatOpenAI",
                "model": "m",
                "api_key": "k",  # an alias of openai_api_key
                "temprature": 0.2,
            },
            ["temprature"],
        ),
        (
            {"factory": "tests.chat_models.HistoryModel", "tokn_delay": 1},
            ["tokn_delay"],
        ),
        ({"factory": "tests.test_llm.named_factory", "model": "m", "top": 1}, ["top"]),
        ({"factory": "tests.test_llm.open_factory", "anything": 1}, []),
        ({"factory": "builtins.dict", "x": 1}, []),  # no signature to read
        (None, []),
        ({"model": "x"}, []),
    ],
)
def test_unknown_arguments(spec: object, unknown: list[str]) -> None:
    assert llm.unknown_arguments(spec) == unknown


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("langchain_openai.ChatOpenAI", "must be a dict"),
        ({"model": "x"}, "must be a dict"),
        ({"factory": "no_such_module.Model"}, "cannot be imported"),
        ({"factory": "tests.chat_models.not_a_model", "nope": 1}, "failed"),
        ({"factory": "tests.chat_models.HistoryModel", "token_delay": "x"}, "failed"),
        ({"factory": "tests.chat_models.not_a_model"}, "not a LangChain chat model"),
        ({"factory": "tests.test_llm.raising_factory"}, "RuntimeError: no key"),
        ({"factory": "tests.broken_module_for_llm.Model"}, "cannot be imported"),
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
        (StatusError(401), "refused our credentials (HTTP 401)"),
        (StatusError(403), "refused our credentials (HTTP 403)"),
        (StatusError(404), "refused the request (HTTP 404)."),
        (TimeoutError(), "did not answer in time"),
        (ReadTimeout(), "did not answer in time"),
        (ConnectionRefused(), "could not be reached"),
        (KeyError("x"), "The model failed (KeyError)"),
    ],
)
def test_describe_failure(exc: BaseException, words: str) -> None:
    assert words in llm.describe_failure(exc)


class ProviderError(StatusError):
    def __init__(self, status_code: int, body: object = None, error: object = None):
        super().__init__(status_code)
        self.body = body
        self.error = error


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        # openai's APIStatusError keeps the body's "error" member.
        (ProviderError(404, {"message": "model 'x' not found"}), "model 'x' not found"),
        (ProviderError(400, {"error": {"message": "bad\n  input"}}), "bad input"),
        (ProviderError(400, {"error": "plain words"}), "plain words"),
        # Ollama's own client: ResponseError(error, status_code).
        (ProviderError(404, None, "model 'y' not found"), "model 'y' not found"),
        (ProviderError(400, {"error": {"message": 5}}), ""),
        (ProviderError(400, ["x"]), ""),
    ],
)
def test_the_providers_reason_is_shown(exc: ProviderError, reason: str) -> None:
    assert llm.provider_reason(exc) == reason
    words = llm.describe_failure(exc)
    if reason:
        assert words.endswith(f"): {reason}")
    else:
        assert words.endswith(f"(HTTP {exc.status_code}).")


def test_a_long_reason_is_cut_and_credentials_errors_never_quote_it() -> None:
    long = ProviderError(400, {"message": "x" * 500})
    assert len(llm.provider_reason(long)) == llm.REASON_LENGTH
    secret = ProviderError(401, {"message": "Incorrect API key provided: sk-abc"})
    assert "sk-abc" not in llm.describe_failure(secret)


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
    # Half the pauses' sum: a stream without pauses takes a few milliseconds,
    # while the VM's clock slews enough that the full sum can come out a hair
    # short (CI once measured 0.3987 s for forty 10 ms sleeps).
    least = 0.5 * 0.01
    begin = time.monotonic()
    tokens = list(model.stream("x"))
    assert time.monotonic() - begin >= least * (len(tokens) - 1)

    async def collect() -> list[object]:
        return [chunk async for chunk in model.astream("x")]

    begin = time.monotonic()
    assert len(asyncio.run(collect())) == len(tokens)
    assert time.monotonic() - begin >= least * (len(tokens) - 1)


def lookup(word: str) -> str:
    """Look a word up."""
    return word


def now() -> str:
    """The time."""
    return "noon"


def convert(amount: float, unit: str) -> str:
    """Two arguments: the demo cannot fill them."""
    return f"{amount} {unit}"


def test_the_demo_model_calls_a_tool_the_question_names() -> None:
    model = llm.DemoChatModel(token_delay=0).bind_tools([lookup, now, convert])
    called = model.invoke([HumanMessage("please lookup: serendipity?")])
    assert isinstance(called, AIMessage) and called.text == ""
    [call] = called.tool_calls
    assert (call["name"], call["args"]) == ("lookup", {"word": "serendipity"})
    # The first tool named is called; one without arguments gets none.
    [call] = model.invoke([HumanMessage("now, then lookup")]).tool_calls  # type: ignore[attr-defined]
    assert (call["name"], call["args"]) == ("now", {})
    # A name inside another word, or a tool it cannot fill in, is not a call.
    for question in ["nowhere to lookups", "convert 3 feet"]:
        assert model.invoke([HumanMessage(question)]).tool_calls == []  # type: ignore[attr-defined]
    # Streaming gives the same call, as one tool call chunk.
    chunks = list(model.stream([HumanMessage("lookup tea")]))
    merged = chunks[0] + chunks[1:] if len(chunks) > 1 else chunks[0]
    assert merged.tool_calls[0]["args"] == {"word": "tea"}  # type: ignore[attr-defined]


def test_the_demo_model_quotes_a_tools_answer() -> None:
    answer = llm.demo_message(
        [
            HumanMessage("lookup tea"),
            ToolMessage("a drink", tool_call_id="c", name="lookup"),
        ]
    )
    assert answer.text.startswith("The tool lookup answered: \u201ca drink\u201d.")
    # Without tools bound, it answers as before.
    plain = llm.DemoChatModel(token_delay=0).invoke([HumanMessage("lookup tea")])
    assert plain.text == llm.demo_reply([HumanMessage("lookup tea")])
