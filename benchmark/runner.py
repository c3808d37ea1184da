"""The grid runner: methods × attributes × strengths × seeds on one dataset.

Each cell is independent and idempotent: ``--resume`` skips cells whose closing
marker is in ``results.jsonl`` (``rundir.append_cell``); a failing cell (fit or
edit raises) records one row with ``status=error`` and the grid goes on; a
failing *evaluator* records its own error row while the cell's other metrics stand.

Fits are prepared once per (method, attribute, seed), shared by all strengths,
through the training platform (``methods/training.py``): each stage is cached
under ``cache_root()/editors/<method>/<stage>-<key>/`` or taken from the
editor's shipped reference fits, and recorded in the run's ``fits.jsonl``.
With ``GridRunner.allow_training = False`` (``--no-train``: the launcher's cell
jobs) a stage found in neither place fails the cell with ``FitMissingError``
naming the stage, instead of being trained.

A cell's id is ``cell_id(cell)`` (``CellKey.slug()``: ``<method>__<attribute>__s<strength>__seed<seed>``,
the stem of its image files); ``run(cells=[...])`` / ``--cell ID`` run only those cells.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import random
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

from benchmark import rundir
from benchmark.assets import AssetError, cache_root
from benchmark.config import Config
from benchmark.data.base import FaceDataset, FaceSplit, collate_faces
from benchmark.registry import DATASETS, EVALUATORS, METHODS
from evaluators.base import EvalContext, Evaluator, MetricUnavailable
from evaluators.judging import JudgeMemo, split_token
from methods.base import Budget, EditContext, Editor, EditorError
from benchmark.progress import progress
from methods.training import FitContext, FitMissingError, StageRecord  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

DIRECTIONS = {0: "1to0", 1: "0to1"}  # keyed by the target value t
CSV_EVERY_S = 30.0  # results.csv is rebuilt at most this often during a grid (results.jsonl after every cell)


@dataclass(frozen=True)
class Cell:
    method: str
    attribute: str
    strength: float
    seed: int


def cell_id(cell: Cell) -> str:
    """The stable id of a cell within its run (``--cell``): the slug its image files are named by."""
    return rundir.CellKey(cell.method, "", cell.attribute, cell.strength, cell.seed).slug()


def select_cells(cells: list[Cell], ids: Any) -> list[Cell]:
    """The cells whose ``cell_id`` is in ``ids``, in grid order; ConfigError naming any id not in the grid."""
    from benchmark.config import ConfigError

    wanted = list(dict.fromkeys(ids))
    known = {cell_id(c) for c in cells}
    unknown = [i for i in wanted if i not in known]
    if unknown:
        some = ", ".join(sorted(known)[:6]) + (", ..." if len(known) > 6 else "")
        raise ConfigError(f"--cell: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a cell of "
                          f"this grid (ids look like <method>__<attribute>__s<strength>__seed<seed>: {some})")
    return [c for c in cells if cell_id(c) in set(wanted)]


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
    """Unknown names, bad editor options and impossible method/dataset pairs fail here, before anything is built."""
    from benchmark.config import ConfigError
    from methods.training import OptionsError

    METHODS.check(cfg.methods)
    EVALUATORS.check(cfg.evaluators)
    dataset_cls = DATASETS.get(cfg.data.name)
    unknown = sorted(set(cfg.method_options) - set(METHODS.names()))
    if unknown:  # options of a registered method that this grid leaves out are kept, not an error
        raise ConfigError(f"method_options: unknown method(s) {', '.join(unknown)}; "
                          f"valid methods: {', '.join(METHODS.names())}")
    for name in cfg.methods:
        cls = METHODS.get(name)
        try:
            opts = cls.resolve_options(cfg.method_options.get(name, {}), cfg.budget)
        except OptionsError as exc:
            raise ConfigError(f"method_options.{name}: {exc}") from None
        for need in getattr(cls.meta, "requires", ()):
            if not getattr(dataset_cls, f"has_{need}", False):
                raise ConfigError(f"method {name!r} needs a dataset with {need}; "
                                  f"dataset {cfg.data.name!r} has none")


def build_dataset(cfg: Config) -> FaceDataset:
    return DATASETS.create(cfg.data.name, resolution=cfg.data.resolution, **cfg.data.options)


def expand_cells(cfg: Config, attributes: list[str]) -> list[Cell]:
    """The grid in a stable order: fits (method, attribute, seed) are contiguous.

    An editor that ignores ``strength`` (``meta.uses_strength=False``: the no-op, the oracle) gets
    one cell per (attribute, seed) at strength 1.0 instead of identical copies per strength.
    """
    def strengths(m: str) -> list[float]:
        try:
            uses = getattr(METHODS.get(m).meta, "uses_strength", True)
        except KeyError:  # unknown names are reported by validate_names
            uses = True
        return [float(s) for s in cfg.strengths] if uses else [1.0]

    return [Cell(m, a, s, int(seed))
            for m in cfg.methods for a in attributes for seed in cfg.seeds for s in strengths(m)]


class GridRunner:
    """Runs the cells of one config into one run directory."""

    def __init__(self, cfg: Config, run_dir: Path, device: torch.device):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = device
        self.jsonl = self.run_dir / "results.jsonl"
        self.dataset = build_dataset(cfg)
        self.attributes = self.dataset.resolve_attributes(cfg.attributes)
        self._editor_cache: dict[tuple[str, str, int], Editor | BaseException] = {}
        self.fit_keys: dict[tuple[str, str, int], str] = {}
        self.fit_seconds: dict[tuple[str, str, int], float] = {}
        self._test: FaceSplit | None = None
        self.progress = cfg.output.progress
        # False (``--no-train``): stages come from the cache or shipped reference fits only; a missing
        # one fails its cells with FitMissingError (the launcher's cell jobs, after their fit job)
        self.allow_training = True

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
        """Prepare (train, or load the cached / shipped fit of) ``method`` for ``attribute``.

        Errors are remembered, not retried, for the cells of the same fit; fit time is recorded in
        ``fits.jsonl`` and ``self.fit_seconds``, never charged to a cell.
        """
        key = (method, attribute, seed)
        if key not in self._editor_cache:
            # one slot: the grid order keeps a fit's cells contiguous, and editors can be large
            self._editor_cache.clear()
            start = time.perf_counter()
            try:
                self._editor_cache[key] = self._fit(method, attribute, seed)
            except (SystemExit, Exception) as exc:  # noqa: BLE001 - recorded as the cells' error
                if isinstance(exc, SystemExit):
                    exc = EditorError(f"{method}: sys.exit({exc.code!r}) called while preparing the editor")
                self._editor_cache[key] = exc
            self.fit_seconds[key] = round(time.perf_counter() - start, 3)
        result = self._editor_cache[key]
        if isinstance(result, BaseException):
            raise result
        return result

    def _fit(self, method: str, attribute: str, seed: int) -> Editor:
        editor: Editor = METHODS.create(method, **self.cfg.method_options.get(method, {}))
        editor.apply_budget(self.cfg.budget)
        budget = Budget.from_config(self.cfg.budget)
        seed_everything(seed)
        fit = FitContext(editor=editor, dataset=self.dataset, attribute=attribute, seed=seed, device=self.device,
                         fits=dataclasses.asdict(self.cfg.fits), budget=budget, show_progress=self.progress,
                         on_stage=self._record_stage, allow_training=self.allow_training)
        editor.prepare(fit)
        self.fit_keys[(method, attribute, seed)] = fit.fit_key
        return editor

    def _record_stage(self, rec: StageRecord) -> None:
        """Append one stage resolution to the run's ``fits.jsonl`` (provenance of every number)."""
        row = {**dataclasses.asdict(rec), "dataset": self.dataset.name}
        rundir.append_rows(self.run_dir / "fits.jsonl", [row])
        where = {"cache": "cached", "reference": "shipped reference fit", "trained": "trained"}[rec.source]
        log.info("fit %s/%s [%s] %s: %s", rec.method, rec.stage, rec.key, where, rec.path)

    # -- evaluators -------------------------------------------------------------
    # Share judge outputs between evaluators, directions and cells (evaluators/judging.py); False
    # scores every evaluator with its own network calls (the same values, computed again).
    share_judges: bool = True

    def _evaluators(self, attribute: str) -> tuple[dict[int, list[Evaluator]], list[dict[str, Any]]]:
        """Per direction, the evaluators that apply; rows for those skipped or failing to build.

        A metric whose weights are missing fails fast in every cell after the first: ``shared_model``
        remembers the missing asset (evaluators.base).
        """
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
                target: torch.Tensor) -> dict[str, Any]:
        """The dataset's extras the evaluators ask for (``requires``), for the whole batch."""
        needs = set().union(*(e.requires for e in evs)) if evs else set()
        extras: dict[str, Any] = {}
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

    def _editor_extras(self, evs: list[Evaluator], given: dict[str, Any], src: torch.Tensor,
                       method: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """What the editor put into ``EditContext.extras`` that evaluators ask for (``attention``, ``inversion``).

        Returns (tensors on the device, {name: why unusable}). A malformed extra fails the
        evaluators that need it (their error rows name the editor), never the cell.
        """
        needs = set().union(*(e.requires for e in evs)) if evs else set()
        good: dict[str, torch.Tensor] = {}
        bad: dict[str, str] = {}
        for name in EDITOR_EXTRAS:
            if name not in needs or name not in given or given[name] is None:
                continue
            value = given[name]
            if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] != src.shape[0]:
                shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                bad[name] = (f"{method}.edit put {name!r} of {shape} into context.extras; expected a "
                             f"B×C×H×W tensor with B = {src.shape[0]}, the batch size")
            else:
                good[name] = value.detach().to(self.device)
        return good, bad

    # -- one cell ---------------------------------------------------------------
    # -- one cell ---------------------------------------------------------------
    def run_cell(self, cell: Cell) -> list[dict[str, Any]]:
        """Edit the test split and evaluate; returns the cell's rows (never raises but for interrupts).

        The fit is prepared first and timed apart (``fits.jsonl``); ``seconds`` is the cell's own time.
        """
        base = {"method": cell.method, "dataset": self.dataset.name, "attribute": cell.attribute,
                "group": self.dataset.group(cell.attribute), "strength": cell.strength, "seed": cell.seed}
        start = time.perf_counter()
        try:
            editor = self.editor_for(cell.method, cell.attribute, cell.seed)
            base["fit_key"] = self.fit_keys.get((cell.method, cell.attribute, cell.seed), "")
            start = time.perf_counter()
            rows = self._run_cell(cell, base, editor)
        except (SystemExit, Exception) as exc:  # noqa: BLE001 - a failing cell is recorded, the grid goes on
            if isinstance(exc, SystemExit):
                exc = EditorError(f"{cell.method}: sys.exit({exc.code!r}) called inside the editor")
            log.error("cell %s failed: %s", cell, exc)
            log.debug("%s", traceback.format_exc())
            rows = [{**base, "direction": "", "metric": "*", "value": math.nan, "n": 0, "status": "error",
                     "error": f"{type(exc).__name__}: {exc}"}]
        seconds = round(time.perf_counter() - start, 3)
        attempt = uuid.uuid4().hex[:12]
        return [{**r, "seconds": seconds, "attempt": attempt} for r in rows]

    def _run_cell(self, cell: Cell, base: dict[str, Any], editor: Editor) -> list[dict[str, Any]]:
        ai = self.dataset.attribute_index(cell.attribute)
        per_dir, notes = self._evaluators(cell.attribute)
        all_evs = per_dir[0] + per_dir[1]
        counts = {0: 0, 1: 0}
        failed: dict[str, str] = {}
        seed_everything(cell.seed)
        show = ShowcaseCollector(self.cfg.output.save_images) if self.cfg.output.save_images > 0 else None
        token = split_token(self.dataset, self.test_split.split_name)
        share = self.share_judges and any("judge_memo" in e.requires for e in all_evs)
        batches = progress(self._loader(), desc=f"{cell.method}/{cell.attribute}", unit="batch",
                           enabled=self.progress)
        for batch in batches:
            src = batch["image"].to(self.device)
            labels = batch["labels"].to(self.device)
            target = 1.0 - labels[:, ai]
            ctx = EditContext(split=self.test_split, index=batch["index"], extras={})
            with torch.no_grad():
                edited = editor.edit(src, cell.attribute, target, cell.strength, context=ctx)
            edited = check_edited(edited, src, cell.method, editor.meta.value_range)
            given = ctx.extras if isinstance(ctx.extras, dict) else {}
            if show is not None:
                show.offer(batch, target, src, edited, given.get("attention"))
                if show.full:
                    self._save_pair(cell, *show.result())
                    show = None
            extras = self._extras(all_evs, batch, cell.attribute, target)
            editor_extras, bad = self._editor_extras(all_evs, given, src, cell.method)
            extras.update(editor_extras)
            for ev in all_evs:
                for name in sorted(n for n in ev.requires if n in bad):
                    failed.setdefault(ev.name, bad[name])
            memo = JudgeMemo(src, edited, batch["index"], token) if share else None
            with torch.inference_mode():
                for t in (0, 1):
                    sel = target == t
                    if not bool(sel.any()):
                        continue
                    counts[t] += int(sel.sum())
                    sub = {k: v[sel.to(v.device)] for k, v in extras.items()}
                    if memo is not None:
                        sub["judge_memo"] = memo.select(sel)
                    args = (src[sel], edited[sel], labels[sel], target[sel])
                    for ev in per_dir[t]:
                        if ev.name in failed:
                            continue
                        try:
                            ev.update(*args, **sub)
                        except Exception as exc:  # noqa: BLE001 - an evaluator's failure is its own row
                            failed[ev.name] = f"{type(exc).__name__}: {exc}"
        if show is not None and show.seen:  # a rare direction: the whole test set was its pool
            self._save_pair(cell, *show.result())
        with torch.inference_mode():
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

    def _save_pair(self, cell: Cell, src: torch.Tensor, edited: torch.Tensor,
                   attention: Any = None, faces: list[dict[str, int]] | None = None) -> None:
        """First K sources over their edits, no padding, so reports can crop exact tiles.

        An editor's attention masks (``context.extras["attention"]``, B×1×H×W in [0, 1]) go beside
        them as ``<slug>_attention.png`` in the same layout: the sources over their masks.
        ``faces`` (split index, identity and source label of each tile, ``showcase``'s pick) goes
        to ``<slug>.json``, so figure grids label their rows with the faces really shown.
        """
        k = min(self.cfg.output.save_images, src.shape[0])
        out = self.run_dir / "images"
        out.mkdir(exist_ok=True)
        slug = rundir.CellKey(cell.method, self.dataset.name, cell.attribute, cell.strength, cell.seed).slug()
        save_image((_pair_grid(src[:k], edited[:k]).float().cpu() + 1) / 2, out / f"{slug}.png")
        if faces is not None:
            (out / f"{slug}.json").write_text(json.dumps(faces[:k]) + "\n")
        if isinstance(attention, torch.Tensor) and attention.dim() == 4 and attention.shape[0] >= k \
                and attention.shape[1] in (1, 3) and attention.shape[-2:] == src.shape[-2:]:
            masks = attention[:k].detach().float().cpu().clamp(0, 1).expand(-1, 3, -1, -1)
            save_image(_pair_grid((src[:k].float().cpu() + 1) / 2, masks), out / f"{slug}_attention.png")
        elif attention is not None:
            log.warning("%s: attention extra of shape %s not saved (expected B×1×%d×%d)", cell.method,
                        tuple(getattr(attention, "shape", ())), *src.shape[-2:])

    def run_fits(self, cells: list[Cell]) -> dict[str, int]:
        """``fits.fit_only``: prepare every fit of ``cells`` (train what is missing), evaluate nothing."""
        groups = list(dict.fromkeys((c.method, c.attribute, c.seed) for c in cells))
        stats = {"cells": 0, "skipped": 0, "ok": 0, "error": 0, "fits": len(groups)}
        for method, attribute, seed in groups:
            try:
                self.editor_for(method, attribute, seed)
                stats["ok"] += 1
                print(f"fit {method}/{attribute}/seed{seed}: ready "
                      f"({self.fit_keys.get((method, attribute, seed), '')}, "
                      f"{self.fit_seconds[(method, attribute, seed)]:.0f} s)", flush=True)
            except Exception as exc:  # noqa: BLE001 - one failing fit does not stop the others
                stats["error"] += 1
                print(f"fit {method}/{attribute}/seed{seed}: FAILED: {type(exc).__name__}: {exc}", flush=True)
        return stats

    # -- the grid ---------------------------------------------------------------
    def run(self, shard: tuple[int, int] | None = None, cells: Any = None) -> dict[str, int]:
        """Run the unfinished cells (of shard K/N, see ``shard_cells``; of the ids ``cells``) and return counts."""
        ids = cells
        cells = expand_cells(self.cfg, self.attributes)
        if shard is not None:
            cells = shard_cells(cells, *shard)
        if ids is not None:
            cells = select_cells(cells, ids)
        done = rundir.finished_cells(rundir.read_rows(self.jsonl))
        todo = [c for c in cells if rundir.CellKey(c.method, self.dataset.name, c.attribute, c.strength, c.seed) not in done]
        if self.cfg.fits.fit_only:
            return self.run_fits(cells)
        stats = {"cells": len(cells), "skipped": len(cells) - len(todo), "ok": 0, "error": 0}
        csv_written = time.monotonic()
        try:
            for cell in progress(todo, desc="cells", unit="cell", enabled=self.progress, leave=True):
                rows = self.run_cell(cell)
                rundir.append_cell(self.jsonl, rows)  # the record: appended (and flushed) after every cell
                # the CSV view is rebuilt from the whole JSONL: after every cell that grew quadratically
                # (3.5 s of the default run); now at most every CSV_EVERY_S seconds, and at the end
                if time.monotonic() - csv_written >= CSV_EVERY_S:
                    rundir.write_csv(self.jsonl, self.run_dir / "results.csv")
                    csv_written = time.monotonic()
                stats["error" if any(r["metric"] == "*" for r in rows) else "ok"] += 1
        finally:  # also on Ctrl-C or SIGTERM: the CSV shows every finished cell
            if not self.jsonl.exists():
                self.jsonl.touch()
            rundir.write_csv(self.jsonl, self.run_dir / "results.csv")
        self._write_dataset_problems()
        return stats

    def _write_dataset_problems(self) -> None:
        """The dataset's skipped or refused files (``dataset.problems``) for the report's problems table."""
        problems = list(getattr(self.dataset, "problems", []) or [])
        if problems:
            rundir.atomic_write_text(self.run_dir / "dataset_problems.jsonl",
                                     "".join(json.dumps(p, default=str) + "\n" for p in problems))


