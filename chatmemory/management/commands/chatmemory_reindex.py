"""``manage.py chatmemory_reindex``: rebuild the session indexes from Redis."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable


class Command(BaseCommand):
    help = (
        "Rebuild chatmemory's session indexes (activity, owners, ids) from the "
        "sessions' metadata. Scans the whole chat database."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = store.rebuild_indexes()
        except StoreUnavailable as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Indexed {count} chat sessions."))
