from __future__ import annotations

from django.apps import AppConfig
from django.core import checks


class ChatMemoryConfig(AppConfig):
    """Registers chatmemory's configuration checks."""

    name = "chatmemory"
    verbose_name = "Chat memory"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from .checks import (
            check_agent_mode,
            check_chat_model,
            check_redis_server,
            check_settings,
        )

        checks.register(check_settings)
        checks.register(check_chat_model)
        checks.register(check_agent_mode)
        checks.register(check_redis_server, deploy=True)
