"""Every Redis key name chatmemory uses, built here and nowhere else.

``P`` is ``CHATMEMORY_KEY_PREFIX`` and ``S`` the escaped session id::

    P:{S}:messages   list    one JSON document per message (message_to_dict form)
    P:{S}:meta       hash    created, updated (epoch ms), count, title, owner
    P:{S}:write-ids  zset    the ids of the session's last appends (each applied once)
    P:sessions       zset    session id -> last activity (epoch ms), every session
    P:owner:<owner>  zset    session id -> last activity, one owner's sessions
    P:no-owner       zset    session id -> last activity, sessions without an owner
    P:session-ids    zset    session id (score 0): lexicographic index for prefix search
    P:usage:{O}:<day>   hash  one owner's tokens that UTC day: input, output, total
    P:usage-day:<day>   zset  owner -> total tokens that UTC day (admin usage page)
    P:usage:{O}:write-ids  zset  write id -> ms: the writes whose tokens were added
                           to the owner's days on Redis Cluster (the last hour)
    P:quota:{O}:turns   zset  one owner's recent turns (member and score: start ms)
    P:quota:{O}:streams zset  one owner's open streams (member: id, score: expiry ms)
    P:{S}:stop:<T>   string  what the page showed when its user stopped turn T
                             (expires after a few minutes)

A LangGraph thread (``chatmemory.langgraph``) is a conversation of the same id
space: it has the same ``meta`` hash (with ``kind`` = ``thread``) and index
entries, and its own data keys instead of ``messages``::

    P:{S}:checkpoints  zset  one member per checkpoint (see store/checkpoints.py)
    P:{S}:blobs        hash  one field per channel version
    P:{S}:writes       zset  one member per pending write

The braces are Redis Cluster hash tags: every key of one session lives in one
slot, so one session's write is one script there. The escaping is injective,
so no session id can reach another session's keys. ``O`` is the escaped owner
id: one owner's usage and quota keys share a slot, so the quota script can read
them together on Redis Cluster.
"""

from __future__ import annotations

import re

from ..conf import conf


def validate_session_id(session_id: object) -> str:
    """Return ``session_id`` if it is a usable id, else raise ``ValueError``.

    Any non-empty ``str`` of at most ``CHATMEMORY_MAX_SESSION_ID_LENGTH``
    characters that encodes to UTF-8 is accepted.
    """
    if not isinstance(session_id, str):
        raise ValueError(
            f"session_id must be a str, not {type(session_id).__name__}: {session_id!r}"
        )
    if not session_id:
        raise ValueError("session_id must not be empty")
    limit = conf.MAX_SESSION_ID_LENGTH
    if len(session_id) > limit:
        raise ValueError(
            f"session_id is {len(session_id)} characters long; the limit is "
            f"{limit} (CHATMEMORY_MAX_SESSION_ID_LENGTH)"
        )
    try:
        session_id.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"session_id is not valid Unicode text: {exc}") from None
    return session_id


def escape(session_id: str) -> str:
    """The session id as it stands inside its hash tag."""
    # Percent-encoding the escape char and the braces is injective, and keeps the
    # id braces-free so the hash tag {S} is always exactly the whole id. ("%"
    # first; chained replace is ten times faster than str.translate here.)
    return session_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


_UNESCAPES = {"%25": "%", "%7B": "{", "%7D": "}"}


def unescape(escaped: str) -> str:
    """The session id back from :func:`escape`'s form."""
    return re.sub("%(25|7B|7D)", lambda m: _UNESCAPES[m.group(0)], escaped)


# The *_in(prefix, ...) builders take the prefix read once by the caller: a
# settings read costs microseconds, and a write names up to five keys.


def messages_key_in(prefix: str, session_id: str) -> str:
    """:func:`messages_key` under ``prefix``."""
    return f"{prefix}:{{{escape(session_id)}}}:messages"


def meta_key_in(prefix: str, session_id: str) -> str:
    """:func:`meta_key` under ``prefix``."""
    return f"{prefix}:{{{escape(session_id)}}}:meta"


def turn_lock_key_in(prefix: str, session_id: str) -> str:
    """:func:`turn_lock_key` under ``prefix``."""
    return f"{prefix}:{{{escape(session_id)}}}:turn-lock"


def write_ids_key_in(prefix: str, session_id: str) -> str:
    """:func:`write_ids_key` under ``prefix``."""
    return f"{prefix}:{{{escape(session_id)}}}:write-ids"


def sessions_key_in(prefix: str) -> str:
    """:func:`sessions_key` under ``prefix``."""
    return f"{prefix}:sessions"


def ids_key_in(prefix: str) -> str:
    """:func:`ids_key` under ``prefix``."""
    return f"{prefix}:session-ids"


def owner_key_in(prefix: str, owner: str) -> str:
    """:func:`owner_key` under ``prefix``."""
    return f"{prefix}:owner:{owner}"


def thread_keys_in(prefix: str, thread_id: str) -> tuple[str, str, str, str]:
    """:func:`thread_keys` under ``prefix``."""
    tag = f"{prefix}:{{{escape(thread_id)}}}"
    return (
        f"{tag}:meta",
        f"{tag}:checkpoints",
        f"{tag}:blobs",
        f"{tag}:writes",
    )


def thread_keys(thread_id: str) -> tuple[str, str, str, str]:
    """A LangGraph thread's keys: meta, checkpoints, blobs, writes."""
    return thread_keys_in(conf.KEY_PREFIX, thread_id)


