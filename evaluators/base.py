"""The evaluator contract (DESIGN §3): streaming reset / update / finalize.

One evaluator instance accumulates one *direction* of one cell: the runner
builds it with an ``EvalContext`` (dataset, attribute, direction, device),
feeds it batches of (source, edited) pairs through ``update`` and reads the
metric values from ``finalize``.  State must be O(1) in the number of images
(running sums, fixed-size feature moments), never a list of all images.

Heavy scoring networks (Inception, AlexNet, FaceNet, our classifiers) are
built once per process through ``shared_model`` and shared by all instances.

Metric names carry their protocol (``fid_clean_inception``, ``lpips_alex_v01``,
``id_cos_facenet_vggface2``, ``attr_success_<classifier>``): a different
protocol is a different name, never a flag.
"""
from __future__ import annotations

import inspect
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from benchmark.data.base import FaceDataset

# What an evaluator may ask the runner to put into ``update``'s extras: the dataset's region
# ``mask``, ``counterfactual``, ``identity`` and ``index``; what the editor put into
# ``EditContext.extras``: ``attention`` (B×1×H×W in [0, 1], SaGAN) and ``inversion`` (B×3×H×W,
# the reconstruction before the edit, InterFaceGAN); and ``judge_memo``, a
# ``evaluators.judging.JudgeMemo`` through which evaluators share judge outputs (optional: an
# evaluator must score the same without it).  Extras an editor does not give are left out.
EXTRAS = ("mask", "counterfactual", "identity", "index", "attention", "inversion", "judge_memo")


@dataclass
class EvalContext:
    """Fixed facts of one (cell, direction): the evaluator's constructor argument."""

    dataset: FaceDataset
    attribute: str
    direction: int  # the target value t of this direction: 0 (remove) or 1 (add)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def attr_index(self) -> int:
        return self.dataset.attribute_index(self.attribute)


class MetricUnavailable(RuntimeError):
    """The metric cannot be computed for this dataset (no masks, no counterfactuals, ...)."""


class Evaluator(ABC):
    """Base class.  ``requires`` names the extras ``update`` needs (subset of ``EXTRAS``)."""

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    # Metric names (with protocol) this evaluator reports; used by --list and reports.
    metrics: ClassVar[tuple[str, ...]] = ()
    # Which way is better, per metric name or name prefix (longest match wins): True = higher,
    # None = declared without a better direction (a reference value, a standard error, a flag).
    # Reports draw their arrows from it (``metric_direction``); a metric not covered gets none.
    higher_is_better: ClassVar[dict[str, bool | None]] = {}
    # The keys ``evaluator_options.<name>`` may hold, checked before any model loads; None: not
    # declared (then ``option_names`` reads explicit keyword parameters of ``__init__``, if any).
    option_keys: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, ctx: EvalContext, **options: Any):
        self.ctx = ctx
        self.options = {**ctx.options, **options}
        self.reset()

    @classmethod
    def option_names(cls) -> tuple[str, ...] | None:
        """The option keys this evaluator accepts, or None when it cannot say (``**options`` undeclared).

        Lets the CLI reject a misspelt ``evaluator_options`` key before anything
        is built, instead of the evaluator ignoring it and running its default.
        """
        if cls.option_keys is not None:
            return tuple(cls.option_keys)
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, ctx
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return tuple(p.name for p in params
                     if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))

    @classmethod
    def supports(cls, dataset: FaceDataset) -> str | None:
        """None if the metric applies to ``dataset``, else the reason it does not (e.g. no masks).

        The default reads ``requires``: an evaluator that needs the ``mask`` extra does not apply to
        a dataset without region masks.  Override for other conditions (and call this one).
        """
        if "mask" in cls.requires and not dataset.has_masks:
            return f"dataset {dataset.name!r} has no region masks"
        return None

    @abstractmethod
    def reset(self) -> None:
        """Clear accumulated state."""

    @abstractmethod
    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        """Accumulate one batch: images B×3×H×W in [-1, 1], labels B×A (0/1), target (B,) 0/1."""

    @abstractmethod
    def finalize(self) -> dict[str, float]:
        """{metric_name: value} over everything seen since ``reset``."""


