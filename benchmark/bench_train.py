"""Training speed of each editor's presets: it/s of the main stage, measured, printed.

    python -m benchmark.bench_train                                   # cpu + reference presets, CPU
    python -m benchmark.bench_train --device cuda --presets paper --steps 50

Each (method, preset) trains its first stage for ``--steps`` steps on SynthFaces (at the preset's
resolution, in a temporary cache so nothing is reused) and reports the steady-state rate from the
stage's ``stats.jsonl`` (the first logged interval, which holds data loading and warm-up, is
excluded). Why a benchmark and not a test: speeds depend on the machine and its load; they belong
in figures with the command that made them, never in a pass/fail check.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from benchmark.registry import DATASETS, METHODS
from methods.training import FitContext

DEFAULT_METHODS = ("sagan", "l2mgan", "interfacegan")


def stage_rate(work_root: Path) -> tuple[float, int]:
    """(steps/s between the first and last stats rows, steps measured) of the stage trained under ``work_root``."""
    rows = []
    for stats in work_root.rglob("stats.jsonl"):
        rows = [json.loads(x) for x in stats.read_text().splitlines() if x.strip()]
        if rows:
            break
    if len(rows) < 2:
        return float("nan"), 0
    first, last = rows[0], rows[-1]
    steps = last["step"] - first["step"]
    return steps / max(last["seconds"] - first["seconds"], 1e-9), steps


def measure(method: str, preset: str, steps: int, device: str, resolution: int) -> dict:
    """Train ``method``'s first stage for ``steps`` steps with ``preset``; return the measured rate."""
    ds = DATASETS.create("synthfaces", resolution=resolution, n_train_ids=200, n_test_ids=8, images_per_id=5)
    editor = METHODS.create(method, preset=preset, steps=steps)
    with tempfile.TemporaryDirectory() as tmp:
        fit = FitContext(editor=editor, dataset=ds, attribute="Smiling", seed=0, device=device,
                         fits={"reference": False, "log_every": max(1, steps // 10), "sample_every": 0,
                               "checkpoint_every": 10**9}, show_progress=False, cache=Path(tmp))
        t0 = time.perf_counter()
        first_stage_done = {}

        def stop_after_first(rec) -> None:
            first_stage_done.setdefault("path", rec.path)
            raise _Stop

        fit.on_stage = stop_after_first
        try:
            editor.prepare(fit)
        except _Stop:
            pass
        wall = time.perf_counter() - t0
        rate, measured = stage_rate(Path(tmp))
    return {"method": method, "preset": preset, "device": device, "resolution": resolution,
            "steps": steps, "measured_steps": measured, "it_per_s": round(rate, 3), "wall_s": round(wall, 1),
            "torch_threads": torch.get_num_threads()}


class _Stop(Exception):
    """Raised after the first stage finishes: the benchmark needs one stage's rate only."""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark.bench_train", description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--presets", default="cpu,reference")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--device", default="cpu")
    p.add_argument("--resolution", type=int, default=64, help="dataset resolution (the preset sets the nets')")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"# load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} torch threads, device {args.device}")
    for method in [m for m in args.methods.split(",") if m]:
        for preset in [q for q in args.presets.split(",") if q]:
            try:
                print(json.dumps(measure(method, preset, args.steps, args.device, args.resolution)), flush=True)
            except Exception as exc:  # noqa: BLE001 - one failing preset does not stop the others
                print(json.dumps({"method": method, "preset": preset, "error": f"{type(exc).__name__}: {exc}"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
