"""The exceptions chatmemory raises.

Every ``redis.RedisError`` leaves the store as a :class:`StoreUnavailable`
subclass that says what happened and what to do about it; callers that only
care whether the store could serve them catch :class:`StoreUnavailable`.
"""

from __future__ import annotations

from typing import ClassVar

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

STORE_DOWN = _(
    "The chat history store is not reachable right now, so nothing can be "
    "loaded or saved. Please try again in a minute."
)
"""What the chat pages say when Redis is down."""

SESSION_DELETED = _(
    "This chat was deleted while the reply was being written, so the reply "
    "was not saved."
)
"""What a chat page says when its chat was deleted while the reply streamed."""


class ChatMemoryError(Exception):
    """Base class of every error chatmemory raises on purpose."""


class StoreUnavailable(ChatMemoryError):
    """Redis could not serve the request: unreachable, too slow, or refusing.

    The message names the CACHES alias and the server address, so the log line
    says which configuration to look at; the subclasses say why and what to do.
    ``user_message`` is the sentence a chat page shows.
    """

    what = "failed"
    """What happened, in a few words (the message's verb)."""
    advice = "Check that Redis is running and reachable from this server."
    """What an operator should do about it."""
    user_message: ClassVar[Promise] = STORE_DOWN
    """The sentence a chat page shows (a lazily translated string)."""

    def __init__(self, alias: str, address: str, reason: str) -> None:
        self.alias = alias
        self.address = address
        self.reason = reason
        super().__init__(
            f"Chat history store unavailable: Redis for CACHES[{alias!r}] "
            f"at {address} {self.what}: {reason}. {self.advice}"
        )


class StoreTimeout(StoreUnavailable):
    """Redis did not answer in time (overloaded, paused, or a network stall).

    A write that times out may still be applied when Redis catches up; it
    carries a write id, so retrying it never applies it twice.
    """

    what = "did not answer in time"
    advice = (
        "Redis may be overloaded or paused (a slow command, a fork for "
        "persistence, a failover); a write may or may not have been applied. "
        "Check the Redis SLOWLOG and latency, or raise SOCKET_TIMEOUT in the "
        "CACHES OPTIONS."
    )
    user_message = _(
        "The chat history store did not answer in time. Your last message may "
        "or may not have been saved: reload the page to see."
    )


class PoolExhausted(StoreUnavailable):
    """Every connection of this process's pool stayed busy past the pool timeout."""

    what = "has no free connection in this process's pool"
    advice = (
        "Redis is fine, but this process uses all its connections: raise "
        "CONNECTION_POOL_KWARGS['max_connections'] (and the Redis maxclients) "
        "or the pool 'timeout' in the CACHES OPTIONS (see the README, "
        "'Sizing the connection pool')."
    )
    user_message = _(
        "The chat service is very busy right now, so nothing could be loaded "
        "or saved. Please try again in a moment."
    )


class StoreFull(StoreUnavailable):
    """Redis refused a write: it reached ``maxmemory`` (OOM under noeviction)."""

    what = "is out of memory and refused the write"
    advice = (
        "Nothing was written. Give Redis more memory (maxmemory), delete old "
        "sessions or set CHATMEMORY_TTL; keep the policy noeviction, since an "
        "evicting policy silently loses chat data."
    )
    user_message = _(
        "The chat history store is full, so your message was not saved. "
        "Please tell the site's administrators."
    )


class StoreReadOnly(StoreUnavailable):
    """The server is a read-only replica (after a failover, or misconfigured)."""

    what = "is a read-only replica and refused the write"
    advice = (
        "Nothing was written. Point the CACHES LOCATION at the primary (or use "
        "Sentinel, which follows failovers)."
    )


class StorePermissionDenied(StoreUnavailable):
    """The Redis user lacks a command or key chatmemory needs (ACL NOPERM)."""

    what = "refused a command for lack of permission"
    advice = (
        "Grant the Redis user chatmemory connects as the commands it needs "
        "(EVAL, EVALSHA, SCRIPT, and the string, list, hash and sorted-set "
        "commands) on its key prefix; 'manage.py chatmemory_doctor' lists them."
    )


class StoreCommandUnavailable(StoreUnavailable):
    """The server does not know a command chatmemory needs (renamed, disabled)."""

    what = "does not accept a command chatmemory needs"
    advice = (
        "Scripting (EVAL/EVALSHA) and the list, hash and sorted-set commands "
        "must be available: check rename-command in the Redis configuration, "
        "or the proxy in front of Redis."
    )


class StoreError(StoreUnavailable):
    """Redis answered with an error chatmemory has no special case for."""

    what = "answered with an error"
    advice = "See the Redis error above; 'manage.py chatmemory_doctor' may help."


class NotReplicated(StoreUnavailable):
    """A write reached the master, but fewer replicas than asked confirmed it.

    Raised with ``CHATMEMORY_WAIT_REPLICAS``: the write is applied on the master
    and may still reach the replicas, but a failover now could lose it, so it
    is not reported as done.
    """

    what = "took the write, but too few replicas confirmed it"
    advice = (
        "The write may still reach the replicas. Check the replicas' link to the "
        "master (INFO replication), or lower CHATMEMORY_WAIT_REPLICAS or raise "
        "CHATMEMORY_WAIT_TIMEOUT."
    )
    user_message = _(
        "Your message reached the chat history store but could not be confirmed "
        "as safely copied. Reload the page to see whether it was saved."
    )

    def __init__(self, alias: str, confirmed: int, wanted: int, timeout: float) -> None:
        self.confirmed = confirmed
        self.wanted = wanted
        super().__init__(
            alias,
            "its master",
            f"only {confirmed} of {wanted} replicas confirmed the write within "
            f"{timeout} s (CHATMEMORY_WAIT_REPLICAS)",
        )


class SessionNotFound(ChatMemoryError):
    """The session does not exist (or is not visible to the caller)."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(f"No chat session {session_id!r}")


class OwnerMismatch(ChatMemoryError, ValueError):
    """A write named an owner other than the session's recorded owner.

    Nothing was written: a session belongs to the owner of its first write.
    """

    def __init__(self, session_id: str, given: str, recorded: str) -> None:
        self.session_id = session_id
        self.given = given
        self.recorded = recorded
        super().__init__(
            f"Chat session {session_id!r} belongs to owner {recorded!r}, "
            f"not {given!r}: nothing was written"
        )


class ModelFailed(ChatMemoryError):
    """The chat model raised, timed out or was refused; nothing was saved.

    ``user_message`` says what happened in words fit for the chat page.
    """

    def __init__(self, user_message: str) -> None:
        self.user_message = user_message
        super().__init__(user_message)


class TurnInProgress(ChatMemoryError):
    """Another reply is being written on the session; nothing was done.

    ``user_message`` says so in words fit for the chat page.
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.user_message = str(
            _(
                "A reply is already being written in this chat (in another tab "
                "or window?). Wait for it to finish, then send your message again."
            )
        )
        super().__init__(self.user_message)


class SessionChanged(ChatMemoryError):
    """A rewrite of a session's last turn found it changed since it was read.

    Nothing was written (another tab or request added or replaced messages).
    """

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        super().__init__(
            f"Chat session {session_id!r} changed while its last turn was being "
            "rewritten: nothing was written"
        )
