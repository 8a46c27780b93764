"""Configuration checks (``manage.py check``).

Only :func:`check_redis_server`, run by ``check --deploy``, talks to Redis.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .conf import conf
from .store.client import is_class

_DJANGO_REDIS_BACKEND = "django_redis.cache.RedisCache"
_DJANGO_REDIS_DEFAULT_CLIENT = "django_redis.client.DefaultClient"
_DJANGO_REDIS_SENTINEL_CLIENT = "django_redis.client.SentinelClient"
_DJANGO_REDIS_FACTORY = "django_redis.pool.ConnectionFactory"
_DJANGO_REDIS_SENTINEL_FACTORY = "django_redis.pool.SentinelConnectionFactory"
_CLUSTER_FACTORY = "chatmemory.store.cluster.ClusterConnectionFactory"
_SUPPORTED = (
    f"BACKEND {_DJANGO_REDIS_BACKEND!r} with, in OPTIONS: no CLIENT_CLASS (one "
    f"server); CLIENT_CLASS {_DJANGO_REDIS_SENTINEL_CLIENT!r} and "
    f"CONNECTION_FACTORY {_DJANGO_REDIS_SENTINEL_FACTORY!r} (Sentinel); or "
    f"CONNECTION_FACTORY {_CLUSTER_FACTORY!r} (Redis Cluster). See the README's "
    "'Redis topologies'."
)


def check_settings(**kwargs: Any) -> list[CheckMessage]:
    """Check every CHATMEMORY_* setting and the cache alias chat data lives on."""
    errors: list[CheckMessage] = []
    alias = conf.CACHE_ALIAS
    caches = getattr(settings, "CACHES", {})
    cache = caches.get(alias)
    if cache is None:
        errors.append(
            Error(
                f"CHATMEMORY_CACHE_ALIAS is {alias!r}, but CACHES has no such alias.",
                hint=(
                    f"Add CACHES[{alias!r}] with BACKEND {_DJANGO_REDIS_BACKEND!r} "
                    "(preferably its own Redis database), or set "
                    "CHATMEMORY_CACHE_ALIAS to an existing django-redis alias."
                ),
                id="chatmemory.E001",
            )
        )
    else:
        errors.extend(_check_cache(alias, cache))
        if alias == "default":
            errors.append(
                Warning(
                    "Chat history is stored on the 'default' cache. On django-redis, "
                    "cache.clear() runs FLUSHDB and would delete every chat session.",
                    hint=(
                        "Give chat data its own CACHES alias on its own Redis "
                        "database, and point CHATMEMORY_CACHE_ALIAS at it."
                    ),
                    id="chatmemory.W001",
                )
            )
    ttl = getattr(settings, "CHATMEMORY_TTL", None)
    if ttl is not None and not (_is_int(ttl) and ttl > 0):
        errors.append(
            Error(
                f"CHATMEMORY_TTL must be a positive whole number of seconds or None, "
                f"not {ttl!r}.",
                hint="For example CHATMEMORY_TTL = 60 * 60 * 24 * 30 (30 days).",
                id="chatmemory.E003",
            )
        )
    cap = getattr(settings, "CHATMEMORY_MAX_MESSAGES", None)
    if cap is not None and not (_is_int(cap) and cap > 0):
        errors.append(
            Error(
                f"CHATMEMORY_MAX_MESSAGES must be a positive whole number or None, "
                f"not {cap!r}.",
                hint="None keeps every message; a number keeps the newest ones.",
                id="chatmemory.E004",
            )
        )
    for name, minimum in (
        ("CHATMEMORY_MAX_SESSION_ID_LENGTH", 1),
        ("CHATMEMORY_MAX_MESSAGE_LENGTH", 1),
        ("CHATMEMORY_PROMPT_MAX_TOKENS", 1),
        ("CHATMEMORY_SESSIONS_PER_PAGE", 1),
    ):
        value = getattr(settings, name, minimum)
        if not (_is_int(value) and value >= minimum):
            errors.append(
                Error(
                    f"{name} must be a positive whole number, not {value!r}.",
                    hint="Remove the setting to use the default.",
                    id="chatmemory.E005",
                )
            )
    replicas = getattr(settings, "CHATMEMORY_WAIT_REPLICAS", 0)
    timeout = getattr(settings, "CHATMEMORY_WAIT_TIMEOUT", 1.0)
    if not (_is_int(replicas) and replicas >= 0) or not (
        isinstance(timeout, int | float)
        and not isinstance(timeout, bool)
        and timeout > 0
    ):
        errors.append(
            Error(
                "CHATMEMORY_WAIT_REPLICAS must be a whole number >= 0 and "
                "CHATMEMORY_WAIT_TIMEOUT a positive number of seconds, not "
                f"{replicas!r} and {timeout!r}.",
                hint=(
                    "For example CHATMEMORY_WAIT_REPLICAS = 1 and "
                    "CHATMEMORY_WAIT_TIMEOUT = 1.0; 0 replicas turns waiting off."
                ),
                id="chatmemory.E009",
            )
        )
    prefix = getattr(settings, "CHATMEMORY_KEY_PREFIX", "chatmemory")
    if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
        errors.append(
            Error(
                f"CHATMEMORY_KEY_PREFIX must be a non-empty string without braces, "
                f"not {prefix!r}.",
                hint="Braces would break the Redis Cluster hash tags of session keys.",
                id="chatmemory.E006",
            )
        )
    return errors


def _check_cache(alias: str, cache: dict[str, Any]) -> list[CheckMessage]:
    """The alias must be one of the Redis topologies chatmemory supports."""
    backend = cache.get("BACKEND")
    options = cache.get("OPTIONS", {})
    client = options.get("CLIENT_CLASS", _DJANGO_REDIS_DEFAULT_CLIENT)
    factory = options.get("CONNECTION_FACTORY") or getattr(
        settings, "DJANGO_REDIS_CONNECTION_FACTORY", _DJANGO_REDIS_FACTORY
    )
    sentinel_client = is_class(client, _DJANGO_REDIS_SENTINEL_CLIENT)
    # Sharded and herd clients are DefaultClient subclasses whose connection
    # is one shard's, or whose reads differ: only the default client itself.
    if backend != _DJANGO_REDIS_BACKEND or not (
        sentinel_client or is_class(client, _DJANGO_REDIS_DEFAULT_CLIENT, exact=True)
    ):
        return [
            Error(
                f"CACHES[{alias!r}] is not a Redis setup chatmemory supports "
                f"(BACKEND {backend!r}, CLIENT_CLASS {client!r}).",
                hint=f"Use {_SUPPORTED}",
                id="chatmemory.E002",
            )
        ]
    sentinel_factory = is_class(factory, _DJANGO_REDIS_SENTINEL_FACTORY)
    if sentinel_client or sentinel_factory:
        problems = []
        if not sentinel_factory:
            problems.append(
                f"its connection factory is {factory!r}, not "
                f"{_DJANGO_REDIS_SENTINEL_FACTORY!r}"
            )
        if not options.get("SENTINELS"):
            problems.append("OPTIONS has no SENTINELS")
        if not problems:
            return []
        return [
            Error(
                f"CACHES[{alias!r}] is a Redis Sentinel alias, but "
                + " and ".join(problems)
                + ".",
                hint=(
                    "Set OPTIONS['CLIENT_CLASS'] to "
                    f"{_DJANGO_REDIS_SENTINEL_CLIENT!r}, OPTIONS['CONNECTION_FACTORY'] "
                    "(or DJANGO_REDIS_CONNECTION_FACTORY) to "
                    f"{_DJANGO_REDIS_SENTINEL_FACTORY!r}, OPTIONS['SENTINELS'] to "
                    "[(host, port), ...], and LOCATION to redis://<service>/<db>."
                ),
                id="chatmemory.E007",
            )
        ]
    if is_class(factory, _CLUSTER_FACTORY):
        location = cache.get("LOCATION", "")
        urls = location.split(",") if isinstance(location, str) else list(location)
        if len(urls) != 1 or _url_db(str(urls[0]).strip()) not in (None, 0):
            return [
                Error(
                    f"CACHES[{alias!r}] is a Redis Cluster alias, so its LOCATION "
                    "must be one node's URL, with no database other than 0, "
                    f"not {location!r}.",
                    hint=(
                        "Give any one node, e.g. 'redis://10.0.0.1:6379' (the "
                        "client discovers the others); list more startup nodes in "
                        "OPTIONS['CLUSTER_STARTUP_NODES'] = [(host, port), ...]."
                    ),
                    id="chatmemory.E008",
                )
            ]
    return []


def _url_db(url: str) -> int | None:
    """The database number in a redis:// URL's path or query, None when absent."""
    parsed = urlsplit(url)
    value = parsed.path.strip("/") or parse_qs(parsed.query).get("db", [""])[0]
    try:
        return int(value) if value else None
    except ValueError:
        return -1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_chat_model(**kwargs: Any) -> list[CheckMessage]:
    """Warn when the chat views' model (CHATMEMORY_CHAT_MODEL) cannot be built.

    Building a model only constructs the client object; nothing is sent. Any
    error is reported, never raised: ``check``, ``migrate`` and ``runserver``
    must start whatever the setting holds.
    """
    hint = (
        'Set CHATMEMORY_CHAT_MODEL to {"factory": "<dotted path to a '
        'chat model class or factory>", **kwargs}, or to None for '
        "ChatOpenAI (with OPENAI_API_KEY) or the offline demo model."
    )
    try:
        from . import llm
    # A broken LangChain install is reported, not raised: checks must not crash.
    except Exception as exc:
        reason = f"the chat model code cannot be imported: {exc}"
    else:
        try:
            llm.build_chat_model(conf.CHAT_MODEL)
            unknown = llm.unknown_arguments(conf.CHAT_MODEL)
        except Exception as exc:
            reason = str(exc)
        else:
            if not unknown:
                return []
            return [
                Warning(
                    "CHATMEMORY_CHAT_MODEL passes arguments its factory does not "
                    f"know: {', '.join(unknown)}.",
                    hint="Check their spelling against the chat model's "
                    "documentation: unknown names may be sent on to the provider, "
                    "which then refuses every turn.",
                    id="chatmemory.W002",
                )
            ]
    return [
        Warning(
            f"The chat views cannot build their chat model: {reason}",
            hint=hint,
            id="chatmemory.W002",
        )
    ]


