"""``manage.py chatmemory_doctor``: what the chat data's Redis is, and how it is."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from chatmemory import store
from chatmemory.conf import conf
from chatmemory.exceptions import ChatMemoryError
from chatmemory.management.progress import Progress


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


class Command(BaseCommand):
    help = (
        "Report on the Redis holding chat data: version, topology, memory limit "
        "and eviction policy, persistence, permissions, sessions, and whether the "
        "indexes agree with the sessions. Exits with status 1 when something "
        "needs fixing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--no-consistency",
            action="store_true",
            help="Skip the consistency check (it reads every chat key).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        progress = Progress(self.stderr, options["verbosity"], "sessions read")
        read: list[int] = []  # the sessions read so far, once the check reads

        def show(done: int, total: int) -> None:
            progress.total = total
            read[:] = [done]
            progress.update(done)

        try:
            facts = store.server_facts()
            report = (
                None
                if options["no_consistency"]
                else store.check_consistency(progress=show)
            )
        except ChatMemoryError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            if read:
                progress.finish(read[0])
        out = self.stdout.write
        out(f"CACHES alias        {conf.CACHE_ALIAS!r}, key prefix {conf.KEY_PREFIX!r}")
        out(f"Redis               {facts.version} ({facts.mode})")
        limit = _size(facts.maxmemory) if facts.maxmemory else "none"
        out(f"Memory              {_size(facts.used_memory)} used, limit {limit}")
        out(f"Eviction policy     {facts.policy}")
        out(f"Append-only file    {'on' if facts.aof else 'off'}")
        out(f"Role                {facts.info.get('role', 'unknown')}")
        problems = 0
        for finding in store.findings(facts):
            problems += 1
            out(self.style.WARNING(f"[{finding.id}] {finding.message}"))
            out(f"    {finding.hint}")
        if report is not None:
            out(f"Sessions            {report.sessions}")
            if report.ok:
                out(self.style.SUCCESS("Indexes             consistent"))
            for problem, count in sorted(report.counts.items()):
                problems += 1
                sample = ", ".join(repr(sid) for sid in report.samples[problem][:5])
                out(
                    self.style.WARNING(
                        f"Inconsistent        {count} {store.PROBLEMS[problem]} "
                        f"(e.g. {sample})"
                    )
                )
            if not report.ok:
                out("    'manage.py chatmemory_reindex' rebuilds the indexes.")
        if problems:
            raise CommandError(f"{problems} problem(s) found.")
        out(self.style.SUCCESS("No problems found."))
