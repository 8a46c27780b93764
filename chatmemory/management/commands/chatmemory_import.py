"""``manage.py chatmemory_import``: sessions in from NDJSON or LangChain's Redis.

Idempotent and safe to rerun: a session that exists already is left alone
(``--replace`` overwrites it), so a second run, or a rerun after an
interruption, writes only what is missing. A LangGraph thread's line (``"kind":
"thread"``) is restored as a thread: one checkpoint holding its messages (see
:func:`chatmemory.langgraph.restore_thread`).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import IO, Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatmemory import store
from chatmemory.exceptions import StoreUnavailable
from chatmemory.management.options import add_user_option, owner_option
from chatmemory.management.progress import Progress
from chatmemory.store import transfer

LANGCHAIN_PREFIX = "message_store:"
"""``RedisChatMessageHistory``'s default key prefix."""


@dataclass(slots=True)
class Threads:
    """LangGraph threads an import met, and restored."""

    seen: int = 0
    written: int = 0


class CountingReader:
    """The lines of a binary file, counting the bytes read so far."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.read = 0

    def __iter__(self) -> Iterator[bytes]:
        for line in self.file:
            self.read += len(line)
            yield line


def file_size(file: IO[bytes]) -> int | None:
    """The size of a regular file; None for a pipe, a terminal or the like."""
    try:
        status = os.fstat(file.fileno())
    except (OSError, ValueError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def batched[T](items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


class Command(BaseCommand):
    help = (
        "Import chat sessions from an NDJSON file written by chatmemory_export, "
        "or from langchain_community's RedisChatMessageHistory data "
        "(--from-langchain-redis). Existing sessions are left alone unless "
        "--replace; rerunning is safe."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "file", nargs="?", help="NDJSON file to read ('-': standard input)."
        )
        parser.add_argument(
            "--from-langchain-redis",
            metavar="URL",
            help="Read RedisChatMessageHistory sessions from this Redis "
            "(redis://host:port/db); only read, never changed.",
        )
        parser.add_argument(
            "--key-prefix",
            default=LANGCHAIN_PREFIX,
            help="RedisChatMessageHistory's key prefix "
            f"(default {LANGCHAIN_PREFIX!r}).",
        )
        who = parser.add_mutually_exclusive_group()
        who.add_argument(
            "--owner",
            help="Owner id to give the sessions read from LangChain's Redis "
            "(default: none).",
        )
        add_user_option(
            who,
            "The user (by username) to give the sessions read from LangChain's "
            "Redis (instead of --owner).",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Overwrite sessions that exist already (default: skip them).",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Read and check everything, say what would be done, write nothing.",
        )
        parser.add_argument(
            "--batch-size", type=int, default=500, help="Sessions per write."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        url = options["from_langchain_redis"]
        if (url is None) == (options["file"] is None):
            raise CommandError(
                "Give an NDJSON file or --from-langchain-redis URL (one)."
            )
        if url is None and (options["owner"], options["user"]) != (None, None):
            raise CommandError(
                "--owner and --user only apply to --from-langchain-redis."
            )
        options["owner"] = owner_option(options)
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1.")
        try:
            if url is not None:
                self._from_langchain(url, options)
            else:
                self._from_file(options)
        except StoreUnavailable as exc:
            raise CommandError(str(exc)) from exc

    # -- NDJSON ------------------------------------------------------------

    def _from_file(self, options: dict[str, Any]) -> None:
        path = options["file"]
        try:
            file: IO[bytes] = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc}") from exc
        reader = CountingReader(file)
        # Bytes read of the file's size, so a time left shows (not for a pipe).
        progress = Progress(self.stderr, options["verbosity"], "bytes", file_size(file))
        threads = Threads()
        with file:
            sessions = self._restore_threads(
                transfer.read_sessions(reader), options, threads
            )
            try:
                self._write(sessions, options, progress, lambda: reader.read)
            except transfer.BadLine as exc:
                raise CommandError(
                    f"{path}: {exc}. Sessions on earlier lines are written (or, "
                    "with --dry-run, checked); fix the line and run the command "
                    "again: what was imported is skipped."
                ) from exc
        if threads.seen and options["verbosity"] > 0:
            verb = "would restore" if options["dry_run"] else "restored"
            self.stdout.write(
                f"LangGraph threads: {verb} {threads.written:,} of {threads.seen:,} "
                f"({threads.seen - threads.written:,} existed already and were "
                "left alone); each as one checkpoint holding its messages."
            )

    def _restore_threads(
        self,
        sessions: Iterable[store.ImportedSession],
        options: dict[str, Any],
        threads: Threads,
    ) -> Iterator[store.ImportedSession]:
        """The sessions; the LangGraph threads among them are restored here."""
        for session in sessions:
            if session.kind != transfer.THREAD:
                yield session
                continue
            threads.seen += 1
            if options["dry_run"]:
                [there] = store.existing_sessions([session.session_id])
                threads.written += bool(options["replace"] or not there)
                continue
            try:
                from chatmemory.langgraph import restore_thread
            except ImportError as exc:
                raise CommandError(
                    f"{session.session_id!r} is a LangGraph thread; restoring it "
                    f"needs LangGraph ({exc}): pip install 'chatmemory[langgraph]'. "
                    "The sessions before it are imported."
                ) from exc
            try:
                threads.written += restore_thread(
                    session.session_id,
                    list(session.records),
                    owner=session.owner,
                    title=session.title,
                    replace=options["replace"],
                )
            except ValueError as exc:  # a chat history session has this id
                raise CommandError(str(exc)) from exc

    # -- LangChain ---------------------------------------------------------

    def _from_langchain(self, url: str, options: dict[str, Any]) -> None:
        prefix: str = options["key_prefix"]
        try:
            client = redis.Redis.from_url(url)
            total = transfer.count_langchain_keys(client, prefix)
        except (ValueError, redis.RedisError) as exc:
            raise CommandError(
                f"Cannot read LangChain's Redis at {url}: {exc}"
            ) from exc
        progress = Progress(self.stderr, options["verbosity"], "sessions", total)
        unreadable = bad_ids = 0

        def sessions() -> Iterator[store.ImportedSession]:
            nonlocal unreadable, bad_ids
            for names in transfer.scan_langchain_keys(client, prefix):
                for found in transfer.read_langchain_sessions(client, prefix, names):
                    try:
                        store.validate_session_id(found.session_id)
                    except ValueError as exc:
                        bad_ids += 1
                        self.stderr.write(
                            f"Skipped key {prefix}{found.session_id}: {exc}"
                        )
                        continue
                    unreadable += found.unreadable
                    yield store.ImportedSession(
                        found.session_id,
                        found.records,
                        owner=options["owner"],
                        expires_in=found.expires_in,
                    )

        try:
            self._write(sessions(), options, progress)
        except redis.RedisError as exc:
            raise CommandError(
                f"Reading LangChain's Redis at {url} failed: {exc}"
            ) from exc
        finally:
            client.close()
        if options["verbosity"] > 0 and (unreadable or bad_ids):
            self.stderr.write(
                f"Left out {unreadable} unreadable entries and {bad_ids} keys "
                "whose name is no usable session id."
            )

    # -- both --------------------------------------------------------------

    def _write(
        self,
        sessions: Iterable[store.ImportedSession],
        options: dict[str, Any],
        progress: Progress,
        position: Callable[[], int] | None = None,
    ) -> None:
        """Write (or with --dry-run, check) the sessions, showing ``progress``:
        sessions read, or ``position()`` (bytes read) when given."""

        def show(seen: int, extra: str, *, finish: bool = False) -> None:
            count = seen if position is None else position()
            if position is not None:
                extra = f"{seen:,} sessions, {extra}"
            if finish:
                progress.finish(count, extra)
            else:
                progress.update(count, extra)

        if options["dry_run"]:
            seen = new = messages = 0
            for batch in batched(sessions, options["batch_size"]):
                exists = store.existing_sessions([s.session_id for s in batch])
                for session, there in zip(batch, exists, strict=True):
                    seen += 1
                    if options["replace"] or not there:
                        new += 1
                        messages += len(list(session.records))
                show(seen, f"{messages:,} messages checked")
            show(seen, f"{messages:,} messages checked", finish=True)
            verb = "replace or write" if options["replace"] else "write"
            self.stdout.write(
                f"Dry run: would {verb} {new:,} of {seen:,} sessions "
                f"({messages:,} messages); {seen - new:,} exist already and would "
                "be left alone. Nothing was written."
            )
            return

        def written(done: store.ImportProgress) -> None:
            show(done.seen, f"{done.messages:,} messages written")

        done = store.import_sessions_report(
            sessions,
            batch_size=options["batch_size"],
            replace=options["replace"],
            progress=written,
        )
        show(done.seen, f"{done.messages:,} messages written", finish=True)
        existing = done.seen - done.written - done.expired
        note = f", {done.expired:,} had expired" if done.expired else ""
        if options["verbosity"] == 0:
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {done.written:,} sessions ({done.messages:,} messages); "
                f"{existing:,} existed already and were left alone{note}."
            )
        )
