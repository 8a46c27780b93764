"""The exceptions chatmemory raises."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _

STORE_DOWN = _(
    "The chat history store is not reachable right now, so nothing can be "
    "loaded or saved. Please try again in a minute."
)
"""What the chat pages say when Redis is down."""


class ChatMemoryError(Exception):
    """Base class of every error chatmemory raises on purpose."""


class StoreUnavailable(ChatMemoryError):
    """Redis could not be reached, or did not answer in time.

    The message names the CACHES alias and the server address, so the log line
    says which configuration to look at.
    """

    def __init__(self, alias: str, address: str, reason: str) -> None:
        self.alias = alias
        self.address = address
        self.reason = reason
        super().__init__(
            f"Chat history store unavailable: Redis for CACHES[{alias!r}] "
            f"at {address} failed: {reason}"
        )


class NotReplicated(StoreUnavailable):
    """A write reached the master, but fewer replicas than asked confirmed it.

    Raised with ``CHATMEMORY_WAIT_REPLICAS``: the write is applied on the master
    and may still reach the replicas, but a failover now could lose it, so it
    is not reported as done.
    """

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
