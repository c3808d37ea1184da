"""The editor training platform (docs/training.md): options, stages, resumable training, provenance.

Why one platform: a GAN editor trains for hours to days. Its fit must survive a kill (SLURM
pre-emption, a closed laptop), must not be trained twice by two jobs, must show what it is doing,
must stop loudly when it diverges, and must say afterwards which code, data and budget made the
weights a number came from. Every editor gets that from here instead of writing it again.

* ``EditorOptions`` / ``option``: each editor's options dataclass, presets and budget, validated
  before any model loads; runtime-only fields never enter a cache key.
* ``FitContext.stage``: one cached, locked, resumable training stage, resolved from the reference
  fits shipped in the repository, then the user's cache, then training.
* ``TrainContext``: the loop of one stage: checkpoints (and SIGTERM), stats.jsonl, sample grids,
  divergence checks, a progress bar, a wall-time slice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import random
import shutil
import signal
import threading
import time
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from benchmark import cache as cachelib
from benchmark.assets import cache_root
from benchmark.progress import progress
from benchmark.data.base import DataError, FaceDataset, FaceSplit, content_fingerprint

log = logging.getLogger(__name__)

REFERENCE_DIRNAME = "reference_fits"
PROVENANCE = "provenance.json"
_WARNED_SOURCE: set[str] = set()  # fits already reported as made by other source (once per process)
_WARNED_SHADOWED: set[str] = set()  # cache entries already reported as shadowed by a shipped fit


# -- errors -------------------------------------------------------------------------------------

class OptionsError(ValueError):
    """A bad ``method_options.<m>`` entry: unknown key, wrong type, unknown preset."""


class DivergenceError(RuntimeError):
    """Training produced a non-finite or exploding value; the message names the step and the value."""


class FitMissingError(RuntimeError):
    """A stage is neither cached nor shipped and this context may not train it (``allow_training=False``:
    the runner's ``--no-train``, the launcher's cell jobs)."""


class TrainingPaused(RuntimeError):
    """The fit's wall-time slice (``budget.minutes``) is spent; it resumes from its checkpoint next run."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGTERM during training: a checkpoint was written; the grid stops and can be resumed."""


# -- options ------------------------------------------------------------------------------------

