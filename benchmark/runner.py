"""The grid runner: methods × attributes × strengths × seeds on one dataset.

Each cell is independent and idempotent: ``--resume`` skips cells whose rows
are in ``results.jsonl``; a failing cell (fit or edit raises) records one row
with ``status=error`` and the grid goes on; a failing *evaluator* records its
own error row while the cell's other metrics stand.

Fits are shared by all strengths of a (method, attribute, seed) and cached on
disk under ``cache_root()/editors/<method>/<content hash>/``.
"""
from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from torchvision.utils import save_image
from tqdm.auto import tqdm

from benchmark import rundir
from benchmark.assets import AssetError, cache_root
from benchmark.config import Config
from benchmark.data.base import FaceDataset, FaceSplit, collate_faces
from benchmark.registry import DATASETS, EVALUATORS, METHODS
from evaluators.base import EvalContext, Evaluator, MetricUnavailable
from methods.base import Budget, EditContext, Editor, EditorError

log = logging.getLogger(__name__)

DIRECTIONS = {0: "1to0", 1: "0to1"}  # keyed by the target value t


@dataclass(frozen=True)
class Cell:
    method: str
    attribute: str
    strength: float
    seed: int


def resolve_device(spec: str) -> torch.device:
    """``auto`` picks CUDA when present; anything else is taken literally and checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {spec!r} was asked for but CUDA is not available; use device=cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def validate_names(cfg: Config) -> None:
    """Unknown method / evaluator / dataset names fail here, before anything is built."""
    METHODS.check(cfg.methods)
    EVALUATORS.check(cfg.evaluators)
    DATASETS.get(cfg.data.name)


def build_dataset(cfg: Config) -> FaceDataset:
    return DATASETS.create(cfg.data.name, resolution=cfg.data.resolution, **cfg.data.options)


def expand_cells(cfg: Config, attributes: list[str]) -> list[Cell]:
    """The grid in a stable order: fits (method, attribute, seed) are contiguous."""
    return [Cell(m, a, float(s), int(seed))
            for m in cfg.methods for a in attributes for seed in cfg.seeds for s in cfg.strengths]


class GridRunner:
    """Runs the cells of one config into one run directory."""

    def __init__(self, cfg: Config, run_dir: Path, device: torch.device):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.jsonl = self.run_dir / "results.jsonl"
        self.dataset = build_dataset(cfg)
        self.attributes = self.dataset.resolve_attributes(cfg.attributes)
        self._editor_cache: dict[tuple[str, str, int], Editor | Exception] = {}
        self._test: FaceSplit | None = None
        self.progress = cfg.output.progress

    # -- data -------------------------------------------------------------------
    @property
    def test_split(self) -> FaceSplit:
        if self._test is None:
            self._test = self.dataset.split("test")
        return self._test

    def _loader(self) -> DataLoader:
        split = self.test_split
        data = split if self.cfg.data.max_test is None else Subset(split, range(min(len(split), self.cfg.data.max_test)))
        return DataLoader(data, batch_size=self.cfg.data.batch_size, shuffle=False,
                          num_workers=self.cfg.data.num_workers, collate_fn=collate_faces)

    # -- editors ----------------------------------------------------------------
    def editor_for(self, method: str, attribute: str, seed: int) -> Editor:
        """Fit (or load the cached fit of) ``method`` for ``attribute``; errors are remembered, not retried."""
        key = (method, attribute, seed)
        if key not in self._editor_cache:
            # one slot: the grid order keeps a fit's cells contiguous, and editors can be large
            self._editor_cache.clear()
            try:
                self._editor_cache[key] = self._fit(method, attribute, seed)
            except Exception as exc:  # noqa: BLE001 - recorded as the cell's error
                self._editor_cache[key] = exc
        result = self._editor_cache[key]
        if isinstance(result, Exception):
            raise result
        return result

    def _fit(self, method: str, attribute: str, seed: int) -> Editor:
        editor: Editor = METHODS.create(method, **self.cfg.method_options.get(method, {}))
        budget = Budget.from_config(self.cfg.budget)
        seed_everything(seed)
        if not editor.trainable:
            editor.fit(self.dataset.split("train"), attribute, budget, self.device, seed)
            return editor
        key = editor.cache_key(self.dataset.fingerprint(), attribute, budget, seed)
        final = cache_root() / "editors" / method / key
        if (final / "COMPLETE").exists():
            editor.load(final, self.device)
            return editor
        editor.fit(self.dataset.split("train"), attribute, budget, self.device, seed)
        tmp = final.with_name(f".{key}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        editor.save(tmp)
        (tmp / "COMPLETE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(tmp, final)
        except OSError:  # another job finished the same fit first: keep theirs (same content hash)
            shutil.rmtree(tmp, ignore_errors=True)
        return editor

    # -- evaluators -------------------------------------------------------------
    def _evaluators(self, attribute: str) -> tuple[dict[int, list[Evaluator]], list[dict[str, Any]]]:
        """Per direction, the evaluators that apply; rows for those skipped or failing to build."""
        per_dir: dict[int, list[Evaluator]] = {0: [], 1: []}
        notes: list[dict[str, Any]] = []
        for name in self.cfg.evaluators:
            cls = EVALUATORS.get(name)
            reason = cls.supports(self.dataset)
            if reason:
                notes.append({"metric": name, "status": "skipped", "error": reason})
                continue
            opts = self.cfg.evaluator_options.get(name, {})
            try:
                for t in (0, 1):
                    ctx = EvalContext(self.dataset, attribute, t, self.device)
                    per_dir[t].append(EVALUATORS.create(name, ctx, **opts))
            except Exception as exc:  # noqa: BLE001 - one metric's failure must not sink the cell
                status = "unavailable" if isinstance(exc, (AssetError, MetricUnavailable)) else "error"
                msg = str(exc) if status == "unavailable" else f"{type(exc).__name__}: {exc}"
                notes.append({"metric": name, "status": status, "error": msg})
                per_dir = {t: [e for e in evs if e.name != name] for t, evs in per_dir.items()}
        return per_dir, notes

    def _extras(self, evs: list[Evaluator], batch: dict[str, torch.Tensor], attribute: str,
                target: torch.Tensor) -> dict[str, torch.Tensor]:
        needs = set().union(*(e.requires for e in evs)) if evs else set()
        extras: dict[str, torch.Tensor] = {}
        if "mask" in needs:
            m = self.test_split.region_masks(batch["index"], attribute)
            if m is not None:
                extras["mask"] = m.to(self.device)
        if "counterfactual" in needs:
            cf = self.test_split.counterfactuals(batch["index"], attribute, target.cpu())
            if cf is not None:
                extras["counterfactual"] = cf.to(self.device)
        if "identity" in needs:
            extras["identity"] = batch["identity"]
        if "index" in needs:
            extras["index"] = batch["index"]
        return extras

    # -- one cell ---------------------------------------------------------------
    def run_cell(self, cell: Cell) -> list[dict[str, Any]]:
        """Edit the test split and evaluate; returns the cell's rows (never raises)."""
        start = time.perf_counter()
        base = {"method": cell.method, "dataset": self.dataset.name, "attribute": cell.attribute,
                "group": self.dataset.group(cell.attribute), "strength": cell.strength, "seed": cell.seed}
        try:
            rows = self._run_cell(cell, base)
        except Exception as exc:  # noqa: BLE001 - a failing cell is recorded, the grid goes on
            log.error("cell %s failed: %s", cell, exc)
            log.debug("%s", traceback.format_exc())
            rows = [{**base, "direction": "", "metric": "*", "value": math.nan, "n": 0, "status": "error",
                     "error": f"{type(exc).__name__}: {exc}"}]
        seconds = round(time.perf_counter() - start, 3)
        attempt = uuid.uuid4().hex[:12]
        return [{**r, "seconds": seconds, "attempt": attempt} for r in rows]

    def _run_cell(self, cell: Cell, base: dict[str, Any]) -> list[dict[str, Any]]:
        editor = self.editor_for(cell.method, cell.attribute, cell.seed)
        ai = self.dataset.attribute_index(cell.attribute)
        per_dir, notes = self._evaluators(cell.attribute)
        counts = {0: 0, 1: 0}
        failed: dict[str, str] = {}
        seed_everything(cell.seed)
        saved = False
        batches = tqdm(self._loader(), desc=f"{cell.method}/{cell.attribute}", leave=False, unit="batch",
                       disable=not self.progress)
        for batch in batches:
            src = batch["image"].to(self.device)
            labels = batch["labels"].to(self.device)
            target = 1.0 - labels[:, ai]
            ctx = EditContext(split=self.test_split, index=batch["index"])
            with torch.no_grad():
                edited = editor.edit(src, cell.attribute, target, cell.strength, context=ctx)
            edited = check_edited(edited, src, cell.method)
            if not saved and self.cfg.output.save_images > 0:
                self._save_pair(cell, src, edited)
                saved = True
            all_evs = per_dir[0] + per_dir[1]
            extras = self._extras(all_evs, batch, cell.attribute, target)
            for t in (0, 1):
                sel = target == t
                if not bool(sel.any()):
                    continue
                counts[t] += int(sel.sum())
                sub = {k: v[sel.to(v.device)] for k, v in extras.items()}
                for ev in per_dir[t]:
                    if ev.name in failed:
                        continue
                    try:
                        ev.update(src[sel], edited[sel], labels[sel], target[sel], **sub)
                    except Exception as exc:  # noqa: BLE001 - an evaluator's failure is its own row
                        failed[ev.name] = f"{type(exc).__name__}: {exc}"
        return self._rows(base, per_dir, counts, failed, notes)

    def _rows(self, base: dict[str, Any], per_dir: dict[int, list[Evaluator]], counts: dict[int, int],
              failed: dict[str, str], notes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        values: dict[str, dict[int, float]] = {}
        for t, evs in per_dir.items():
            if counts[t] == 0:
                continue
            for ev in evs:
                if ev.name in failed:
                    continue
                try:
                    result = ev.finalize()
                except Exception as exc:  # noqa: BLE001
                    failed[ev.name] = f"{type(exc).__name__}: {exc}"
                    continue
                for metric, value in result.items():
                    values.setdefault(metric, {})[t] = float(value)
                    rows.append({**base, "direction": DIRECTIONS[t], "metric": metric, "value": float(value),
                                 "n": counts[t], "status": "ok", "error": ""})
        for metric, by_t in values.items():
            if len(by_t) == 2:  # protocol: per direction, then the unweighted mean of the two
                rows.append({**base, "direction": "mean", "metric": metric, "value": float(np.mean(list(by_t.values()))),
                             "n": counts[0] + counts[1], "status": "ok", "error": ""})
        for name, err in failed.items():
            rows.append({**base, "direction": "", "metric": name, "value": math.nan, "n": 0, "status": "error",
                         "error": err})
        for note in notes:
            rows.append({**base, "direction": "", "value": math.nan, "n": 0, **note})
        if not rows:
            rows.append({**base, "direction": "", "metric": "*", "value": math.nan, "n": 0, "status": "error",
                         "error": "the test split produced no images"})
        return rows

    def _save_pair(self, cell: Cell, src: torch.Tensor, edited: torch.Tensor) -> None:
        """First K sources over their edits, no padding, so reports can crop exact tiles."""
        k = min(self.cfg.output.save_images, src.shape[0])
        grid = torch.cat([torch.cat(list(src[:k]), dim=2), torch.cat(list(edited[:k]), dim=2)], dim=1)
        out = self.run_dir / "images"
        out.mkdir(exist_ok=True)
        key = rundir.CellKey(cell.method, self.dataset.name, cell.attribute, cell.strength, cell.seed)
        save_image((grid.float().cpu() + 1) / 2, out / f"{key.slug()}.png")

    # -- the grid ---------------------------------------------------------------
    def run(self, shard: tuple[int, int] | None = None) -> dict[str, int]:
        """Run the unfinished cells (of shard K/N, see ``shard_cells``) and return counts."""
        cells = expand_cells(self.cfg, self.attributes)
        if shard is not None:
            cells = shard_cells(cells, *shard)
        done = rundir.finished_cells(rundir.read_rows(self.jsonl))
        todo = [c for c in cells if rundir.CellKey(c.method, self.dataset.name, c.attribute, c.strength, c.seed) not in done]
        stats = {"cells": len(cells), "skipped": len(cells) - len(todo), "ok": 0, "error": 0}
        for cell in tqdm(todo, desc="cells", unit="cell", disable=not self.progress):
            rows = self.run_cell(cell)
            rundir.append_rows(self.jsonl, rows)
            rundir.write_csv(self.jsonl, self.run_dir / "results.csv")
            stats["error" if any(r["metric"] == "*" for r in rows) else "ok"] += 1
        if not self.jsonl.exists():
            self.jsonl.touch()
        rundir.write_csv(self.jsonl, self.run_dir / "results.csv")
        return stats


def check_edited(edited: Any, src: torch.Tensor, method: str) -> torch.Tensor:
    """An editor's output must be a finite tensor shaped like its input; values are clamped to [-1, 1]."""
    if not isinstance(edited, torch.Tensor):
        raise EditorError(f"{method}.edit returned {type(edited).__name__}, expected a torch.Tensor")
    if edited.shape != src.shape:
        raise EditorError(f"{method}.edit returned shape {tuple(edited.shape)}, expected {tuple(src.shape)}")
    if not torch.isfinite(edited).all():
        raise EditorError(f"{method}.edit returned non-finite values (a diverged model?)")
    return edited.to(src.device, src.dtype).clamp(-1.0, 1.0)


def shard_cells(cells: list[Cell], k: int, n: int) -> list[Cell]:
    """Shard K of N: whole fit groups (method, attribute, seed) round-robin, so no fit runs twice."""
    groups: dict[tuple[str, str, int], int] = {}
    for c in cells:
        groups.setdefault((c.method, c.attribute, c.seed), len(groups))
    return [c for c in cells if groups[(c.method, c.attribute, c.seed)] % n == k]
