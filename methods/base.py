"""The editor contract (DESIGN §3): a small ABC plus a metadata dataclass.

Every editor - L2M-GAN, InterFaceGAN, SaGAN, the baselines and third-party
plugins - is driven by the grid runner through exactly this surface:

    editor = METHODS.create(name, **options)
    editor.fit(train_split, attribute, budget, device, seed)   # or editor.load(dir)
    edited = editor.edit(images, attribute, target, strength)

Images are float tensors in [-1, 1], B×3×H×W at the dataset's resolution;
an editor whose native resolution differs resizes inside ``edit``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from benchmark.assets import Asset
from benchmark.data.base import FaceSplit


@dataclass(frozen=True)
class EditorMeta:
    """What a researcher needs to know to cite and compare an editor."""

    paper: str
    venue: str = ""
    url: str = ""
    native_resolution: int | None = None
    value_range: tuple[float, float] = (-1.0, 1.0)
    strength: str = "edit magnitude; 1.0 is the method's default"
    trainable: bool = True
    assets: tuple[Asset, ...] = ()
    notes: str = ""
    # what the dataset must provide for the editor to run at all, checked before any model loads:
    # "counterfactuals" (the SynthFaces oracle), "masks", "identities"
    requires: tuple[str, ...] = ()
    uses_strength: bool = True  # False: ``strength`` is ignored, the grid runs one strength (1.0)


@dataclass(frozen=True)
class Budget:
    """How much training an editor may do; editors map it to their own schedule."""

    steps: int | None = None
    minutes: float | None = None
    batch_size: int | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> "Budget":
        return cls(**(cfg or {}))


@dataclass
class EditContext:
    """Optional per-batch facts the runner can pass to ``edit``.

    Ordinary editors ignore it.  The SynthFaces ``oracle`` uses it to render the
    ground truth; it is never needed to follow the protocol.
    """

    split: FaceSplit | None = None
    index: torch.Tensor | None = None
    extras: dict[str, Any] = field(default_factory=dict)


class EditorError(RuntimeError):
    """An editor cannot do what was asked (unsupported attribute, diverged training, ...)."""


class Editor(ABC):
    """Base class of all editors.  Subclasses set ``name`` (via the registry) and ``meta``.

    A GAN editor also declares ``Options`` (a ``methods.training.EditorOptions`` dataclass),
    ``presets`` and ``version``, and overrides ``prepare`` to train through cached stages
    (docs/training.md). A plain editor only overrides ``fit``/``save``/``load``; its fit then runs
    as one per-attribute stage named ``fit``.
    """

    name: ClassVar[str] = ""
    meta: ClassVar[EditorMeta]
    Options: ClassVar[type | None] = None  # an EditorOptions subclass, or None: free-form options
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    default_preset: ClassVar[str] = "cpu"
    version: ClassVar[int] = 1  # bump when a code change alters what a fit produces
    # stages keyed without the attribute: a grid shards such an editor by (method, seed) so that
    # every attribute of one seed runs in one job and the stage trains once
    shared_stages: ClassVar[tuple[str, ...]] = ()

    def __init__(self, **options: Any):
        self.options = dict(options)
        self.opts = self.resolve_options(options)
        self.device = torch.device("cpu")
        self.attribute: str | None = None

    @classmethod
    def resolve_options(cls, options: dict[str, Any], budget: dict[str, Any] | None = None) -> Any:
        """The validated options object (None for editors without an ``Options`` schema)."""
        if cls.Options is None:
            return None
        from methods.training import resolve_options

        return resolve_options(cls.Options, cls.presets, cls.default_preset, options, budget)

    def apply_budget(self, budget: dict[str, Any]) -> None:
        """Re-resolve the options with the config's global ``budget:`` (below ``method_options``)."""
        if self.Options is not None and budget:
            self.opts = self.resolve_options(self.options, budget)

    @classmethod
    def describe_options(cls) -> list[str]:
        """Lines for ``faceedit-bench --list``: options, defaults, presets."""
        if cls.Options is None:
            return []
        from methods.training import describe_options

        return describe_options(cls.Options, cls.presets)

    def prepare(self, fit: Any) -> None:
        """Make the editor ready to edit (``fit`` is a ``methods.training.FitContext``).

        The default runs the legacy ``fit``/``save``/``load`` as one per-attribute stage, so a plugin
        written against the plain contract is cached, locked and recorded like every other editor.
        """
        self.attribute = fit.attribute
        if not self.trainable:
            self.fit(fit.train_split, fit.attribute, fit.budget, fit.device, fit.seed)
            return

        def train(tc: Any) -> None:
            self.fit(fit.train_split, fit.attribute, fit.budget, tc.device, fit.seed)
            self.save(tc.out_dir)

        path = fit.stage("fit", train, per_attribute=True, steps=0,
                         extra={"budget": {k: v for k, v in asdict(fit.budget).items() if k != "minutes"}})
        self.load(path, fit.device)
        self.device = torch.device(fit.device)
        self.attribute = fit.attribute

    # -- training -------------------------------------------------------------
    def fit(self, train_split: FaceSplit, attribute: str, budget: Budget, device: torch.device | str,
            seed: int) -> None:
        """Train or build the editor for ``attribute``; the default does nothing (no-op editors)."""
        self.device = torch.device(device)
        self.attribute = attribute

    def save(self, directory: str | Path) -> None:
        """Write what ``load`` needs (weights as safetensors or ``torch.save`` of tensors only)."""
        Path(directory).mkdir(parents=True, exist_ok=True)

    def load(self, directory: str | Path, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    # -- editing --------------------------------------------------------------
    @abstractmethod
    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        """Return ``images`` edited so that ``attribute`` takes the value ``target`` (B, 0/1) per image."""

    @property
    def trainable(self) -> bool:
        return self.meta.trainable