def option(default: Any = dataclasses.MISSING, *, runtime: bool = False, doc: str = "",
           default_factory: Any = dataclasses.MISSING, added_later: bool = False) -> Any:
    """A dataclass field with metadata: ``runtime=True`` keeps it out of cache keys; ``added_later=True``
    (an option added after fits were made) keeps it out while it has its default, so that the fits made
    before it existed, which behaved as the default does, keep their keys."""
    meta = {"runtime": runtime, "doc": doc, "added_later": added_later, "default": default}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class EditorOptions:
    """Fields every trainable editor has; editors subclass and add their own.

    ``preset`` names the schedule (``cpu`` default, ``reference``, ``paper``, ``test``);
    ``steps``/``batch_size`` are the budget; ``checkpoint`` loads pretrained weights (a path or a
    declared asset name) instead of training.
    """

    preset: str = option("cpu", doc="named schedule: cpu | reference | paper | test")
    steps: int = option(1000, doc="training iterations of the main stage")
    batch_size: int = option(16, doc="images per training step")
    checkpoint: str | None = option(None, doc="pretrained weights (path or asset name): skip training")

    def hashed(self) -> dict[str, Any]:
        """The options that change what a fit produces (runtime fields and the preset name left out:
        the preset's values are already in the other fields)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if not f.metadata.get("runtime") and f.name != "preset"}
        later = {f.name: f.metadata.get("default") for f in fields(self) if f.metadata.get("added_later")}
        return cachelib.without_later_defaults(out, later)


@dataclass(frozen=True)
class NoOptions:
    """The schema of an editor that takes no options (the no-op and the oracle): any key is a typo."""

    def hashed(self) -> dict[str, Any]:
        return {}


def _coerce(cls_name: str, key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the field type (YAML gives ints for floats, lists for tuples)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    bad = OptionsError(f"{cls_name}: option {key!r} expects {getattr(tp, '__name__', tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return _coerce(cls_name, key, value, a)
            except OptionsError as exc:
                errors.append(exc)
        raise bad
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad
        inner = args[0] if args else Any
        return tuple(_coerce(cls_name, key, v, inner) for v in value)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad
        return value
    return value


def resolve_options(options_cls: type[EditorOptions], presets: dict[str, dict[str, Any]],
                    default_preset: str, options: dict[str, Any],
                    budget: dict[str, Any] | None = None) -> EditorOptions:
    """Preset values, then the global budget (steps, batch_size), then ``method_options``; validated."""
    name = options_cls.__name__
    valid = {f.name: f for f in fields(options_cls)}
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise OptionsError(f"{name}: unknown option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    preset = options.get("preset", default_preset)
    if "preset" in valid and preset not in presets and preset != default_preset:
        raise OptionsError(f"{name}: unknown preset {preset!r}; valid: {', '.join(sorted(presets))}")
    merged: dict[str, Any] = dict(presets.get(preset, {}))
    for k, v in (budget or {}).items():
        if k in valid and v is not None:
            merged[k] = v
    merged.update(options)
    if "preset" in valid:
        merged["preset"] = preset
    hints = typing.get_type_hints(options_cls)
    kwargs = {k: _coerce(name, k, v, hints[k]) for k, v in merged.items()}
    try:
        return options_cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise OptionsError(f"{name}: {exc}") from None


def describe_options(options_cls: type[EditorOptions], presets: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for ``--list``: each option with its default and doc, then the presets."""
    lines = []
    for f in fields(options_cls):
        default = f.default if f.default is not dataclasses.MISSING else "(factory)"
        tag = " [runtime]" if f.metadata.get("runtime") else ""
        doc = f.metadata.get("doc", "")
        lines.append(f"{f.name}={default!r}{tag}" + (f"  {doc}" if doc else ""))
    for pname, values in presets.items():
        lines.append(f"preset {pname}: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return lines


# -- weights I/O ----------------------------------------------------------------------------------

def save_safetensors(path: str | Path, state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Contiguous CPU copies of a state dict into a safetensors file (atomic rename)."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items() if isinstance(v, torch.Tensor)}
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_safetensors(path: str | Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a corrupt file names itself and the remedy."""
    from safetensors.torch import load_file

    path = Path(path)
    try:
        return load_file(str(path), device=str(device))
    except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError name no file
        raise cachelib.CacheCorruptError(path, f"cannot read weights ({type(exc).__name__}: {exc})") from None


# -- training data --------------------------------------------------------------------------------

@dataclass
class TrainData:
    """A training split held in memory as uint8 (N×3×r×r) with its 0/1 labels (N×A).

    Why in memory: GAN steps draw random batches thousands of times; decoding or rendering each
    image again per step would cost more than the step. 5,000 SynthFaces at 64 px are 61 MB.
    """

    images: torch.Tensor
    labels: torch.Tensor
    attr_index: int

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return int(self.images.shape[-1])

    def indices(self, size: int, generator: torch.Generator, balanced: bool = False,
                value: int | None = None) -> torch.Tensor:
        """Random indices; ``balanced`` draws each class of the attribute with probability 1/2."""
        col = self.labels[:, self.attr_index]
        if value is not None:
            pool = (col == value).nonzero().flatten()
            return pool[torch.randint(len(pool), (size,), generator=generator)]
        if not balanced:
            return torch.randint(len(self), (size,), generator=generator)
        weights = torch.where(col > 0.5, 0.5 / max(float(col.sum()), 1.0), 0.5 / max(float((1 - col).sum()), 1.0))
        return torch.multinomial(weights, size, replacement=True, generator=generator)

    def batch(self, size: int, generator: torch.Generator, balanced: bool = False, value: int | None = None,
              device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """(images float [-1, 1] B×3×r×r, labels B×A) on ``device``."""
        idx = self.indices(size, generator, balanced, value)
        x = self.images[idx].to(device=device, dtype=torch.float32) / 127.5 - 1.0
        return x, self.labels[idx].to(device)


def _split_arrays(split: FaceSplit, resolution: int | None, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    imgs, labels = [], []
    for start in range(0, len(split), batch):
        items = [split[i] for i in range(start, min(start + batch, len(split)))]
        x = torch.stack([it["image"] for it in items])
        if resolution is not None and x.shape[-1] != resolution:
            x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
        imgs.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        labels.append(torch.stack([it["labels"] for it in items]))
    return torch.cat(imgs), torch.cat(labels).float()


# -- keys, source hashes, provenance ----------------------------------------------------------

def content_key(payload: dict[str, Any]) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def dataset_identity(dataset: FaceDataset) -> dict[str, Any]:
    """The dataset fingerprint without location-only options (``root``, ``download``, ...): the fits' key."""
    return content_fingerprint(dataset)


def editor_package_dir(editor_cls: type) -> Path:
    """The directory of the editor's module: its package for ``methods/<pkg>/editor.py``."""
    return Path(inspect.getfile(editor_cls)).resolve().parent


def source_hash(editor_cls: type) -> str:
    """sha256 over the editor's own source: its package's ``*.py`` files (or its module alone).

    Recorded with every fit; a fit loaded under different source says so (not in the key, so a
    comment edit does not throw away days of training, but never silent).
    """
    module = Path(inspect.getfile(editor_cls)).resolve()
    pkg = module.parent
    files = sorted(pkg.rglob("*.py")) if (pkg / "__init__.py").exists() and pkg.name != "methods" else [module]
    h = hashlib.sha256()
    for f in files:
        if REFERENCE_DIRNAME in f.parts:
            continue
        h.update(str(f.relative_to(pkg)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _git_commit() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# -- the training loop of one stage -----------------------------------------------------------

class TrainContext:
    """The loop of one training stage: resume, checkpoints, SIGTERM, stats, samples, divergence."""

    def __init__(self, fit: "FitContext", stage: str, key: str, work_dir: Path, steps: int):
        self.fit = fit
        self.stage = stage
        self.key = key
        self.work_dir = Path(work_dir)
        self.out_dir = self.work_dir / "out"
        self.ckpt_dir = self.work_dir / "checkpoints"
        for d in (self.work_dir, self.out_dir, self.ckpt_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.device = fit.device
        self.seed = fit.seed
        self.total_steps = int(steps)
        self.log_every = max(1, int(fit.fits.get("log_every", 50)))
        self.sample_every = int(fit.fits.get("sample_every", 1000))
        self.checkpoint_every = max(1, int(fit.fits.get("checkpoint_every", 500)))
        self.minutes = fit.budget_minutes
        self.max_grad_norm = float(fit.fits.get("max_grad_norm", 1e6))
        self._objects: dict[str, Any] = {}
        self._acc: dict[str, list[float]] = {}
        self._last_stats: dict[str, float] = {}
        self._term = False
        self._bar = None
        self.start_step = 0
        self.seconds = 0.0  # training seconds of this stage, summed over resumed runs
        # one row per run that trained steps of this stage (steps, seconds, torch threads, device): the
        # weights depend on the thread count (float reductions), so a fit resumed on another machine or
        # thread count says which steps ran where; restored from the checkpoint, written to provenance
        self.segments: list[dict[str, Any]] = []
        self._t0 = time.perf_counter()
        self._last_sample: Path | None = None

    # -- objects and checkpoints ---------------------------------------------------------------
    def register(self, **objects: Any) -> None:
        """Modules, optimisers, schedulers, EMA copies: anything with state_dict/load_state_dict."""
        for name, obj in objects.items():
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise TypeError(f"register({name}=...): {type(obj).__name__} has no state_dict/load_state_dict")
            self._objects[name] = obj

    def generator(self, step: int, stream: int = 0) -> torch.Generator:
        """A CPU generator seeded by (seed, stage key, step, stream): batches independent of resume."""
        g = torch.Generator()
        g.manual_seed(int(content_key({"s": self.seed, "k": self.key, "t": step, "x": stream}), 16) % (2**63))
        return g

    def _checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[1]))

    def save_checkpoint(self, step: int) -> Path:
        state = {
            "step": step,
            "seconds": self.seconds + self._run_seconds(),
            "objects": {n: o.state_dict() for n, o in self._objects.items()},
            "rng": _rng_state(),
            "stats": dict(self._last_stats),
            "segments": [*self.segments, self._segment(step)],
        }
        path = self.ckpt_dir / f"ckpt-{step:08d}.pt"
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in self._checkpoints()[:-2]:
            old.unlink(missing_ok=True)
        return path

    def _resume(self) -> int:
        for path in reversed(self._checkpoints()):
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a torn checkpoint: fall back to the previous one
                log.warning("%s: unreadable checkpoint (%s); trying the previous one", path, exc)
                continue
            missing = set(self._objects) - set(state["objects"])
            if missing:
                raise RuntimeError(f"{path}: checkpoint lacks {sorted(missing)}; delete {self.work_dir} to restart")
            for name, obj in self._objects.items():
                obj.load_state_dict(state["objects"][name])
            _set_rng_state(state["rng"])
            self.seconds = float(state.get("seconds", 0.0))
            # a checkpoint written before segments were recorded: its steps ran where nobody noted
            self.segments = list(state.get("segments") or [
                {"steps": [0, int(state["step"])], "seconds": round(self.seconds, 2), "torch_threads": None,
                 "device": None}])
            self._last_stats = dict(state.get("stats", {}))
            self._trim_stats(int(state["step"]))
            log.warning("%s/%s: resuming from step %d of %d (%s)", self.fit.method, self.stage,
                        state["step"], self.total_steps, path)
            return int(state["step"])
        return 0

    def _trim_stats(self, step: int) -> None:
        """Drop stats rows a killed run wrote after its last checkpoint (they will be written again)."""
        path = self.work_dir / "stats.jsonl"
        if not path.exists():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= step:
                    keep.append(line)
            except (ValueError, KeyError):
                continue
        path.write_text("".join(x + "\n" for x in keep))

    def _run_seconds(self) -> float:
        """Training seconds of this run of the loop (``seconds`` holds the earlier runs')."""
        return time.perf_counter() - self._t0

    def _segment(self, step: int) -> dict[str, Any]:
        """This run's row of ``segments``, from its first step to ``step``."""
        return {"steps": [self.start_step, int(step)], "seconds": round(self._run_seconds(), 2),
                "torch_threads": torch.get_num_threads(), "device": str(self.device)}

    # -- the loop ----------------------------------------------------------------------------
    def loop(self) -> Iterator[int]:
        """Yield the remaining steps; checkpoint every N, at the end, on SIGTERM and when time is up."""
        self.start_step = self._resume()
        self._t0 = time.perf_counter()
        done = self.start_step
        slice_start = time.perf_counter()
        old_handler = self._install_sigterm()
        self._bar = progress(total=self.total_steps, desc=f"fit {self.fit.method}/{self.stage}", unit="step",
                             enabled=self.fit.show_progress, initial=self.start_step)
        try:
            for step in range(self.start_step, self.total_steps):
                yield step
                done = step + 1
                self._bar.update(1)
                out_of_time = self.minutes is not None and (time.perf_counter() - slice_start) > 60 * self.minutes
                if done % self.checkpoint_every == 0 or done == self.total_steps or self._term or out_of_time:
                    self.save_checkpoint(done)
                if self._term:
                    raise TrainingInterrupted(f"{self.fit.method}/{self.stage}: SIGTERM at step {done}; "
                                              f"checkpoint saved in {self.ckpt_dir}; run again to resume")
                if out_of_time and done < self.total_steps:
                    raise TrainingPaused(f"{self.fit.method}/{self.stage}: time slice of {self.minutes:g} min spent "
                                         f"at step {done}/{self.total_steps}; run again to continue from the "
                                         f"checkpoint in {self.ckpt_dir}")
            if self.start_step >= self.total_steps and self.total_steps > 0 and not self._checkpoints():
                self.save_checkpoint(self.total_steps)
        finally:
            if done > self.start_step:
                self.segments.append(self._segment(done))
            self.seconds += self._run_seconds()
            self._t0 = time.perf_counter()
            self._bar.close()
            if old_handler is not None:
                signal.signal(signal.SIGTERM, old_handler)

    def _install_sigterm(self):
        if threading.current_thread() is not threading.main_thread():
            return None

        def handler(signum, frame):  # noqa: ARG001
            self._term = True

        return signal.signal(signal.SIGTERM, handler)

    # -- stats, divergence, samples --------------------------------------------------------------
    def log(self, step: int, **scalars: float) -> None:
        """Record scalars; a non-finite one stops the fit (``DivergenceError`` naming step and loss)."""
        for name, value in scalars.items():
            value = float(value)
            if not math.isfinite(value):
                raise DivergenceError(f"{self.fit.method}/{self.stage} diverged at step {step}: {name} = {value}")
            self._acc.setdefault(name, []).append(value)
        if (step + 1) % self.log_every == 0 or step + 1 == self.total_steps:
            self._flush(step + 1)

    def _flush(self, step: int) -> None:
        if not self._acc:
            return
        means = {k: float(np.mean(v)) for k, v in self._acc.items()}
        self._acc.clear()
        self._last_stats = means
        elapsed = self.seconds + self._run_seconds()
        row = {"step": step, "seconds": round(elapsed, 3), **{k: round(v, 6) for k, v in means.items()}}
        with open(self.work_dir / "stats.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.3g}" for k, v in list(means.items())[:4]})

    def check_gradients(self, step: int, *modules: torch.nn.Module, max_norm: float | None = None) -> float:
        """Total gradient norm of ``modules``; non-finite or above ``max_norm`` stops the fit."""
        from methods.gan import grad_norm

        norm = grad_norm(*modules)
        limit = self.max_grad_norm if max_norm is None else max_norm
        if not math.isfinite(norm) or norm > limit:
            raise DivergenceError(f"{self.fit.method}/{self.stage} diverged at step {step}: gradient norm "
                                  f"{norm:.4g} (limit {limit:.4g})")
        return norm

    def sample(self, step: int, fn: Callable[[], torch.Tensor | list[torch.Tensor]]) -> Path | None:
        """Save ``fakes<step>.png`` every ``sample_every`` steps and at the last step."""
        done = step + 1
        due = done == self.total_steps or (self.sample_every > 0 and done % self.sample_every == 0)
        if not due:
            return None
        from torchvision.utils import save_image

        with torch.no_grad():
            rows = fn()
        if isinstance(rows, torch.Tensor):
            rows = [rows]
        rows = [r.detach().float().cpu().clamp(-1, 1) for r in rows]
        ncol = rows[0].shape[0]
        path = self.work_dir / f"fakes{done:06d}.png"
        save_image((torch.cat(rows) + 1) / 2, path, nrow=ncol, padding=1)
        self._last_sample = path
        return path

    @property
    def final_stats(self) -> dict[str, float]:
        return dict(self._last_stats)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % 2**63)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# -- the fit of one (editor, attribute, seed) ----------------------------------------------------

@dataclass
class StageRecord:
    """One stage resolution, as written to the run's ``fits.jsonl``."""

    method: str
    stage: str
    key: str
    attribute: str | None
    source: str  # cache | reference | trained
    path: str
    steps: int | None = None
    seconds: float | None = None
    device: str | None = None
    final_losses: dict[str, float] = field(default_factory=dict)
    source_hash: str | None = None
    source_matches: bool | None = None
    wait_seconds: float = 0.0
    seed: int | None = None


class FitContext:
    """Handed to ``Editor.prepare``: the data, the device and the cached stages of one fit."""

    def __init__(self, *, editor: Any, dataset: FaceDataset, attribute: str, seed: int,
                 device: torch.device | str, fits: dict[str, Any] | None = None,
                 budget: Any = None, budget_minutes: float | None = None, show_progress: bool = True,
                 on_stage: Callable[[StageRecord], None] | None = None, cache: Path | None = None,
                 allow_training: bool = True):
        self.editor = editor
        # False: stages resolve from the cache or the shipped reference fits only; a miss is a
        # FitMissingError (``stage`` still waits on the entry lock, so a fit another process is
        # training is reused)
        self.allow_training = bool(allow_training)
        self.method = editor.name or type(editor).__name__
        self.dataset = dataset
        self.attribute = attribute
        self.attr_index = dataset.attribute_index(attribute)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.fits = dict(fits or {})
        self.use_reference = bool(self.fits.get("reference", True))
        self.keep_state = bool(self.fits.get("keep_state", False))
        self.budget = budget
        self.budget_minutes = budget_minutes if budget_minutes is not None else getattr(budget, "minutes", None)
        self.show_progress = show_progress
        self.on_stage = on_stage
        self.cache = cache
        self.records: list[StageRecord] = []
        self._train_data: dict[int | None, TrainData] = {}

    # -- data ------------------------------------------------------------------------------------
    @property
    def train_split(self) -> FaceSplit:
        return self.dataset.split("train")

    def check_trainable(self) -> None:
        """Both values of the attribute must occur in the training split (a binary editor needs both)."""
        col = self.train_split.labels_matrix()[:, self.attr_index]
        n1 = int(col.sum())
        if n1 == 0 or n1 == col.numel():
            raise DataError(f"{self.method}: attribute {self.attribute!r} has only one class in the training "
                            f"split of {self.dataset.name!r} ({n1} of {col.numel()} positive); cannot train an editor")

    def train_data(self, resolution: int | None = None) -> TrainData:
        """The training split in memory as uint8 at ``resolution`` (default: the dataset's)."""
        if resolution is None or resolution == self.dataset.resolution:
            resolution = None
        if resolution not in self._train_data:
            self.check_trainable()
            imgs, labels = _split_arrays(self.train_split, resolution)
            self._train_data[resolution] = TrainData(imgs, labels, self.attr_index)
        return self._train_data[resolution]

    def sample_faces(self, n: int = 8, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` fixed faces of different identities, half with the attribute and half without.

        Used for the sample grids a training writes (StyleGAN3's ``fakes*.png``); never trained on.
        """
        sp = self.dataset.split(split if split in self.dataset.split_names else "train")
        col = sp.labels_matrix()[:, self.attr_index]
        ids = getattr(sp, "identities", None)
        ids = ids() if callable(ids) else ids
        ids = torch.arange(len(col)) if ids is None else torch.as_tensor(ids).clone()
        ids = torch.where(ids < 0, -1 - torch.arange(len(col)), ids)  # unknown identity: each image its own
        chosen: list[int] = []
        seen: set[int] = set()
        for want, quota in ((1.0, (n + 1) // 2), (0.0, n)):
            for i in (col == want).nonzero().flatten().tolist():
                if len(chosen) >= quota:
                    break
                if int(ids[i]) not in seen:
                    chosen.append(i)
                    seen.add(int(ids[i]))
        items = [sp[i] for i in chosen]
        return torch.stack([it["image"] for it in items]), torch.stack([it["labels"] for it in items])

    # -- stages ----------------------------------------------------------------------------------
    def stage_key(self, name: str, *, per_attribute: bool, version: int = 1,
                  extra: dict[str, Any] | None = None) -> str:
        opts = self.editor.opts.hashed() if getattr(self.editor, "opts", None) is not None else self.editor.options
        payload = {
            "method": self.method, "editor_version": getattr(self.editor, "version", 1),
            "stage": name, "stage_version": version, "options": opts,
            "dataset": dataset_identity(self.dataset), "seed": self.seed,
            "attribute": self.attribute if per_attribute else None, "extra": extra or {},
        }
        return content_key(payload)

    def cache_dir(self, name: str, key: str) -> Path:
        return (self.cache or cache_root()) / "editors" / self.method / f"{name}-{key}"

    def reference_dir(self, name: str, key: str) -> Path:
        return editor_package_dir(type(self.editor)) / REFERENCE_DIRNAME / f"{name}-{key}"

    def stage(self, name: str, train: Callable[[TrainContext], None], *, per_attribute: bool, steps: int,
              version: int = 1, extra: dict[str, Any] | None = None) -> Path:
        """The finished directory of stage ``name``: cached, shipped, or trained now (see module doc)."""
        key = self.stage_key(name, per_attribute=per_attribute, version=version, extra=extra)
        final = self.cache_dir(name, key)
        attr = self.attribute if per_attribute else None
        found = self._lookup(name, key, final, attr)
        if found is not None:
            return found
        t_wait = time.perf_counter()
        with cachelib.entry_lock(final):
            waited = time.perf_counter() - t_wait
            found = self._lookup(name, key, final, attr, waited)  # another process may have finished it
            if found is not None:
                return found
            if not self.allow_training:
                what = f"{self.method}/{name}" + (f" for {attr}" if attr else " (shared by all attributes)")
                raise FitMissingError(
                    f"{what}, seed {self.seed}: stage {name}-{key} is neither in the cache ({final}) nor among the "
                    "shipped reference fits, and this job may not train (--no-train); prepare it first with the "
                    "fit job, e.g. faceedit-bench --resume RUN_DIR --fit-only")
            return self._train(name, key, final, attr, train, steps, per_attribute, version, extra)

    def _lookup(self, name: str, key: str, final: Path, attr: str | None, waited: float = 0.0) -> Path | None:
        """The shipped reference fit of ``key`` if there is one (and ``fits.reference`` is on), else the
        cache entry. The shipped fit wins even over a local entry of the same key, such as the fp32
        entry its training left on the machine that exported it (the shipped copy is fp16): every
        machine then scores with the same files (measured: the fp32 entries moved SaGAN's and one
        L2M-GAN fit's metrics by up to 1.4 % relative against the shipped fp16 ones)."""
        if self.use_reference:
            ref = self.reference_dir(name, key)
            if ref.is_dir():
                cachelib.verify_entry(ref, f"the shipped reference fit {ref} is corrupt: restore it with "
                                           f"`git checkout -- {ref}` or run with --retrain")
                if final.exists() and str(final) not in _WARNED_SHADOWED:
                    _WARNED_SHADOWED.add(str(final))
                    log.info("%s/%s: the shipped reference fit %s is used; the cache entry of the same key (%s) "
                             "is not (fits.reference=false uses it)", self.method, name, ref, final)
                return self._record(name, key, ref, attr, "reference", waited)
        remedy = f"delete {final} to retrain this stage"
        if final.exists():
            try:
                cachelib.verify_entry(final, remedy)
                return self._record(name, key, final, attr, "cache", waited)
            except cachelib.CacheCorruptError as exc:
                log.warning("%s; it will be rebuilt", exc)
        return None

    def _record(self, name: str, key: str, path: Path, attr: str | None, source: str, waited: float) -> Path:
        prov = {}
        if (path / PROVENANCE).is_file():
            prov = cachelib.read_json_file(path / PROVENANCE, f"delete {path} to retrain")
        current = source_hash(type(self.editor))
        made_by = prov.get("source_hash")
        matches = None if made_by is None else made_by == current
        if matches is False and str(path) not in _WARNED_SOURCE:
            _WARNED_SOURCE.add(str(path))
            log.warning("%s/%s: the fit in %s was made by different source of the editor (%s, now %s); "
                        "its results may not match the current code: retrain with --retrain%s",
                        self.method, name, path, made_by, current,
                        "" if source == "reference" else f" or delete {path}")
        rec = StageRecord(self.method, name, key, attr, source, str(path), prov.get("steps"), prov.get("seconds"),
                          prov.get("device"), prov.get("final_losses", {}), made_by, matches, round(waited, 3), self.seed)
        self._emit(rec)
        return path

    def _emit(self, rec: StageRecord) -> None:
        self.records.append(rec)
        if self.on_stage is not None:
            self.on_stage(rec)

    def _train(self, name: str, key: str, final: Path, attr: str | None, train: Callable[[TrainContext], None],
               steps: int, per_attribute: bool, version: int, extra: dict[str, Any] | None) -> Path:
        work = final.with_name(final.name + ".work")
        tc = TrainContext(self, name, key, work, steps)
        # every stage starts from RNG seeded by (seed, key): the same weights whether or not other
        # stages were trained, loaded or skipped before it in this process (a checkpoint overrides it)
        _seed_all(int(key, 16) ^ self.seed)
        train(tc)
        if not any(tc.out_dir.iterdir()):
            raise RuntimeError(f"{self.method}/{name}: training wrote nothing into {tc.out_dir}")
        prov = {
            "method": self.method, "stage": name, "key": key, "attribute": attr, "per_attribute": per_attribute,
            "editor_version": getattr(self.editor, "version", 1), "stage_version": version,
            "options": self.editor.opts.hashed() if getattr(self.editor, "opts", None) is not None else self.editor.options,
            "preset": getattr(getattr(self.editor, "opts", None), "preset", None),
            "dataset": dataset_identity(self.dataset), "seed": self.seed, "extra": extra or {},
            "steps": tc.total_steps, "seconds": round(tc.seconds, 2), "device": str(self.device),
            "device_name": torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(), "segments": tc.segments, "final_losses": tc.final_stats,
            "source_hash": source_hash(type(self.editor)), "commit": _git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        with cachelib.atomic_directory(final) as tmp:
            for item in tc.out_dir.iterdir():
                shutil.copy2(item, tmp / item.name) if item.is_file() else shutil.copytree(item, tmp / item.name)
            for extra_file in ("stats.jsonl",):
                if (work / extra_file).exists():
                    shutil.copy2(work / extra_file, tmp / extra_file)
            if tc._last_sample is not None and tc._last_sample.exists():
                shutil.copy2(tc._last_sample, tmp / "samples.png")
            fakes = sorted(work.glob("fakes*.png"))
            if fakes:  # the periodic grids show how the fit got there: keep them (small PNGs)
                (tmp / "fakes").mkdir()
                for f in fakes:
                    shutil.copy2(f, tmp / "fakes" / f.name)
            (tmp / PROVENANCE).write_text(json.dumps(prov, indent=1, sort_keys=True, default=str) + "\n")
        if self.keep_state:
            self._keep_state(tc, final)
        shutil.rmtree(work, ignore_errors=True)
        rec = StageRecord(self.method, name, key, attr, "trained", str(final), tc.total_steps, round(tc.seconds, 2),
                          str(self.device), tc.final_stats, prov["source_hash"], True, seed=self.seed)
        self._emit(rec)
        return final

    @staticmethod
    def _keep_state(tc: TrainContext, final: Path) -> None:
        """``fits.keep_state``: move the stage's last checkpoint to ``<entry>.state.pt``.

        Why: a finished fit keeps only what editing needs (SaGAN's G, not its critic D), and reading
        the critic (scripts/sagan_critic_probe.py) or continuing the schedule needs the rest.  Outside
        the entry, so the entry's manifest and the shipped fits are the same with or without it.
        """
        ckpts = tc._checkpoints()
        if ckpts:
            os.replace(ckpts[-1], final.with_name(final.name + ".state.pt"))

    @property
    def fit_key(self) -> str:
        """The keys of the stages this fit used, joined by ``+`` (every result row carries it)."""
        return "+".join(f"{r.stage}-{r.key}" for r in self.records)
