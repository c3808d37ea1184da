"""Region leakage: the share of an edit's pixel change that falls outside the attribute's region.

For each pixel, the change is |edited - source| summed over the 3 channels.
The cell's value is

    leak = sum over images and pixels of change * (1 - mask)  /  sum of change

a ratio of sums, not a mean of per-image ratios: a per-image ratio is
unstable or undefined for images an editor barely touches (a handful of
changed pixels make it jump between 0 and 1) and a mean of ratios gives those
images the same weight as real edits.  The ratio of sums weights every image
by how much it changed, reads as "the share of all the change this method made
that landed outside the region", and streams with two float64 scalars.

Undefined (NaN, shown as "–" in reports) when nothing changed at all, e.g.
the no-op editor.  Items whose mask is unknown (the runner gives a mask of
NaNs, or None for the whole batch) are skipped.
"""
from __future__ import annotations

import logging

import torch

from benchmark.data.base import DataError
from benchmark.registry import register_evaluator
from evaluators.base import Evaluator

log = logging.getLogger(__name__)


def pixel_change(source: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """B×H×W absolute change summed over channels, float64."""
    if source.shape != edited.shape:
        raise DataError(f"source {tuple(source.shape)} and edited {tuple(edited.shape)} images differ in shape")
    return (edited.double() - source.double()).abs().sum(dim=1)


def check_mask(mask: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The B×H×W mask, after checking its shape against the images (B×1×H×W or B×H×W)."""
    b, _, h, w = images.shape
    m = mask[:, 0] if mask.dim() == 4 else mask
    if m.dim() != 3 or tuple(m.shape) != (b, h, w):
        raise DataError(f"region mask of shape {tuple(mask.shape)} does not match images {tuple(images.shape)}; "
                        f"expected {b}×1×{h}×{w}")
    return m


@register_evaluator("leak")
class LeakEvaluator(Evaluator):
    """``leak``: share of the absolute pixel change outside the attribute's region mask (lower is better)."""

    requires = frozenset({"mask"})
    metrics = ("leak",)
    higher_is_better = {"leak": False}
    option_keys = ()

    def reset(self) -> None:
        self.outside = 0.0
        self.total = 0.0
        self.skipped = 0

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        mask = extras.get("mask")
        if mask is None:
            self.skipped += len(source)
            return
        m = check_mask(mask.detach().cpu().double(), source)
        known = ~torch.isnan(m).flatten(1).any(dim=1)
        self.skipped += int((~known).sum())
        if not bool(known.any()):
            return
        change = pixel_change(source[known].cpu(), edited[known].cpu())
        self.outside += float((change * (1.0 - m[known])).sum())
        self.total += float(change.sum())

    def finalize(self) -> dict[str, float]:
        if self.skipped:
            log.info("leak: %d images without a region mask were skipped", self.skipped)
        return {"leak": self.outside / self.total if self.total > 0 else float("nan")}