def check_redis_server(**kwargs: Any) -> list[CheckMessage]:
    """Under ``check --deploy``: warn about a Redis that can lose or refuse chat data.

    The only check that talks to Redis: it reads INFO and probes, on a scratch
    key, every command family chatmemory needs (see
    :func:`chatmemory.store.server_facts`).
    """
    if check_settings():
        return []  # the alias itself is wrong: the E00x errors say so
    from . import store
    from .exceptions import ChatMemoryError

    try:
        facts = store.server_facts()
    except (ChatMemoryError, ImproperlyConfigured) as exc:
        return [
            Warning(
                f"Could not reach the chat data's Redis to check it: {exc}",
                hint="Start Redis, or fix CACHES[CHATMEMORY_CACHE_ALIAS]; "
                "'manage.py chatmemory_doctor' shows more.",
                id="chatmemory.W100",
            )
        ]
    return [
        Warning(finding.message, hint=finding.hint, id=finding.id)
        for finding in store.findings(facts)
    ]


CHAT_MODES = ("chain", "agent")


def check_agent_mode(**kwargs: Any) -> list[CheckMessage]:
    """Check CHATMEMORY_CHAT_MODE, and what the agent mode needs when chosen."""
    mode = getattr(settings, "CHATMEMORY_CHAT_MODE", "chain")
    if mode not in CHAT_MODES:
        return [
            Error(
                f"CHATMEMORY_CHAT_MODE must be 'chain' or 'agent', not {mode!r}.",
                hint="'chain' answers with the chat model on the history; 'agent' "
                "runs a LangChain agent with tools on the LangGraph checkpointer.",
                id="chatmemory.E020",
            )
        ]
    if mode != "agent":
        return []
    try:
        import langchain.agents  # noqa: F401
        import langgraph.checkpoint.base  # noqa: F401
    except ImportError as exc:
        return [
            Error(
                "CHATMEMORY_CHAT_MODE is 'agent', which needs LangGraph and "
                f"LangChain's agents, but they cannot be imported: {exc}.",
                hint="Install them with: pip install 'chatmemory[langgraph]' "
                "(or set CHATMEMORY_CHAT_MODE = 'chain').",
                id="chatmemory.E021",
            )
        ]
    errors: list[CheckMessage] = []
    tools = getattr(settings, "CHATMEMORY_AGENT_TOOLS", [])
    if isinstance(tools, str) or not isinstance(tools, list | tuple):
        tools = [tools]
    for path in tools:
        try:
            import_string(path)
        except (ImportError, TypeError, ValueError) as exc:
            errors.append(
                Error(
                    f"CHATMEMORY_AGENT_TOOLS names {path!r}, which cannot be "
                    f"imported: {exc}",
                    hint="List dotted paths of LangChain tools (functions "
                    "decorated with @tool, or BaseTool instances).",
                    id="chatmemory.E022",
                )
            )
    return errors
