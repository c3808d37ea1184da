"""``faceedit-bench`` / ``python run_benchmark.py``: list, dry-run, run, resume, report.

Exit status (``EXIT_*``): 0 when every cell and metric of the invocation ran
(``skipped`` / ``unavailable`` metrics are not errors: they say why a number is
absent); 1 when a cell or a metric errored (the count is printed, the rows are
in ``report/problems.csv``); 2 for a user error (unknown names, a broken config,
a missing asset), printed as one line, never a stack trace, before any model
loads and before any run directory is created; 130 on Ctrl-C; 141 when the
reader of stdout went away (``--list | head``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from benchmark import rundir
from benchmark.assets import AssetError
from benchmark.cache import CacheCorruptError
from benchmark.config import Config, ConfigError, config_from_dict, load_config
from benchmark.data.base import DataError, FaceDataset
from benchmark.registry import DATASETS, EVALUATORS, METHODS, RegistryError, UnknownNameError

USER_ERRORS = (ConfigError, UnknownNameError, RegistryError, AssetError, DataError, rundir.RunDirError,
               CacheCorruptError)

EXIT_OK = 0
EXIT_RUN_ERRORS = 1  # the grid ran, but a cell or a metric errored
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a C tool reports when `| head` closes the pipe

# with --resume, only these may be overridden: they do not change any number
RESUME_OVERRIDABLE = ("device", "output.progress", "data.num_workers", "fits.log_every", "fits.sample_every",
                      "fits.checkpoint_every", "fits.fit_only")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="faceedit-bench",
        description="Run the facial attribute editing benchmark grid (methods × attributes × strengths × seeds).",
        epilog="Overrides are key=value pairs, e.g. methods=[identity,oracle] data.resolution=32 seeds=[0,1].",
    )
    p.add_argument("overrides", nargs="*", help="dotted config overrides key=value (values parsed as YAML)")
    p.add_argument("--config", "-c", type=Path, help="YAML config (default: the built-in defaults)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and the grid size, run nothing")
    p.add_argument("--list", action="store_true", help="list registered methods, evaluators and datasets")
    p.add_argument("--assets", action="store_true",
                   help="list every downloadable asset: present or not, where it goes, where it comes from")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run: finished cells are skipped")
    p.add_argument("--out", type=Path, help="results root (default: output.root, results/runs)")
    p.add_argument("--report", type=Path, nargs="+", metavar="RUN_DIR",
                   help="(re)generate the report of a run and exit; several runs are merged into one report "
                        "(written to --out, default <parent>/merged-<numbers>/report)")
    p.add_argument("--no-report", action="store_true",
                   help="run without writing the report at the end (cluster jobs; the launcher writes it once)")
    p.add_argument("--init", action="store_true",
                   help="create the run directory (config.yaml) and print its path, run nothing: for cluster jobs")
    p.add_argument("--shard", type=parse_shard, metavar="K/N",
                   help="run only cells i with i %% N == K (0-based); N jobs with --resume RUN_DIR share one run")
    p.add_argument("--cell", action="append", metavar="CELL_ID",
                   help="run only this cell (repeatable), id <method>__<attribute>__s<strength>__seed<seed> "
                        "(the stem of its image files); with --resume RUN_DIR, one cluster job per cell")
    p.add_argument("--no-train", action="store_true",
                   help="never train: fits come from the cache or shipped reference fits, and a cell whose stage "
                        "is missing fails naming it (the launcher's cell jobs, after their fit job)")
    p.add_argument("--retrain", action="store_true",
                   help="ignore the reference fits shipped with the repository (same as fits.reference=false)")
    p.add_argument("--fit-only", action="store_true",
                   help="train or resolve every editor fit of the grid and stop (same as fits.fit_only=true)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def parse_shard(text: str) -> tuple[int, int]:
    """``K/N`` -> (K, N) with 0 <= K < N."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected K/N, e.g. 0/8") from None
    if not 0 <= k < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= K < N")
    return k, n


def print_registries() -> None:
    for title, reg in (("methods", METHODS), ("evaluators", EVALUATORS), ("datasets", DATASETS)):
        print(f"{title}:")
        for name in reg.names():
            obj = reg.get(name)
            doc = (obj.__doc__ or "").strip().splitlines()
            if title == "methods" and hasattr(obj, "meta"):
                extra = obj.meta.paper
            elif title == "evaluators":
                extra = ", ".join(getattr(obj, "metrics", ())) or (doc[0] if doc else "")
            else:
                extra = dataset_summary(obj)
            print(f"  {name:<22} {extra}  [{reg.source(name)}]")
            for line in option_lines(obj):
                print(f"      {line}")
        for name, err in reg.plugin_errors.items():
            print(f"  {name:<22} (plugin failed to load: {err})")


