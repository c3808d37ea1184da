"""Scale-out on submitit: fit jobs, cell jobs that wait for them, one shared run directory.

    python -m benchmark.launch --launcher local|slurm [--config C] [key=value ...]
        [--partition P] [--gpus-per-job G] [--cpus-per-job C] [--mem-gb M] [--time 12:00:00]
        [--array-parallelism N] [--workers N] [--resume RUN] [--wait]

The run directory is created first (``--init``: ``config.yaml``, ``env.json``); then three kinds
of job, each a ``faceedit-bench --resume RUN ...`` call in its own process:

* a **fit job** per fit group (``runner._fit_group``: (method, attribute, seed), or (method, seed)
  for an editor declaring ``shared_stages``, so that a shared stage such as InterFaceGAN's GAN
  trains once, in one job, for every attribute).  It runs ``--shard K/G --fit-only`` (G = the
  number of groups; ``shard_cells`` deals groups round-robin, so shard K is group K): it trains or
  loads every stage of the group into ``$FACEEDIT_CACHE`` and writes the ``fits.jsonl`` rows, then
  ``launch/fits/<group>.json`` (``ready`` and the stage directories, or ``failed`` and why).
  Editors without trainable fits (``meta.trainable=False``: identity, oracle) get no fit job.
* a **cell job** per unfinished cell, ``--cell <cell id> --no-train`` (the id is
  ``runner.cell_id``, ``<method>__<attribute>__s<strength>__seed<seed>``).  It starts only after its
  group's fit job succeeded and loads the fit from the cache; it never trains: a stage missing
  there fails the cell with ``FitMissingError`` naming the stage.
* a **report job** after everything.

Every cell is appended atomically (``rundir.append_cell``), so the jobs share ``results.jsonl``;
a killed job leaves whole cells.  A failed fit job records an error row (``FitJobError`` and the
reason) for each of its group's cells instead of running them, and the grid goes on.
``--resume RUN`` submits only what is missing: fit jobs of groups with an unfinished cell whose
fit is not ready (no ``ready`` marker, or a stage directory of it gone from the cache), and the
cells not finished in ``results.jsonl`` (``rundir.finished_cells``).  ``launch/jobs.jsonl`` logs
every job (kind, group, cell, job id, what it waits for).

* ``local``: the launcher orders the jobs itself: fit jobs first, then the cells of groups that
  need none, then each group's cells once its fit job succeeded; at most ``--workers`` at once
  (default: one per visible GPU when the run uses CUDA, each pinned to its own GPU, else 1).  It
  waits, then writes the report.
* ``slurm``: the fit jobs as one array; per group, its cells as one array with
  ``--dependency=afterok:<fit job>`` (``--kill-on-invalid-dep=yes``: a failed fit cancels them);
  a report job with ``afterany`` on every array, which also records the cells of failed fits.
  The launcher returns once submitted (``--wait`` to follow the jobs).

The older hand-written sbatch path stays: ``python -m benchmark.launch slurm --shards N`` writes
``<run>/launch/slurm.sh`` (array task K runs ``--resume RUN --shard K/N``).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import math
import os
import re
import shlex
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from benchmark import rundir
from benchmark.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_ERRORS, EXIT_USER_ERROR, USER_ERRORS, init_run
from benchmark.config import Config, ConfigError, config_from_dict, load_config

SLURM = """#!/bin/bash
#SBATCH --job-name=faceedit-{name}
#SBATCH --array=0-{last}
#SBATCH --time={time}
#SBATCH --cpus-per-task={cpus}
{gpu_line}#SBATCH --output={run}/launch/slurm-%A_%a.out
set -euo pipefail
cd {cwd}
{python} run_benchmark.py --resume {run} --shard "${{SLURM_ARRAY_TASK_ID}}/{shards}" output.progress=false
"""


def slurm_script(run_dir: Path, shards: int, time: str, cpus: int, gpus: int, python: str) -> str:
    return SLURM.format(name=run_dir.name, last=shards - 1, time=time, cpus=cpus,
                        gpu_line=f"#SBATCH --gres=gpu:{gpus}\n" if gpus else "", run=shlex.quote(str(run_dir)),
                        cwd=shlex.quote(str(Path.cwd())), python=shlex.quote(python), shards=shards)


def device_for_gpus(cfg: Config, gpus: int) -> str | None:
    """The device override the jobs need for ``--gpus``, or None; ConfigError when they cannot agree.

    A job given GPUs but told ``device: cpu`` would leave them idle without a word,
    and one told ``cuda`` without GPUs would fail in every array task.
    """
    if gpus > 0 and cfg.device == "cpu":
        return "cuda"
    if gpus == 0 and cfg.device.startswith("cuda"):
        raise ConfigError(f"device={cfg.device} needs GPUs but --gpus 0 asks for none; "
                          "pass --gpus N, or device=cpu / device=auto")
    return None



# -- the jobs -----------------------------------------------------------------------------------------

def import_plugins(imports: list[str]) -> None:
    """Import modules (dotted names) or files (``path.py``) that register editors / evaluators / datasets."""
    for spec in imports:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            sys.path.insert(0, str(path.parent))
            name = path.stem
            if name not in sys.modules:
                mod_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(mod_spec)
                sys.modules[name] = module
                mod_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)


@contextlib.contextmanager
def _pid_file(run_dir: str, name: str) -> Iterator[None]:
    """``launch/workers/<name>.pid`` while the job runs, so that a person (or a test) can find the process."""
    pids = Path(run_dir) / "launch" / "workers"
    pids.mkdir(parents=True, exist_ok=True)
    path = pids / f"{_slug(name)}.pid"
    rundir.atomic_write_text(path, f"{os.getpid()}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


class _Tee(io.TextIOBase):
    """Passes writes through to ``stream`` and keeps the lines that say why a fit failed."""

    def __init__(self, stream: Any):
        self.stream = stream
        self.failures: list[str] = []
        self._buf = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        self._buf += text
        *lines, self._buf = self._buf.split("\n")
        self.failures += [ln.strip() for ln in lines if ": FAILED: " in ln or ln.startswith("error: ")]
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def run_fit(run_dir: str, k: int, n: int, key: list, attributes: list[str], overrides: list[str],
            imports: list[str]) -> int:
    """A fit job: prepare every fit of group K of N (``--fit-only``), then write its marker.

    The marker ``launch/fits/<group>.json`` says ``ready`` with the stage directories the group's
    cells will load (from ``fits.jsonl``), or ``failed`` with the reason; a failure also raises,
    so that the scheduler marks the job failed (and, on slurm, cancels the cells waiting for it).
    """
    import_plugins(imports)
    from benchmark.cli import main

    key = tuple(key)
    marker = fit_marker(Path(run_dir), key)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    out, err = _Tee(sys.stdout), _Tee(sys.stderr)
    with _pid_file(run_dir, "fit-" + group_label(key)), contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        code = main(["--resume", run_dir, "--shard", f"{k}/{n}", "--fit-only", "--no-report",
                     "output.progress=false", *overrides])
    if code == EXIT_OK:
        stages = group_stages(Path(run_dir), key, attributes)
        rundir.atomic_write_text(marker, json.dumps({"group": list(key), "status": "ready", "time": _now(),
                                                     "stages": stages}, indent=1))
        return code
    reason = "; ".join(out.failures + err.failures) or f"faceedit-bench --fit-only stopped with exit status {code}"
    rundir.atomic_write_text(marker, json.dumps({"group": list(key), "status": "failed", "time": _now(),
                                                 "error": reason}, indent=1))
    raise RuntimeError(f"fit job of group {group_label(key)} failed: {reason}")


def run_cell(run_dir: str, cells: list[str], overrides: list[str], imports: list[str]) -> int:
    """A cell job: the cells ``cells`` (ids) of the run, from fits already in the cache (``--no-train``).

    Returns the CLI's exit status (0, or 1 when a cell or metric errored: the rows say why);
    a user error (2) or an interrupt raises, so that the scheduler marks the job failed.
    """
    import_plugins(imports)
    from benchmark.cli import main

    with _pid_file(run_dir, "cell-" + cells[0] + (f"+{len(cells) - 1}" if len(cells) > 1 else "")):
        code = main(["--resume", run_dir, *[a for c in cells for a in ("--cell", c)], "--no-train", "--no-report",
                     "output.progress=false", *overrides])
    if code not in (EXIT_OK, EXIT_RUN_ERRORS):
        raise RuntimeError(f"cell job {', '.join(cells)} of {run_dir} stopped with exit status {code}")
    return code


def write_report(run_dir: str, imports: list[str]) -> str:
    """Tables, figures, HTML of the whole run."""
    import_plugins(imports)
    from benchmark import report

    return str(report.generate(run_dir))


def report_job(run_dir: str, imports: list[str], fits: list[tuple[list, list[dict[str, Any]]]]) -> str:
    """The slurm report job (``afterany``): error rows for the cells of fit jobs that did not succeed
    (slurm cancelled their cell jobs), then the report."""
    for key, bases in fits:
        key = tuple(key)
        if not fit_ready(Path(run_dir), key):
            record_unfit(Path(run_dir), bases, group_label(key), fit_failure(Path(run_dir), key))
    return write_report(run_dir, imports)


# -- fit markers and error rows ------------------------------------------------------------------------

def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text)


def group_label(key: tuple) -> str:
    """``toy_trainable/0``, ``sagan/Smiling/0``: a fit group as people read it."""
    return "/".join(map(str, key))


def fit_marker(run_dir: Path, key: tuple) -> Path:
    return run_dir / "launch" / "fits" / f"{_slug('-'.join(map(str, key)))}.json"


def _read_marker(run_dir: Path, key: tuple) -> dict[str, Any] | None:
    try:
        return json.loads(fit_marker(run_dir, key).read_text())
    except (OSError, ValueError):
        return None


def fit_ready(run_dir: Path, key: tuple) -> bool:
    """The group's fit job succeeded and every stage directory it resolved is still there."""
    m = _read_marker(run_dir, key)
    return bool(m and m.get("status") == "ready" and all(Path(s["path"]).is_dir() for s in m.get("stages", [])))