def _declaration(metric_name: str) -> tuple[bool, bool | None]:
    """(declared by a registered evaluator, its ``higher_is_better`` entry): exact names win over prefixes,
    longer prefixes over shorter ones."""
    from benchmark.registry import EVALUATORS  # lazy: the registry imports evaluator modules

    best: tuple[int, bool | None] | None = None
    for name in EVALUATORS.names():
        for key, higher in getattr(EVALUATORS.get(name), "higher_is_better", {}).items():
            if metric_name == key:
                rank = 1 << 30
            elif metric_name.startswith(key):
                rank = len(key)
            else:
                continue
            if best is None or rank > best[0]:
                best = (rank, None if higher is None else bool(higher))
    return (False, None) if best is None else (True, best[1])


def metric_direction(metric_name: str) -> str | None:
    """``"higher"`` or ``"lower"`` is better for ``metric_name``, from the registered evaluators' declarations.

    Exact names win over prefixes, longer prefixes over shorter ones; None when
    no registered evaluator declares the metric, or one declares it without a
    direction (the report then draws no arrow).
    """
    higher = _declaration(metric_name)[1]
    return None if higher is None else ("higher" if higher else "lower")


def metric_is_declared(metric_name: str) -> bool:
    """Whether a registered evaluator's ``higher_is_better`` covers ``metric_name`` (a None entry counts)."""
    return _declaration(metric_name)[0]


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float images -> uint8 on the CPU, rounded: the quantisation of a saved PNG.

    Scoring networks see what a file on disk would hold, so results do not
    depend on whether an editor's output went through an image file.
    """
    return ((images.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)


def resize_square(images: torch.Tensor, size: int) -> torch.Tensor:
    """B×C×H×W -> B×C×size×size, bilinear with antialiasing (a no-op at the right size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class RunningMean:
    """Streaming mean of per-image values (sum and count only)."""

    def __init__(self) -> None:
        self.total = 0.0
        self.count = 0

    def add(self, values: torch.Tensor) -> None:
        values = values.detach().double().flatten()
        self.total += float(values.sum())
        self.count += values.numel()

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else float("nan")


_MODELS: dict[tuple, Any] = {}
_MISSING: dict[tuple, Exception] = {}  # (key, where assets are looked for) -> the MissingAssetError it raised
_MODELS_LOCK = threading.Lock()


def _asset_places() -> tuple[str | None, str | None, str]:
    """Where a factory looks for its weights: a remembered "missing" holds only while these stay put."""
    import os

    return os.environ.get("FACEEDIT_CACHE"), os.environ.get("FACEEDIT_OFFLINE"), str(torch.hub.get_dir())


def shared_model(key: tuple, factory: Callable[[], Any]) -> Any:
    """Build a scoring network once per process and key (include the device in the key).

    A factory that fails because its weights are missing (``MissingAssetError``) is not called again
    for the key while the asset places (cache, offline switch, torch hub dir) stay the same: the same
    error is raised at once. This is the one memory of missing assets: an offline grid asks for the
    LPIPS or Inception weights in every cell, and each try built a network first (~1.3 s for LPIPS)."""
    from benchmark.assets import MissingAssetError

    with _MODELS_LOCK:
        if key in _MODELS:
            return _MODELS[key]
        missing_key = (key, _asset_places())
        if missing_key in _MISSING:
            raise _MISSING[missing_key].with_traceback(None)
        try:
            _MODELS[key] = factory()
        except MissingAssetError as exc:
            _MISSING[missing_key] = exc
            raise
        return _MODELS[key]


def clear_shared_models() -> None:
    with _MODELS_LOCK:
        _MODELS.clear()
        _MISSING.clear()