def no_owner_key_in(prefix: str) -> str:
    """:func:`no_owner_key` under ``prefix``."""
    return f"{prefix}:no-owner"


def owner_index_key_in(prefix: str, owner: str) -> str:
    """The index a session of ``owner`` is in: its owner's, or the no-owner one."""
    return owner_key_in(prefix, owner) if owner else no_owner_key_in(prefix)


def usage_key_in(prefix: str, owner: str, day: str) -> str:
    """:func:`usage_key` under ``prefix``."""
    return f"{prefix}:usage:{{{escape(owner)}}}:{day}"


def usage_write_ids_key_in(prefix: str, owner: str) -> str:
    """The write ids whose tokens Redis Cluster's second step added to the
    owner's days (each at most once); in the owner's slot."""
    return f"{prefix}:usage:{{{escape(owner)}}}:write-ids"


def usage_day_key_in(prefix: str, day: str) -> str:
    """:func:`usage_day_key` under ``prefix``."""
    return f"{prefix}:usage-day:{day}"


def quota_turns_key_in(prefix: str, owner: str) -> str:
    """:func:`quota_turns_key` under ``prefix``."""
    return f"{prefix}:quota:{{{escape(owner)}}}:turns"


def quota_streams_key_in(prefix: str, owner: str) -> str:
    """:func:`quota_streams_key` under ``prefix``."""
    return f"{prefix}:quota:{{{escape(owner)}}}:streams"


def usage_key(owner: str, day: str) -> str:
    """The hash of one owner's token usage on one UTC day (``YYYY-MM-DD``)."""
    return usage_key_in(conf.KEY_PREFIX, owner, day)


def usage_write_ids_key(owner: str) -> str:
    """:func:`usage_write_ids_key_in` under the configured prefix."""
    return usage_write_ids_key_in(conf.KEY_PREFIX, owner)


def usage_day_key(day: str) -> str:
    """The sorted set of every owner's total tokens on one UTC day."""
    return usage_day_key_in(conf.KEY_PREFIX, day)


def quota_turns_key(owner: str) -> str:
    """The sorted set of one owner's turns in the last minute."""
    return quota_turns_key_in(conf.KEY_PREFIX, owner)


def quota_streams_key(owner: str) -> str:
    """The sorted set of one owner's open streams."""
    return quota_streams_key_in(conf.KEY_PREFIX, owner)


def stop_key_in(prefix: str, session_id: str, turn: str) -> str:
    """:func:`stop_key` under ``prefix``."""
    return f"{prefix}:{{{escape(session_id)}}}:stop:{turn}"


def stop_key(session_id: str, turn: str) -> str:
    """The text the page showed when its user stopped turn ``turn``."""
    return stop_key_in(conf.KEY_PREFIX, session_id, turn)


def messages_key(session_id: str) -> str:
    """The list holding the session's messages."""
    return messages_key_in(conf.KEY_PREFIX, session_id)


def meta_key(session_id: str) -> str:
    """The hash holding the session's metadata."""
    return meta_key_in(conf.KEY_PREFIX, session_id)


def turn_lock_key(session_id: str) -> str:
    """The string held while a reply is being written on the session (expires)."""
    return turn_lock_key_in(conf.KEY_PREFIX, session_id)


def write_ids_key(session_id: str) -> str:
    """The sorted set of the session's recent write ids (each applied once)."""
    return write_ids_key_in(conf.KEY_PREFIX, session_id)


def sessions_key() -> str:
    """The sorted set of every session, by last activity."""
    return sessions_key_in(conf.KEY_PREFIX)


def ids_key() -> str:
    """The sorted set of every session id, all scored 0, for prefix search."""
    return ids_key_in(conf.KEY_PREFIX)


def owner_key_prefix() -> str:
    """Owner index keys are this plus the owner id."""
    return owner_key_in(conf.KEY_PREFIX, "")


def owner_key(owner: str) -> str:
    """The sorted set of one owner's sessions, by last activity."""
    return owner_key_in(conf.KEY_PREFIX, owner)


def probe_key() -> str:
    """A scratch key (one slot) the doctor writes and deletes to test permissions."""
    return f"{conf.KEY_PREFIX}:{{chatmemory-doctor}}:probe"


def no_owner_key() -> str:
    """The sorted set of the sessions without an owner, by last activity."""
    return no_owner_key_in(conf.KEY_PREFIX)


def owner_index_key(owner: str) -> str:
    """:func:`owner_index_key_in` under the configured prefix."""
    return owner_index_key_in(conf.KEY_PREFIX, owner)


def scan_pattern(kind: str) -> str:
    """A SCAN MATCH pattern for every key of one kind: "meta", "messages", "owner"."""
    prefix = re.sub(r"([*?\[\]\\])", r"\\\1", conf.KEY_PREFIX)
    if kind == "owner":
        return f"{prefix}:owner:*"
    return f"{prefix}:{{*}}:{kind}"


def session_id_from_key(key: str, kind: str) -> str | None:
    """The session id of a session key of ``kind``, or None if it is not one."""
    head, tail = f"{conf.KEY_PREFIX}:{{", f"}}:{kind}"
    if not (key.startswith(head) and key.endswith(tail)):
        return None
    return unescape(key[len(head) : -len(tail)])


def owner_from_key(key: str) -> str | None:
    """The owner id of an owner index key, or None if it is not one."""
    head = owner_key_prefix()
    return key[len(head) :] if key.startswith(head) else None
