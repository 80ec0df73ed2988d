"""Progress on long work, the one way every command shows it.

    for item in progress(items, desc="verify", unit="img"):
        ...
        progress_write(line)            # a result line that does not collide with the bar

On a terminal: a tqdm bar on stderr (for 2 or more items). Not on a terminal (a log file,
CI, a pipe): no carriage-return updates, but one plain line on stderr at most every
``LOG_EVERY_S`` seconds ("eval: 40/300 img, 2.1 img/s, about 2 min left"), so a long run
written to a log still shows that it is moving. ``enabled=False`` silences both
(``--no-progress``), ``enabled=True`` forces the bar.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Optional

LOG_EVERY_S = 30.0

_active: list[Any] = []  # bars now drawn on the terminal, for progress_write
_default: Optional[bool] = None  # what enabled=None means: decide by the terminal (None), or as set


def set_default(enabled: Optional[bool]) -> None:
    """What every later ``progress(enabled=None)`` does: ``--progress`` / ``--no-progress`` of a
    command reach the bars drawn deep inside (a scheme marking, a decoder being fine-tuned)."""
    global _default
    _default = enabled


class _LogLines:
    """tqdm's small interface (iterate, update, set_postfix, close, context manager) writing
    an occasional plain line instead of redrawing a bar."""

    def __init__(self, iterable: Optional[Iterable], total: Optional[int], desc: str, unit: str, every: float):
        self.iterable, self.desc, self.unit, self.every = iterable, desc, unit, every
        self.total, self.n, self.postfix = total, 0, ""
        self.start = self.last = time.monotonic()

    def __iter__(self):
        for item in self.iterable or ():
            yield item
            self.update(1)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, **values):
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_postfix_str(self, text: str):
        self.postfix = text

    def update(self, n: int = 1):
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total}" if self.total else "") + f" {self.unit}", f"{rate:.2g} {self.unit}/s"]
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"about {_duration((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=sys.stderr, flush=True)

    def close(self):
        if self.n and time.monotonic() - self.start >= self.every:
            self._line(time.monotonic())  # a long run ends with its final count
        self.every = float("inf")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def progress(iterable: Optional[Iterable] = None, *, total: Optional[int] = None, desc: str, unit: str = "img",
             enabled: Optional[bool] = None, every: float = LOG_EVERY_S):
    """A progress display over ``iterable`` (or a manual one of ``total`` steps, advanced with ``update``).

    ``enabled``: None decides by itself (a bar on a terminal for 2 or more items, log lines
    otherwise), True forces the bar, False shows nothing."""
    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if enabled is None:
        enabled = _default
    if enabled is False or (enabled is None and total is not None and total < 2):
        return _LogLines(iterable, total, desc, unit, every=float("inf"))
    if enabled is None and not sys.stderr.isatty():
        return _LogLines(iterable, total, desc, unit, every=every)
    from tqdm import tqdm  # the terminal bar (tqdm.auto would pick a notebook widget that needs ipywidgets)

    bar = tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False)
    _active.append(bar)
    original_close = bar.close

    def close():
        if bar in _active:
            _active.remove(bar)
        original_close()

    bar.close = close  # type: ignore[method-assign]
    return bar


def progress_write(line: str, file=None) -> None:
    """Print a result line; while a bar is drawn on the terminal, above it (not into it)."""
    file = file or sys.stdout
    if _active:
        from tqdm import tqdm  # the terminal bar (tqdm.auto would pick a notebook widget that needs ipywidgets)

        tqdm.write(line, file=file)
        file.flush()
    else:
        print(line, file=file, flush=True)


def error_line(path, message: str) -> None:
    """One line on stderr for a failed file, naming it (unless the message does already)."""
    from .errors import naming

    progress_write(f"error: {naming(path, message)}", file=sys.stderr)
