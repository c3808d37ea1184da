"""Run directories and result files (DESIGN §5).

* ``results/runs/NNNNN-<config>/`` is created per invocation and never reused
  (``os.mkdir`` is the atomic claim, so two launches cannot share a number).
* ``results.jsonl`` is append-only: all rows of one cell attempt, followed by
  a closing *marker* row, go in a single ``write`` + ``fsync`` (``append_cell``).
  A cell counts as finished only when its latest attempt's marker is on disk
  and announces exactly the rows found, so a killed run leaves whole cells or,
  at worst, a torn tail that the reader drops, the next append cuts off and
  ``--resume`` recomputes.  Readers never see marker rows (``read_rows``).
* Files written before markers existed stay readable; on ``--resume`` their
  cells count as unfinished (nothing proves they are complete) and are
  recomputed, the new attempts superseding the old rows.
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
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import torch

ROW_FIELDS = ("method", "dataset", "attribute", "group", "direction", "strength", "seed",
              "metric", "value", "n", "status", "error", "seconds")
CELL_FIELDS = ("method", "dataset", "attribute", "strength", "seed")
_RUN_RE = re.compile(r"^(\d{5})-")
# The closing row of a cell attempt: {"marker": MARKER, <CELL_FIELDS>, "attempt": id, "rows": n}.
MARKER = "cell_complete"


class RunDirError(ValueError):
    """A path given as a run directory is not one (no ``results.jsonl`` / ``config.yaml``)."""


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


def _encode(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps({k: _json_value(v) for k, v in r.items()}) + "\n" for r in rows).encode()


def _append_blob(path: Path, blob: bytes) -> None:
    """One ``os.write`` + ``fsync`` with O_APPEND: concurrent shards never interleave inside it."""
    _repair_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        written = os.write(fd, blob)
        os.fsync(fd)
    finally:
        os.close(fd)
    if written != len(blob):  # the tail (and so the marker) is missing: the next append repairs the file
        raise OSError(f"{path}: only {written} of {len(blob)} bytes were written (disk full?)")


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append rows as a single write, without a closing marker (use ``append_cell`` for a cell's rows)."""
    _append_blob(Path(path), _encode(rows))


def marker_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The closing row of one cell attempt; raises ValueError unless ``rows`` are one attempt of one cell."""
    if not rows:
        raise ValueError("append_cell: a cell attempt has at least one row")
    key, attempt = CellKey.of(rows[0]), rows[0].get("attempt")
    if not attempt:
        raise ValueError("append_cell: rows need an 'attempt' id (markers close one attempt)")
    for r in rows:
        if CellKey.of(r) != key or r.get("attempt") != attempt:
            raise ValueError(f"append_cell: rows of several cells or attempts ({CellKey.of(r)}, {r.get('attempt')!r} "
                             f"vs {key}, {attempt!r})")
    return {"marker": MARKER, **{f: rows[0][f] for f in CELL_FIELDS}, "attempt": attempt, "rows": len(rows)}


def append_cell(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append one cell attempt's rows plus its closing marker in ONE write + fsync.

    The marker goes last in the same write, so it is on disk only if every row
    before it is; ``finished_cells`` requires it.
    """
    _append_blob(Path(path), _encode([*rows, marker_row(rows)]))


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


def is_marker(row: dict[str, Any]) -> bool:
    """A closing marker row (not data: hidden from every reader)."""
    return row.get("marker") == MARKER


class Rows(list):
    """Data rows of a results file (markers removed), plus which cell attempts were closed by a marker.

    A plain list to every consumer (report, CSV, pandas); ``closed`` maps
    (cell, attempt) to the row count its marker announced.
    """

    def __init__(self, rows: Iterable[dict[str, Any]] = (), closed: dict[tuple[CellKey, str], int] | None = None):
        super().__init__(rows)
        self.closed: dict[tuple[CellKey, str], int] = dict(closed or {})

    @classmethod
    def split(cls, rows: Iterable[dict[str, Any]]) -> "Rows":
        """Separate marker rows from data rows (keeps what a ``Rows`` already knows)."""
        out = cls(closed=getattr(rows, "closed", None))
        for r in rows:
            if is_marker(r):
                out.closed[(CellKey.of(r), str(r.get("attempt", "")))] = int(r.get("rows", -1))
            else:
                out.append(r)
        return out