def option_lines(cls: Any) -> list[str]:
    """What ``--list`` prints under an entry: ``cls.describe_options()`` when the class has it.

    Evaluators without it show their ``option_names()``; datasets the ``Options:`` paragraph of
    their docstring, on one line.
    """
    describe = getattr(cls, "describe_options", None)
    if callable(describe):
        try:
            lines = describe()
        except Exception as exc:  # noqa: BLE001 - a listing must not die on one plugin
            return [f"(options cannot be described: {type(exc).__name__}: {exc})"]
        return lines.splitlines() if isinstance(lines, str) else [str(x) for x in lines]
    names = getattr(cls, "option_names", None)
    if callable(names) and names():
        return ["options: " + ", ".join(names())]
    if isinstance(cls, type) and issubclass(cls, FaceDataset):
        m = re.search(r"Options:(.*?)(?:\n\s*\n|$)", cls.__doc__ or "", re.S)
        if m:
            return ["options: " + _plain(" ".join(m.group(1).split()))]
    return []


def _plain(text: str) -> str:
    """reStructuredText ``code`` -> `code`, for a terminal."""
    return text.replace("``", "`")


def dataset_summary(cls: Any) -> str:
    """One line about a dataset: its ``summary`` if declared, else its docstring's first sentence and facts.

    Parentheses pointing at a docstring are dropped: a listing cannot follow them.
    """
    declared = getattr(cls, "summary", None)
    if isinstance(declared, str) and declared.strip():
        return declared.strip()
    first = (cls.__doc__ or "").strip().split("\n\n")[0]
    first = " ".join(first.split())
    first = re.sub(r"\s*\([^()]*docstring[^()]*\)", "", first).rstrip(". ")
    facts = []
    if getattr(cls, "attributes", ()) and "attribute" not in first:
        facts.append(f"{len(cls.attributes)} attribute{'s' * (len(cls.attributes) != 1)}")
    truth = [label for label, flag in (("masks", "has_masks"), ("identities", "has_identities"),
                                       ("counterfactuals", "has_counterfactuals")) if getattr(cls, flag, False)]
    if truth:
        facts.append("with " + ", ".join(truth))
    return "; ".join([_plain(first)] * bool(first) + facts) or cls.__name__


def print_assets() -> None:
    from benchmark.assets import asset_status, cache_root

    for reg in (METHODS, EVALUATORS, DATASETS):
        reg.load_all()  # importing the modules declares their assets
    cache = cache_root()
    print(f"cache: {cache} ($FACEEDIT_CACHE)")
    for row in asset_status():
        print(f"{row['name']}  [{'present' if row['present'] == 'yes' else 'MISSING'}]  {row['description']}")
        print(f"    path:    {row['path']}\n    url:     {row['url']}\n    sha256:  {row['sha256']}"
              + (f"\n    licence: {row['licence']}" if row["licence"] else ""))
        note = location_note(Path(row["path"]), cache)
        if note:
            print(f"    note:    {note}")


def location_note(path: Path, cache: Path) -> str:
    """Why an asset lives outside ``$FACEEDIT_CACHE`` (empty when it does not)."""
    if path.is_relative_to(cache):
        return ""
    import torch

    hub = Path(torch.hub.get_dir())
    if path.is_relative_to(hub):
        return (f"in the torch hub cache ({hub}; $TORCH_HOME moves it), not in $FACEEDIT_CACHE: it is the very "
                "file torchvision downloads and loads, so an existing copy is reused and never duplicated")
    return "outside $FACEEDIT_CACHE, where the module that declares it looks for it"


def resolve(args: argparse.Namespace) -> tuple[Config, Path | None]:
    """The config of this invocation, and the run directory to continue (if resuming)."""
    if args.retrain:
        args.overrides = [*args.overrides, "fits.reference=false"]
    if args.fit_only:
        args.overrides = [*args.overrides, "fits.fit_only=true"]
    if args.resume is None:
        return load_config(args.config, args.overrides), None
    cfg_file = args.resume / "config.yaml"
    if not cfg_file.is_file():
        raise ConfigError(f"--resume {args.resume}: no config.yaml there (not a run directory?)")
    if args.config is not None:
        raise ConfigError("--resume takes the run's own config.yaml; do not pass --config")
    for o in args.overrides:
        if o.split("=", 1)[0] not in RESUME_OVERRIDABLE:
            raise ConfigError(f"--resume: override {o!r} would change the run's results; "
                              f"only {', '.join(RESUME_OVERRIDABLE)} may be overridden")
    try:
        data = yaml.safe_load(cfg_file.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_file} is not valid YAML: {exc}") from None
    return config_from_dict(data, args.overrides), args.resume