def fit_failure(run_dir: Path, key: tuple) -> str:
    """Why the group's fit is not ready, from its marker."""
    m = _read_marker(run_dir, key)
    if m is None:
        return (f"the fit job did not finish (killed, timed out or cancelled?); its log is under "
                f"{run_dir / 'launch' / 'submitit'}")
    if m.get("status") == "failed":
        return str(m.get("error", "unknown error"))
    gone = [s["path"] for s in m.get("stages", []) if not Path(s["path"]).is_dir()]
    return f"stage directories gone from the cache: {', '.join(gone)}"


def group_stages(run_dir: Path, key: tuple, attributes: list[str]) -> list[dict[str, Any]]:
    """The latest ``fits.jsonl`` row per (stage, attribute) of fit group ``key``."""
    method, seed = key[0], int(key[-1])
    attrs = {key[1]} if len(key) == 3 else set(attributes)
    latest: dict[tuple, dict[str, Any]] = {}
    for r in rundir.read_rows(run_dir / "fits.jsonl"):
        if r.get("method") == method and r.get("seed") == seed and (r.get("attribute") is None or
                                                                     r.get("attribute") in attrs):
            latest[(r["stage"], r.get("attribute"))] = {f: r.get(f) for f in ("stage", "attribute", "key",
                                                                              "source", "path")}
    return list(latest.values())


