"""LPIPS alex v0.1: the evaluator equals the lpips package called directly; trunk loading; offline error."""
from __future__ import annotations

import lpips
import pytest
import torch
import torchvision

from benchmark.assets import MissingAssetError
from benchmark.bench_evaluators import SmoothNoiseFaces, smooth_images
from benchmark.registry import EVALUATORS
from evaluators.base import EvalContext, clear_shared_models
from evaluators.lpips_metric import LpipsEvaluator, build_lpips, load_alexnet_trunk

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub.get_dir() follows it
    clear_shared_models()
    yield
    clear_shared_models()


def _direct_model():
    """The package itself, random trunk (the ImageNet trunk is not on this machine), seed 0."""
    torch.manual_seed(0)
    return lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()


class RandLpips(LpipsEvaluator):
    def model(self):
        return build_lpips(CPU, trunk="random", seed=0)


def _ctx() -> EvalContext:
    return EvalContext(SmoothNoiseFaces(32), "Smiling", direction=1, device=CPU)


def _pairs(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    src = smooth_images(n, 32, seed=1)
    return src, (src + 0.3 * smooth_images(n, 32, seed=2)).clamp(-1, 1)


def _run(ev, src, edited, batch):
    for i in range(0, len(src), batch):
        ev.update(src[i:i + batch], edited[i:i + batch], torch.zeros(len(src[i:i + batch]), 2), torch.ones(batch))
    return ev.finalize()["lpips_alex_v01"]


def test_evaluator_equals_lpips_package_called_directly():
    src, edited = _pairs()
    with torch.no_grad():
        direct = _direct_model()(src, edited).flatten().double().mean().item()
    ours = _run(RandLpips(_ctx()), src, edited, batch=5)
    assert direct > 0
    assert ours == pytest.approx(direct, rel=1e-6)


def test_identical_images_give_zero_and_batch_size_does_not_matter():
    src, edited = _pairs()
    assert _run(RandLpips(_ctx()), src, src.clone(), batch=4) == 0.0
    one = _run(RandLpips(_ctx()), src, edited, batch=12)
    many = _run(RandLpips(_ctx()), src, edited, batch=1)
    assert many == pytest.approx(one, rel=1e-6)


def test_trunk_loader_maps_torchvision_alexnet_weights_into_lpips():
    torch.manual_seed(3)
    alex = torchvision.models.alexnet(weights=None).eval()
    model = build_lpips(CPU, trunk="random", seed=0)
    load_alexnet_trunk(model, alex.state_dict())
    x = smooth_images(2, 64, seed=5)
    with torch.no_grad():
        outs = model.net(x)
        want = alex.features[:12](x)  # lpips' relu5 is the output of features[11]
    torch.testing.assert_close(outs[-1], want)
    with pytest.raises(KeyError):
        load_alexnet_trunk(model, {k: v for k, v in alex.state_dict().items() if k != "features.3.weight"})


def test_missing_trunk_offline_is_one_clear_error(tmp_path):
    with pytest.raises(MissingAssetError) as err:
        EVALUATORS.create("lpips", _ctx())
    msg = str(err.value)
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in msg
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in msg
    assert "FACEEDIT_OFFLINE" in msg


def test_a_missing_asset_is_remembered_until_the_places_change(tmp_path, monkeypatch):
    """shared_model is the one memory of missing weights: a failing factory runs once per key while the
    cache, the offline switch and the hub dir stay put, and again when one of them moves."""
    from evaluators.base import shared_model

    calls = []

    def factory():
        calls.append(1)
        raise MissingAssetError("weights absent: put them in X")

    clear_shared_models()
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "a"))
    for _ in range(3):
        with pytest.raises(MissingAssetError, match="put them in X"):
            shared_model(("test-missing", "cpu"), factory)
    assert len(calls) == 1
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "b"))  # somewhere else: look again
    with pytest.raises(MissingAssetError):
        shared_model(("test-missing", "cpu"), factory)
    assert len(calls) == 2
    clear_shared_models()  # forgets failures too: the weights were put in place meanwhile
    assert shared_model(("test-missing", "cpu"), lambda: "built") == "built"
    clear_shared_models()
