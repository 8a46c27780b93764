"""``manage.py chatmemory_purge``: delete sessions by age, by owner, or orphaned."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable
from chatmemory.management.commands.chatmemory_export import parse_moment
from chatmemory.management.options import add_user_option, owner_option
from chatmemory.management.progress import Progress
from chatmemory.owners import users_by_owner
from chatmemory.store import transfer
from chatmemory.store.operations import run


class Command(BaseCommand):
    help = (
        "Delete chat sessions: last active before a date (--before), of one "
        "owner (--owner, or --user by username), or of owners that are no user "
        "any more (--orphaned). "
        "Given together, a session must match all. Safe to rerun."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--before",
            type=parse_moment,
            help="Sessions last active before this date or date-time (UTC unless "
            "it says otherwise).",
        )
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--owner", help="Sessions of this owner id.")
        add_user_option(who, "Sessions of this user (by username).")
        who.add_argument(
            "--orphaned",
            action="store_true",
            help="Sessions whose owner id names no existing user account.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Count what would be deleted; delete nothing.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        before: datetime | None = options["before"]
        options["owner"] = owner_option(options)
        if before is None and options["owner"] is None and not options["orphaned"]:
            raise CommandError(
                "Say what to purge: --before, --owner, --user or --orphaned."
            )
        dry_run: bool = options["dry_run"]
        try:
            owners: list[str | None]
            if options["owner"] is not None:
                owners = [options["owner"]]
            elif options["orphaned"]:
                owners = list(self._orphans())
            else:
                owners = [None]  # the activity index: every session
            total = run(transfer.count_indexes_op(owners, before=before))
            progress = Progress(self.stderr, options["verbosity"], "sessions", total)
            count = 0
            for owner in owners:
                if dry_run or owner is None:
                    for session_id in self._matching(owner, before):
                        count += dry_run or store.delete_session(session_id)
                        progress.update(count)
                else:

                    def show(deleted: int, earlier: int = count) -> None:
                        progress.update(earlier + deleted)

                    count += store.delete_owner_sessions(
                        owner, before=before, progress=show
                    )
                    if options["orphaned"] and before is None:
                        # what deleting the user would have deleted with them
                        store.delete_owner_usage(owner)
                    progress.update(count)
        except StoreUnavailable as exc:
            raise CommandError(str(exc)) from exc
        progress.finish(count)
        if dry_run:
            self.stdout.write(f"Dry run: would delete {count:,} sessions.")
        elif options["verbosity"] > 0:
            self.stdout.write(self.style.SUCCESS(f"Deleted {count:,} sessions."))

    def _orphans(self) -> list[str]:
        owners = store.owners()
        known = users_by_owner(owners)
        return [owner for owner in owners if owner not in known]

    def _matching(self, owner: str | None, before: datetime | None) -> Iterator[str]:
        """Ids in the index (all, or one owner's) last active before ``before``."""
        cutoff = None if before is None else before.timestamp() * 1000
        cursor = 0
        while True:
            cursor, pairs = run(transfer.scan_index_op(owner, cursor, 500))
            for session_id, score in pairs:
                if cutoff is None or score < cutoff:
                    yield session_id
            if cursor == 0:
                return
