"""Options the management commands share: who (``--owner`` or ``--user``)."""

from __future__ import annotations

from argparse import _MutuallyExclusiveGroup
from typing import Any

from django.core.management.base import CommandError

from chatmemory.owners import owner_id_of_username


def add_user_option(group: _MutuallyExclusiveGroup, help: str) -> None:
    """``--user USERNAME``, in the group that holds ``--owner``."""
    group.add_argument("--user", metavar="USERNAME", help=help)


def owner_option(options: dict[str, Any]) -> str | None:
    """The owner id ``--owner`` gives, or the one of ``--user``'s account.

    Raises ``CommandError`` when ``--user`` names no account.
    """
    username: str | None = options.get("user")
    if username is None:
        owner: str | None = options.get("owner")
        return owner
    found = owner_id_of_username(username)
    if found is None:
        raise CommandError(f"No user {username!r}.")
    return found
