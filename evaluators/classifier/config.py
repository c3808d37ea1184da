"""Training configuration of the attribute classifier.

Every field that can change the trained weights is part of the classifier's
cache key (``evaluators.classifier.cache``); fields listed in ``RUNTIME_FIELDS``
only change how fast training runs and are left out of the key.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from benchmark.cache import without_later_defaults
from benchmark.data.base import CELEBA_ATTRIBUTE_NAMES, FaceDataset

# Bump when a code change alters what training produces for the same config
# (architecture surgery, augmentation, schedule): old checkpoints then miss the cache.
# 2: default stem /4 from 64 px (was /2) and 15 epochs (was 6); a None stem resolves differently.
CODE_VERSION = 2
# Version of the judge-render training path (train_data "judge"/"auto"): hashed only when that path is
# chosen, so the default ("train") keeps its cache keys.  1: balanced renders + edit artefacts.
JUDGE_CODE_VERSION = 1
JUDGE_FIELDS = ("train_data", "judge_ids", "judge_images_per_id", "judge_val_ids", "partial_fraction",
                "pair_fraction", "blend_prob", "degrade_prob", "recolour_fraction")

# "slim10" (the default): a ResNet-10 (one BasicBlock per stage) at widths w-2w-4w-8w (w = 16), built from torchvision's
# BasicBlock (model.SlimResNet); ~8x fewer multiply-adds than resnet18 at the same resolution.
ARCHS = ("slim10", "resnet18", "resnet34", "resnet50")
TRAIN_DATA = ("auto", "train", "judge")
OPTIMIZERS = ("adam", "sgd")
EVAL_SPLITS = ("auto", "val", "test")

# Do not affect the result (or only through floating-point noise), so not hashed.
RUNTIME_FIELDS = frozenset({"num_workers", "eval_batch_size", "log_every", "eval_every_epoch"})
# slim10's resolution of ``width`` / ``stem_downsample`` None, hashed with every slim10 config so that a
# checkpoint trained under an older rule never answers for a newer one.  2: width 16 (was 32) and stem
# clamp(resolution // 32, 1, 4) (was resolution // 16).
SLIM_CODE_VERSION = 2
# Default epochs per training source (``epochs: None``).  Judge renders: 25 (8,000 images, 3,125 steps of 64):
# measured with slim10, 15 epochs gave 0.9926 held-out / 0.9896 judge_val and 25 gave 0.9962 / 0.9941,
# with the oracle's Mustache 0.976 -> 0.993 and SaGAN's tinted not-quite-glasses accepted 0.25 -> 0.16
# (docs/classifier.md).  A train split: 15, the earlier default (CelebA-HQ's 24,183 images make 5,670 steps).
JUDGE_EPOCHS = 25
TRAIN_EPOCHS = 15
# Fields added after checkpoints were cached, with the value that was implicit before: hashed only
# when they differ from it, so existing cache keys and tags stay valid.
LATER_FIELDS = {"width": None, "train_degrade_prob": 0.0, "recolour_fraction": 0.0}


class ClassifierConfigError(ValueError):
    """A bad classifier option (unknown field, unknown arch, out-of-range value)."""


@dataclass(frozen=True)
class ClassifierConfig:
    """How the attribute classifier is built and trained (from scratch unless ``pretrained``).

    Default (issue 15, measured in docs/classifier.md): ``slim10`` (a ResNet-10, one BasicBlock per
    stage) at widths 16-32-64-128 with a /2 stem at 64 px.  It matches the former ResNet-18 default
    (/4 stem) in held-out accuracy (0.9922 vs 0.9924 on the SynthFaces test split, judge_val 0.9888
    vs 0.9893) and trains 6.4x faster (268 s against 1,727 s on one busy CPU thread): the judge reads
    ten binary attributes of renders, and what it needs is spatial resolution for thin features
    (Mustache is a 1-2 px band at 64 px), not 512-wide stages.

    ``stem_downsample`` is the total stride before ResNet's ``layer1``: 4 keeps
    torchvision's ImageNet stem (7×7 conv stride 2 + 3×3 max-pool), 2 replaces it
    by a 3×3 stride-2 conv without max-pool, 1 by a 3×3 stride-1 conv without
    max-pool (the CIFAR adaptation of He et al. 2016, §4.2).  ``None`` picks, for the torchvision
    ResNets, ``clamp(resolution // 16, 1, 4)`` (/2 at 32 px, the ImageNet stem from 64 px up: on two
    CPU cores a ResNet-18 with /2 at 64 px trains at ~50 img/s against ~280 img/s with /4), and for
    ``slim10`` ``clamp(resolution // 32, 1, 4)`` (``layer1`` sees 32×32 at 64 px: with width 16 that
    costs no more than /4 at width 32, 582 against 518 img/s on one thread, and reads Mustache at
    0.965 against 0.921).
    """

    arch: str = "slim10"
    width: int | None = None  # slim10 only: the first stage's width, doubled per stage (None: 16)
    pretrained: bool = False
    stem_downsample: int | None = None
    # None: JUDGE_EPOCHS on SynthFaces' judge renders, TRAIN_EPOCHS on a dataset's train split (``resolved``)
    epochs: int | None = None
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    hflip: bool | None = None  # None: on when every attribute is mirror-invariant (CelebA names)
    crop_pad: int | None = None  # random translation of up to this many px; None: resolution // 16
    max_train_items: int | None = None  # first N training items (None: all)
    max_eval_items: int | None = None
    eval_split: str = "auto"  # auto: val if the dataset has one, else test
    seed: int = 0
    num_workers: int = 0
    eval_batch_size: int = 256
    log_every: int = 50
    eval_every_epoch: bool = False  # log held-out accuracy after each epoch (learning curves; costs one eval pass)
    # What the judge learns from.  "judge": SynthFaces' balanced judge renders with edit artefacts
    # (evaluators/judge_data.py), identities disjoint from the editors'; "train": the dataset's train
    # split (CelebA-HQ, folders); "auto": judge where the dataset can render it, else train.
    # Default "auto" (issue 15, DESIGN §4): on SynthFaces the judge learns from the balanced judge
    # renders (measured: the oracle's attr_success 0.93-1.0 per direction against 0.68 for Male 1->0
    # with the train split; docs/classifier.md); CelebA-HQ and folders keep their train split.
    train_data: str = "auto"
    judge_ids: int | None = None      # None: 1.6 x the dataset's train identities (1,600 by default)
    judge_images_per_id: int = 5
    judge_val_ids: int | None = None  # None: 0.2 x the train identities (200)
    partial_fraction: float = 0.25  # share of judge renders with one attribute at an intermediate value
    pair_fraction: float = 0.15     # share that also gets its one-attribute-flipped counterfactual
    blend_prob: float = 0.7         # chance a paired image is blended with its counterfactual in a batch
    degrade_prob: float = 0.25      # chance of each of blur / noise / colour cast per training image
    # Share of judge renders with one carried attribute among render.RECOLOUR_ATTRIBUTES (frame, fringe,
    # moustache, beard) drawn in a random off-palette colour, labelled present (judge_data.py).  Default 0.2
    # since 2026-12-03 (judge tag ``judge2``): the judge with 0 read gold glasses frames as no glasses
    # (docs/metrics.md, "A measured blind spot"), and SaGAN earned removals by recolouring.
    recolour_fraction: float = 0.2
    # The same label-preserving artefacts (judge_data.degrade) on the train-split path, where no
    # judge renders exist. 0 (off, and then not hashed: old keys stay valid) for every judge; InterFaceGAN's
    # labeller turns it on, because it scores blurred GAN samples, not clean training images.
    train_degrade_prob: float = 0.0

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ClassifierConfigError(f"unknown classifier arch {self.arch!r}; valid: {', '.join(ARCHS)}")
        if self.optimizer not in OPTIMIZERS:
            raise ClassifierConfigError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.train_data not in TRAIN_DATA:
            raise ClassifierConfigError(f"unknown train_data {self.train_data!r}; valid: {', '.join(TRAIN_DATA)}")
        if self.eval_split not in EVAL_SPLITS:
            raise ClassifierConfigError(f"unknown eval_split {self.eval_split!r}; valid: {', '.join(EVAL_SPLITS)}")
        if self.stem_downsample not in (None, 1, 2, 4):
            raise ClassifierConfigError(f"stem_downsample must be 1, 2, 4 or null, not {self.stem_downsample!r}")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ClassifierConfigError(f"classifier {name} must be >= 1, not {getattr(self, name)}")
        if self.pretrained and self.arch == "slim10":
            raise ClassifierConfigError("arch slim10 has no ImageNet weights: use pretrained: false, or a resnet "
                                        "arch (e.g. arch: resnet18) with pretrained: true")
        if self.width is not None and (self.arch != "slim10" or self.width < 1):
            raise ClassifierConfigError(f"classifier width is a slim10 option (>= 1), not {self.width!r} "
                                        f"for arch {self.arch!r}")
        if self.lr <= 0:
            raise ClassifierConfigError(f"classifier lr must be > 0, not {self.lr}")
        if not 0.0 <= self.recolour_fraction <= 1.0:
            raise ClassifierConfigError(f"classifier recolour_fraction must be in [0, 1], not {self.recolour_fraction}")
        if not 0.0 <= self.train_degrade_prob <= 1.0:
            raise ClassifierConfigError(f"classifier train_degrade_prob must be in [0, 1], not {self.train_degrade_prob}")

    @classmethod
    def from_dict(cls, cfg: dict[str, Any] | "ClassifierConfig" | None) -> "ClassifierConfig":
        """Build from a YAML/CLI dict, naming any unknown key instead of a TypeError."""
        if isinstance(cfg, ClassifierConfig):
            return cfg
        cfg = dict(cfg or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise ClassifierConfigError(
                f"unknown classifier option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
            )
        return cls(**cfg)

    @classmethod
    def from_stored(cls, stored: dict[str, Any]) -> "ClassifierConfig":
        """The config a checkpoint recorded (``classifier.json``).  A field it lacks came later, and the
        checkpoint was trained with the value implicit before (``LATER_FIELDS``), not with today's default:
        the colour-blind judge of 2026-12-01 has no ``recolour_fraction`` and must not report under the
        tag of the judge trained with recolours."""
        return cls.from_dict({**LATER_FIELDS, **dict(stored)})

    def with_overrides(self, **changes: Any) -> "ClassifierConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resolved(self, dataset: FaceDataset) -> "ClassifierConfig":
        """The config with ``train_data: auto`` made concrete for ``dataset`` (judge where it can render
        judge data, else train), and ``epochs`` / ``judge_ids`` / ``judge_val_ids`` None filled in, so a
        default and the value it stands for share one cache key and tag."""
        from evaluators.judge_data import default_judge_ids, supports_judge_data

        out = self
        if out.train_data == "auto":
            out = replace(out, train_data="judge" if supports_judge_data(dataset) else "train")
        if out.epochs is None:
            out = replace(out, epochs=JUDGE_EPOCHS if out.train_data == "judge" else TRAIN_EPOCHS)
        if out.train_data == "judge" and out.judge_ids is None:
            out = replace(out, judge_ids=default_judge_ids(dataset, "judge"))
        if out.train_data == "judge" and out.judge_val_ids is None:
            out = replace(out, judge_val_ids=default_judge_ids(dataset, "judge_val"))
        return out

    def hashed_dict(self) -> dict[str, Any]:
        """The fields that determine the trained weights (call on a ``resolved`` config)."""
        out = without_later_defaults({k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS},
                                     LATER_FIELDS)
        if self.arch == "slim10":
            out["slim_code_version"] = SLIM_CODE_VERSION
        if self.train_data == "train":  # the judge fields change nothing then; old cache keys stay valid
            return {k: v for k, v in out.items() if k not in JUDGE_FIELDS}
        return {**out, "judge_code_version": JUDGE_CODE_VERSION}

    # -- values resolved against a dataset ------------------------------------
    def resolved_stem(self, resolution: int) -> int:
        if self.stem_downsample is not None:
            return self.stem_downsample
        return max(1, min(4, resolution // (32 if self.arch == "slim10" else 16)))

    def resolved_width(self) -> int:
        """slim10's first-stage width (stages double it)."""
        return self.width if self.width is not None else 16

    def resolved_crop_pad(self, resolution: int) -> int:
        return self.crop_pad if self.crop_pad is not None else max(1, resolution // 16)

    def resolved_hflip(self, dataset: FaceDataset) -> bool:
        """Mirroring is label-safe for CelebA's attributes: none of them names a side of the face.

        A dataset whose labels do change under mirroring sets ``hflip_label_safe = False``.
        """
        if self.hflip is not None:
            return self.hflip
        if not getattr(dataset, "hflip_label_safe", True):
            return False
        return all(name in CELEBA_ATTRIBUTE_NAMES for name in dataset.attribute_names)

    def resolved_eval_split(self, dataset: FaceDataset) -> str:
        if self.eval_split != "auto":
            dataset._check_split(self.eval_split)
            return self.eval_split
        return "val" if "val" in dataset.split_names else "test"


def default_config(dataset: FaceDataset | None = None) -> ClassifierConfig:
    """The protocol's default training config (the one whose tag has no hash suffix)."""
    return ClassifierConfig()
