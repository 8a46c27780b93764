"""Progress of a long management command: count, rate and time left.

Shown on a terminal only (the command's stderr is a TTY) and never with
``--verbosity 0``; redrawn in place at most a few times a second.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import OutputWrapper


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{seconds:02}" if hours else f"{minutes}:{seconds:02}"


class Progress:
    """A one-line progress display: ``12,000/50,000 sessions  3,100/s  0:12 left``."""

    def __init__(
        self,
        stream: OutputWrapper,
        verbosity: int,
        unit: str,
        total: int | None = None,
        *,
        interval: float = 0.25,
    ) -> None:
        self.stream = stream
        self.enabled = verbosity > 0 and stream.isatty()
        self.unit = unit
        self.total = total
        self.interval = interval
        self.started = time.monotonic()
        self._shown = 0.0
        self._drawn = False

    def line(self, count: int, extra: str = "") -> str:
        """The progress line for ``count`` units done."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = count / elapsed
        text = f"{count:,}"
        if self.total:
            text += f"/{self.total:,}"
        text += f" {self.unit}  {rate:,.0f}/s"
        if self.total and rate > 0 and count < self.total:
            text += f"  {_duration((self.total - count) / rate)} left"
        if extra:
            text += f"  {extra}"
        return text

    def update(self, count: int, extra: str = "", *, force: bool = False) -> None:
        """Redraw the line (throttled) when shown."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < self.interval:
            return
        self._shown = now
        self.stream.write("\r\x1b[K" + self.line(count, extra), ending="")
        self.stream.flush()
        self._drawn = True

    def finish(self, count: int, extra: str = "") -> None:
        """Draw the final figures and end the line."""
        if not self.enabled:
            return
        self.update(count, extra, force=True)
        self.stream.write("")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._drawn and exc[0] is not None:
            self.stream.write("")
