"""The admin for chat sessions kept in Redis, split the way Django's admin is.

- :mod:`.options`: the ModelAdmin (URLs, pages, permissions, deletion),
- :mod:`.changelist`: the session list (search, filters, paging, counts),
- :mod:`.transcript`: a session's messages as the transcript shows them.

Importing this package registers :class:`ChatSessionAdmin` with the default
admin site (``admin.autodiscover`` imports it).
"""

from __future__ import annotations

from .options import ChatSessionAdmin

__all__ = ["ChatSessionAdmin"]
