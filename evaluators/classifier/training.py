"""Train, cache and load the attribute classifier of any registered dataset.

Python::

    handle = train_classifier(dataset, device, config)          # trains unless cached
    clf = load_classifier(dataset, device, config=None, train_if_missing=True)

Command line: ``python -m evaluators.classifier.train`` (``evaluators/classifier/train.py``).

Training is from scratch (ImageNet weights only with ``pretrained: true``),
multi-label BCE-with-logits over all of the dataset's attributes, with
label-safe augmentation (mirroring, small random translations).  The held-out
accuracy per attribute lands in ``metrics.json`` beside the weights so that
every table built on this classifier can say how far to trust it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, Subset

from benchmark import cache as entries
from benchmark.assets import AssetError
from benchmark.data.base import DataError, FaceDataset, FaceSplit, collate_faces
from evaluators.base import to_uint8
from evaluators.classifier import cache
from evaluators.classifier.config import CODE_VERSION, ClassifierConfig, default_config
from evaluators.judge_data import JudgeData, blend_pairs, degrade, judge_data, supports_judge_data
from evaluators.classifier.model import IMAGENET_MEAN, IMAGENET_STD, AttributeClassifier, build_network, normalise

log = logging.getLogger(__name__)

ConfigLike = ClassifierConfig | dict[str, Any] | None


# Below this held-out balanced accuracy an attribute is marked too unreliable to judge (issue 15).
RELIABLE_BALANCED_ACCURACY = 0.85


class MissingClassifierError(AssetError):
    """No cached classifier for this (dataset, config) and training was not allowed."""


@dataclass(frozen=True)
class ClassifierHandle:
    """A trained classifier on disk: where it is, its protocol tag and its held-out metrics."""

    directory: Path
    key: str
    tag: str
    metrics: dict[str, Any]
    config: ClassifierConfig
    trained: bool  # True if this call trained it, False if it came from the cache

    @property
    def mean_accuracy(self) -> float:
        return float(self.metrics["mean_accuracy"])


def classifier_tag(dataset: FaceDataset, config: ClassifierConfig) -> str:
    """``<arch>_[judge_|judge2_]<dataset><resolution>``, plus a config hash when the config is not the default.

    Metric names carry the tag, so a classifier trained differently is a
    different protocol with a different name (DESIGN §3).  ``judge_`` marks a classifier trained on
    the dataset's judge renders (SynthFaces' default since issue 15), so its rows never merge with
    those of the earlier train-split judge (``resnet18_synthfaces64``, now ``train_data: train``);
    ``judge2_`` one whose judge renders include off-palette recolours (``recolour_fraction`` > 0, the
    default since 2026-12-03), so its rows never merge with those of the colour-blind ``judge_`` one.
    """
    resolved = config.resolved(dataset)
    source = ""
    if resolved.train_data == "judge":  # judge2: renders with off-palette recolours (``recolour_fraction``)
        source = "judge2_" if resolved.recolour_fraction > 0 else "judge_"
    base = f"{config.arch}_{source}{dataset.name}{dataset.resolution}"
    if resolved.hashed_dict() == default_config(dataset).resolved(dataset).hashed_dict():
        return base
    blob = json.dumps(resolved.hashed_dict(), sort_keys=True, default=str).encode()
    return f"{base}_{hashlib.sha256(blob).hexdigest()[:6]}"


# -- data -------------------------------------------------------------------------
def _loader(split: FaceSplit | Subset, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(split, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=collate_faces)


def _preload(split: FaceSplit, config: ClassifierConfig, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode the training images once into a uint8 tensor (N×3×H×W) so epochs cost no decoding."""
    n = len(split)
    if n == 0:
        raise DataError(f"the train split of dataset {split.dataset.name!r} is empty")
    source: FaceSplit | Subset = split
    if config.max_train_items is not None and config.max_train_items < n:
        g = torch.Generator().manual_seed(config.seed)
        source = Subset(split, torch.randperm(n, generator=g)[: config.max_train_items].tolist())
    images, labels = [], []
    for batch in _loader(source, config.eval_batch_size, config.num_workers):
        img = batch["image"]
        if img.shape[-2:] != (resolution, resolution):
            raise DataError(f"dataset {split.dataset.name!r} gave {tuple(img.shape[-2:])} images, "
                            f"expected its resolution {resolution}")
        images.append(to_uint8(img))
        labels.append(batch["labels"].float())
    return torch.cat(images), torch.cat(labels)


