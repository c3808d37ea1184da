"""InterFaceGAN's attribute labeller: scores the GAN's samples so that the SVM has labels to fit.

**The labeller is not the judge.** The benchmark's ``attr_success`` is scored by the attribute
classifier of ``evaluators/classifier``. If InterFaceGAN's boundaries were fitted on that very
network's scores, the metric would grade the editor with the network it optimised against. So the
labeller is trained separately, with the judge's *training code* (``train_classifier``, as DESIGN §2
allows) but on other data and another seed, under its own tag:

* data: one half of the editor's training split (a seeded random half), at the GAN's working
  resolution (the resolution the labeller will score samples at); the other, disjoint half is
  its held-out set, on which its accuracy per attribute is measured and recorded;
* config: the judge's default architecture and schedule, ``seed`` = ``labeller_seed`` (1 by
  default; the judge's is 0) and ``epochs`` from the editor's options;
* tag and cache key: the data is wrapped in its own dataset (``LabellerData``) whose name and
  fingerprint differ from the judge's, so ``classifier_tag`` and the content hash differ too.

``train_classifier`` writes its checkpoint into the classifier cache under the labeller's own
key; ``train_labeller`` copies the three checkpoint files into the stage directory, and the editor
loads the labeller only from there (``load_labeller``), never from the classifier cache and never
the judge's directory.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from benchmark.data.base import DataError, FaceDataset, FaceSplit

LABELLER_DIR = "labeller"
FILES = ("model.safetensors", "classifier.json", "metrics.json")  # evaluators.classifier.cache's layout
DATASET_PREFIX = "ifglabeller"


class _MemorySplit(FaceSplit):
    """A split held as uint8 images (N x 3 x r x r) and 0/1 labels, items in the dataset contract."""

    def __init__(self, dataset: "LabellerData", split_name: str, images: torch.Tensor, labels: torch.Tensor):
        self.dataset, self.split_name = dataset, split_name
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        return {"image": self.images[i].float() / 127.5 - 1.0, "labels": self.labels[i].clone(),
                "identity": torch.tensor(-1, dtype=torch.long), "index": torch.tensor(i, dtype=torch.long)}

    def labels_matrix(self) -> torch.Tensor:
        return self.labels.clone()


class LabellerData(FaceDataset):
    """Two disjoint halves of an editor's training split, as a dataset of its own (splits train / val).

    Its ``name`` and ``fingerprint`` (the base dataset's identity, the half's seed and sizes) make
    the classifier trained on it a different cache entry with a different tag from the judge's.
    """

    split_names = ("train", "val")

    def __init__(self, base: FaceDataset, base_identity: dict[str, Any], images: torch.Tensor,
                 labels: torch.Tensor, split_seed: int):
        super().__init__(resolution=int(images.shape[-1]))
        self.name = f"{DATASET_PREFIX}_{base.name}"
        self.attributes = base.attributes
        self.hflip_label_safe = getattr(base, "hflip_label_safe", True)
        n = images.shape[0]
        if n < 4:
            raise DataError(f"interfacegan labeller: the training split has {n} images; need at least 4")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(split_seed)))
        half = n // 2
        self.train_index, self.val_index = perm[:half].sort().values, perm[half:].sort().values
        self._splits = {"train": _MemorySplit(self, "train", images[self.train_index], labels[self.train_index]),
                        "val": _MemorySplit(self, "val", images[self.val_index], labels[self.val_index])}
        self._identity = {"base": base_identity, "resolution": self.resolution, "split_seed": int(split_seed),
                          "n_train": int(half), "n_val": int(n - half), "half": "train=first half of a seeded permutation"}

    def split(self, name: str) -> FaceSplit:
        self._check_split(name)
        return self._splits[name]

    def fingerprint(self) -> dict:
        return {"name": self.name, **self._identity}


@dataclass(frozen=True)
class LabellerSpec:
    """How the labeller is trained (part of its stage's key)."""

    arch: str = "resnet18"
    epochs: int = 15
    seed: int = 1  # the judge's default seed is 0
    split_seed: int = 1
    # blur / noise / colour casts on its training images (judge_data.degrade, each with this chance):
    # it scores the GAN's blurred samples, not clean photographs. 0: off (then left out of the key)
    degrade_prob: float = 0.0

    def config(self) -> dict[str, Any]:
        return {"arch": self.arch, "epochs": int(self.epochs), "seed": int(self.seed), "eval_split": "val",
                "train_degrade_prob": float(self.degrade_prob)}

    def keyed(self) -> dict[str, Any]:
        """What enters the labeller stage's key: the fields, ``degrade_prob`` only when on (it came later,
        and the labellers trained before it keep their keys)."""
        out = asdict(self)
        if not self.degrade_prob:
            out.pop("degrade_prob")
        return out


def judge_classifier_dir(dataset: FaceDataset) -> Path:
    """Where the judge's (default-config) classifier of ``dataset`` lives: the labeller never reads it."""
    from evaluators.classifier import cache, default_config

    return cache.classifier_dir(dataset, default_config(dataset))


def train_labeller(out_dir: Path, dataset: FaceDataset, base_identity: dict[str, Any], images: torch.Tensor,
                   labels: torch.Tensor, spec: LabellerSpec, device: torch.device) -> dict[str, Any]:
    """Train the labeller on one half of ``images`` and copy it into ``out_dir/labeller``; returns its record."""
    from evaluators.classifier import ClassifierConfig, train_classifier
    from evaluators.classifier import cache

    data = LabellerData(dataset, base_identity, images, labels, spec.split_seed)
    config = ClassifierConfig.from_dict(spec.config())
    handle = train_classifier(data, device, config)
    judge_key = judge_classifier_dir(dataset).name
    if handle.key == judge_key or handle.directory == judge_classifier_dir(dataset):
        raise RuntimeError("interfacegan: the labeller resolved to the judge's classifier; refusing to use it")
    dest = Path(out_dir) / LABELLER_DIR
    dest.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copy2(handle.directory / name, dest / name)
    metrics = cache.read_json(dest / "metrics.json")
    record = {
        "tag": handle.tag, "key": handle.key, "judge_key": judge_key, "arch": spec.arch, "epochs": spec.epochs,
        "seed": spec.seed, "split_seed": spec.split_seed, "degrade_prob": spec.degrade_prob,
        "resolution": data.resolution,
        "n_train": len(data.split("train")), "n_heldout": len(data.split("val")),
        "heldout_accuracy": metrics.get("accuracy", {}), "heldout_mean_accuracy": metrics.get("mean_accuracy"),
        "heldout_baseline_accuracy": metrics.get("baseline_accuracy", {}),
        "trained_by": "evaluators.classifier.train_classifier on a disjoint half of the training split",
    }
    (Path(out_dir) / "labeller.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def load_labeller(stage_dir: Path, device: torch.device | str):
    """The labeller of a finished stage as an ``AttributeClassifier`` (eval mode, frozen), from the stage dir only."""
    from evaluators.classifier import AttributeClassifier, ClassifierConfig, build_network
    from methods.training import load_safetensors

    d = Path(stage_dir) / LABELLER_DIR
    info = json.loads((d / "classifier.json").read_text())
    config = ClassifierConfig.from_dict(info["config"])
    names = tuple(info["attribute_names"])
    net = build_network(config, len(names), int(info["resolution"]), load_pretrained=False)
    net.load_state_dict(load_safetensors(d / "model.safetensors"), strict=True)
    metrics = json.loads((d / "metrics.json").read_text())
    return AttributeClassifier(net, names, int(info["resolution"]), info["tag"], device, metrics=metrics, directory=d)