def preflight(cfg: Config) -> tuple[Any, list[str]]:
    """Everything that can fail before a model loads: names, options, the dataset, the attributes.

    The real run, ``--init`` and ``--dry-run`` all go through it, so a dry run
    fails exactly where the run would, and no run directory is created for a
    config that cannot run.
    """
    from benchmark.runner import build_dataset, validate_names

    validate_names(cfg)
    check_evaluator_options(cfg)
    dataset = build_dataset(cfg)
    return dataset, dataset.resolve_attributes(cfg.attributes)


def check_evaluator_options(cfg: Config) -> None:
    """Every ``evaluator_options.<e>`` key must be an option that evaluator declares (``option_names``)."""
    for name, opts in cfg.evaluator_options.items():
        try:
            cls = EVALUATORS.get(name)
        except UnknownNameError as exc:
            raise ConfigError(f"evaluator_options.{name}: {exc}") from None
        accepted = cls.option_names() if hasattr(cls, "option_names") else None
        if accepted is None:  # a plugin taking **options without declaring them: it checks them itself
            continue
        unknown = sorted(set(opts) - set(accepted))
        if unknown:
            raise ConfigError(f"evaluator_options.{name}: unknown option{'s' * (len(unknown) > 1)} "
                              f"{', '.join(map(repr, unknown))}; {name} accepts: "
                              f"{', '.join(accepted) if accepted else '(no options)'}")


def check_device(cfg: Config) -> Any:
    """The torch device of this run, or one ConfigError line (e.g. ``device=cuda`` without CUDA)."""
    from benchmark.runner import resolve_device

    try:
        return resolve_device(cfg.device)
    except RuntimeError as exc:
        raise ConfigError(str(exc)) from None


def dry_run(cfg: Config) -> None:
    from benchmark.runner import expand_cells

    _, attrs = preflight(cfg)
    print(cfg.to_yaml(), end="")
    cells = expand_cells(cfg, attrs)
    fixed = sorted({c.method for c in cells} - {c.method for c in cells if c.strength != 1.0}
                   ) if len(cfg.strengths) > 1 else []
    note = f" ({', '.join(fixed)} ignore strength: one cell each)" if fixed else ""
    print(f"# grid: {len(cfg.methods)} methods × {len(attrs)} attributes × {len(cfg.strengths)} strengths "
          f"× {len(cfg.seeds)} seeds = {len(cells)} cells{note}; attributes: {', '.join(attrs)}")
    try:
        check_device(cfg)
    except ConfigError as exc:  # a config for GPU jobs is often checked on a login node without one
        print(f"# note: {exc}; the run would stop there on this machine")


def _claim_run_dir(cfg: Config, out: Path | None) -> Path:
    """Create the numbered run directory and write the resolved config into it (after preflight)."""
    root = out if out is not None else Path(cfg.output.root)
    run_dir = rundir.create_run_dir(root, cfg.name)
    rundir.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    return run_dir


def init_run(cfg: Config, out: Path | None) -> Path:
    """Check the config, claim a new run directory, write ``config.yaml`` and ``env.json`` (for cluster jobs).

    ``env.json`` records where the run was created; each job that runs cells
    adds its own ``env-<pid>-<n>.json`` with the device it ran on.
    """
    import torch

    preflight(cfg)
    run_dir = _claim_run_dir(cfg, out)
    env = rundir.environment(torch.device("cpu"), cfg.seeds)
    env.update(role="init: the jobs that run the cells each write env-<pid>-<n>.json",
               device=f"{cfg.device} (as configured)", device_name=None)
    rundir.atomic_write_text(run_dir / "env.json", json.dumps(env, indent=2))
    return run_dir


