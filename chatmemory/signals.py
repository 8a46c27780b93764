"""A deleted user's sessions go with them (unless the settings keep them)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from . import store
from .conf import conf
from .exceptions import StoreUnavailable
from .owners import owner_id

logger = logging.getLogger("chatmemory")


def delete_sessions_of_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    """``post_delete`` of the user model: delete the user's chat sessions, and
    their token usage and limit state.

    Runs once the deletion is committed (a rolled-back deletion keeps them).
    If Redis is down then, the sessions stay and the log says so;
    ``manage.py chatmemory_purge --orphaned`` deletes them later.
    """
    if conf.KEEP_SESSIONS_OF_DELETED_USERS:
        return
    owner = owner_id(instance)

    def delete() -> None:
        try:
            store.delete_owner_sessions(owner)
            store.delete_owner_usage(owner)
        except StoreUnavailable:
            logger.exception(
                "chatmemory: could not delete the sessions of deleted user %r; "
                "run 'manage.py chatmemory_purge --orphaned' when Redis is back",
                owner,
            )

    transaction.on_commit(delete, using=kwargs.get("using"))
