"""``manage.py chatmemory_export``: sessions out to NDJSON, one per line, streaming."""

from __future__ import annotations

import os
import sys
from datetime import UTC, datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatmemory.admin.transcript import thread_reader
from chatmemory.exceptions import StoreUnavailable
from chatmemory.management.options import add_user_option, owner_option
from chatmemory.management.progress import Progress
from chatmemory.store import transfer


def parse_moment(value: str) -> datetime:
    """A date (``2026-01-31``) or date-time (ISO 8601) option; naive means UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CommandError(
            f"{value!r} is not a date (YYYY-MM-DD) or ISO 8601 date-time"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _TextBytes:
    """Bytes written to a text stream (stdout captured by call_command)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, data: bytes) -> int:
        self.stream.write(data.decode())
        return len(data)


class Command(BaseCommand):
    help = (
        "Write chat sessions as NDJSON (one session per line: id, owner, title, "
        "created, updated, usage, messages in message_to_dict form; LangGraph "
        'threads too, with "kind": "thread" and the messages of their latest '
        "checkpoint). Streams: memory stays flat however many messages there are."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "-o",
            "--output",
            default="-",
            help="File to write ('-', the default: standard output). Written "
            "to FILE.partial first and renamed when complete.",
        )
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--owner", help="Only this owner id's sessions.")
        add_user_option(which, "Only this user's sessions (by username).")
        which.add_argument(
            "--session",
            action="append",
            dest="sessions",
            metavar="ID",
            help="Only this session (repeat for more).",
        )
        parser.add_argument(
            "--since",
            type=parse_moment,
            help="Only sessions active since this date or date-time (UTC unless "
            "it says otherwise).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        options["owner"] = owner_option(options)
        output: str = options["output"]
        progress = Progress(self.stderr, options["verbosity"], "sessions")

        def show(done: transfer.ExportProgress) -> None:
            progress.total = done.total
            progress.update(done.seen, f"{done.messages:,} messages")

        try:
            if output == "-":
                target: Any = self.stdout._out
                stdout: Any = sys.stdout
                out = stdout.buffer if target is stdout else _TextBytes(target)
                done = self._export(out, options, show)
            else:
                partial = output + ".partial"
                try:
                    with open(partial, "wb") as file:
                        done = self._export(file, options, show)
                except OSError as exc:
                    raise CommandError(f"Cannot write {partial}: {exc}") from exc
                os.replace(partial, output)
        except StoreUnavailable as exc:
            raise CommandError(str(exc)) from exc
        progress.finish(done.seen, f"{done.messages:,} messages")
        if options["verbosity"] > 0:
            where = "standard output" if output == "-" else output
            note = (
                f" ({done.unreadable} unreadable entries left out)"
                if done.unreadable
                else ""
            )
            if done.threads:
                note += f" ({done.threads:,} of them LangGraph threads)"
            if done.threads_left_out:
                note += (
                    f" ({done.threads_left_out:,} LangGraph threads left out: "
                    "reading them needs pip install 'chatmemory[langgraph]')"
                )
            self.stderr.write(
                f"Exported {done.sessions:,} sessions ({done.messages:,} messages) "
                f"to {where}{note}."
            )

    def _export(
        self, out: transfer.Writer, options: dict[str, Any], show: Any
    ) -> transfer.ExportProgress:
        return transfer.export_sessions(
            out,
            owner=options["owner"],
            session_ids=options["sessions"],
            since=options["since"],
            progress=show,
            thread_records=thread_reader(),
        )
