"""How well an editor that regenerates its output reproduces the source *before* it edits: inversion rows.

InterFaceGAN (and any latent-space editor) edits a real image by inverting it into the GAN, moving the
code and regenerating. What the GAN cannot reproduce is lost even at strength 0, so part of such an
editor's identity and LPIPS loss is the inversion's, not the edit's. These rows show that part.

The editor puts its reconstruction of the batch (B x 3 x H x W in [-1, 1], the dataset's resolution)
into ``EditContext.extras["inversion"]``; the runner forwards it to evaluators whose ``requires``
holds ``"inversion"`` as ``update(..., inversion=...)``. An editor that does not invert gives no
extra, and the evaluator then reports nothing (no rows) rather than an error.

* ``inv_psnr``: PSNR in dB of the cell's pooled MSE between source and inversion, [0, 1] units
  (pooled as ``cf_psnr`` is: streaming, finite unless every image is reproduced exactly);
* ``inv_l1``: mean absolute error in [0, 1] units;
* ``inv_lpips_alex_v01``: mean LPIPS (alex, v0.1) of inversion vs source, when the LPIPS trunk
  weights are available; offline without them the key is omitted (logged once).

Identity-free by design: identity similarity of the inversion needs a face embedder (a judge) and is
obtained by running the identity evaluators on (source, inversion) pairs.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import torch

from benchmark.assets import MissingAssetError
from benchmark.data.base import DataError
from benchmark.registry import register_evaluator
from evaluators.base import Evaluator, RunningMean
from evaluators.lpips_metric import METRIC as LPIPS_METRIC, lpips_distance, lpips_model

log = logging.getLogger(__name__)
EXTRA = "inversion"
_warned = False


@register_evaluator("inversion")
class InversionEvaluator(Evaluator):
    """``inv_psnr``, ``inv_l1`` and (weights permitting) ``inv_lpips_alex_v01`` of the editor's inversion."""

    requires = frozenset({EXTRA})
    metrics = ("inv_psnr", "inv_l1", f"inv_{LPIPS_METRIC}")
    higher_is_better = {"inv_psnr": True, "inv_l1": False, f"inv_{LPIPS_METRIC}": False}
    option_keys = ("lpips",)

    def _lpips(self) -> Any | None:
        global _warned
        if not self.options.get("lpips", True):
            return None
        try:
            return lpips_model(self.ctx.device)
        except MissingAssetError as exc:
            if not _warned:
                _warned = True
                log.warning("inv_%s omitted: %s", LPIPS_METRIC, exc)
            return None

    def reset(self) -> None:
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.count = 0
        self.lp = RunningMean()
        self.lpips_net = self._lpips()

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        inv = extras.get(EXTRA)
        if inv is None:  # this editor does not invert: nothing to report
            return
        if inv.shape != source.shape:
            raise DataError(f"inversion {tuple(inv.shape)} and source {tuple(source.shape)} differ in shape")
        diff = (inv.detach().cpu().double() - source.detach().cpu().double()) / 2.0  # [-1,1] -> [0,1] units
        self.abs_sum += float(diff.abs().sum())
        self.sq_sum += float((diff * diff).sum())
        self.count += diff.numel()
        if self.lpips_net is not None:
            self.lp.add(lpips_distance(self.lpips_net, inv, source))

    def finalize(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        mse = self.sq_sum / self.count
        out = {"inv_psnr": math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse), "inv_l1": self.abs_sum / self.count}
        if self.lpips_net is not None and self.lp.count:
            out[f"inv_{LPIPS_METRIC}"] = self.lp.value
        return out
