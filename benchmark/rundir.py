"""Run directories and result files (DESIGN §5).

* ``results/runs/NNNNN-<config>/`` is created per invocation and never reused
  (``os.mkdir`` is the atomic claim, so two launches cannot share a number).
* ``results.jsonl`` is append-only: all rows of one cell go in a single
  ``write`` + ``fsync``, so a killed run leaves whole cells or, at worst, a
  torn last line that the reader drops and the next append cuts off.
* ``results.csv`` is rewritten atomically (temp file + ``os.replace``) from
  the JSONL after every cell, keeping each cell's latest attempt.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch

ROW_FIELDS = ("method", "dataset", "attribute", "group", "direction", "strength", "seed",
              "metric", "value", "n", "status", "error", "seconds")
CELL_FIELDS = ("method", "dataset", "attribute", "strength", "seed")
_RUN_RE = re.compile(r"^(\d{5})-")


@dataclass(frozen=True)
class CellKey:
    method: str
    dataset: str
    attribute: str
    strength: float
    seed: int

    @classmethod
    def of(cls, row: dict[str, Any]) -> "CellKey":
        return cls(row["method"], row["dataset"], row["attribute"], float(row["strength"]), int(row["seed"]))

    def slug(self) -> str:
        return f"{self.method}__{self.attribute}__s{self.strength:g}__seed{self.seed}"


def create_run_dir(root: str | Path, config_name: str) -> Path:
    """Claim the next free ``NNNNN-<config_name>`` directory under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", config_name) or "run"
    taken = [int(m.group(1)) for p in root.iterdir() if (m := _RUN_RE.match(p.name))]
    number = max(taken, default=-1) + 1
    while True:
        path = root / f"{number:05d}-{safe}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temp file in the same directory and ``os.replace``: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_value(v: Any) -> Any:
    """Strict JSON has no NaN/inf: store them as "nan" / "inf" / "-inf" (PSNR of an exact edit is inf)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append one cell's rows as a single write; first cut off a torn trailing line, if any."""
    path = Path(path)
    _repair_tail(path)
    blob = "".join(json.dumps({k: _json_value(v) for k, v in r.items()}) + "\n" for r in rows).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)


def _repair_tail(path: Path) -> None:
    """Truncate a partial last line left by a kill in the middle of a write."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        f.truncate(data.rfind(b"\n") + 1)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All complete rows; a torn trailing line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            value = row.get("value")
            row["value"] = float("nan") if value is None else float(value)
            rows.append(row)
    return rows


def latest_attempts(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep, per cell, only the rows of its latest attempt (rows carry an ``attempt`` id)."""
    last: dict[CellKey, str] = {}
    rows = list(rows)
    for r in rows:
        last[CellKey.of(r)] = r.get("attempt", "")
    return [r for r in rows if r.get("attempt", "") == last[CellKey.of(r)]]


def finished_cells(rows: Iterable[dict[str, Any]]) -> set[CellKey]:
    """Cells whose latest attempt completed (a cell-level error is retried on --resume)."""
    done: set[CellKey] = set()
    failed: set[CellKey] = set()
    for r in latest_attempts(rows):
        key = CellKey.of(r)
        (failed if r["metric"] == "*" and r["status"] == "error" else done).add(key)
    return done - failed


def write_csv(jsonl: str | Path, csv_path: str | Path) -> None:
    """Regenerate ``results.csv`` (the long format of DESIGN §5) from the JSONL."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=ROW_FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in latest_attempts(read_rows(jsonl)):
        w.writerow(r)
    atomic_write_text(csv_path, buf.getvalue())


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, seeds: list[int]) -> dict[str, Any]:
    """What is needed to reproduce a run: versions, commit, device, seeds, command line."""
    packages = ["torch", "torchvision", "numpy", "clean-fid", "lpips", "facenet-pytorch", "scikit-learn",
                "pandas", "gdown", "dlib-bin", "dlib", "safetensors", "faceedit-bench"]
    env = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "git_commit": _git_commit(),
        "packages": {p: v for p in packages if (v := _version(p))},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch_threads": torch.get_num_threads(),
        "seeds": seeds,
    }
    return env