def record_unfit(run_dir: Path, bases: list[dict[str, Any]], label: str, reason: str) -> int:
    """An error row (``metric="*"``) for each unfinished cell of ``bases``: their fit job failed.

    Such a cell counts as unfinished, so ``--resume`` runs it again (after its fit job).
    """
    jsonl = run_dir / "results.jsonl"
    done = rundir.finished_cells(rundir.read_rows(jsonl))
    n = 0
    for base in bases:
        if rundir.CellKey.of(base) in done:
            continue
        rundir.append_cell(jsonl, [{**base, "direction": "", "metric": "*", "value": math.nan, "n": 0,
                                    "status": "error", "error": f"FitJobError: the fit job of group {label} "
                                                                f"failed, so this cell did not run: {reason}",
                                    "seconds": 0.0, "attempt": uuid.uuid4().hex[:12]}])
        n += 1
    if n:
        rundir.write_csv(jsonl, run_dir / "results.csv")
    return n


# -- planning ----------------------------------------------------------------------------------------

def fit_groups(cfg: Config) -> tuple[list[tuple], list, str]:
    """The fit groups of the grid in order, its cells, and the dataset's name."""
    from benchmark.cli import preflight
    from benchmark.runner import _fit_group, expand_cells

    dataset, attrs = preflight(cfg)
    cells = expand_cells(cfg, attrs)
    return list(dict.fromkeys(_fit_group(c) for c in cells)), cells, dataset.name


