"""A log line per interval at most, however often the thing it reports happens."""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    """`note(detail)` logs the first occurrence at once; later ones within `interval_s` are
    counted and reported with the next line ("... and 4,211 more in the last 10 s")."""

    def __init__(self, log: logging.Logger, what: str, interval_s: float = 10.0, level: int = logging.WARNING):
        self.log, self.what, self.interval_s, self.level = log, what, interval_s, level
        self._next = 0.0
        self._quiet = 0

    def note(self, detail: str) -> None:
        now = time.monotonic()
        if now < self._next:
            self._quiet += 1
            return
        more = f" (and {self._quiet:,} more in the last {self.interval_s:g} s)" if self._quiet else ""
        self.log.log(self.level, "%s: %s%s", self.what, detail[:200], more)
        self._quiet = 0
        self._next = now + self.interval_s
