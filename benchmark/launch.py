"""A path to clusters: one run directory, N array jobs, each running one shard of the grid.

    python -m benchmark.launch slurm --config configs/default.yaml --shards 8 [--gpus 1 --time 12:00:00] [key=value ...]

creates the run directory (``--init``) and writes ``<run>/launch/slurm.sh``, an
sbatch array script whose task K runs ``--resume RUN --shard K/N``.  Shards
hold whole fit groups, results are appended atomically to one
``results.jsonl``, and a re-submitted array finishes only what is missing.
After the array: ``faceedit-bench --report RUN``.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmark.cli import init_run
from benchmark.config import load_config

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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.launch", description=__doc__.split("\n\n")[0])
    p.add_argument("scheduler", choices=["slurm"])
    p.add_argument("overrides", nargs="*")
    p.add_argument("--config", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--shards", type=int, required=True)
    p.add_argument("--time", default="12:00:00")
    p.add_argument("--cpus", type=int, default=8)
    p.add_argument("--gpus", type=int, default=1)
    args = p.parse_intermixed_args(argv)
    if args.shards < 1:
        p.error("--shards must be >= 1")
    run_dir = init_run(load_config(args.config, args.overrides), args.out).resolve()
    script = run_dir / "launch" / "slurm.sh"
    script.parent.mkdir()
    script.write_text(slurm_script(run_dir, args.shards, args.time, args.cpus, args.gpus, sys.executable))
    print(f"run directory: {run_dir}\nsubmit with:   sbatch {script}\nthen report:   faceedit-bench --report {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
