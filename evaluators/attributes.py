"""Attribute metrics (DESIGN §4): did the edit set the attribute, and did it leave the others alone?

Scored by our attribute classifier (``evaluators.classifier``), whose tag
(e.g. ``resnet18_synthfaces64``) is part of every metric name:

* ``attr_success_<tag>``    share of edited images the classifier scores as the target value;
* ``attr_preserve_<tag>``   mean over images and over the *other* attributes of agreement between
                            the classifier's predictions on the edited and on the source image;
* ``attr_source_acc_<tag>`` share of source images where the classifier agrees with the source
                            label of the edited attribute - how far to trust ``attr_success``.

State is three integer counters, so results do not depend on how the images
are batched.

Under the runner the classifier's outputs come through ``evaluators.judging.JudgeMemo`` (the
``judge_memo`` extra): source predictions are computed once per batch for every cell of the run,
and the classifier pass over the edited images is shared with ``fid_classifier`` where the edit is
8-bit exact (``classifier_outputs``).  The values are those of the direct calls.
"""
from __future__ import annotations

import json
import logging
from typing import Any

import torch

from benchmark.registry import register_evaluator
from evaluators.base import EvalContext, Evaluator, shared_model
from evaluators.classifier import AttributeClassifier, load_classifier
from evaluators.judging import JudgeMemo, Which


log = logging.getLogger(__name__)
_WARNED_UNRELIABLE: set[tuple[str, str]] = set()


def warn_if_unreliable(clf: AttributeClassifier, attribute: str) -> bool:
    """Log once per (judge, attribute) when the judge's held-out balanced accuracy on ``attribute`` is
    below the reliability bar (``metrics.json`` ``unreliable_attributes``): its attr_* rows then say
    little, and the reader must hear it (e.g. CelebA-HQ's Young and Pale_Skin, docs/classifier.md)."""
    bad = attribute in clf.metrics.get("unreliable_attributes", ())
    if bad and (clf.tag, attribute) not in _WARNED_UNRELIABLE:
        _WARNED_UNRELIABLE.add((clf.tag, attribute))
        bal = clf.metrics.get("balanced_accuracy", {}).get(attribute, float("nan"))
        log.warning("!!! attribute judge %s is unreliable on %s: held-out balanced accuracy %.3f; its attr_* "
                    "scores for %s say little (docs/classifier.md)", clf.tag, attribute, bal, attribute)
    return bad


def shared_classifier(ctx: EvalContext, config: dict[str, Any] | None, train_if_missing: bool) -> AttributeClassifier:
    """One classifier per (dataset content, config, device) and process, shared by all evaluators."""
    key = ("attribute_classifier", json.dumps(ctx.dataset.fingerprint(), sort_keys=True, default=str),
           json.dumps(config or {}, sort_keys=True, default=str), str(ctx.device))
    return shared_model(key, lambda: load_classifier(ctx.dataset, ctx.device, config, train_if_missing))


def grid_judge(cfg: Any, dataset: Any, attribute: str, device: torch.device) -> AttributeClassifier:
    """The attribute judge a grid of ``cfg`` scores ``dataset`` with: the registered ``attributes``
    evaluator built with the config's options, so a script that reads edits outside the grid (GAN samples,
    probes) uses the very network, and tag, that the run's rows carry."""
    from benchmark.registry import EVALUATORS

    ctx = EvalContext(dataset, attribute, 1, device)
    return EVALUATORS.create("attributes", ctx, **cfg.evaluator_options.get("attributes", {})).classifier


def classifier_features(clf: AttributeClassifier, memo: JudgeMemo, which: Which) -> torch.Tensor:
    """``clf.features`` of the memo's source or edited images, computed once for every evaluator."""
    return memo.run(clf, "features", which, clf.features)


def classifier_logits(clf: AttributeClassifier, memo: JudgeMemo, which: Which) -> torch.Tensor:
    """``clf.logits`` of the memo's images: the head on the shared features (``logits`` is ``fc(features)``)."""
    return memo.run(clf, "logits", which, lambda _: clf.net.fc(classifier_features(clf, memo, which)))


@register_evaluator("attributes")
class AttributeEvaluator(Evaluator):
    """Options: ``classifier`` (dict forwarded to ``load_classifier``), ``train_if_missing`` (default true)."""

    requires = frozenset({"judge_memo"})  # optional: outputs shared with other evaluators and cells
    metrics = ("attr_success_<classifier>", "attr_preserve_<classifier>", "attr_source_acc_<classifier>")
    higher_is_better = {"attr_success_": True, "attr_preserve_": True, "attr_source_acc_": True}
    option_keys = ("classifier", "train_if_missing")

    def __init__(self, ctx: EvalContext, **options: Any):
        super().__init__(ctx, **options)
        self.classifier = shared_classifier(ctx, self.options.get("classifier"),
                                            bool(self.options.get("train_if_missing", True)))
        self.attr = ctx.attr_index
        warn_if_unreliable(self.classifier, ctx.dataset.attribute_names[self.attr])
        n_attr = len(ctx.dataset.attribute_names)
        self.others = torch.tensor([i for i in range(n_attr) if i != self.attr], dtype=torch.long,
                                   device=self.classifier.device)

    def reset(self) -> None:
        self.n = 0
        self.success = 0
        self.source_correct = 0
        self.agree = 0  # (image, other attribute) pairs whose prediction did not change

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        if source.shape[0] != edited.shape[0] or source.shape[0] != target.shape[0]:
            raise ValueError(f"batch sizes differ: source {source.shape[0]}, edited {edited.shape[0]}, "
                             f"target {target.shape[0]}")
        dev = self.classifier.device
        memo = extras.get("judge_memo")
        if isinstance(memo, JudgeMemo) and len(memo) == source.shape[0]:
            pred_src = (classifier_logits(self.classifier, memo, "source") > 0).long()  # = classifier.predict
            pred_edit = (classifier_logits(self.classifier, memo, "edited") > 0).long()
        else:
            pred_src = self.classifier.predict(source)
            pred_edit = self.classifier.predict(edited)
        target = target.to(dev).long().view(-1)
        labels = labels.to(dev).long()
        self.n += int(source.shape[0])
        self.success += int((pred_edit[:, self.attr] == target).sum())
        self.source_correct += int((pred_src[:, self.attr] == labels[:, self.attr]).sum())
        self.agree += int((pred_edit[:, self.others] == pred_src[:, self.others]).sum())

    def finalize(self) -> dict[str, float]:
        """NaN before any image; ``attr_preserve`` is absent for a single-attribute dataset."""
        n = self.n if self.n else float("nan")
        tag = self.classifier.tag
        out = {
            f"attr_success_{tag}": self.success / n,
            f"attr_source_acc_{tag}": self.source_correct / n,
        }
        if len(self.others):
            out[f"attr_preserve_{tag}"] = self.agree / (n * len(self.others))
        return out
