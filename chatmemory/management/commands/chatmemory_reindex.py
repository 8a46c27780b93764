"""``manage.py chatmemory_reindex``: rebuild the session indexes from Redis."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import (
    BaseCommand,
    CommandError,
    CommandParser,
    OutputWrapper,
)

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable
from chatmemory.management.progress import Progress
from chatmemory.owners import owner_id, primary_key_text
from chatmemory.store.maintenance import CHECKING, INDEXING


class Stages:
    """The reindex's progress: one line per stage (sessions, then index entries)."""

    UNITS = {INDEXING: "sessions indexed", CHECKING: "index entries checked"}

    def __init__(self, stream: OutputWrapper, verbosity: int) -> None:
        self.stream = stream
        self.verbosity = verbosity
        self.stage = ""
        self.count = 0
        self.progress: Progress | None = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self.stage:
            self.finish()
            self.stage = stage
            self.progress = Progress(
                self.stream, self.verbosity, self.UNITS[stage], total
            )
        assert self.progress is not None
        self.count = done
        self.progress.update(done)

    def finish(self) -> None:
        """End the current stage's line."""
        if self.progress is not None:
            self.progress.finish(self.count)
            self.progress = None


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
        verbosity: int = options["verbosity"]
        stages = Stages(self.stderr, verbosity)
        try:
            count = store.rebuild_indexes(progress=stages)
            stages.finish()
            if verbosity > 0:
                self.stdout.write(self.style.SUCCESS(f"Indexed {count} chat sessions."))
            if options["upgrade_owner_ids"]:
                self._upgrade_owner_ids(verbosity)
        except StoreUnavailable as exc:
            stages.finish()
            raise CommandError(str(exc)) from exc

    def _upgrade_owner_ids(self, verbosity: int) -> None:
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
        if verbosity > 0:
            self.stdout.write(
                self.style.SUCCESS(
                    f"Gave {moved} sessions to their accounts' owner ids."
                )
            )
