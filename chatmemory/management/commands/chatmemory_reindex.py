"""``manage.py chatmemory_reindex``: rebuild the session indexes from Redis."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable
from chatmemory.owners import owner_id, primary_key_text


class Command(BaseCommand):
    help = (
        "Rebuild chatmemory's session indexes (activity, owners, ids) from the "
        "sessions' metadata. Scans the whole chat database in small steps; safe "
        "while the site is running."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--upgrade-owner-ids",
            action="store_true",
            help="Give sessions owned by a bare primary key (written before owner "
            "ids carried the account's creation time) to the account that has "
            "that key now. Run it once, right after upgrading.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            count = store.rebuild_indexes()
            self.stdout.write(self.style.SUCCESS(f"Indexed {count} chat sessions."))
            if options["upgrade_owner_ids"]:
                self._upgrade_owner_ids()
        except StoreUnavailable as exc:
            raise CommandError(str(exc)) from exc

    def _upgrade_owner_ids(self) -> None:
        legacy = [o for o in store.owners() if primary_key_text(o) == o]
        user_model = get_user_model()
        pk_field = user_model._meta.pk
        assert pk_field is not None
        moved = 0
        for old in legacy:
            try:
                pk = pk_field.to_python(old)
            except ValidationError:
                continue
            user = user_model._default_manager.filter(pk=pk).first()
            if user is None or owner_id(user) == old:
                continue
            moved += store.rename_owner(old, owner_id(user))
        self.stdout.write(
            self.style.SUCCESS(f"Gave {moved} sessions to their accounts' owner ids.")
        )
