"""The attention-mask metrics (evaluators/attention.py): attn_iou and attn_mass_in_region."""
from __future__ import annotations

import math

import pytest
import torch

import evaluators.attention  # noqa: F401  (registers "attention")
from benchmark.data.base import DataError
from benchmark.data.synthfaces.dataset import SynthFaces
from benchmark.registry import EVALUATORS
from evaluators.attention import AttentionEvaluator
from evaluators.base import EvalContext


def _ev() -> AttentionEvaluator:
    return EVALUATORS.create("attention", EvalContext(SynthFaces(32, n_train_ids=2, n_test_ids=2), "Eyeglasses", 1))


def _batch(b: int = 2, r: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = torch.zeros(b, 3, r, r)
    return x, torch.zeros(b, 10), torch.ones(b)


def test_perfect_partial_and_disjoint_masks() -> None:
    x, labels, t = _batch()
    region = torch.zeros(2, 1, 8, 8)
    region[..., :4] = 1  # left half
    ev = _ev()
    ev.update(x, x, labels, t, mask=region, attention=region.clone())
    assert ev.finalize() == {"attn_iou": 1.0, "attn_soft_iou": 1.0, "attn_mass_in_region": 1.0}

    ev.reset()
    att = torch.zeros(2, 1, 8, 8)
    att[..., :, 2:6] = 0.8  # half inside, half outside the region
    ev.update(x, x, labels, t, mask=region, attention=att)
    out = ev.finalize()
    assert out["attn_mass_in_region"] == pytest.approx(0.5)
    assert out["attn_iou"] == pytest.approx(16 / 48)  # per image: |∩| = 8·2, |∪| = 8·6
    assert out["attn_soft_iou"] == pytest.approx(16 * 0.8 / (32 + 16 * 0.8))  # Σ min / Σ max

    ev.reset()
    ev.update(x, x, labels, t, mask=region, attention=1 - region)
    assert ev.finalize() == {"attn_iou": 0.0, "attn_soft_iou": 0.0, "attn_mass_in_region": 0.0}


def test_ratio_of_sums_and_threshold() -> None:
    """An image with faint attention weighs by its mass; below 0.5 a pixel is not in the binarised mask."""
    x, labels, t = _batch()
    region = torch.zeros(2, 1, 8, 8)
    region[..., :4] = 1
    att = torch.zeros(2, 1, 8, 8)
    att[0, :, :, :4] = 1.0       # image 0: all its mass (32) inside
    att[1, :, :, 4:] = 0.25      # image 1: faint (8), all outside, below the threshold
    ev = _ev()
    ev.update(x, x, labels, t, mask=region, attention=att)
    out = ev.finalize()
    assert out["attn_mass_in_region"] == pytest.approx(32 / 40)
    assert out["attn_iou"] == pytest.approx(32 / 64)  # image 1 binarises to nothing: ∩ 0, ∪ = its region
    assert out["attn_soft_iou"] == pytest.approx(32 / (32 + 32 + 8))  # the faint mask still counts outside


def test_no_attention_gives_nan_and_bad_masks_fail() -> None:
    x, labels, t = _batch()
    ev = _ev()
    ev.update(x, x, labels, t, mask=torch.ones(2, 1, 8, 8))
    assert all(math.isnan(v) for v in ev.finalize().values())
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        ev.update(x, x, labels, t, mask=torch.ones(2, 1, 8, 8), attention=torch.full((2, 1, 8, 8), 1.5))
    with pytest.raises(DataError, match="does not match"):
        ev.update(x, x, labels, t, mask=torch.ones(2, 1, 8, 8), attention=torch.ones(2, 1, 4, 4))


def test_declares_its_extras_and_declines_datasets_without_masks() -> None:
    assert AttentionEvaluator.requires == {"mask", "attention"}
    assert AttentionEvaluator.supports(SynthFaces(32, n_train_ids=2, n_test_ids=2)) is None

    class NoMasks:
        name, has_masks = "plain", False

    assert "no region masks" in AttentionEvaluator.supports(NoMasks())  # type: ignore[arg-type]
