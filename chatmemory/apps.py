from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ChatMemoryConfig(AppConfig):
    """Registers chatmemory's configuration checks."""

    name = "chatmemory"
    verbose_name = "Chat memory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.conf import settings
        from django.db.models.signals import post_delete

        from .checks import (
            check_agent_mode,
            check_chat_model,
            check_redis_server,
            check_settings,
        )
        from .signals import delete_sessions_of_deleted_user

        post_delete.connect(
            delete_sessions_of_deleted_user,
            sender=settings.AUTH_USER_MODEL,
            dispatch_uid="chatmemory.delete_sessions_of_deleted_user",
        )
        checks.register(check_settings)
        checks.register(check_chat_model)
        checks.register(check_agent_mode)
        checks.register(check_redis_server, deploy=True)