def unfinished_groups(cfg: Config, run_dir: Path) -> tuple[list[tuple], list[int]]:
    """The fit groups, and the indices of those with a cell not finished in ``run_dir``."""
    p = make_plan(cfg, run_dir)
    todo = {p.group_of[c] for c in p.todo}
    return p.groups, sorted(todo)


@dataclass
class Plan:
    """What a submission runs: every fit group and cell of the grid, and what of it is missing."""

    dataset: str
    attributes: list[str]
    groups: list[tuple]
    cells: list[Any]  # runner.Cell, grid order
    group_of: dict[Any, int]  # cell -> index in groups
    trainable: list[bool]  # per group: its editor has fits to prepare (a fit job)
    bases: dict[Any, dict[str, Any]]  # cell -> the fields of its result rows
    todo: list[Any] = field(default_factory=list)  # cells not finished
    fit_todo: list[int] = field(default_factory=list)  # groups whose fit job must run

    def cells_of(self, g: int) -> list[Any]:
        return [c for c in self.todo if self.group_of[c] == g]


def make_plan(cfg: Config, run_dir: Path) -> Plan:
    """The grid, its unfinished cells, and the fit groups among theirs whose fit is not ready."""
    from benchmark.cli import preflight
    from benchmark.registry import METHODS
    from benchmark.runner import _fit_group, expand_cells

    dataset, attrs = preflight(cfg)
    cells = expand_cells(cfg, attrs)
    groups = list(dict.fromkeys(_fit_group(c) for c in cells))
    index = {g: i for i, g in enumerate(groups)}
    trainable = [bool(getattr(METHODS.get(g[0]).meta, "trainable", True)) for g in groups]
    bases = {c: {"method": c.method, "dataset": dataset.name, "attribute": c.attribute,
                 "group": dataset.group(c.attribute), "strength": c.strength, "seed": c.seed} for c in cells}
    plan = Plan(dataset.name, list(attrs), groups, cells, {c: index[_fit_group(c)] for c in cells}, trainable, bases)
    done = rundir.finished_cells(rundir.read_rows(run_dir / "results.jsonl"))
    plan.todo = [c for c in cells if rundir.CellKey.of(bases[c]) not in done]
    pending = sorted({plan.group_of[c] for c in plan.todo})
    plan.fit_todo = [g for g in pending if trainable[g] and not fit_ready(run_dir, groups[g])]
    return plan


def parse_time(text: str) -> int:
    """``HH:MM:SS``, ``MM:SS``, ``D-HH:MM:SS`` or plain minutes -> minutes (at least 1)."""
    days = 0
    if "-" in text:
        d, text = text.split("-", 1)
        days = int(d)
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        minutes = parts[0]
    else:
        parts = [0] * (3 - len(parts)) + parts
        minutes = parts[0] * 60 + parts[1] + (1 if parts[2] else 0)
    return max(1, days * 24 * 60 + minutes)


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001
        return 0


# -- executors ---------------------------------------------------------------------------------------

