"""``faceedit-bench`` / ``python run_benchmark.py``: list, dry-run, run, resume, report.

Errors meant for the user (unknown names, broken configs, missing assets)
print one clear message and exit with status 2, never a stack trace.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import yaml

from benchmark import rundir
from benchmark.assets import AssetError
from benchmark.config import Config, ConfigError, config_from_dict, load_config
from benchmark.data.base import DataError
from benchmark.registry import DATASETS, EVALUATORS, METHODS, RegistryError, UnknownNameError

USER_ERRORS = (ConfigError, UnknownNameError, RegistryError, AssetError, DataError)

# with --resume, only these may be overridden: they do not change any number
RESUME_OVERRIDABLE = ("device", "output.progress", "data.num_workers")


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
    p.add_argument("--report", type=Path, metavar="RUN_DIR", help="(re)generate the report of a run and exit")
    p.add_argument("--init", action="store_true",
                   help="create the run directory (config.yaml) and print its path, run nothing: for cluster jobs")
    p.add_argument("--shard", type=parse_shard, metavar="K/N",
                   help="run only cells i with i %% N == K (0-based); N jobs with --resume RUN_DIR share one run")
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
            extra = ""
            if title == "methods" and hasattr(obj, "meta"):
                extra = obj.meta.paper
            elif title == "evaluators":
                extra = ", ".join(getattr(obj, "metrics", ())) or (doc[0] if doc else "")
            else:
                extra = doc[0] if doc else ""
            print(f"  {name:<22} {extra}  [{reg.source(name)}]")
        for name, err in reg.plugin_errors.items():
            print(f"  {name:<22} (plugin failed to load: {err})")


def print_assets() -> None:
    from benchmark.assets import asset_status

    for reg in (METHODS, EVALUATORS, DATASETS):
        reg.load_all()  # importing the modules declares their assets
    for row in asset_status():
        print(f"{row['name']}  [{'present' if row['present'] == 'yes' else 'MISSING'}]  {row['description']}")
        print(f"    path:    {row['path']}\n    url:     {row['url']}\n    sha256:  {row['sha256']}"
              + (f"\n    licence: {row['licence']}" if row["licence"] else ""))


def resolve(args: argparse.Namespace) -> tuple[Config, Path | None]:
    """The config of this invocation, and the run directory to continue (if resuming)."""
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


def dry_run(cfg: Config) -> None:
    from benchmark.runner import build_dataset, expand_cells, validate_names

    validate_names(cfg)
    print(cfg.to_yaml(), end="")
    try:
        attrs = build_dataset(cfg).resolve_attributes(cfg.attributes)
        cells = expand_cells(cfg, attrs)
        print(f"# grid: {len(cfg.methods)} methods × {len(attrs)} attributes × {len(cfg.strengths)} strengths "
              f"× {len(cfg.seeds)} seeds = {len(cells)} cells; attributes: {', '.join(attrs)}")
    except (DataError, AssetError, UnknownNameError) as exc:
        print(f"# grid: cannot expand yet: {exc}")


def init_run(cfg: Config, out: Path | None) -> Path:
    """Claim a new numbered run directory and write the resolved config into it."""
    from benchmark.runner import validate_names

    validate_names(cfg)
    root = out if out is not None else Path(cfg.output.root)
    run_dir = rundir.create_run_dir(root, cfg.name)
    rundir.atomic_write_text(run_dir / "config.yaml", cfg.to_yaml())
    return run_dir


def execute(cfg: Config, resume_dir: Path | None, out: Path | None,
            shard: tuple[int, int] | None = None) -> Path:
    """Create or continue the run directory, run the grid (or one shard of it), write the report."""
    from benchmark import report
    from benchmark.runner import GridRunner, resolve_device, validate_names

    validate_names(cfg)
    device = resolve_device(cfg.device)
    if resume_dir is None:
        run_dir = init_run(cfg, out)
        env_name = "env.json"
    else:
        run_dir = resume_dir
        env_name = "env.json" if not (run_dir / "env.json").exists() else \
            f"env-{os.getpid()}-{len(list(run_dir.glob('env*.json')))}.json"
    rundir.atomic_write_text(run_dir / env_name, json.dumps(rundir.environment(device, cfg.seeds), indent=2))
    print(f"run directory: {run_dir}", flush=True)
    runner = GridRunner(cfg, run_dir, device)
    stats = runner.run(shard)
    print(f"cells: {stats['cells']} total, {stats['skipped']} already done, {stats['ok']} ok, "
          f"{stats['error']} failed", flush=True)
    try:
        report.generate(run_dir)
        print(f"report: {run_dir / 'report'}")
    except Exception as exc:  # noqa: BLE001 - results are safe on disk; the report can be rebuilt
        print(f"report failed ({type(exc).__name__}: {exc}); rebuild with --report {run_dir}", file=sys.stderr)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.list:
            print_registries()
            return 0
        if args.assets:
            print_assets()
            return 0
        if args.report is not None:
            from benchmark import report

            report.generate(args.report)
            print(f"report: {args.report / 'report'}")
            return 0
        cfg, resume_dir = resolve(args)
        if args.dry_run:
            dry_run(cfg)
            return 0
        if args.init:
            print(init_run(cfg, args.out))
            return 0
        execute(cfg, resume_dir, args.out, args.shard)
        return 0
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are saved; continue with --resume RUN_DIR", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
