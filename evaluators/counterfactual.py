"""Distance of an edit to SynthFaces' ground-truth counterfactual (the same face, attribute flipped).

* ``cf_l1``: mean absolute error in [0, 1] pixel units over all pixels and channels of the cell.
* ``cf_psnr``: PSNR in dB of the cell's pooled MSE (in [0, 1] units): 10·log10(1 / MSE),
  with MSE the mean squared error over every pixel of every image of the cell.  Pooling
  first (rather than averaging per-image PSNRs) keeps the value finite and stable when
  some edits are exact (per-image PSNR = inf) and makes it a streaming sum; it is +inf
  only when the whole cell matches exactly (the ``oracle`` editor).
* ``cf_gain``: 1 − cf_l1(edit) / cf_l1(no-op), the no-op being the unedited source: the share of
  the pixel distance to the counterfactual that the edit closed.  1 for the exact counterfactual,
  0 for returning the input, negative for an edit that moves away from the truth.  A ground-truth
  figure an editor cannot game by pleasing the attribute judge (a tint that fools the classifier
  closes little of the distance).  Per direction, like every cell metric.  NaN when the source
  already equals the counterfactual everywhere (no flip in the cell).
* ``cf_lpips_alex_v01``: mean LPIPS (alex, v0.1) between edit and counterfactual, when the
  LPIPS trunk weights are available; offline without them the key is omitted (logged once).
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch

from benchmark.assets import MissingAssetError
from benchmark.data.base import DataError, FaceDataset
from benchmark.registry import register_evaluator
from evaluators.base import Evaluator, MetricUnavailable, RunningMean
from evaluators.lpips_metric import METRIC as LPIPS_METRIC, lpips_distance, lpips_model

log = logging.getLogger(__name__)
_warned_no_lpips = False


def _warn_no_lpips_once(exc: Exception) -> None:
    global _warned_no_lpips
    if not _warned_no_lpips:
        _warned_no_lpips = True
        log.warning("cf_%s omitted: %s", LPIPS_METRIC, exc)


@register_evaluator("counterfactual")
class CounterfactualEvaluator(Evaluator):
    """``cf_l1``, ``cf_psnr`` and (weights permitting) ``cf_lpips_alex_v01`` against the ground truth."""

    requires = frozenset({"counterfactual"})
    metrics = ("cf_l1", "cf_psnr", "cf_gain", f"cf_{LPIPS_METRIC}")
    higher_is_better = {"cf_l1": False, "cf_psnr": True, "cf_gain": True, f"cf_{LPIPS_METRIC}": False}
    option_keys = ()

    @classmethod
    def supports(cls, dataset: FaceDataset) -> str | None:
        if not dataset.has_counterfactuals:
            return f"dataset {dataset.name!r} has no ground-truth counterfactuals (SynthFaces only)"
        return None

    def lpips(self) -> Any | None:
        """The LPIPS module, or None when its trunk weights are missing (``shared_model`` remembers that)."""
        try:
            return lpips_model(self.ctx.device)
        except MissingAssetError as exc:
            _warn_no_lpips_once(exc)
            return None

    def reset(self) -> None:
        self.abs_sum = 0.0
        self.noop_abs_sum = 0.0  # cf_l1 the unedited source would score (the no-op), for cf_gain
        self.sq_sum = 0.0
        self.count = 0
        self.lp = RunningMean()
        self.lpips_net = self.lpips()

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        cf = extras.get("counterfactual")
        if cf is None:
            raise MetricUnavailable(f"dataset {self.ctx.dataset.name!r} gave no counterfactuals for this batch")
        if cf.shape != edited.shape:
            raise DataError(f"counterfactual {tuple(cf.shape)} and edited {tuple(edited.shape)} differ in shape")
        diff = (edited.detach().cpu().double() - cf.detach().cpu().double()) / 2.0  # [-1,1] -> [0,1] units
        self.abs_sum += float(diff.abs().sum())
        self.noop_abs_sum += float(((source.detach().cpu().double() - cf.detach().cpu().double()) / 2.0).abs().sum())
        self.sq_sum += float((diff * diff).sum())
        self.count += diff.numel()
        if self.lpips_net is not None:
            self.lp.add(lpips_distance(self.lpips_net, edited, cf))

    def finalize(self) -> dict[str, float]:
        if self.count == 0:
            return {"cf_l1": float("nan"), "cf_psnr": float("nan")}
        mse = self.sq_sum / self.count
        out = {"cf_l1": self.abs_sum / self.count,
               "cf_psnr": 10.0 * math.log10(1.0 / mse) if mse > 0 else float("inf"),
               "cf_gain": 1.0 - self.abs_sum / self.noop_abs_sum if self.noop_abs_sum > 0 else float("nan")}
        if self.lpips_net is not None:
            out[f"cf_{LPIPS_METRIC}"] = self.lp.value
        return out
