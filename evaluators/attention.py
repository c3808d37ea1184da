"""Attention-mask metrics: does an editor's own attention mask lie on the attribute's region?

Editors with a spatial attention mask (SaGAN's SAN: a sigmoid mask m in [0, 1] per pixel) hand it to
the runner through ``EditContext.extras["attention"]`` (B×1×H×W at the image resolution); the runner
passes it to ``update`` as the ``attention`` extra, beside the ground-truth region ``mask`` (SynthFaces
region masks; CelebAMask-HQ masks where present).  No published benchmark reports these numbers.

Per cell (one direction), with R the {0, 1} region mask:

* ``attn_mass_in_region`` = Σ m·R / Σ m: the share of the attention mass that falls inside the region
  (higher is better; 1 = every bit of attention on the region).  A ratio of sums over all images,
  like ``leak``: an image with almost no attention cannot swing it, and it streams in two scalars.
* ``attn_iou`` = Σ |{m ≥ 0.5} ∩ R| / Σ |{m ≥ 0.5} ∪ R|: the intersection over union of the
  binarised mask and the region, with intersections and unions summed over the cell's images
  (the PASCAL VOC convention for a class's IoU).  The threshold 0.5 is part of the metric's
  definition, not an option (a different threshold would be a different metric name).
* ``attn_soft_iou`` = Σ min(m, R) / Σ max(m, R): the same IoU without the threshold (the soft
  Jaccard index; equal to ``attn_iou`` for a {0, 1} mask).  Why both: a soft, low-amplitude mask
  (SaGAN's short CPU fits blend with m ≈ 0.05-0.3 on the region) binarises to nothing, so
  ``attn_iou`` reads 0 while ``attn_soft_iou`` still ranks masks by how much of the region they
  cover and how little outside it.

Both are NaN (shown as "–") when no image had an attention mask (editors without attention), or
when the denominator is 0.  Images whose region mask is unknown (NaN) are skipped.
"""
from __future__ import annotations

import logging

import torch

from benchmark.data.base import DataError
from benchmark.registry import register_evaluator
from evaluators.base import Evaluator
from evaluators.leak import check_mask

log = logging.getLogger(__name__)

IOU_THRESHOLD = 0.5


def check_attention(attention: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The B×H×W attention mask in float64, after checking its shape and range."""
    m = check_mask(attention.detach().cpu().double(), images)
    if not bool(torch.isfinite(m).all()) or float(m.min()) < 0.0 or float(m.max()) > 1.0:
        raise DataError("attention mask values must be finite and in [0, 1]")
    return m


@register_evaluator("attention")
class AttentionEvaluator(Evaluator):
    """``attn_iou`` and ``attn_mass_in_region`` of an editor's attention mask against the region mask."""

    requires = frozenset({"mask", "attention"})
    metrics = ("attn_iou", "attn_soft_iou", "attn_mass_in_region")
    higher_is_better = {"attn_iou": True, "attn_soft_iou": True, "attn_mass_in_region": True}
    option_keys = ()

    def reset(self) -> None:
        self.mass_in = 0.0
        self.mass = 0.0
        self.inter = 0.0
        self.union = 0.0
        self.soft_inter = 0.0
        self.soft_union = 0.0
        self.without_attention = 0
        self.without_region = 0

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        attention, region = extras.get("attention"), extras.get("mask")
        if attention is None:
            self.without_attention += len(source)
            return
        if region is None:
            self.without_region += len(source)
            return
        m = check_attention(attention, source)
        r = check_mask(region.detach().cpu().double(), source)
        known = ~torch.isnan(r).flatten(1).any(dim=1)
        self.without_region += int((~known).sum())
        if not bool(known.any()):
            return
        m, r = m[known], r[known] > 0.5
        rf = r.double()
        self.soft_inter += float(torch.minimum(m, rf).sum())
        self.soft_union += float(torch.maximum(m, rf).sum())
        self.mass_in += float((m * r).sum())
        self.mass += float(m.sum())
        hard = m >= IOU_THRESHOLD
        self.inter += float((hard & r).sum())
        self.union += float((hard | r).sum())

    def finalize(self) -> dict[str, float]:
        if self.without_attention:
            log.info("attention: %d edited images came without an attention mask (the editor exposes none)",
                     self.without_attention)
        if self.without_region:
            log.info("attention: %d images without a region mask were skipped", self.without_region)
        nan = float("nan")
        return {"attn_iou": self.inter / self.union if self.union > 0 else nan,
                "attn_soft_iou": self.soft_inter / self.soft_union if self.soft_union > 0 else nan,
                "attn_mass_in_region": self.mass_in / self.mass if self.mass > 0 else nan}
