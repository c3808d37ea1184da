"""Command line: train (or find cached) the attribute classifier of a registered dataset.

    python -m evaluators.classifier.train --dataset synthfaces --resolution 64 [--epochs N --batch-size B
        --device cpu --option root=/path --set crop_pad=2 --force]
    python -m evaluators.classifier.train --dataset celebahq --option root=../shared/data/celebahq \
        --option image_dir=CelebA-HQ-img-64 --report-split test --report-json judge_report.json

``--report-split`` scores the trained judge on a split of your choice (e.g. CelebA-HQ's official test
split) and prints a Markdown table of accuracy, balanced accuracy and the majority baseline per
attribute, marking those below 0.85 balanced accuracy as too unreliable to judge.

Errors about data, assets or options print one message and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import torch

from benchmark.assets import AssetError
from benchmark.data.base import DataError
from benchmark.registry import DATASETS, UnknownNameError
from evaluators.classifier.config import ClassifierConfig, ClassifierConfigError, default_config
from evaluators.classifier.training import train_classifier


def _parse_value(text: str) -> Any:
    import yaml  # YAML scalars: 3 -> int, true -> bool, null -> None, paths stay strings

    return yaml.safe_load(text)


def _key_values(items: list[str], what: str) -> dict[str, Any]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ClassifierConfigError(f"{what} {item!r} must be KEY=VALUE")
        k, v = item.split("=", 1)
        out[k] = _parse_value(v)
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m evaluators.classifier.train", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="registered dataset name (e.g. synthfaces, celebahq)")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="dataset option")
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--pretrained", action="store_true", help="start from torchvision's ImageNet weights")
    p.add_argument("--max-train-items", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any classifier config field")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--force", action="store_true", help="retrain even if a cached checkpoint exists")
    p.add_argument("--report-split", help="also score the judge on this split and print a Markdown table")
    p.add_argument("--report-json", help="write the --report-split figures to this JSON file")
    return p


def report_table(metrics: dict[str, Any]) -> str:
    """Markdown: accuracy, balanced accuracy and majority baseline per attribute, unreliable ones marked."""
    from evaluators.classifier.training import RELIABLE_BALANCED_ACCURACY

    lines = ["| attribute | accuracy | balanced accuracy | majority baseline | judgeable |", "|---|---|---|---|---|"]
    for name, acc in metrics["accuracy"].items():
        bal = metrics["balanced_accuracy"][name]
        ok = "yes" if bal >= RELIABLE_BALANCED_ACCURACY else f"**no** (< {RELIABLE_BALANCED_ACCURACY})"
        lines.append(f"| {name} | {acc:.3f} | {bal:.3f} | {metrics['baseline_accuracy'][name]:.3f} | {ok} |")
    bal = [v for v in metrics["balanced_accuracy"].values() if v == v]
    lines.append(f"| **mean** | **{metrics['mean_accuracy']:.4f}** | **{sum(bal) / max(1, len(bal)):.4f}** | "
                 f"{metrics['mean_baseline_accuracy']:.4f} | {len(metrics['unreliable_attributes'])} not |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        overrides = _key_values(args.set, "--set")
        for flag in ("arch", "epochs", "batch_size", "lr", "max_train_items"):
            if getattr(args, flag) is not None:
                overrides[flag] = getattr(args, flag)
        if args.pretrained:
            overrides["pretrained"] = True
        dataset = DATASETS.create(args.dataset, resolution=args.resolution, **_key_values(args.option, "--option"))
        config = ClassifierConfig.from_dict({**default_config(dataset).to_dict(), **overrides})
        handle = train_classifier(dataset, args.device, config, force=args.force)
    except (AssetError, DataError, UnknownNameError, ClassifierConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = handle.metrics
    print(f"{handle.tag}: {'trained' if handle.trained else 'cached'} at {handle.directory}")
    print(f"held-out ({m['eval_split']}, n={m['n']}): mean accuracy {m['mean_accuracy']:.4f} "
          f"(majority baseline {m['mean_baseline_accuracy']:.4f}); training {m['train_seconds']:.0f} s")
    for name, acc in m["accuracy"].items():
        print(f"  {name:24s} {acc:.4f}  (baseline {m['baseline_accuracy'][name]:.4f})")
    if args.report_split:
        return _report(handle, dataset, args)
    return 0


def _report(handle: Any, dataset: Any, args: argparse.Namespace) -> int:
    import json

    from evaluators.classifier.training import evaluate_accuracy, load_classifier

    try:
        clf = load_classifier(dataset, args.device, handle.config, train_if_missing=False)
        figures = evaluate_accuracy(clf, dataset.split(args.report_split))
    except (AssetError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    figures.update({"split": args.report_split, "tag": handle.tag, "key": handle.key,
                    "train_seconds": handle.metrics.get("train_seconds")})
    print(f"\n{handle.tag} on the {args.report_split} split (n={figures['n']}):\n")
    print(report_table(figures))
    if args.report_json:
        with open(args.report_json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