def _augment(x: torch.Tensor, gen: torch.Generator, hflip: bool, pad: int) -> torch.Tensor:
    """Label-safe augmentation: random mirror, random translation by up to ``pad`` px (edge-replicated)."""
    b, _, h, w = x.shape
    if hflip:
        flip = torch.rand(b, generator=gen) < 0.5
        x = torch.where(flip.view(b, 1, 1, 1), x.flip(-1), x)
    if pad > 0:
        padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
        off = torch.randint(0, 2 * pad + 1, (b, 2), generator=gen).tolist()
        x = torch.stack([padded[i, :, oy:oy + h, ox:ox + w] for i, (oy, ox) in enumerate(off)])
    return x


# -- training ---------------------------------------------------------------------
def _optimizer(net: nn.Module, config: ClassifierConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay,
                               nesterov=True)
    return torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _schedule(opt: torch.optim.Optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then cosine decay to zero over the remaining steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _fit(net: nn.Module, images: torch.Tensor, labels: torch.Tensor, dataset: FaceDataset,
         config: ClassifierConfig, device: torch.device, on_epoch: Callable[[], None] | None = None,
         judge: "JudgeData | None" = None) -> list[float]:
    """Train ``net`` in place; returns the mean training loss of each epoch (``on_epoch`` runs after each)."""
    gen = torch.Generator().manual_seed(config.seed)
    hflip, pad = config.resolved_hflip(dataset), config.resolved_crop_pad(dataset.resolution)
    n = len(images)
    steps_per_epoch = math.ceil(n / config.batch_size)
    opt = _optimizer(net, config)
    sched = _schedule(opt, min(config.warmup_steps, steps_per_epoch * config.epochs // 4),
                      steps_per_epoch * config.epochs)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    net.train()
    losses, step, t0 = [], 0, time.time()
    from benchmark.progress import progress

    # the same code trains the judges and InterFaceGAN's labeller: the bar says which data it learns
    desc = "judge: attribute classifier" if judge is not None else f"attribute classifier ({dataset.name})"
    bar = progress(total=steps_per_epoch * config.epochs, desc=desc, unit="step", leave=True)
    for epoch in range(config.epochs):
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            x, y = images[idx].float() / 127.5 - 1, labels[idx]
            if judge is not None:  # edit artefacts, labelled by what is rendered (evaluators/judge_data.py)
                x, y = blend_pairs(x, y, idx, judge, gen, config.blend_prob)
                x = degrade(x, gen, config.degrade_prob)
            elif config.train_degrade_prob > 0:  # the same artefacts on the train split (no renders to pair)
                x = degrade(x, gen, config.train_degrade_prob)
            x = _augment(x, gen, hflip, pad).to(device)
            y = y.to(device)
            loss = F.binary_cross_entropy_with_logits(net(normalise(x, mean, std)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            step += 1
            bar.update(1)
            if step % 10 == 0:
                bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{float(loss.detach()):.4f}")
            if step % config.log_every == 0:
                log.info("epoch %d step %d loss %.4f (%.0f img/s)", epoch + 1, step, float(loss.detach()),
                         step * config.batch_size / (time.time() - t0))
        losses.append(total / n)
        log.info("epoch %d/%d: mean loss %.4f", epoch + 1, config.epochs, losses[-1])
        if on_epoch is not None:
            net.eval()
            on_epoch()
            net.train()
    bar.close()
    net.eval()
    return losses


def evaluate_accuracy(clf: AttributeClassifier, split: FaceSplit, max_items: int | None = None,
                      batch_size: int = 256, num_workers: int = 0) -> dict[str, Any]:
    """Per-attribute accuracy of ``clf`` on ``split``, with the majority-class baseline beside it.

    Also the balanced accuracy (mean of the true-positive and true-negative rates), which a judge that
    always answers the majority class cannot raise above 0.5: on CelebA's rare attributes plain
    accuracy sits near the baseline whatever the judge sees, so balanced accuracy says whether the
    attribute can be judged at all (``unreliable_attributes``).
    """
    n = len(split) if max_items is None else min(max_items, len(split))
    if n == 0:
        raise DataError(f"split {split.split_name!r} of dataset {split.dataset.name!r} is empty")
    correct = torch.zeros(len(clf.attribute_names), dtype=torch.long)
    positives, true_pos, true_neg = torch.zeros_like(correct), torch.zeros_like(correct), torch.zeros_like(correct)
    for batch in _loader(Subset(split, range(n)), batch_size, num_workers):
        labels = batch["labels"].long()
        pred = clf.predict(batch["image"]).cpu()
        correct += (pred == labels).sum(0)
        positives += labels.sum(0)
        true_pos += ((pred == 1) & (labels == 1)).sum(0)
        true_neg += ((pred == 0) & (labels == 0)).sum(0)
    return _accuracy_summary(clf.attribute_names, n, correct, positives, true_pos, true_neg)


def _accuracy_summary(names: tuple[str, ...], n: int, correct: torch.Tensor, positives: torch.Tensor,
                      true_pos: torch.Tensor, true_neg: torch.Tensor) -> dict[str, Any]:
    acc = (correct.double() / n).tolist()
    pos = (positives.double() / n).tolist()
    tpr = true_pos.double() / positives.clamp_min(1)
    tnr = true_neg.double() / (n - positives).clamp_min(1)
    # an attribute with one class only in this split has no balanced accuracy (NaN), not a made-up 0.5
    one_class = (positives == 0) | (positives == n)
    bal = torch.where(one_class, torch.full_like(tpr, float("nan")), 0.5 * (tpr + tnr)).tolist()
    return {
        "n": n,
        "accuracy": dict(zip(names, acc)),
        "mean_accuracy": sum(acc) / len(acc),
        "balanced_accuracy": dict(zip(names, bal)),
        "positive_rate": dict(zip(names, pos)),
        "baseline_accuracy": {a: max(p, 1 - p) for a, p in zip(names, pos)},
        "mean_baseline_accuracy": sum(max(p, 1 - p) for p in pos) / len(pos),
        "unreliable_attributes": [a for a, b in zip(names, bal) if not b >= RELIABLE_BALANCED_ACCURACY],
    }


def _save(directory: Path, net: nn.Module, info: dict[str, Any], metrics: dict[str, Any]) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(directory / cache.WEIGHTS_FILE))
    cache.write_json(directory / cache.INFO_FILE, info)
    cache.write_json(directory / cache.METRICS_FILE, metrics)


def _rebuild_hint(dataset: FaceDataset, config: ClassifierConfig) -> str:
    """The remedy a cache error prints: the command that retrains exactly this checkpoint."""
    return (f"rebuild it with: python -m evaluators.classifier.train --dataset {dataset.name} "
            f"--resolution {dataset.resolution}{_cli_overrides(dataset, config)} --force "
            "(a run with train_if_missing: true rebuilds it by itself)")


def _handle(directory: Path, dataset: FaceDataset, config: ClassifierConfig, trained: bool) -> ClassifierHandle:
    metrics = cache.read_json(directory / cache.METRICS_FILE, _rebuild_hint(dataset, config))
    return ClassifierHandle(directory=directory, key=directory.name, tag=classifier_tag(dataset, config),
                            metrics=metrics, config=config, trained=trained)


def uses_judge_data(dataset: FaceDataset, config: ClassifierConfig) -> bool:
    """Whether this classifier learns from judge renders (``train_data``; "auto": SynthFaces yes)."""
    if config.train_data == "train":
        return False
    if not supports_judge_data(dataset):
        if config.train_data == "judge":
            raise DataError(f"train_data: judge needs SynthFaces; dataset {dataset.name!r} cannot render "
                            "counterfactuals (use train_data: train)")
        return False
    return True


def _judge_train_data(dataset: FaceDataset, config: ClassifierConfig) -> "JudgeData | None":
    if not uses_judge_data(dataset, config):
        return None
    return judge_data(dataset, "judge", config.judge_ids, config.judge_images_per_id, config.partial_fraction,
                      config.pair_fraction, config.recolour_fraction)


def judge_val_accuracy(clf: AttributeClassifier, dataset: FaceDataset, config: ClassifierConfig) -> dict[str, Any]:
    """Accuracy on clean, balanced judge renders of unseen identities (``judge_val``): every attribute
    ~50 % positive and independent of the others, so correlations cannot carry the score."""
    val = judge_data(dataset, "judge_val", config.judge_val_ids, config.judge_images_per_id, 0.0, 0.0)
    preds = torch.cat([clf.predict(val.images[s:s + 256].float() / 127.5 - 1).cpu()
                       for s in range(0, len(val), 256)])
    labels = val.labels.long()
    return _accuracy_summary(clf.attribute_names, len(val), (preds == labels).sum(0), labels.sum(0),
                             ((preds == 1) & (labels == 1)).sum(0), ((preds == 0) & (labels == 0)).sum(0))


def warn_below_baseline(metrics: dict[str, Any], where: str, margin: float = 0.0) -> list[str]:
    """Attributes whose held-out accuracy is not above the majority baseline: logged loudly, returned."""
    bad = [a for a, acc in metrics["accuracy"].items() if acc <= metrics["baseline_accuracy"][a] + margin]
    for a in bad:
        log.warning("!!! attribute classifier NOT ABOVE THE MAJORITY BASELINE on %s (%s): accuracy %.4f, baseline %.4f; "
                    "its attr_* scores for %s mean nothing", a, where, metrics["accuracy"][a],
                    metrics["baseline_accuracy"][a], a)
    return bad


def _train_into(out: Path, key: str, dataset: FaceDataset, config: ClassifierConfig, device: torch.device) -> None:
    """Train, evaluate on held-out data and write the checkpoint files into ``out``."""
    torch.manual_seed(config.seed)
    net = build_network(config, len(dataset.attribute_names), dataset.resolution).to(device)
    t0 = time.time()
    judge = _judge_train_data(dataset, config)
    if judge is not None:
        images, labels = judge.images, judge.labels
    else:
        images, labels = _preload(dataset.split("train"), config, dataset.resolution)
    load_s = time.time() - t0
    log.info("training %s classifier on %d %s images at %d px (device %s)", config.arch, len(images),
             dataset.name, dataset.resolution, device)
    tag = classifier_tag(dataset, config)
    eval_split = config.resolved_eval_split(dataset)
    curve: list[float] = []

    def epoch_eval() -> None:  # a learning curve on held-out data, only with eval_every_epoch
        probe = AttributeClassifier(net, dataset.attribute_names, dataset.resolution, tag, device)
        curve.append(evaluate_accuracy(probe, dataset.split(eval_split), config.max_eval_items,
                                       config.eval_batch_size, config.num_workers)["mean_accuracy"])
        net.requires_grad_(True)
        log.info("held-out mean accuracy after epoch %d: %.4f", len(curve), curve[-1])

    t1 = time.time()
    losses = _fit(net, images, labels, dataset, config, device, epoch_eval if config.eval_every_epoch else None,
                  judge=judge)
    train_s = time.time() - t1
    clf = AttributeClassifier(net, dataset.attribute_names, dataset.resolution, tag, device)
    t2 = time.time()
    held_out = evaluate_accuracy(clf, dataset.split(eval_split), config.max_eval_items,
                                 config.eval_batch_size, config.num_workers)
    below = warn_below_baseline(held_out, f"{dataset.name} {eval_split} split")
    if judge is not None:
        held_out["judge_val"] = judge_val_accuracy(clf, dataset, config)
        below += warn_below_baseline(held_out["judge_val"], "balanced judge_val renders", margin=0.05)
    held_out["below_baseline"] = sorted(set(below))
    info = {"arch": config.arch, "stem_downsample": config.resolved_stem(dataset.resolution),
            "resolution": dataset.resolution, "attribute_names": list(dataset.attribute_names), "tag": tag,
            "config": config.to_dict(), "code_version": CODE_VERSION}
    metrics = {
        **held_out, "eval_split": eval_split, "tag": tag, "key": key, "dataset": dataset.fingerprint(),
        "n_train": len(images), "epoch_losses": losses, "epoch_accuracy": curve, "load_seconds": load_s, "train_seconds": train_s,
        "eval_seconds": time.time() - t2, "config": config.to_dict(), "code_version": CODE_VERSION,
        "hflip": config.resolved_hflip(dataset), "crop_pad": config.resolved_crop_pad(dataset.resolution),
        "device": str(device), "torch": torch.__version__, "torchvision": torchvision.__version__,
        # the weights depend on it (float reductions split across threads): recorded, not hashed (docs/classifier.md)
        "torch_threads": torch.get_num_threads(),
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    _save(out, net, info, metrics)
    log.info("%s: mean held-out accuracy %.4f on %d %s images", tag, metrics["mean_accuracy"], held_out["n"],
             eval_split)


def train_classifier(dataset: FaceDataset, device: torch.device | str, config: ConfigLike = None,
                     force: bool = False) -> ClassifierHandle:
    """Train the classifier of ``dataset``, or return the cached one unless ``force``.

    A cached checkpoint is used only if it verifies against its manifest; a missing, incomplete
    (e.g. ``classifier.json`` deleted, or written before manifests existed) or corrupt one is
    retrained once, under the entry's lock, and replaces the broken folder.
    """
    config = (ClassifierConfig.from_dict(config) if config is not None else default_config(dataset)).resolved(dataset)
    device = torch.device(device)
    from evaluators.reference_judges import use_shipped

    final = cache.classifier_dir(dataset, config)
    if not force and use_shipped("classifiers", final):  # the protocol's shipped weights for this key
        return _handle(final, dataset, config, trained=False)
    _, trained = entries.ensure_entry(final, lambda tmp: _train_into(tmp, final.name, dataset, config, device),
                                      remedy=_rebuild_hint(dataset, config), force=force)
    if trained:
        log.info("classifier saved to %s", final)
    return _handle(final, dataset, config, trained=trained)


def _load_dir(directory: Path, dataset: FaceDataset, device: torch.device, remedy: str) -> AttributeClassifier:
    """Build the network from a verified checkpoint folder (parse errors name the file)."""
    info = cache.read_json(directory / cache.INFO_FILE, remedy)
    if tuple(info["attribute_names"]) != dataset.attribute_names:
        raise DataError(f"classifier at {directory} was trained on attributes {info['attribute_names']}, "
                        f"but dataset {dataset.name!r} has {list(dataset.attribute_names)}")
    config = ClassifierConfig.from_stored(info["config"])
    net = build_network(config, len(info["attribute_names"]), info["resolution"], load_pretrained=False)
    state = entries.read_entry_file(directory / cache.WEIGHTS_FILE, lambda p: load_file(str(p), device="cpu"),
                                    "classifier weights", remedy)
    net.load_state_dict(state, strict=True)
    metrics = cache.read_json(directory / cache.METRICS_FILE, remedy)
    # the tag is recomputed, not read: a checkpoint trained before a naming change reports under today's name
    return AttributeClassifier(net, dataset.attribute_names, info["resolution"], classifier_tag(dataset, config), device,
                               metrics=metrics, directory=directory)


def load_classifier(dataset: FaceDataset, device: torch.device | str, config: ConfigLike = None,
                    train_if_missing: bool = True) -> AttributeClassifier:
    """The cached classifier of ``dataset`` on ``device``, training it first if missing and allowed.

    The checkpoint is verified against its manifest first (sha256 of every file): with training
    allowed a broken one is retrained; without, it is a ``CacheCorruptError`` naming the file and
    the command that rebuilds it.  Weights are never used unverified.
    """
    from evaluators.reference_judges import use_shipped

    config = (ClassifierConfig.from_dict(config) if config is not None else default_config(dataset)).resolved(dataset)
    device = torch.device(device)
    directory = cache.classifier_dir(dataset, config)
    remedy = _rebuild_hint(dataset, config)
    if use_shipped("classifiers", directory):  # shipped weights: verified, nothing trained
        pass
    elif train_if_missing:
        directory = train_classifier(dataset, device, config).directory  # verifies, or rebuilds once
    elif not directory.exists():
        raise MissingClassifierError(
            f"no trained attribute classifier for dataset {dataset.name!r} at {dataset.resolution} px "
            f"(expected at {directory}) and training is disabled (train_if_missing: false).\n"
            f"  train it with: python -m evaluators.classifier.train --dataset {dataset.name} "
            f"--resolution {dataset.resolution}" + _cli_overrides(dataset, config)
        )
    else:
        entries.verify_entry(directory, remedy)
    return _load_dir(directory, dataset, device, remedy)


def _cli_overrides(dataset: FaceDataset, config: ClassifierConfig) -> str:
    """The CLI flags that reproduce ``dataset``'s options and ``config``'s non-default fields (YAML scalars)."""
    def text(v: Any) -> str:
        return json.dumps(v) if v is None or isinstance(v, bool) else str(v)

    default = default_config(dataset).to_dict()
    parts = [f" --option {k}={text(v)}" for k, v in dataset.options.items()]
    parts += [f" --set {k}={text(v)}" for k, v in config.to_dict().items() if default[k] != v]
    return "".join(parts)
