"""Owner ids: which user account a session belongs to.

An owner id is the user's primary key plus the moment the account was
created (``date_joined``, in microseconds, hex): ``"42:5f3a1c2b9d000"``. A new
account that reuses an old primary key (a database restored while Redis was
kept, a fixture load, MySQL before 8 reusing auto-increment values) has
another creation time, so it never sees the old account's chats. User models
without ``date_joined`` fall back to the bare primary key. :func:`owner_id`
gives a user's owner id.

Sessions written before owner ids carried the creation time are owned by the
bare primary key; ``manage.py chatmemory_reindex --upgrade-owner-ids`` moves
them to the account that has that key now.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

SEPARATOR = ":"


def owner_id(user: Any) -> str:
    """The owner id of a user account: what to give as a session's owner.

    Public: pass it as ``owner=`` (``DjangoRedisChatMessageHistory``,
    ``chat()``, the LangGraph config's ``"owner"``) or to the management
    commands' ``--owner``. Never the bare ``user.pk``.
    """
    pk = str(user.pk)
    joined = getattr(user, "date_joined", None)
    if not isinstance(joined, datetime):
        return pk
    return f"{pk}{SEPARATOR}{int(joined.timestamp() * 1_000_000):x}"


def owner_id_of_username(username: str) -> str | None:
    """The owner id of the account with this username (the user model's
    ``USERNAME_FIELD``); None when there is no such account."""
    user_model = get_user_model()
    try:
        user = user_model._default_manager.get_by_natural_key(username)
    except user_model.DoesNotExist:
        return None
    return owner_id(user)


def primary_key_text(owner: str) -> str:
    """The primary key (as text) an owner id names."""
    head, separator, stamp = owner.rpartition(SEPARATOR)
    if separator and stamp and all(c in "0123456789abcdef" for c in stamp):
        return head
    return owner


def users_by_owner(owners: Iterable[str | None]) -> dict[str, AbstractBaseUser]:
    """The accounts behind owner ids, in one query; ids naming none are left out.

    An owner id names an account only if the account's own owner id is that
    id: a reused primary key does not match.
    """
    user_model = get_user_model()
    pk_field = user_model._meta.pk
    assert pk_field is not None
    wanted: dict[Any, list[str]] = {}
    for owner in owners:
        if owner is None:
            continue
        try:
            pk = pk_field.to_python(primary_key_text(owner))
        except ValidationError:
            continue
        wanted.setdefault(pk, []).append(owner)
    if not wanted:
        return {}
    found = user_model._default_manager.in_bulk(list(wanted))
    result: dict[str, AbstractBaseUser] = {}
    for pk, user in found.items():
        mine = owner_id(user)
        for owner in wanted.get(pk, []):
            if owner == mine:
                result[owner] = user
    return result
