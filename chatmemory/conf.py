"""chatmemory's settings: one typed object, every default in one place.

Each property reads ``django.conf.settings``, remembering the value until Django
announces a settings change (the ``setting_changed`` signal, which
``override_settings`` and pytest-django's ``settings`` fixture send), so tests
can change any setting and nothing is read at import time. Reading an unset
setting from Django costs microseconds (it raises and catches internally), and
a chat turn reads a dozen: remembering them is measurable (bench/run).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

_values: dict[str, Any] = {}


def _setting(name: str, default: Any) -> Any:
    try:
        return _values[name]
    except KeyError:
        value = _values[name] = getattr(settings, name, default)
        return value


def _forget(**kwargs: Any) -> None:
    _values.clear()


setting_changed.connect(_forget, dispatch_uid="chatmemory.conf")


class Settings:
    """Typed access to every ``CHATMEMORY_*`` setting."""

    @property
    def CACHE_ALIAS(self) -> str:
        """The CACHES alias (a django-redis cache) whose Redis holds chat data."""
        return str(_setting("CHATMEMORY_CACHE_ALIAS", "chatmemory"))

    @property
    def KEY_PREFIX(self) -> str:
        """Prefix of every Redis key chatmemory writes."""
        return str(_setting("CHATMEMORY_KEY_PREFIX", "chatmemory"))

    @property
    def TTL(self) -> int | None:
        """Seconds a session lives after its last write; None keeps it forever."""
        value: int | None = _setting("CHATMEMORY_TTL", None)
        return value

    @property
    def REFRESH_TTL_ON_READ(self) -> bool:
        """Whether reading a session's messages also restarts its TTL."""
        return bool(_setting("CHATMEMORY_REFRESH_TTL_ON_READ", False))

    @property
    def MAX_MESSAGES(self) -> int | None:
        """Keep at most this many messages per session (oldest dropped); None: all."""
        value: int | None = _setting("CHATMEMORY_MAX_MESSAGES", None)
        return value

    @property
    def WAIT_REPLICAS(self) -> int:
        """Replicas each write waits for (Redis WAIT) before it is done; 0: none."""
        value: int = _setting("CHATMEMORY_WAIT_REPLICAS", 0)
        return value

    @property
    def WAIT_TIMEOUT(self) -> float:
        """Seconds a write waits for WAIT_REPLICAS replicas before failing."""
        value: float = _setting("CHATMEMORY_WAIT_TIMEOUT", 1.0)
        return value

    @property
    def MAX_SESSION_ID_LENGTH(self) -> int:
        """The longest session id accepted, in characters."""
        value: int = _setting("CHATMEMORY_MAX_SESSION_ID_LENGTH", 200)
        return value

    @property
    def CHAT_MODEL(self) -> dict[str, Any] | None:
        """The chat model for the views: ``{"factory": dotted path, **kwargs}``.

        None picks ChatOpenAI when OPENAI_API_KEY is set, else the offline demo model.
        """
        value: dict[str, Any] | None = _setting("CHATMEMORY_CHAT_MODEL", None)
        return value

    @property
    def OPENAI_MODEL(self) -> str:
        """The OpenAI model name used when CHAT_MODEL is None and a key is set."""
        return str(_setting("CHATMEMORY_OPENAI_MODEL", "gpt-4o-mini"))

    @property
    def SYSTEM_PROMPT(self) -> str:
        """The system message at the top of every prompt."""
        return str(
            _setting(
                "CHATMEMORY_SYSTEM_PROMPT",
                "You are a helpful assistant.",
            )
        )

    @property
    def PROMPT_MAX_TOKENS(self) -> int:
        """History is trimmed to this many tokens (approximate count) per prompt."""
        value: int = _setting("CHATMEMORY_PROMPT_MAX_TOKENS", 3000)
        return value

    @property
    def MAX_MESSAGE_LENGTH(self) -> int:
        """The longest message a user may send through the views, in characters."""
        value: int = _setting("CHATMEMORY_MAX_MESSAGE_LENGTH", 4000)
        return value

    @property
    def TURN_TIME_LIMIT(self) -> float | None:
        """Seconds a reply may stream before it is stopped and saved as stopped.

        None: no limit. It holds while the model sends nothing, too (see
        ``chatmemory.turn``); under gunicorn's sync workers keep it below
        their ``--timeout``.
        """
        value: float | None = _setting("CHATMEMORY_TURN_TIME_LIMIT", 300)
        return value

    @property
    def SESSIONS_PER_PAGE(self) -> int:
        """Sessions per page in the "My sessions" view and the admin list."""
        value: int = _setting("CHATMEMORY_SESSIONS_PER_PAGE", 25)
        return value

    @property
    def CHAT_MODE(self) -> str:
        """What answers in the chat views: "chain" (prompt | model, on the
        history) or "agent" (a LangChain agent on the LangGraph checkpointer)."""
        return str(_setting("CHATMEMORY_CHAT_MODE", "chain"))

    @property
    def AGENT_TOOLS(self) -> list[str]:
        """Dotted paths of the tools the agent mode's agent may call."""
        value: list[str] = list(_setting("CHATMEMORY_AGENT_TOOLS", []))
        return value

    @property
    def USAGE_DAYS(self) -> int:
        """Days each owner's daily token usage is kept in Redis."""
        value: int = _setting("CHATMEMORY_USAGE_DAYS", 400)
        return value

    @property
    def TURNS_PER_MINUTE(self) -> int | None:
        """Turns one user may start in any 60 seconds; None: no limit."""
        value: int | None = _setting("CHATMEMORY_TURNS_PER_MINUTE", None)
        return value

    @property
    def TOKENS_PER_DAY(self) -> int | None:
        """Tokens (model usage) one user may spend per UTC day; None: no limit."""
        value: int | None = _setting("CHATMEMORY_TOKENS_PER_DAY", None)
        return value

    @property
    def CONCURRENT_STREAMS(self) -> int | None:
        """Replies one user may have running at once; None: no limit."""
        value: int | None = _setting("CHATMEMORY_CONCURRENT_STREAMS", None)
        return value

    @property
    def QUOTA_EXEMPT_STAFF(self) -> bool:
        """Whether staff users are exempt from the three limits above."""
        return bool(_setting("CHATMEMORY_QUOTA_EXEMPT_STAFF", True))

    @property
    def KEEP_SESSIONS_OF_DELETED_USERS(self) -> bool:
        """Keep a user's sessions when the user is deleted (default: delete them)."""
        return bool(_setting("CHATMEMORY_KEEP_SESSIONS_OF_DELETED_USERS", False))


conf = Settings()
