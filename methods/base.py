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

import hashlib
import json
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
    """Base class of all editors.  Subclasses set ``name`` (via the registry) and ``meta``."""

    name: ClassVar[str] = ""
    meta: ClassVar[EditorMeta]

    def __init__(self, **options: Any):
        self.options = dict(options)
        self.device = torch.device("cpu")
        self.attribute: str | None = None

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

    def cache_key(self, dataset_fingerprint: dict, attribute: str, budget: Budget, seed: int) -> str:
        """Content hash of everything that determines ``fit``'s result: fits are cached under it."""
        payload = {
            "method": self.name, "version": getattr(self, "version", 1), "options": self.options,
            "dataset": dataset_fingerprint, "attribute": attribute, "budget": asdict(budget), "seed": seed,
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    # -- editing --------------------------------------------------------------
    @abstractmethod
    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        """Return ``images`` edited so that ``attribute`` takes the value ``target`` (B, 0/1) per image."""

    @property
    def trainable(self) -> bool:
        return self.meta.trainable
