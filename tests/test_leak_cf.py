"""Region leakage and counterfactual distances: definitions, streaming, undefined cases, dataset support."""
from __future__ import annotations

import logging
import math

import pytest
import torch

from benchmark.bench_evaluators import SmoothNoiseFaces, box_masks, smooth_images
from benchmark.data.base import DataError
from benchmark.registry import EVALUATORS
from evaluators.base import EvalContext, MetricUnavailable, clear_shared_models
from evaluators.counterfactual import CounterfactualEvaluator
from evaluators.leak import LeakEvaluator
from evaluators.lpips_metric import build_lpips, lpips_distance

CPU = torch.device("cpu")
R = 32


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    clear_shared_models()


def _ctx(ds=None) -> EvalContext:
    return EvalContext(ds or SmoothNoiseFaces(R), "Smiling", direction=1, device=CPU)


def _update(ev, src, edited, **extras):
    ev.update(src, edited, torch.zeros(len(src), 2), torch.ones(len(src)), **extras)


# -- leak ----------------------------------------------------------------------------------------

def test_leak_is_ratio_of_sums_over_the_cell():
    src = smooth_images(6, R, seed=0)
    mask = box_masks(6, R)
    inside_edit = src + 0.2 * mask  # changes inside the region only
    outside_edit = src + 0.1 * (1 - mask)  # changes outside only
    ev = EVALUATORS.create("leak", _ctx())
    _update(ev, src[:3], inside_edit[:3], mask=mask[:3])
    _update(ev, src[3:], outside_edit[3:], mask=mask[3:])
    inside_px, outside_px = mask[0].sum().item(), (1 - mask[0]).sum().item()
    change_in, change_out = 3 * 3 * 0.2 * inside_px, 3 * 3 * 0.1 * outside_px  # images × channels × step × pixels
    assert ev.finalize()["leak"] == pytest.approx(change_out / (change_in + change_out), rel=1e-6)


def test_leak_bounds_and_batch_invariance():
    src = smooth_images(8, R, seed=1)
    edited = (src + 0.3 * smooth_images(8, R, seed=2)).clamp(-1, 1)
    mask = box_masks(8, R)
    one, many = LeakEvaluator(_ctx()), LeakEvaluator(_ctx())
    _update(one, src, edited, mask=mask)
    for i in range(8):
        _update(many, src[i:i + 1], edited[i:i + 1], mask=mask[i:i + 1])
    v = one.finalize()["leak"]
    assert 0 < v < 1
    assert many.finalize()["leak"] == pytest.approx(v, rel=1e-12)
    only_in = LeakEvaluator(_ctx())
    _update(only_in, src, src + 0.5 * mask, mask=mask)
    assert only_in.finalize()["leak"] == 0.0
    everywhere = LeakEvaluator(_ctx())
    _update(everywhere, src, edited, mask=torch.zeros_like(mask))
    assert everywhere.finalize()["leak"] == pytest.approx(1.0)


def test_leak_is_undefined_when_nothing_changed_and_skips_unknown_masks():
    src = smooth_images(4, R, seed=3)
    ev = LeakEvaluator(_ctx())
    _update(ev, src, src.clone(), mask=box_masks(4, R))
    assert math.isnan(ev.finalize()["leak"])
    ev = LeakEvaluator(_ctx())
    mask = box_masks(4, R)
    mask[1:] = float("nan")  # unknown for three images: they must not count
    edited = src + 0.1
    _update(ev, src, edited, mask=mask)
    _update(ev, src, edited, mask=None)
    alone = LeakEvaluator(_ctx())
    _update(alone, src[:1], edited[:1], mask=mask[:1])
    assert ev.finalize()["leak"] == pytest.approx(alone.finalize()["leak"])
    assert ev.skipped == 7


def test_leak_rejects_mismatched_masks_and_maskless_datasets():
    src = smooth_images(2, R, seed=4)
    with pytest.raises(DataError, match="mask"):
        _update(LeakEvaluator(_ctx()), src, src, mask=torch.ones(2, 1, R // 2, R // 2))

    class NoMasks(SmoothNoiseFaces):
        has_masks = False

    assert "no region masks" in LeakEvaluator.supports(NoMasks(R))
    assert LeakEvaluator.supports(SmoothNoiseFaces(R)) is None
    assert LeakEvaluator.requires == {"mask"}


# -- counterfactual --------------------------------------------------------------------------------

class RandLpipsCf(CounterfactualEvaluator):
    def lpips(self):
        return build_lpips(CPU, trunk="random", seed=0)


def test_cf_l1_and_psnr_from_pooled_errors():
    src = smooth_images(5, R, seed=5)
    cf = smooth_images(5, R, seed=6)
    edited = (cf + 0.1 * smooth_images(5, R, seed=7)).clamp(-1, 1)
    ev = RandLpipsCf(_ctx())
    _update(ev, src[:2], edited[:2], counterfactual=cf[:2])
    _update(ev, src[2:], edited[2:], counterfactual=cf[2:])
    out = ev.finalize()
    diff01 = (edited.double() - cf.double()) / 2
    assert out["cf_l1"] == pytest.approx(diff01.abs().mean().item(), rel=1e-9)
    assert out["cf_psnr"] == pytest.approx(10 * math.log10(1 / (diff01 ** 2).mean().item()), rel=1e-9)
    want_lp = lpips_distance(build_lpips(CPU, trunk="random", seed=0), edited, cf).double().mean().item()
    assert out["cf_lpips_alex_v01"] == pytest.approx(want_lp, rel=1e-6)


def test_cf_exact_edit_and_missing_lpips_trunk(caplog, monkeypatch):
    import evaluators.counterfactual as cf_module

    monkeypatch.setattr(cf_module, "_warned_no_lpips", False)
    src = smooth_images(3, R, seed=8)
    cf = smooth_images(3, R, seed=9)
    with caplog.at_level(logging.WARNING):
        ev = EVALUATORS.create("counterfactual", _ctx())  # offline: no LPIPS trunk -> key omitted, logged
    _update(ev, src, cf.clone(), counterfactual=cf)
    out = ev.finalize()
    assert out["cf_l1"] == 0.0 and out["cf_psnr"] == math.inf
    assert "cf_lpips_alex_v01" not in out
    warnings = [r.getMessage() for r in caplog.records if "cf_lpips_alex_v01 omitted" in r.getMessage()]
    assert len(warnings) == 1 and "alexnet-owt-7be5be79.pth" in warnings[0]
    with caplog.at_level(logging.WARNING):
        CounterfactualEvaluator(_ctx())  # a second cell: not logged again
    assert len([r for r in caplog.records if "cf_lpips_alex_v01 omitted" in r.getMessage()]) == 1


def test_cf_requires_counterfactuals():
    src = smooth_images(2, R, seed=10)
    ev = CounterfactualEvaluator(_ctx())
    with pytest.raises(MetricUnavailable):
        _update(ev, src, src, counterfactual=None)
    with pytest.raises(DataError):
        _update(ev, src, src, counterfactual=torch.zeros(2, 3, R + 1, R + 1))

    class NoCf(SmoothNoiseFaces):
        has_counterfactuals = False

    assert "counterfactual" in CounterfactualEvaluator.supports(NoCf(R))
    assert CounterfactualEvaluator.requires == {"counterfactual"}
