"""chatmemory's settings: one typed object, every default in one place.

Each property reads ``django.conf.settings`` on access, so ``override_settings``
works in tests and nothing is cached at import time.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings


class Settings:
    """Typed access to every ``CHATMEMORY_*`` setting."""

    @property
    def CACHE_ALIAS(self) -> str:
        """The CACHES alias (a django-redis cache) whose Redis holds chat data."""
        return str(getattr(settings, "CHATMEMORY_CACHE_ALIAS", "chatmemory"))

    @property
    def KEY_PREFIX(self) -> str:
        """Prefix of every Redis key chatmemory writes."""
        return str(getattr(settings, "CHATMEMORY_KEY_PREFIX", "chatmemory"))

    @property
    def TTL(self) -> int | None:
        """Seconds a session lives after its last write; None keeps it forever."""
        value: int | None = getattr(settings, "CHATMEMORY_TTL", None)
        return value

    @property
    def REFRESH_TTL_ON_READ(self) -> bool:
        """Whether reading a session's messages also restarts its TTL."""
        return bool(getattr(settings, "CHATMEMORY_REFRESH_TTL_ON_READ", False))

    @property
    def MAX_MESSAGES(self) -> int | None:
        """Keep at most this many messages per session (oldest dropped); None: all."""
        value: int | None = getattr(settings, "CHATMEMORY_MAX_MESSAGES", None)
        return value

    @property
    def MAX_SESSION_ID_LENGTH(self) -> int:
        """The longest session id accepted, in characters."""
        value: int = getattr(settings, "CHATMEMORY_MAX_SESSION_ID_LENGTH", 200)
        return value

    @property
    def CHAT_MODEL(self) -> dict[str, Any] | None:
        """The chat model for the views: ``{"factory": dotted path, **kwargs}``.

        None picks ChatOpenAI when OPENAI_API_KEY is set, else the offline demo model.
        """
        value: dict[str, Any] | None = getattr(settings, "CHATMEMORY_CHAT_MODEL", None)
        return value

    @property
    def OPENAI_MODEL(self) -> str:
        """The OpenAI model name used when CHAT_MODEL is None and a key is set."""
        return str(getattr(settings, "CHATMEMORY_OPENAI_MODEL", "gpt-4o-mini"))

    @property
    def SYSTEM_PROMPT(self) -> str:
        """The system message at the top of every prompt."""
        return str(
            getattr(
                settings,
                "CHATMEMORY_SYSTEM_PROMPT",
                "You are a helpful assistant.",
            )
        )

    @property
    def PROMPT_MAX_TOKENS(self) -> int:
        """History is trimmed to this many tokens (approximate count) per prompt."""
        value: int = getattr(settings, "CHATMEMORY_PROMPT_MAX_TOKENS", 3000)
        return value

    @property
    def MAX_MESSAGE_LENGTH(self) -> int:
        """The longest message a user may send through the views, in characters."""
        value: int = getattr(settings, "CHATMEMORY_MAX_MESSAGE_LENGTH", 4000)
        return value

    @property
    def SESSIONS_PER_PAGE(self) -> int:
        """Sessions per page in the "My sessions" view and the admin list."""
        value: int = getattr(settings, "CHATMEMORY_SESSIONS_PER_PAGE", 25)
        return value


conf = Settings()
