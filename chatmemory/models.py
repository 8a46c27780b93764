"""An unmanaged placeholder model: it gives the admin its entry and permissions.

Chat sessions live in Redis (see :mod:`chatmemory.store`); no table is created.
"""

from __future__ import annotations

from django.db import models


class ChatSession(models.Model):
    """A chat session kept in Redis; this model only anchors admin permissions."""

    session_id = models.CharField(max_length=200, primary_key=True)

    class Meta:
        managed = False
        verbose_name = "chat session"
        verbose_name_plural = "chat sessions"
        default_permissions = ("view", "delete")

    def __str__(self) -> str:
        return self.session_id
