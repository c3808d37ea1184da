"""Progress for people and for logs: a tqdm bar on a terminal, plain periodic lines elsewhere.

    for batch in progress(loader, desc="l2mgan/Smiling", unit="batch"):
        ...
    with progress(total=steps, desc="fit l2mgan", unit="step", leave=True) as bar:
        bar.update(1)
        bar.set_postfix(loss_g=0.41)

On an interactive terminal (stderr is a TTY) this is tqdm.  Anywhere else
(CI, SLURM, ``2> log``) bars would fill the log with carriage returns and
escape codes and run into WARNING lines, so the same calls print one whole
line every ``interval`` seconds (30 by default; ``$FACEEDIT_PROGRESS_INTERVAL``)
and one at the end::

    fit l2mgan: 120/500 step (24%), 3.1 step/s, ETA 2m03s, loss_g=0.41

With ``leave=False`` (inner loops) the closing line is printed only if the
loop ran long enough to print a periodic one, so short loops stay silent.
``enabled=False`` gives the same object, silent.
"""
from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, TextIO

DEFAULT_INTERVAL = 30.0
INTERVAL_ENV = "FACEEDIT_PROGRESS_INTERVAL"


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def default_interval() -> float:
    """Seconds between log lines: ``$FACEEDIT_PROGRESS_INTERVAL`` or 30."""
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def format_duration(seconds: float) -> str:
    """``45s``, ``2m03s``, ``1h02m03s``: short and unambiguous in a log."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(max(seconds, 0.0)))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h{m:02d}m{s:02d}s"
    if m:
        return f"{m}m{s:02d}s"
    return f"{s}s"


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class LogProgress:
    """tqdm's minimal API (iterate, ``update``, ``set_postfix``, ``close``, ``with``) as plain log lines."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None = None, desc: str = "",
                 unit: str = "it", enabled: bool = True, leave: bool = False, interval: float | None = None,
                 file: TextIO | None = None, clock: Callable[[], float] = time.monotonic, initial: int | float = 0):
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable, self.total, self.desc, self.unit = iterable, total, desc, unit
        self.enabled, self.leave = enabled, leave
        self.interval = default_interval() if interval is None else interval
        self._file, self._clock = file, clock
        # ``initial``: units already done before this bar (a resumed training); counted in the total, not the rate
        self.n = self.initial = initial
        self.postfix: dict[str, Any] = {}
        self.start = self._last = clock()
        self.lines = 0  # periodic lines printed so far
        self.closed = False

    # -- the tqdm surface ---------------------------------------------------------
    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("progress(): nothing to iterate (pass an iterable, or call update())")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int | float = 1) -> None:
        self.n += n
        now = self._clock()
        if self.enabled and now - self._last >= self.interval:
            self._last = now
            self.lines += 1
            self._emit(self.line(now))

    def set_postfix(self, ordered_dict: Mapping[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        """Values shown after the counts (``loss_g=0.41``); replaces the previous ones, like tqdm."""
        self.postfix = {**(dict(ordered_dict) if ordered_dict else {}), **kwargs}

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.enabled and (self.leave or self.lines):
            self._emit(self.line(self._clock(), final=True))

    # -- formatting ---------------------------------------------------------------
    def line(self, now: float, final: bool = False) -> str:
        """``desc: 120/500 it (24%), 3.1 it/s, ETA 2m03s, loss_g=0.41`` (``done in 2m41s`` at the end)."""
        elapsed = max(now - self.start, 1e-9)
        rate = (self.n - self.initial) / elapsed
        count = f"{self.n:g}/{self.total} {self.unit}" if self.total else f"{self.n:g} {self.unit}"
        parts = [count + (f" ({int(100 * self.n / self.total)}%)" if self.total else "")]
        parts.append(f"{rate:.1f} {self.unit}/s" if rate >= 1 else f"{rate:.2g} {self.unit}/s")
        if final:
            parts.append(f"done in {format_duration(elapsed)}")
        elif self.total:
            parts.append("ETA " + (format_duration((self.total - self.n) / rate) if rate > 0 else "?"))
        parts += [f"{k}={_format_value(v)}" for k, v in self.postfix.items()]
        return f"{self.desc}: " * bool(self.desc) + ", ".join(parts)

    def _emit(self, text: str) -> None:
        out = self._file or sys.stderr
        print(text, file=out, flush=True)


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = False, interval: float | None = None, initial: int = 0) -> Any:
    """A tqdm bar when stderr is a terminal, else a ``LogProgress`` with the same minimal API.

    ``interval`` (seconds between log lines) applies to the log form only; ``initial`` units count as done
    but not in the rate (tqdm's meaning), so a resumed training shows its real speed and ETA.
    """
    if enabled and _stderr_is_tty():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, dynamic_ncols=True, initial=initial)
    return LogProgress(iterable, total=total, desc=desc, unit=unit, enabled=enabled, leave=leave, interval=interval,
                       initial=initial)
