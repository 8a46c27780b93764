"""The audit trail of who read which chat session in the admin.

Reading a transcript page and exporting a session are each recorded as one
INFO record on the logger ``chatmemory.audit`` (deletions go to the admin's
LogEntry, as Django's own admin records them). Route that logger wherever an
audit trail belongs (a file, syslog, a SIEM); besides its message, each record
carries these attributes for structured handlers:

- ``audit_action``: ``"view"`` or ``"export"``,
- ``session_id`` and ``session_owner`` (the owner id, or None),
- ``user_id`` and ``username`` of the admin user,
- ``page``: the transcript page read (None for an export).
"""

from __future__ import annotations

import logging

from django.http import HttpRequest

from .. import store

audit_logger = logging.getLogger("chatmemory.audit")

VIEW = "view"
EXPORT = "export"


def record_access(
    request: HttpRequest,
    info: store.SessionInfo,
    action: str,
    *,
    page: int | None = None,
) -> None:
    """Record that the request's user read (``view``) or exported a session."""
    user = request.user
    username = user.get_username()
    audit_logger.info(
        "%s %s chat session %r (owner %s)%s",
        username,
        "viewed" if action == VIEW else "exported",
        info.session_id,
        info.owner if info.owner is not None else "none",
        "" if page is None else f", page {page}",
        extra={
            "audit_action": action,
            "session_id": info.session_id,
            "session_owner": info.owner,
            "user_id": user.pk,
            "username": username,
            "page": page,
        },
    )