def _executor(kind: str, folder: Path, args: argparse.Namespace, uses_cuda: bool, *, name: str = "faceedit",
              dependency: str | None = None, gpus: int | None = None, minutes: int | None = None) -> Any:
    """A submitit executor; on slurm, ``dependency`` is the jobs' ``--dependency``; an ``afterok`` one
    comes with ``--kill-on-invalid-dep=yes``, so that the cells of a failed fit leave the queue."""
    import submitit

    if gpus is None:
        gpus = args.gpus_per_job if args.gpus_per_job is not None else (1 if uses_cuda else 0)
    minutes = minutes if minutes is not None else parse_time(args.time)
    if kind == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=minutes, gpus_per_node=gpus)
        return ex
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {"timeout_min": minutes, "gpus_per_node": gpus, "cpus_per_task": args.cpus_per_job,
                              "name": name,
                              "slurm_array_parallelism": args.array_parallelism}
    if dependency:
        params["slurm_dependency"] = dependency
        if dependency.startswith("afterok:"):
            params["slurm_additional_parameters"] = {"kill-on-invalid-dep": "yes"}
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    ex.update_parameters(**params)
    return ex


@dataclass
class Job:
    """One job of a submission: a group's fit, or one cell."""

    kind: str  # fit | cell
    group: int
    cell: Any = None  # runner.Cell for a cell job

    def label(self, plan: Plan) -> str:
        from benchmark.runner import cell_id

        return f"fit {group_label(plan.groups[self.group])}" if self.kind == "fit" else f"cell {cell_id(self.cell)}"


def _submit(ex: Any, job: Job, plan: Plan, run_dir: Path, overrides: list[str], imports: list[str]) -> Any:
    from benchmark.runner import cell_id

    if job.kind == "fit":
        return ex.submit(run_fit, str(run_dir), job.group, len(plan.groups), list(plan.groups[job.group]),
                         plan.attributes, overrides, imports)
    return ex.submit(run_cell, str(run_dir), [cell_id(job.cell)], overrides, imports)


def _log_job(run_dir: Path, plan: Plan, kind: str, group: int | None, job: Any, cell: Any = None,
             after: str = "") -> None:
    from benchmark.runner import cell_id

    rundir.append_rows(run_dir / "launch" / "jobs.jsonl", [{
        "time": _now(), "kind": kind, "group": group, "groups": len(plan.groups),
        "what": group_label(plan.groups[group]) if group is not None else "report",
        "cell": cell_id(cell) if cell is not None else None, "job_id": str(job.job_id), "after": after}])


