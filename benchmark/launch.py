"""Scale-out on submitit: one run directory, one job per fit group, results merged in place.

    python -m benchmark.launch --launcher local|slurm [--config C] [key=value ...]
        [--partition P] [--gpus-per-job G] [--cpus-per-job C] [--mem-gb M] [--time 12:00:00]
        [--array-parallelism N] [--workers N] [--resume RUN] [--no-wait]

* The run directory is created first (``--init``: ``config.yaml``, ``env.json``); ``--resume RUN``
  submits again only the fit groups with unfinished cells (``rundir.finished_cells``).
* A job is one **fit group** (``runner._fit_group``): (method, attribute, seed), or (method, seed)
  for an editor declaring ``shared_stages``, so a shared stage trains once, in one job, and the
  group's cells run after their fit, in that job.  A job runs ``--resume RUN --shard K/G``
  (G = the number of groups: ``shard_cells`` deals groups round-robin, so shard K is group K).
* Every cell is appended atomically (``rundir.append_cell``), so jobs share ``results.jsonl``; a
  killed job leaves whole cells, and re-submission recomputes only the rest.
* ``local``: at most ``--workers`` jobs at once (default: one per visible GPU when the run uses
  CUDA, else 1), each job pinned to its own GPU; the launcher waits, then writes the report.
  ``slurm``: a job array (``--array-parallelism`` at once) plus a report job that starts after
  the array (``afterany``); the launcher returns once submitted (``--wait`` to follow them).

The older hand-written sbatch path stays: ``python -m benchmark.launch slurm --shards N`` writes
``<run>/launch/slurm.sh`` (array task K runs ``--resume RUN --shard K/N``).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

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


# -- the job ------------------------------------------------------------------------------------------

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


def run_group(run_dir: str, k: int, n: int, overrides: list[str], imports: list[str]) -> int:
    """One job: the cells of fit group K of N (its fit first). Returns the CLI's exit status (0 or 1).

    Writes ``launch/workers/<k>.pid`` so that a person (or a test) can find the process.
    A user error (2) or an interrupt raises, so the scheduler marks the job failed.
    """
    import_plugins(imports)
    from benchmark.cli import main

    pids = Path(run_dir) / "launch" / "workers"
    pids.mkdir(parents=True, exist_ok=True)
    rundir.atomic_write_text(pids / f"{k}.pid", f"{os.getpid()}\n")
    code = main(["--resume", run_dir, "--shard", f"{k}/{n}", "--no-report", "output.progress=false", *overrides])
    if code not in (EXIT_OK, EXIT_RUN_ERRORS):
        raise RuntimeError(f"group {k}/{n} of {run_dir} stopped with exit status {code}")
    return code


def write_report(run_dir: str, imports: list[str]) -> str:
    """The report job (after every group): tables, figures, HTML of the whole run."""
    import_plugins(imports)
    from benchmark import report

    return str(report.generate(run_dir))


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
    from benchmark.runner import _fit_group

    groups, cells, dataset = fit_groups(cfg)
    done = rundir.finished_cells(rundir.read_rows(run_dir / "results.jsonl"))
    todo = {_fit_group(c) for c in cells
            if rundir.CellKey(c.method, dataset, c.attribute, c.strength, c.seed) not in done}
    return groups, [i for i, g in enumerate(groups) if g in todo]


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

def _executor(kind: str, folder: Path, args: argparse.Namespace, uses_cuda: bool) -> Any:
    import submitit

    gpus = args.gpus_per_job if args.gpus_per_job is not None else (1 if uses_cuda else 0)
    minutes = parse_time(args.time)
    if kind == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=minutes, gpus_per_node=gpus)
        return ex
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    params: dict[str, Any] = {"timeout_min": minutes, "gpus_per_node": gpus, "cpus_per_task": args.cpus_per_job,
                              "name": f"faceedit-{folder.parents[1].name}",
                              "slurm_array_parallelism": args.array_parallelism}
    if args.partition:
        params["slurm_partition"] = args.partition
    if args.mem_gb:
        params["mem_gb"] = args.mem_gb
    ex.update_parameters(**params)
    return ex


def _log_job(run_dir: Path, group: int, n: int, job: Any, label: str) -> None:
    rundir.append_rows(run_dir / "launch" / "jobs.jsonl",
                       [{"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "group": group, "groups": n, "what": label,
                         "job_id": str(job.job_id)}])


def run_local(run_dir: Path, todo: list[int], n: int, groups: list[tuple], args: argparse.Namespace,
              overrides: list[str], uses_cuda: bool) -> int:
    """Jobs on this machine, ``workers`` at a time (each on its own GPU when CUDA is used); then the report."""
    folder = run_dir / "launch" / "submitit"
    ex = _executor("local", folder, args, uses_cuda)
    gpu_count = _visible_gpus() if uses_cuda else 0
    workers = args.workers or (max(1, gpu_count) if uses_cuda else 1)
    pending = list(todo)
    running: dict[int, tuple[int, Any]] = {}  # slot -> (group, job)
    failed: list[tuple[int, str]] = []
    finished = 0
    print(f"{len(todo)} of {n} fit groups to run, {workers} worker{'s' * (workers != 1)} "
          f"({'one GPU each' if uses_cuda and gpu_count else 'CPU'})", flush=True)
    try:
        while pending or running:
            for slot in range(workers):
                if slot in running or not pending:
                    continue
                g = pending.pop(0)
                if uses_cuda and gpu_count:
                    ex.update_parameters(visible_gpus=[slot % gpu_count], gpus_per_node=1)
                job = ex.submit(run_group, str(run_dir), g, n, overrides, args.imports)
                _log_job(run_dir, g, n, job, "group " + "/".join(map(str, groups[g])))
                running[slot] = (g, job)
            time.sleep(0.3)
            for slot, (g, job) in list(running.items()):
                if not job.done():
                    continue
                del running[slot]
                finished += 1
                try:
                    job.result()
                    status = "done"
                except Exception as exc:  # noqa: BLE001 - a failed job is reported, the others go on
                    msg = str(exc).strip().splitlines()
                    failed.append((g, msg[-1] if msg else type(exc).__name__))
                    status = "FAILED"
                print(f"[{finished}/{len(todo)}] group {g} ({'/'.join(map(str, groups[g]))}): {status}", flush=True)
    except KeyboardInterrupt:
        for _, job in running.values():
            job.cancel()
        print(f"interrupted: finished cells are saved; re-submit with --resume {run_dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return _finish(run_dir, args, failed)


def _finish(run_dir: Path, args: argparse.Namespace, failed: list[tuple[int, str]]) -> int:
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
        for g, msg in failed:
            print(f"job of group {g} failed: {msg}", file=sys.stderr)
        print(f"{len(failed)} job{'s' * (len(failed) != 1)} failed; finish the run with: "
              f"python -m benchmark.launch --launcher {args.launcher} --resume {run_dir}", file=sys.stderr)
        return EXIT_RUN_ERRORS
    if errors["total"]:
        print(f"errors: {errors['total']} ({errors['cells']} failed cells, {errors['metrics']} failed metrics); "
              f"see {run_dir / 'report' / 'problems.csv'}", file=sys.stderr)
        return EXIT_RUN_ERRORS
    return EXIT_OK


def run_slurm(run_dir: Path, todo: list[int], n: int, args: argparse.Namespace, overrides: list[str],
              uses_cuda: bool) -> int:
    """A job array of the groups, then a report job after it; returns once submitted unless ``--wait``."""
    folder = run_dir / "launch" / "submitit" / "%j"
    ex = _executor("slurm", folder, args, uses_cuda)
    jobs = ex.map_array(run_group, [str(run_dir)] * len(todo), todo, [n] * len(todo), [overrides] * len(todo),
                        [args.imports] * len(todo))
    for g, job in zip(todo, jobs):
        _log_job(run_dir, g, n, job, "group")
    array_id = str(jobs[0].job_id).split("_")[0]
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterany:{array_id}"}, gpus_per_node=0,
                         timeout_min=60)
    report_job = ex.submit(write_report, str(run_dir), args.imports)
    _log_job(run_dir, -1, n, report_job, "report")
    print(f"submitted array {array_id} ({len(jobs)} jobs) and report job {report_job.job_id}\n"
          f"logs: {run_dir / 'launch' / 'submitit'}\nreport (when done): {run_dir / 'report' / 'index.html'}")
    if not args.wait:
        return EXIT_OK
    failed = []
    for g, job in zip(todo, jobs):
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001
            failed.append((g, str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__))
    return _finish(run_dir, args, failed)


# -- entry point -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmark.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("overrides", nargs="*", help="config overrides key=value; the legacy form starts with `slurm`")
    p.add_argument("--launcher", choices=["local", "slurm"], help="submit through submitit's local or slurm executor")
    p.add_argument("--config", type=Path)
    p.add_argument("--out", type=Path, help="results root for a new run (default: output.root)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="submit only the unfinished fit groups of RUN_DIR")
    p.add_argument("--partition", help="slurm partition")
    p.add_argument("--gpus-per-job", type=int, help="GPUs per job (default: 1 when the run uses CUDA, else 0)")
    p.add_argument("--cpus-per-job", type=int, default=8)
    p.add_argument("--mem-gb", type=int)
    p.add_argument("--time", default="12:00:00", help="time limit per job (HH:MM:SS or minutes)")
    p.add_argument("--array-parallelism", type=int, default=64, help="slurm: jobs of the array running at once")
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
        groups, todo = unfinished_groups(cfg, run_dir)
        n = len(groups)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"run directory: {run_dir}", flush=True)
    (run_dir / "launch").mkdir(exist_ok=True)
    rundir.atomic_write_text(run_dir / "launch" / "groups.json", json.dumps(
        [{"group": i, "key": list(map(str, g))} for i, g in enumerate(groups)], indent=1))
    uses_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and _visible_gpus() > 0)
    if not todo:
        print("every cell is finished; writing the report")
        return _finish(run_dir, args, [])
    if args.launcher == "local":
        return run_local(run_dir, todo, n, groups, args, overrides, uses_cuda)
    return run_slurm(run_dir, todo, n, args, overrides, uses_cuda)


if __name__ == "__main__":
    sys.exit(main())
