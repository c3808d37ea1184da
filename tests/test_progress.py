"""benchmark.progress: tqdm on a terminal, whole plain lines in logs, the same small API for both."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.progress import LogProgress, format_duration, progress

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    """A hand-driven clock, so the lines' rates and ETAs are exact."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_periodic_line_has_count_percent_rate_eta_and_postfix():
    clock, out = Clock(), io.StringIO()
    bar = LogProgress(total=500, desc="fit l2mgan", unit="it", interval=30, file=out, clock=clock)
    clock.t = 10.0
    bar.update(31)  # before the interval: silent
    assert out.getvalue() == ""
    bar.set_postfix({"loss_g": 0.41})
    clock.t = 40.0
    bar.update(93)  # 124 in 40 s = 3.1 it/s, 376 left -> 121 s
    assert out.getvalue() == "fit l2mgan: 124/500 it (24%), 3.1 it/s, ETA 2m01s, loss_g=0.41\n"
    bar.set_postfix(loss_g=0.3, loss_d=1.2)  # replaces, like tqdm
    clock.t = 50.0
    bar.update(1)  # 10 s after the last line: still silent
    assert out.getvalue().count("\n") == 1
    clock.t = 100.0
    bar.close()
    last = out.getvalue().splitlines()[-1]
    assert last == "fit l2mgan: 125/500 it (25%), 1.2 it/s, done in 1m40s, loss_g=0.3, loss_d=1.2"
    bar.close()  # idempotent
    assert out.getvalue().count("\n") == 2


def test_resumed_bar_counts_initial_units_in_the_total_not_the_rate():
    # a training resumed at step 26,000 of 30,000 showed "221.5 step/s, ETA 15s" before this
    clock, out = Clock(), io.StringIO()
    bar = LogProgress(total=30000, desc="fit", unit="step", interval=30, file=out, clock=clock, initial=26000)
    clock.t = 40.0
    bar.update(100)  # 100 steps in 40 s = 2.5 step/s, 3,900 left -> 26 min
    assert out.getvalue() == "fit: 26100/30000 step (87%), 2.5 step/s, ETA 26m00s\n"


def test_iteration_and_context_manager():
    out = io.StringIO()
    seen = list(LogProgress(range(5), desc="cells", unit="cell", leave=True, interval=1e9, file=out))
    assert seen == [0, 1, 2, 3, 4]
    assert out.getvalue().startswith("cells: 5/5 cell (100%), ")  # total taken from len()
    out = io.StringIO()
    with LogProgress(total=None, desc="steps", leave=True, interval=1e9, file=out) as bar:
        bar.update(3)
    assert out.getvalue().startswith("steps: 3 it, ") and "ETA" not in out.getvalue()


def test_short_inner_loops_stay_silent_long_ones_close_their_line():
    out = io.StringIO()
    for _ in LogProgress(range(3), desc="inner", interval=1e9, file=out):  # leave=False, no periodic line
        pass
    assert out.getvalue() == ""
    clock = Clock()
    bar = LogProgress(range(3), desc="inner", interval=1.0, file=out, clock=clock)
    for _ in bar:
        clock.t += 1.0
    lines = out.getvalue().splitlines()
    assert lines[-1].startswith("inner: 3/3 it (100%)") and "done in 3s" in lines[-1]


def test_disabled_is_silent_but_keeps_the_api(capsys):
    bar = progress(range(4), desc="x", enabled=False)
    assert list(bar) == [0, 1, 2, 3]
    bar.set_postfix(a=1)
    bar.update(2)
    bar.close()
    assert capsys.readouterr().err == ""


def test_not_a_terminal_gives_log_lines_without_escape_codes():
    """stderr of a subprocess is a pipe, as in CI and SLURM: no carriage returns, no ANSI codes."""
    code = ("from benchmark.progress import progress\n"
            "for i in progress(range(4), desc='cells', unit='cell', leave=True, interval=0):\n"
            "    pass\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines[0].startswith("cells: 1/4 cell (25%), ") and lines[-1].startswith("cells: 4/4 cell (100%), ")
    assert "\r" not in res.stderr and "\x1b" not in res.stderr


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("FACEEDIT_PROGRESS_INTERVAL", "5")
    assert LogProgress(total=1).interval == 5.0


@pytest.mark.parametrize("seconds, text", [(0, "0s"), (45.4, "45s"), (123, "2m03s"), (3723, "1h02m03s"),
                                           (float("inf"), "?")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text