def _discard_if_empty(run_dir: Path) -> None:
    """Remove a run directory this invocation created if nothing but its config/env went in."""
    if {p.name for p in run_dir.iterdir()} <= {"config.yaml", "env.json"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def print_report_summary(out: Path) -> None:
    """Where a report's products are: tables, figures, the HTML page."""
    figures = sorted(p.name for p in (out / "figures").glob("*.png")) if (out / "figures").is_dir() else []
    tables = sorted(p.name for p in out.glob("table*.tex") if p.name != "tables.tex")
    print(f"report: {out}\n"
          f"  tables:   {out / 'table.csv'} and {len(tables)} LaTeX tables ({out / 'tables.tex'} inputs them all)\n"
          f"  figures:  {out / 'figures'} ({len(figures)} figures, PNG and PDF)\n"
          f"  html:     {out / 'index.html'}\n"
          f"  problems: {out / 'problems.csv'}", flush=True)


def execute(cfg: Config, resume_dir: Path | None, out: Path | None,
            shard: tuple[int, int] | None = None, no_report: bool = False,
            cells: list[str] | None = None, no_train: bool = False) -> int:
    """Create or continue the run directory, run the grid (or one shard of it, or the cells
    ``cells`` by id), write the report; ``no_train``: never train a fit stage.

    Returns the exit status: ``EXIT_RUN_ERRORS`` when any cell or metric of
    this invocation's cells errored (their latest attempts in results.jsonl).
    """
    from benchmark import report
    from benchmark.runner import GridRunner, expand_cells, select_cells, shard_cells

    _, attrs = preflight(cfg)
    if cells is not None:  # unknown ids fail here, before any run directory or model
        grid = expand_cells(cfg, attrs)
        select_cells(shard_cells(grid, *shard) if shard is not None else grid, cells)
    device = check_device(cfg)
    if resume_dir is None:
        run_dir = _claim_run_dir(cfg, out)
        env_name = "env.json"
    else:
        run_dir = resume_dir
        env_name = "env.json" if not (run_dir / "env.json").exists() else \
            f"env-{os.getpid()}-{len(list(run_dir.glob('env*.json')))}.json"
    try:
        runner = GridRunner(cfg, run_dir, device)
    except BaseException:
        if resume_dir is None:
            _discard_if_empty(run_dir)
        raise
    runner.allow_training = not no_train
    rundir.atomic_write_text(run_dir / env_name, json.dumps(rundir.environment(device, cfg.seeds), indent=2))
    print(f"run directory: {run_dir}", flush=True)
    stats = runner.run(shard, cells)
    if cfg.fits.fit_only:  # nothing was evaluated: the fits' own count is the outcome
        print(f"fits: {stats.get('fits', 0)} total, {stats.get('ok', 0)} ready, {stats.get('error', 0)} failed",
              flush=True)
        return EXIT_RUN_ERRORS if stats.get("error", 0) else EXIT_OK
    print(f"cells: {stats.get('cells', 0)} total, {stats.get('skipped', 0)} already done, {stats.get('ok', 0)} ok, "
          f"{stats.get('error', 0)} failed", flush=True)
    if not no_report:
        try:
            print_report_summary(report.generate(run_dir))
        except Exception as exc:  # noqa: BLE001 - results are safe on disk; the report can be rebuilt
            print(f"report failed ({type(exc).__name__}: {exc}); rebuild with --report {run_dir}", file=sys.stderr)
    errors = run_errors(runner, shard, cells)
    if errors["total"]:
        print(f"errors: {errors['total']} ({errors['cells']} failed cells, {errors['metrics']} failed metrics); "
              f"the messages are in {run_dir / 'report' / 'problems.csv'}", file=sys.stderr, flush=True)
        return EXIT_RUN_ERRORS
    return EXIT_OK


def run_errors(runner: Any, shard: tuple[int, int] | None, ids: list[str] | None = None) -> dict[str, int]:
    """Error rows among the latest attempts of the cells this invocation is responsible for.

    Read from results.jsonl, so cells finished by an earlier attempt count too;
    with ``--shard`` / ``--cell`` only the invocation's own cells do (another job's
    failure is that job's exit status).
    """
    from benchmark.runner import expand_cells, select_cells, shard_cells

    cells = expand_cells(runner.cfg, runner.attributes)
    if shard is not None:
        cells = shard_cells(cells, *shard)
    if ids is not None:
        cells = select_cells(cells, ids)
    mine = {rundir.CellKey(c.method, runner.dataset.name, c.attribute, c.strength, c.seed) for c in cells}
    rows = [r for r in rundir.latest_attempts(rundir.read_rows(runner.jsonl)) if rundir.CellKey.of(r) in mine]
    return rundir.count_errors(rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe surfaces here, inside the handler, not at interpreter exit
        return code
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; continue with --resume RUN_DIR", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader of stdout went away (`--list | head`): stop quietly; point stdout at /dev/null so
        # that the interpreter's final flush does not raise a second time
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _dispatch(args: argparse.Namespace) -> int:
    if args.list:
        print_registries()
        return EXIT_OK
    if args.assets:
        print_assets()
        return EXIT_OK
    if args.report is not None:
        from benchmark import report

        print_report_summary(report.generate(args.report, out=args.out if len(args.report) > 1 else None))
        return EXIT_OK
    cfg, resume_dir = resolve(args)
    if args.dry_run:
        dry_run(cfg)
        return EXIT_OK
    if args.init:
        print(init_run(cfg, args.out))
        return EXIT_OK
    return execute(cfg, resume_dir, args.out, args.shard, no_report=args.no_report, cells=args.cell,
                   no_train=args.no_train)


if __name__ == "__main__":
    sys.exit(main())
