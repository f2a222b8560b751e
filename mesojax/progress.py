"""Progress and timing of long phases: what is running, how fast, how long it took.

Every phase of a run (loading, tables, features, initialisation, the first compile, training, each
baseline, the forecasts, the report) is wrapped in :func:`phase`, which logs one line when it starts
and one with its duration when it ends, and records the duration in a :class:`Timings`. Loops with a
known length report through a :class:`Meter`: a line at most every ``every_s`` seconds with the rate
and the time left. :func:`table` renders the recorded phases as the run's closing summary.

Example:
    >>> timings = Timings()
    >>> with phase("fit baselines", timings):
    ...     pass
    >>> list(timings)
    ['fit baselines']
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from absl import logging

__all__ = ["Timings", "phase", "Meter", "table"]


class Timings(dict):
    """Phase name -> seconds, in the order the phases ended (a plain dict, JSON-ready)."""

    def add(self, name: str, seconds: float) -> None:
        """Add `seconds` to phase `name` (a phase that runs several times, e.g. once per animal, sums)."""
        self[name] = self.get(name, 0.0) + seconds


@contextlib.contextmanager
def phase(name: str, timings: Timings | None = None) -> Iterator[None]:
    """Log the start and the duration of a phase, and record the duration in `timings` (if given).

    A phase that raises is logged as failed after its duration and re-raises unchanged.
    """
    logging.info("%s ...", name)
    start = time.perf_counter()
    try:
        yield
    except BaseException:
        logging.info("%s: failed after %.1f s", name, time.perf_counter() - start)
        raise
    seconds = time.perf_counter() - start
    if timings is not None:
        timings.add(name, seconds)
    logging.info("%s: done in %.1f s", name, seconds)


class Meter:
    """Periodic progress lines for a loop of `total` items: ``name: done/total (rate/s, eta Ns)``.

    Args:
      name: what is being counted (e.g. "forecasts").
      total: the number of items.
      every_s: at most one line per this many seconds; a loop that ends sooner logs nothing, one that
        logged on the way also logs its end.
      unit: the item's name in the rate (e.g. "steps").
    """

    def __init__(self, name: str, total: int, *, every_s: float = 10.0, unit: str = "items"):
        self.name, self.total, self.every_s, self.unit = name, total, every_s, unit
        self.start = self.last = time.perf_counter()
        self.reported = False

    def update(self, done: int, extra: str = "") -> None:
        """Report that `done` items are finished (see `every_s` for when a line is logged)."""
        now = time.perf_counter()
        if now - self.last < self.every_s and not (done >= self.total and self.reported):
            return
        self.last, self.reported = now, True
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        logging.info("%s: %d/%d [%.2f %s/s, eta %.0f s]%s", self.name, done, self.total, rate, self.unit, eta,
                     f" {extra}" if extra else "")


def table(timings: Timings) -> str:
    """The recorded phases as an aligned two-column table with the total."""
    if not timings:
        return ""
    width = max(len(k) for k in timings)
    lines = [f"{'phase'.ljust(width)}  seconds"]
    lines += [f"{k.ljust(width)}  {v:7.1f}" for k, v in timings.items()]
    lines.append(f"{'total'.ljust(width)}  {sum(timings.values()):7.1f}")
    return "\n".join(lines)
