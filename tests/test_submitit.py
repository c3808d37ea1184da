"""The submitit launcher: a fit job per fit group, a job per cell after it, results merged in one run.

Fast tests run the launcher's scheduling in this process (an executor that runs each job at once),
the fit-less cell job through the CLI, and the slurm path against a fake ``sbatch`` that records what
would be submitted (no cluster here).  The end-to-end tests start real worker processes through
submitit's local executor (each imports torch, seconds per job), so they are ``slow``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from benchmark import launch as launch_mod
from benchmark import rundir
from benchmark.cli import main as cli
from benchmark.config import load_config
from benchmark.launch import main as launch
from benchmark.launch import parse_time, unfinished_groups

pytest.importorskip("submitit")

import tests.toy_editor  # noqa: E402,F401 - registers toy_trainable (shared_stages=("shared",))

ROOT = Path(__file__).resolve().parents[1]
TOY = ["data.name=toy-faces", "data.resolution=16", "data.batch_size=32", "evaluators=[mean-abs-change]",
       "attributes=[Smiling,Male]", "output.progress=false", "device=cpu", "output.save_images=0"]
TRAINABLE = ["method_options.toy_trainable.preset=test"]


def _jobs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "launch" / "jobs.jsonl").read_text().splitlines()]


def _attempts(run: Path) -> Counter:
    rows = rundir.read_rows(run / "results.jsonl")
    return Counter(cell for cell, _ in rows.closed)


def _finished(run: Path) -> set:
    return rundir.finished_cells(rundir.read_rows(run / "results.jsonl"))


def _fits(run: Path) -> list[dict]:
    return rundir.read_rows(run / "fits.jsonl") if (run / "fits.jsonl").exists() else []


def _run_dir(root: Path) -> Path:
    (run,) = [p for p in root.iterdir() if p.name != "cache"]
    return run


# -- planning ------------------------------------------------------------------------------------------

def test_one_group_per_fit_and_shared_stages_in_one_group():
    cfg = load_config(None, [*TOY, "methods=[toy-flip,toy_trainable]", "seeds=[0,1]", "strengths=[0.5,1.0]"])
    groups, todo = unfinished_groups(cfg, Path("/nonexistent-run"))
    assert groups[:4] == [("toy-flip", "Smiling", 0), ("toy-flip", "Smiling", 1), ("toy-flip", "Male", 0),
                          ("toy-flip", "Male", 1)]
    assert groups[4:] == [("toy_trainable", 0), ("toy_trainable", 1)]  # both attributes: its shared stage once
    assert todo == list(range(6))
    plan = launch_mod.make_plan(cfg, Path("/nonexistent-run"))
    assert plan.fit_todo == [4, 5]  # toy-flip has nothing to train: no fit job
    assert len(plan.todo) == 16 and len(plan.cells_of(4)) == 4  # 2 attributes × 2 strengths wait for fit 4


def test_parse_time():
    assert parse_time("12:00:00") == 720 and parse_time("90") == 90 and parse_time("1-00:30:00") == 1470
    assert parse_time("00:00:30") == 1


# -- the CLI pieces a job runs ----------------------------------------------------------------------

def test_cell_selects_one_cell_of_a_run_and_unknown_ids_are_one_line(tmp_path, capsys, cache_dir):
    assert cli(["--init", "--out", str(tmp_path), *TOY, "methods=[toy-flip]", "strengths=[0.5,1.0]"]) == 0
    run = _run_dir(tmp_path)
    assert cli(["--resume", str(run), "--cell", "toy-flip__Male__s0.5__seed0", "--no-report"]) == 0
    assert {(k.attribute, k.strength) for k in _finished(run)} == {("Male", 0.5)}
    capsys.readouterr()
    assert cli(["--resume", str(run), "--cell", "toy-flip__Male__s2__seed0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --cell: toy-flip__Male__s2__seed0 is not a cell of this grid") and \
        "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_cell_job_whose_fit_is_missing_fails_naming_the_stage_and_does_not_train(tmp_path, cache_dir):
    count = tmp_path / "trained.txt"
    assert cli(["--init", "--out", str(tmp_path / "runs"), *TOY, "methods=[toy_trainable]", *TRAINABLE,
                f"method_options.toy_trainable.count_file={count}"]) == 0
    run = _run_dir(tmp_path / "runs")
    assert cli(["--resume", str(run), "--cell", "toy_trainable__Smiling__s1__seed0", "--no-train",
                "--no-report"]) == 1
    (row,) = [r for r in rundir.read_rows(run / "results.jsonl")]
    assert row["status"] == "error" and row["metric"] == "*" and row["attribute"] == "Smiling"
    assert row["error"].startswith("FitMissingError: toy_trainable/shared (shared by all attributes), seed 0: "
                                   "stage shared-") and "--no-train" in row["error"] and "--fit-only" in row["error"]
    assert not count.exists() and not _fits(run)  # nothing trained, nothing resolved
    assert not [p for p in (cache_dir / "editors" / "toy_trainable").iterdir() if not p.name.startswith(".")]
    # after the fit (what the fit job runs), the same cell job loads it from the cache
    assert cli(["--resume", str(run), "--fit-only", "--no-report"]) == 0
    assert cli(["--resume", str(run), "--cell", "toy_trainable__Smiling__s1__seed0", "--no-train",
                "--no-report"]) == 0
    assert [r["source"] for r in _fits(run)][-2:] == ["cache", "cache"]


# -- local scheduling, in this process ---------------------------------------------------------------

class _Done:
    def __init__(self, job_id: int, value=None, error: BaseException | None = None):
        self.job_id, self._value, self._error = str(job_id), value, error

    def done(self) -> bool:
        return True

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self) -> None:
        pass


class InlineExecutor:
    """Runs each job when it is submitted; ``kill`` picks the jobs that die instead (as under SIGKILL)."""

    def __init__(self, kill=lambda fn, args: False):
        self.kill, self.submitted, self._next = kill, [], 100

    def update_parameters(self, **kw) -> None:
        pass

    def submit(self, fn, *args):
        self._next += 1
        self.submitted.append((fn.__name__, args))
        if self.kill(fn, args):
            return _Done(self._next, error=RuntimeError("Job 42 (task: 0) was killed (signal 9)"))
        try:
            return _Done(self._next, fn(*args))
        except Exception as exc:  # noqa: BLE001
            return _Done(self._next, error=exc)


def test_local_order_a_failed_fit_marks_its_cells_and_resubmission_runs_only_what_is_missing(
        tmp_path, monkeypatch, cache_dir, capsys):
    count = tmp_path / "trained.txt"
    grid = [*TOY, "methods=[toy-flip,toy_trainable]", *TRAINABLE, f"method_options.toy_trainable.count_file={count}"]
    ex = InlineExecutor(kill=lambda fn, args: fn.__name__ == "run_fit")
    monkeypatch.setattr(launch_mod, "_executor", lambda *a, **k: ex)
    monkeypatch.setattr(launch_mod.time, "sleep", lambda s: None)
    assert launch(["--launcher", "local", "--workers", "2", "--out", str(tmp_path / "runs"), *grid]) == 1
    out, err = capsys.readouterr()
    run = _run_dir(tmp_path / "runs")
    assert "1 fit job and 4 cell jobs to run (3 of 3 fit groups unfinished), 2 workers (CPU)" in out
    assert "fit toy_trainable/0: FAILED (2 cells recorded as failed: FitJobError)" in out
    assert "1 job failed" in err and f"--resume {run}" in err
    assert [j["kind"] for j in _jobs(run)] == ["fit", "cell", "cell"]  # the fit first; its cells never ran
    rows = rundir.latest_attempts(rundir.read_rows(run / "results.jsonl"))
    failed = {r["attribute"]: r["error"] for r in rows if r["method"] == "toy_trainable"}
    assert set(failed) == {"Smiling", "Male"} and all(
        e.startswith("FitJobError: the fit job of group toy_trainable/0 failed") and "killed" in e
        for e in failed.values())
    assert {k.method for k in _finished(run)} == {"toy-flip"} and not count.exists()
    before = _attempts(run)

    ex2 = InlineExecutor()
    monkeypatch.setattr(launch_mod, "_executor", lambda *a, **k: ex2)
    assert launch(["--launcher", "local", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "1 fit job and 2 cell jobs to run (1 of 3 fit groups unfinished)" in out
    assert [name for name, _ in ex2.submitted] == ["run_fit", "run_cell", "run_cell"]
    assert len(_finished(run)) == 4
    after = _attempts(run)
    assert all(after[c] == n for c, n in before.items() if c.method == "toy-flip")  # not run again
    assert count.read_text().split()[::2] == ["shared", "head", "head"]  # the shared stage trained once
    new_jobs = _jobs(run)[3:]
    assert [j["after"].split()[0] for j in new_jobs if j["kind"] == "cell"] == ["fit", "fit"]

    # the fits are ready and every cell is done: nothing to submit; delete a stage and nothing changes
    # either (the cells are finished), but the marker no longer counts as ready
    assert launch_mod.fit_ready(run, ("toy_trainable", 0))
    ex3 = InlineExecutor()
    monkeypatch.setattr(launch_mod, "_executor", lambda *a, **k: ex3)
    assert launch(["--launcher", "local", "--resume", str(run)]) == 0
    assert "every cell is finished" in capsys.readouterr().out and not ex3.submitted
    import shutil

    shutil.rmtree(next(p for p in (cache_dir / "editors" / "toy_trainable").iterdir() if p.name.startswith("head-")))
    assert not launch_mod.fit_ready(run, ("toy_trainable", 0))


def test_a_fit_that_fails_records_why_in_its_marker_and_in_its_cells_rows(tmp_path, monkeypatch, cache_dir, capsys):
    ex = InlineExecutor()
    monkeypatch.setattr(launch_mod, "_executor", lambda *a, **k: ex)
    monkeypatch.setattr(launch_mod.time, "sleep", lambda s: None)
    grid = [*TOY, "methods=[toy_trainable]", *TRAINABLE, "method_options.toy_trainable.poison_step=1"]
    assert launch(["--launcher", "local", "--out", str(tmp_path / "runs"), *grid]) == 1
    run = _run_dir(tmp_path / "runs")
    marker = json.loads(launch_mod.fit_marker(run, ("toy_trainable", 0)).read_text())
    assert marker["status"] == "failed" and "DivergenceError" in marker["error"]
    assert marker["error"].startswith("fit toy_trainable/Smiling/seed0: FAILED: DivergenceError")
    rows = rundir.read_rows(run / "results.jsonl")
    assert len(rows) == 2 and all("FitJobError" in r["error"] and "DivergenceError" in r["error"] for r in rows)
    assert [name for name, _ in ex.submitted] == ["run_fit"]  # its cells never ran
    assert "fit toy_trainable/0: FAILED (2 cells recorded as failed: FitJobError)" in capsys.readouterr().out


# -- slurm: what would be submitted ------------------------------------------------------------------

FAKE_SBATCH = """#!/bin/bash
n=$(( $(cat "{log}/counter" 2>/dev/null || echo 1000) + 1 ))
echo "$n" > "{log}/counter"
cp "$1" "{log}/sbatch-$n.sh"
echo "Submitted batch job $n"
"""


def test_slurm_submits_fit_array_cells_after_their_fit_and_a_report_after_all(tmp_path, monkeypatch, cache_dir,
                                                                             capsys):
    log = tmp_path / "sbatch"
    log.mkdir()
    (tmp_path / "bin").mkdir()
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.write_text(FAKE_SBATCH.format(log=log))
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IEXEC)
    srun = tmp_path / "bin" / "srun"  # submitit looks for it before it submits anything
    srun.write_text("#!/bin/bash\nexit 1\n")
    srun.chmod(srun.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    grid = [*TOY, "methods=[toy-flip,toy_trainable]", *TRAINABLE, "seeds=[0,1]"]
    assert launch(["--launcher", "slurm", "--out", str(tmp_path / "runs"), "--gpus-per-job", "0", *grid]) == 0
    out = capsys.readouterr().out
    run = _run_dir(tmp_path / "runs")
    scripts = {int(p.stem.split("-")[1]): p.read_text() for p in log.glob("sbatch-*.sh")}

    def flag(text: str, name: str) -> str | None:
        m = re.search(rf"^#SBATCH --{name}=(\S+)$", text, re.M)
        return m.group(1) if m else None

    # 1001: the fit array (2 groups: toy_trainable seed 0 and 1); then one cell array per group
    assert flag(scripts[1001], "array") == "0-1%2" and flag(scripts[1001], "dependency") is None
    jobs = _jobs(run)
    fits = [j for j in jobs if j["kind"] == "fit"]
    assert [(j["what"], j["job_id"]) for j in fits] == [("toy_trainable/0", "1001_0"), ("toy_trainable/1", "1001_1")]
    cells = [j for j in jobs if j["kind"] == "cell"]
    assert len(cells) == 8 and len({j["cell"] for j in cells}) == 8  # one job per cell
    for j in cells:
        script = scripts[int(j["job_id"].split("_")[0])]
        if j["what"].startswith("toy_trainable"):
            want = "afterok:1001_0" if j["what"].endswith("/0") else "afterok:1001_1"
            assert j["after"] == want and flag(script, "dependency") == want
            assert flag(script, "kill-on-invalid-dep") == "yes"
        else:  # nothing to train: runs at once
            assert j["after"] == "" and flag(script, "dependency") is None
    (report,) = [j for j in jobs if j["kind"] == "report"]
    arrays = sorted({j["job_id"].split("_")[0] for j in fits + cells})
    report_script = scripts[int(report["job_id"])]
    assert report["after"] == "afterany:" + ":".join(arrays) == flag(report_script, "dependency")
    assert flag(report_script, "gpus-per-node") == "0" and flag(report_script, "kill-on-invalid-dep") is None
    assert flag(scripts[1001], "job-name") == f"faceedit-{run.name}-fit"
    assert "submitted 2 fit jobs, 8 cell jobs (6 arrays" in out
    assert len(scripts) == 1 + 6 + 1

    # the report job records the cells of a fit job that never finished (slurm cancelled them)
    plan = launch_mod.make_plan(load_config(None, grid), run)
    pending = [(list(plan.groups[g]), [plan.bases[c] for c in plan.cells_of(g)]) for g in plan.fit_todo]
    monkeypatch.setattr(launch_mod, "write_report", lambda run_dir, imports: "report")
    assert launch_mod.report_job(str(run), [], pending) == "report"
    rows = rundir.read_rows(run / "results.jsonl")
    assert len(rows) == 4 and all(r["error"].startswith("FitJobError: the fit job of group toy_trainable/")
                                  and "did not finish" in r["error"] for r in rows)


# -- end to end: real worker processes (submitit's local executor) --------------------------------

def _launch(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmark.launch", "--launcher", "local",
                             "--import", str(ROOT / "tests" / "conftest.py"),
                             "--import", str(ROOT / "tests" / "toy_editor.py"), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, **kw)


@pytest.mark.slow
def test_two_local_workers_a_fit_job_per_group_a_job_per_cell_and_the_shared_stage_trained_once(
        tmp_path, cache_dir):
    count = tmp_path / "trained.txt"
    proc = _launch("--workers", "2", "--out", str(tmp_path / "runs"), *TOY, "methods=[toy-flip,toy_trainable]",
                   *TRAINABLE, f"method_options.toy_trainable.count_file={count}")
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out
    run = _run_dir(tmp_path / "runs")
    assert len(_finished(run)) == 4 and set(_attempts(run).values()) == {1}  # every cell computed once
    jobs = _jobs(run)
    assert [j["what"] for j in jobs if j["kind"] == "fit"] == ["toy_trainable/0"]  # toy-flip: nothing to fit
    cells = [j for j in jobs if j["kind"] == "cell"]
    assert sorted(j["cell"] for j in cells) == sorted(k.slug() for k in _finished(run))
    fit_id = next(j["job_id"] for j in jobs if j["kind"] == "fit")
    assert [j["after"] for j in cells if j["what"] == "toy_trainable/0"] == [f"fit {fit_id}"] * 2
    assert "1 fit job and 4 cell jobs to run (3 of 3 fit groups unfinished), 2 workers (CPU)" in out
    shared = [r["source"] for r in _fits(run) if r["stage"] == "shared"]
    assert shared[0] == "trained" and shared.count("trained") == 1 and set(shared[1:]) == {"cache"}
    assert len(shared) == 4  # the fit job: for Smiling, then Male; each cell job loads it again
    assert count.read_text().split()[::2] == ["shared", "head", "head"]
    assert (run / "report" / "index.html").is_file()
    again = _launch("--resume", str(run))  # nothing left: no job, only the report
    out2, _ = again.communicate(timeout=600)
    assert again.returncode == 0 and "every cell is finished" in out2, out2
    assert len(_jobs(run)) == len(jobs)


@pytest.mark.slow
def test_killing_a_worker_mid_grid_then_resubmitting_finishes_only_the_missing_cells(tmp_path, cache_dir):
    grid = [*TOY, "methods=[toy-flip]", "method_options.toy-flip.sleep=3", "strengths=[0.5,1.0]"]
    proc = _launch("--workers", "2", "--out", str(tmp_path / "runs"), *grid)
    deadline = time.time() + 600
    run = victim = None
    while time.time() < deadline and victim is None:
        time.sleep(0.5)
        runs = [p for p in (tmp_path / "runs").iterdir()] if (tmp_path / "runs").is_dir() else []
        if not runs:
            continue
        run = runs[0]
        workers = run / "launch" / "workers"
        pids = sorted(workers.glob("cell-*.pid")) if workers.is_dir() else []
        if pids:
            try:
                victim = int(pids[0].read_text())  # a cell job in the middle of its cell (3 s of editing)
            except (OSError, ValueError):  # finished and removed in between
                continue
    assert victim is not None, "no worker started in time"
    os.kill(victim, signal.SIGKILL)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 1 and "1 job failed" in out and f"--resume {run}" in out, out
    before = _attempts(run)
    missing = 4 - len(_finished(run))
    assert 0 < missing < 4
    n_jobs = len(_jobs(run))
    again = _launch("--workers", "2", "--resume", str(run))
    out2, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out2
    assert f"0 fit jobs and {missing} cell job{'s' * (missing != 1)} to run" in out2
    assert len(_jobs(run)) - n_jobs == missing  # one job per missing cell, nothing else
    after = _attempts(run)
    assert len(_finished(run)) == 4
    assert all(after[c] == n for c, n in before.items())  # finished cells were not run again