# what an editor may put into ``EditContext.extras`` for evaluators (evaluators/base.py: EXTRAS)
EDITOR_EXTRAS = ("attention", "inversion")


def _pair_grid(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """K images over K images: one row each, tiles side by side without padding."""
    return torch.cat([torch.cat(list(top), dim=2), torch.cat(list(bottom), dim=2)], dim=1)


def showcase(identity: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of up to ``k`` images of one batch for the figure grids: distinct identities, directions alternating.

    Deterministic in (identities, targets), so every editor of an attribute shows the same faces.
    Unknown identities (-1) count as distinct; when the batch runs out, repeats fill the rest.
    """
    ids = identity.reshape(-1).tolist()
    pools = {t: [i for i in range(len(ids)) if float(target[i]) == t] for t in (1.0, 0.0)}
    chosen: list[int] = []
    seen: set[int] = set()
    turn = 1.0
    while len(chosen) < k and (pools[1.0] or pools[0.0]):
        pool = pools[turn] or pools[1.0 - turn]
        i = pool.pop(0)
        if ids[i] < 0 or ids[i] not in seen:
            chosen.append(i)
            seen.add(ids[i])
            turn = 1.0 - turn
    rest = [i for i in range(len(ids)) if i not in chosen]
    return torch.tensor((chosen + rest)[:k], dtype=torch.long)


class ShowcaseCollector:
    """The figure grid's faces over the whole test stream, not only its first batch.

    A rare attribute (Bangs: 17 % of SynthFaces' test faces) can be absent from the first batch, and
    the grid then showed one direction only.  This keeps, per direction, the first ``k`` tiles of
    distinct identities (plus the first ``k`` tiles of any kind, to fill with repeats), on the CPU,
    so memory is O(k) whatever the test set; it is ``full`` once both directions have ``k``, and
    ``result()`` applies ``showcase`` to what it kept.  Deterministic in the stream's identities and
    targets, so every editor of an attribute shows the same faces.
    """

    def __init__(self, k: int):
        self.k, self.seen = k, 0
        self.tiles: list[dict[str, Any]] = []  # kept tiles in stream order
        self._ids: dict[float, set[int]] = {0.0: set(), 1.0: set()}
        self._any = 0
        self._bad_attention: Any = None  # an attention extra of the wrong shape, passed on for _save_pair's warning

    @property
    def full(self) -> bool:
        return all(len(v) >= self.k for v in self._ids.values())

    def offer(self, batch: dict[str, Any], target: torch.Tensor, src: torch.Tensor, edited: torch.Tensor,
              attention: Any) -> None:
        att_ok = isinstance(attention, torch.Tensor) and attention.shape[0] == src.shape[0]
        for j in range(src.shape[0]):
            t, ident = float(target[j]), int(batch["identity"][j])
            distinct = (ident < 0 or ident not in self._ids[t]) and len(self._ids[t]) < self.k
            if not distinct and self._any >= self.k:
                continue
            if distinct:
                self._ids[t].add(ident if ident >= 0 else -1 - len(self.tiles))
            else:
                self._any += 1
            self.tiles.append({"src": src[j].cpu(), "edited": edited[j].cpu(),
                               "att": attention[j].cpu() if att_ok else None, "target": t, "identity": ident,
                               "face": {"index": int(batch["index"][j]), "identity": ident, "label": int(1 - t)}})
        self.seen += src.shape[0]
        if not att_ok and attention is not None:
            self._bad_attention = attention

    def result(self) -> tuple[torch.Tensor, torch.Tensor, Any, list[dict[str, int]]]:
        """(sources, edits, attention or None, faces) of the chosen tiles, for ``_save_pair``."""
        ids = torch.tensor([x["identity"] for x in self.tiles])
        targets = torch.tensor([x["target"] for x in self.tiles])
        pick = showcase(ids, targets, self.k).tolist()
        chosen = [self.tiles[i] for i in pick]
        att: Any = None
        if chosen and all(x["att"] is not None for x in chosen):
            att = torch.stack([x["att"] for x in chosen])
        elif self._bad_attention is not None:
            att = self._bad_attention  # _save_pair warns about its shape
        return (torch.stack([x["src"] for x in chosen]), torch.stack([x["edited"] for x in chosen]), att,
                [x["face"] for x in chosen])


# an output this far outside the declared range is a bug (e.g. [0, 255] output), not rounding
RANGE_TOLERANCE = 1e-2


def check_edited(edited: Any, src: torch.Tensor, method: str,
                 value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
    """An editor's output must be a finite tensor shaped like its input, inside [-1, 1] up to rounding.

    Values within ``RANGE_TOLERANCE`` of the range are clamped (float rounding of tanh outputs);
    anything further out fails the cell naming the editor, never clamped in silence.
    """
    if not isinstance(edited, torch.Tensor):
        raise EditorError(f"{method}.edit returned {type(edited).__name__}, expected a torch.Tensor")
    if edited.shape != src.shape:
        raise EditorError(f"{method}.edit returned shape {tuple(edited.shape)}, expected {tuple(src.shape)}")
    if not torch.isfinite(edited).all():
        raise EditorError(f"{method}.edit returned non-finite values (a diverged model?)")
    lo, hi = float(edited.min()), float(edited.max())
    if lo < -1.0 - RANGE_TOLERANCE or hi > 1.0 + RANGE_TOLERANCE:
        raise EditorError(f"{method}.edit returned values in [{lo:.4g}, {hi:.4g}], outside [-1, 1] "
                          f"(declared value_range {tuple(value_range)}); editors return images in [-1, 1]")
    return edited.to(src.device, src.dtype).clamp(-1.0, 1.0)


def shard_cells(cells: list[Cell], k: int, n: int) -> list[Cell]:
    """Shard K of N: whole fit groups round-robin, so no fit (or shared stage) runs in two shards.

    A fit group is (method, attribute, seed); for an editor with attribute-independent stages
    (``Editor.shared_stages``) it is (method, seed), so its shared stage trains in one job only.
    """
    groups: dict[tuple, int] = {}
    for c in cells:
        groups.setdefault(_fit_group(c), len(groups))
    return [c for c in cells if groups[_fit_group(c)] % n == k]


def _fit_group(cell: Cell) -> tuple:
    try:
        shared = bool(getattr(METHODS.get(cell.method), "shared_stages", ()))
    except KeyError:  # an unregistered name (validated elsewhere): plain grouping
        shared = False
    return (cell.method, cell.seed) if shared else (cell.method, cell.attribute, cell.seed)
