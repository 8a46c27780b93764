"""The settings object: defaults, and live reads."""

from __future__ import annotations

from django.test import override_settings

from chatmemory.conf import conf


def test_defaults() -> None:
    with override_settings():
        from django.conf import settings

        for name in ("CHATMEMORY_KEY_PREFIX",):
            delattr(settings, name)
        assert conf.CACHE_ALIAS == "chatmemory"
        assert conf.KEY_PREFIX == "chatmemory"
    assert conf.TTL is None
    assert conf.REFRESH_TTL_ON_READ is False
    assert conf.MAX_MESSAGES is None
    assert conf.MAX_SESSION_ID_LENGTH == 200
    assert conf.CHAT_MODEL is None
    assert conf.SYSTEM_PROMPT == "You are a helpful assistant."
    assert conf.PROMPT_MAX_TOKENS == 3000
    assert conf.MAX_MESSAGE_LENGTH == 4000
    assert conf.SESSIONS_PER_PAGE == 25


def test_settings_are_read_live() -> None:
    with override_settings(
        CHATMEMORY_CACHE_ALIAS="other",
        CHATMEMORY_TTL=60,
        CHATMEMORY_REFRESH_TTL_ON_READ=True,
        CHATMEMORY_MAX_MESSAGES=10,
        CHATMEMORY_MAX_SESSION_ID_LENGTH=20,
        CHATMEMORY_CHAT_MODEL={"factory": "x.y"},
        CHATMEMORY_OPENAI_MODEL="gpt-x",
        CHATMEMORY_SYSTEM_PROMPT="Be brief.",
        CHATMEMORY_PROMPT_MAX_TOKENS=100,
        CHATMEMORY_MAX_MESSAGE_LENGTH=50,
        CHATMEMORY_SESSIONS_PER_PAGE=5,
    ):
        assert conf.CACHE_ALIAS == "other"
        assert conf.TTL == 60
        assert conf.REFRESH_TTL_ON_READ is True
        assert conf.MAX_MESSAGES == 10
        assert conf.MAX_SESSION_ID_LENGTH == 20
        assert conf.CHAT_MODEL == {"factory": "x.y"}
        assert conf.OPENAI_MODEL == "gpt-x"
        assert conf.SYSTEM_PROMPT == "Be brief."
        assert conf.PROMPT_MAX_TOKENS == 100
        assert conf.MAX_MESSAGE_LENGTH == 50
        assert conf.SESSIONS_PER_PAGE == 5