def read_rows(path: str | Path) -> Rows:
    """All complete data rows (a torn trailing line is ignored); marker rows are kept out, in ``.closed``."""
    path = Path(path)
    if not path.exists():
        return Rows()
    parsed = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not is_marker(row):
                value = row.get("value")
                row["value"] = float("nan") if value is None else float(value)
            parsed.append(row)
    return Rows.split(parsed)


def _complete(rows: Rows, counts: Counter, key: CellKey, attempt: str) -> bool:
    """An attempt is complete when its marker is there and announces exactly the rows found."""
    return rows.closed.get((key, attempt)) == counts[(key, attempt)]


def latest_attempts(rows: Iterable[dict[str, Any]]) -> Rows:
    """Keep, per cell, only the rows of one attempt: its latest complete one, else (old runs) its latest.

    Rows carry an ``attempt`` id; "latest" is the order in the file.  A newer
    attempt cut short (no marker) never hides a complete older one.
    """
    rows = Rows.split(rows)
    counts = Counter((CellKey.of(r), r.get("attempt", "")) for r in rows)
    last: dict[CellKey, str] = {}
    last_complete: dict[CellKey, str] = {}
    for r in rows:
        key, attempt = CellKey.of(r), r.get("attempt", "")
        last[key] = attempt
        if _complete(rows, counts, key, attempt):
            last_complete[key] = attempt
    keep = {**last, **last_complete}
    closed = {k: v for k, v in rows.closed.items() if keep.get(k[0]) == k[1]}
    return Rows((r for r in rows if r.get("attempt", "") == keep[CellKey.of(r)]), closed)


def finished_cells(rows: Iterable[dict[str, Any]]) -> set[CellKey]:
    """Cells whose latest attempt is complete on disk (its marker is there) and did not fail as a whole.

    A cell-level error (``metric="*"``) is retried on --resume; so is a cell
    whose rows lack their marker (a kill mid-write, or a run written before
    markers existed).
    """
    rows = Rows.split(rows)
    counts = Counter((CellKey.of(r), r.get("attempt", "")) for r in rows)
    last: dict[CellKey, str] = {}
    failed: set[CellKey] = set()
    for r in rows:
        last[CellKey.of(r)] = r.get("attempt", "")
    for r in rows:
        key = CellKey.of(r)
        if r.get("attempt", "") == last[key] and r["metric"] == "*" and r["status"] == "error":
            failed.add(key)
    return {k for k, a in last.items() if _complete(rows, counts, k, a)} - failed


def count_errors(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Errors among ``rows`` (pass latest attempts): failed cells and failed metrics.

    ``skipped`` and ``unavailable`` metrics are not errors: they say why a
    number is absent, and the same config gives them on every offline machine.
    """
    cells = sum(1 for r in rows if r.get("status") == "error" and r.get("metric") == "*")
    metrics = sum(1 for r in rows if r.get("status") == "error" and r.get("metric") != "*")
    return {"cells": cells, "metrics": metrics, "total": cells + metrics}


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


def check_run_dir(path: str | Path) -> Path:
    """``path`` if it holds a run's results, else RunDirError saying what it is instead."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a run directory: no such directory")
    if not (path / "results.jsonl").is_file():
        if (path / "config.yaml").is_file():
            raise RunDirError(f"{path} has no results yet (no results.jsonl); run it with --resume {path}")
        raise RunDirError(f"{path} is not a run directory: it has no results.jsonl "
                          "(run directories look like results/runs/00000-default/)")
    return path