def _last_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def run_local(run_dir: Path, plan: Plan, args: argparse.Namespace, overrides: list[str], uses_cuda: bool,
              executor: Any = None, poll: float = 0.3) -> int:
    """The jobs on this machine, ``workers`` at a time (each on its own GPU when CUDA is used), fit
    jobs first, each group's cells once its fit succeeded; then the report."""
    ex = executor if executor is not None else _executor("local", run_dir / "launch" / "submitit", args, uses_cuda)
    gpu_count = _visible_gpus() if uses_cuda else 0
    workers = args.workers or (max(1, gpu_count) if uses_cuda else 1)
    fit_todo = set(plan.fit_todo)
    ready = [Job("fit", g) for g in plan.fit_todo]
    ready += [Job("cell", plan.group_of[c], c) for c in plan.todo if plan.group_of[c] not in fit_todo]
    blocked = {g: [Job("cell", g, c) for c in plan.cells_of(g)] for g in plan.fit_todo}
    total = len(plan.fit_todo) + len(plan.todo)
    running: dict[int, tuple[Job, Any]] = {}  # slot -> (job, submitit job)
    fit_ids: dict[int, str] = {}
    failed: list[tuple[str, str]] = []
    finished = 0
    print(f"{_plural(len(plan.fit_todo), 'fit job')} and {_plural(len(plan.todo), 'cell job')} to run "
          f"({len({plan.group_of[c] for c in plan.todo})} of {len(plan.groups)} fit groups unfinished), "
          f"{_plural(workers, 'worker')} ({'one GPU each' if uses_cuda and gpu_count else 'CPU'})", flush=True)
    try:
        while ready or running:
            for slot in range(workers):
                if slot in running or not ready:
                    continue
                job = ready.pop(0)
                if uses_cuda and gpu_count:
                    ex.update_parameters(visible_gpus=[slot % gpu_count], gpus_per_node=1)
                sub = _submit(ex, job, plan, run_dir, overrides, args.imports)
                if job.kind == "fit":
                    fit_ids[job.group] = str(sub.job_id)
                _log_job(run_dir, plan, job.kind, job.group, sub, job.cell,
                         after=f"fit {fit_ids[job.group]}" if job.kind == "cell" and job.group in fit_ids else "")
                running[slot] = (job, sub)
            time.sleep(poll)
            for slot, (job, sub) in list(running.items()):
                if not sub.done():
                    continue
                del running[slot]
                finished += 1
                note = ""
                try:
                    sub.result()
                    status = "done"
                    if job.kind == "fit":
                        ready.extend(blocked.pop(job.group))
                except Exception as exc:  # noqa: BLE001 - a failed job is reported, the others go on
                    failed.append((job.label(plan), _last_line(exc)))
                    status = "FAILED"
                    if job.kind == "fit":
                        key = plan.groups[job.group]
                        cells = blocked.pop(job.group)
                        m = _read_marker(run_dir, key)
                        reason = m["error"] if m and m.get("status") == "failed" else _last_line(exc)
                        record_unfit(run_dir, [plan.bases[j.cell] for j in cells], group_label(key), reason)
                        total -= len(cells)
                        note = f" ({_plural(len(cells), 'cell')} recorded as failed: FitJobError)"
                print(f"[{finished}/{total}] {job.label(plan)}: {status}{note}", flush=True)
    except KeyboardInterrupt:
        for _, sub in running.values():
            sub.cancel()
        print(f"interrupted: finished cells are saved; re-submit with --resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _finish(run_dir, args, failed)


def _finish(run_dir: Path, args: argparse.Namespace, failed: list[tuple[str, str]]) -> int:
    try:
        out = write_report(str(run_dir), args.imports)
        print(f"report: {out}\n  tables:  {out}/table.tex, {out}/table.csv\n  figures: {out}/figures/\n"
              f"  html:    {out}/index.html", flush=True)
    except Exception as exc:  # noqa: BLE001 - results are on disk; the report can be rebuilt
        print(f"report failed ({type(exc).__name__}: {exc}); rebuild with faceedit-bench --report {run_dir}",
              file=sys.stderr)
    rows = rundir.latest_attempts(rundir.read_rows(run_dir / "results.jsonl"))
    errors = rundir.count_errors(rows)
    if failed:
        for label, msg in failed:
            print(f"job {label} failed: {msg}", file=sys.stderr)
        print(f"{_plural(len(failed), 'job')} failed; finish the run with: "
              f"python -m benchmark.launch --launcher {args.launcher} --resume {run_dir}", file=sys.stderr)
        return EXIT_RUN_ERRORS
    if errors["total"]:
        print(f"errors: {errors['total']} ({errors['cells']} failed cells, {errors['metrics']} failed metrics); "
              f"see {run_dir / 'report' / 'problems.csv'}", file=sys.stderr)
        return EXIT_RUN_ERRORS
    return EXIT_OK


def run_slurm(run_dir: Path, plan: Plan, args: argparse.Namespace, overrides: list[str], uses_cuda: bool) -> int:
    """Submit the fit array, a cell array per group (``afterok`` on its fit job), and the report job
    (``afterany`` on them all); return once submitted unless ``--wait``."""
    from benchmark.runner import cell_id

    folder = run_dir / "launch" / "submitit" / "%j"
    n = len(plan.groups)
    fit_jobs: dict[int, Any] = {}
    everything: list[tuple[str, Any]] = []
    if plan.fit_todo:
        ex = _executor("slurm", folder, args, uses_cuda, name=f"faceedit-{run_dir.name}-fit")
        todo = plan.fit_todo
        jobs = ex.map_array(run_fit, [str(run_dir)] * len(todo), todo, [n] * len(todo),
                            [list(plan.groups[g]) for g in todo], [plan.attributes] * len(todo),
                            [overrides] * len(todo), [args.imports] * len(todo))
        for g, job in zip(todo, jobs):
            fit_jobs[g] = job
            everything.append((f"fit {group_label(plan.groups[g])}", job))
            _log_job(run_dir, plan, "fit", g, job)
    arrays = 0
    for g in sorted({plan.group_of[c] for c in plan.todo}):
        cells = plan.cells_of(g)
        after = f"afterok:{fit_jobs[g].job_id}" if g in fit_jobs else None
        ex = _executor("slurm", folder, args, uses_cuda, name=f"faceedit-{run_dir.name}-cells", dependency=after)
        jobs = ex.map_array(run_cell, [str(run_dir)] * len(cells), [[cell_id(c)] for c in cells],
                            [overrides] * len(cells), [args.imports] * len(cells))
        arrays += 1
        for c, job in zip(cells, jobs):
            everything.append((f"cell {cell_id(c)}", job))
            _log_job(run_dir, plan, "cell", g, job, c, after=after or "")
    ids = list(dict.fromkeys(str(job.job_id).split("_")[0] for _, job in everything))
    after_all = "afterany:" + ":".join(ids)
    ex = _executor("slurm", folder, args, uses_cuda, name=f"faceedit-{run_dir.name}-report", dependency=after_all,
                   gpus=0, minutes=60)
    pending = [(list(plan.groups[g]), [plan.bases[c] for c in plan.cells_of(g)]) for g in plan.fit_todo]
    report = ex.submit(report_job, str(run_dir), args.imports, pending)
    _log_job(run_dir, plan, "report", None, report, after=after_all)
    print(f"submitted {_plural(len(fit_jobs), 'fit job')}, {_plural(len(plan.todo), 'cell job')} "
          f"({_plural(arrays, 'array')}, each after its group's fit) and report job {report.job_id} "
          f"({after_all})\nlogs: {run_dir / 'launch' / 'submitit'}\n"
          f"report (when done): {run_dir / 'report' / 'index.html'}", flush=True)
    if not args.wait:
        return EXIT_OK
    failed = []
    for label, job in everything:
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001
            failed.append((label, _last_line(exc)))
    try:
        report.result()
    except Exception as exc:  # noqa: BLE001 - _finish writes the report again here
        print(f"report job failed: {_last_line(exc)}", file=sys.stderr)
    return _finish(run_dir, args, failed)


# -- entry point -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides key=value; the legacy form starts with `slurm`")
    p.add_argument("--launcher", choices=["local", "slurm"], help="submit through submitit's local or slurm executor")
    p.add_argument("--config", type=Path)
    p.add_argument("--out", type=Path, help="results root for a new run (default: output.root)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="submit only what RUN_DIR lacks: fit jobs whose fit is not ready, unfinished cells")
    p.add_argument("--partition", help="slurm partition")
    p.add_argument("--gpus-per-job", type=int, help="GPUs per job (default: 1 when the run uses CUDA, else 0)")
    p.add_argument("--cpus-per-job", type=int, default=8)
    p.add_argument("--mem-gb", type=int)
    p.add_argument("--time", default="12:00:00", help="time limit per job (HH:MM:SS or minutes)")
    p.add_argument("--array-parallelism", type=int, default=64, help="slurm: jobs of each array running at once")
    p.add_argument("--workers", type=int, help="local: jobs at once (default: one per visible GPU, or 1 on CPU)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE|FILE.py",
                   help="plugin module or file each job imports first (registers editors / evaluators / datasets)")
    p.add_argument("--wait", action="store_true", help="slurm: wait for the jobs, then write the report here")
    # legacy sbatch script
    p.add_argument("--shards", type=int)
    p.add_argument("--cpus", type=int, default=8)
    p.add_argument("--gpus", type=int, default=1)
    return p


def _legacy(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.shards is None or args.shards < 1:
        p.error("slurm (sbatch script) needs --shards N >= 1")
    if args.gpus < 0:
        p.error("--gpus must be >= 0")
    try:
        cfg = load_config(args.config, args.overrides)
        device = device_for_gpus(cfg, args.gpus)
        if device is not None:
            print(f"note: the config says device={cfg.device}, but --gpus {args.gpus} asks the scheduler for GPUs: "
                  f"the jobs run with device={device} (pass --gpus 0 to run on CPUs)", file=sys.stderr)
            cfg = load_config(args.config, [*args.overrides, f"device={device}"])
        run_dir = init_run(cfg, args.out).resolve()
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    script = run_dir / "launch" / "slurm.sh"
    script.parent.mkdir()
    script.write_text(slurm_script(run_dir, args.shards, args.time, args.cpus, args.gpus, sys.executable))
    print(f"run directory: {run_dir}\nsubmit with:   sbatch {script}\nthen report:   faceedit-bench --report {run_dir}")
    return 0


def _prepare(args: argparse.Namespace) -> tuple[Config, Path, list[str]]:
    """The config and run directory (new, or resumed), and the overrides every job passes on."""
    import yaml

    import_plugins(args.imports)
    gpus = args.gpus_per_job
    if args.resume is not None:
        if args.config is not None:
            raise ConfigError("--resume takes the run's own config.yaml; do not pass --config")
        cfg_file = args.resume / "config.yaml"
        if not cfg_file.is_file():
            raise ConfigError(f"--resume {args.resume}: no config.yaml there (not a run directory?)")
        from benchmark.cli import RESUME_OVERRIDABLE

        for o in args.overrides:
            if o.split("=", 1)[0] not in RESUME_OVERRIDABLE:
                raise ConfigError(f"--resume: override {o!r} would change the run's results; "
                                  f"only {', '.join(RESUME_OVERRIDABLE)} may be overridden")
        cfg = config_from_dict(yaml.safe_load(cfg_file.read_text()), args.overrides)
        return cfg, args.resume.resolve(), list(args.overrides)
    cfg = load_config(args.config, args.overrides)
    if gpus is not None:
        device = device_for_gpus(cfg, gpus)
        if device is not None:
            print(f"note: the config says device={cfg.device}, but --gpus-per-job {gpus} gives each job GPUs: "
                  f"the jobs run with device={device}", file=sys.stderr)
            cfg = load_config(args.config, [*args.overrides, f"device={device}"])
    return cfg, init_run(cfg, args.out).resolve(), []


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_intermixed_args(argv)
    if args.overrides[:1] == ["slurm"] and args.launcher is None:  # legacy: `slurm --shards N`
        args.overrides = args.overrides[1:]
        return _legacy(p, args)
    if args.launcher is None:
        p.error("choose --launcher local|slurm (or the legacy `slurm --shards N` sbatch script)")
    for name in ("workers", "gpus_per_job", "array_parallelism"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "gpus_per_job" else 1):
            p.error(f"--{name.replace('_', '-')} must be >= {0 if name == 'gpus_per_job' else 1}")
    try:
        import submitit  # noqa: F401
    except ImportError:
        print("error: submitit is not installed (pip install submitit)", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        cfg, run_dir, overrides = _prepare(args)
        plan = make_plan(cfg, run_dir)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"run directory: {run_dir}", flush=True)
    (run_dir / "launch").mkdir(exist_ok=True)
    rundir.atomic_write_text(run_dir / "launch" / "groups.json", json.dumps(
        [{"group": i, "key": list(map(str, g)), "fit_job": plan.trainable[i]} for i, g in enumerate(plan.groups)],
        indent=1))
    for g in plan.fit_todo:  # a stale marker must not speak for the fit job submitted now
        fit_marker(run_dir, plan.groups[g]).unlink(missing_ok=True)
    uses_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and _visible_gpus() > 0)
    if not plan.todo:
        print("every cell is finished; writing the report")
        return _finish(run_dir, args, [])
    if args.launcher == "local":
        return run_local(run_dir, plan, args, overrides, uses_cuda)
    return run_slurm(run_dir, plan, args, overrides, uses_cuda)


if __name__ == "__main__":
    sys.exit(main())
