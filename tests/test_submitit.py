"""The submitit launcher: plan (one job per fit group, a shared stage in one job), two local workers, a kill.

The end-to-end tests start real worker processes (each imports torch), so they are ``slow``.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from benchmark import rundir
from benchmark.config import load_config
from benchmark.launch import parse_time, unfinished_groups

pytest.importorskip("submitit")

ROOT = Path(__file__).resolve().parents[1]
TOY = ["data.name=toy-faces", "data.resolution=16", "data.batch_size=32", "evaluators=[mean-abs-change]",
       "attributes=[Smiling,Male]", "output.progress=false", "device=cpu", "output.save_images=0"]


def test_one_group_per_fit_and_shared_stages_in_one_group():
    import tests.toy_editor  # noqa: F401 - registers toy_trainable (shared_stages=("shared",))

    cfg = load_config(None, [*TOY, "methods=[toy-flip,toy_trainable]", "seeds=[0,1]", "strengths=[0.5,1.0]"])
    groups, todo = unfinished_groups(cfg, Path("/nonexistent-run"))
    assert groups[:4] == [("toy-flip", "Smiling", 0), ("toy-flip", "Smiling", 1), ("toy-flip", "Male", 0),
                          ("toy-flip", "Male", 1)]
    assert groups[4:] == [("toy_trainable", 0), ("toy_trainable", 1)]  # both attributes: its shared stage once
    assert todo == list(range(6))


def test_parse_time():
    assert parse_time("12:00:00") == 720 and parse_time("90") == 90 and parse_time("1-00:30:00") == 1470
    assert parse_time("00:00:30") == 1


def _launch(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark.launch", "--launcher", "local",
                             "--import", str(ROOT / "tests" / "conftest.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


def _attempts(run: Path) -> Counter:
    rows = rundir.read_rows(run / "results.jsonl")
    return Counter(cell for cell, _ in rows.closed)


@pytest.mark.slow
def test_two_local_workers_finish_the_grid_and_report(tmp_path, cache_dir):
    proc = _launch("--workers", "2", "--out", str(tmp_path), *TOY, "methods=[toy-flip]", "seeds=[0,1]",
                   "strengths=[0.5,1.0]")
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 0, out
    (run,) = [p for p in tmp_path.iterdir() if p.name != "cache"]
    assert len(rundir.finished_cells(rundir.read_rows(run / "results.jsonl"))) == 8
    assert set(_attempts(run).values()) == {1}  # every cell computed once
    jobs = [json.loads(line) for line in (run / "launch" / "jobs.jsonl").read_text().splitlines()]
    assert sorted(j["group"] for j in jobs) == [0, 1, 2, 3]
    assert "4 of 4 fit groups to run, 2 workers" in out and (run / "report" / "index.html").is_file()
    again = _launch("--resume", str(run))  # nothing left: no job, only the report
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "every cell is finished" in out2, out2


@pytest.mark.slow
def test_killing_a_worker_mid_grid_then_resubmitting_finishes_only_what_is_missing(tmp_path, cache_dir):
    grid = [*TOY, "methods=[toy-flip]", "method_options.toy-flip.sleep=4", "seeds=[0,1]",
            "strengths=[0.5,1.0,1.5]"]
    proc = _launch("--workers", "2", "--out", str(tmp_path), *grid)
    deadline = time.time() + 1200
    run = victim = None
    while time.time() < deadline and victim is None:
        time.sleep(1)
        runs = [p for p in tmp_path.iterdir() if p.name != "cache"]
        if not runs:
            continue
        run = runs[0]
        pids = sorted((run / "launch" / "workers").glob("*.pid")) if (run / "launch" / "workers").is_dir() else []
        if pids and (run / "results.jsonl").is_file() and len(_attempts(run)) >= 1:
            victim = int(pids[0].read_text())  # a worker in the middle of its group (4 s per cell)
    assert victim is not None, "no worker started in time"
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=1500)
    assert proc.returncode == 1 and "1 job failed" in out and f"--resume {run}" in out, out
    before = _attempts(run)
    assert 0 < len(rundir.finished_cells(rundir.read_rows(run / "results.jsonl"))) < 12
    again = _launch("--workers", "2", "--resume", str(run))
    out2, _ = again.communicate(timeout=1500)
    assert again.returncode == 0, out2
    after = _attempts(run)
    assert len(rundir.finished_cells(rundir.read_rows(run / "results.jsonl"))) == 12
    assert all(after[c] == n for c, n in before.items())  # finished cells were not run again
    assert "of 4 fit groups to run" in out2 and "4 of 4" not in out2
