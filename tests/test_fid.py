"""FID / KID: equal to clean-fid on saved folders, to a scipy reference, batch-invariant, cached, offline errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from benchmark.assets import MissingAssetError
from benchmark.bench_evaluators import SmoothNoiseFaces, smooth_images
from benchmark.registry import EVALUATORS
from evaluators.base import EvalContext, clear_shared_models
from evaluators.features import ClassifierFeatures, TinyRandomNet, tiny_random_features, to_uint8
from evaluators.fid import (
    ClassifierFid,
    CleanFidEvaluator,
    FeatureReservoir,
    GaussianMoments,
    frechet_from_moments,
    kid_from_samples,
)

CPU = torch.device("cpu")
TAG = "tinyrand16s0"


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")


class TinyFid(CleanFidEvaluator):
    """The real streaming FID/KID code with a seeded random net in place of Inception."""

    def build_extractor(self, ctx):
        return tiny_random_features(CPU, seed=0, dim=16)


def _dataset() -> SmoothNoiseFaces:
    return SmoothNoiseFaces(resolution=32, n_test=48, seed=3)


def _edited(n: int = 36) -> torch.Tensor:
    x = smooth_images(n, 32, seed=11) * 0.8
    return to_uint8(x).float() / 127.5 - 1.0


def _stream(ev, images: torch.Tensor, batch: int) -> dict[str, float]:
    for i in range(0, len(images), batch):
        b = images[i:i + batch]
        ev.update(b, b, torch.zeros(len(b), 2), torch.full((len(b),), ev.ctx.direction))
    return ev.finalize()


def _write_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, img in enumerate(to_uint8(images)):
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:05d}.png")
    return folder


def _real_images(ds: SmoothNoiseFaces, attribute: str, value: int) -> torch.Tensor:
    split = ds.split("test")
    keep = split.labels_matrix()[:, ds.attribute_index(attribute)] == value
    return torch.stack([split[i]["image"] for i in torch.nonzero(keep).flatten().tolist()])


def test_fid_and_kid_equal_cleanfid_on_saved_folders(tmp_path):
    from cleanfid import fid as cfid

    ds = _dataset()
    ours = _stream(TinyFid(EvalContext(ds, "Smiling", direction=1, device=CPU)), _edited(), batch=10)
    d_edit = _write_pngs(_edited(), tmp_path / "edited")
    d_real = _write_pngs(_real_images(ds, "Smiling", 1), tmp_path / "real")
    net = TinyRandomNet(seed=0, dim=16)
    ref_fid = cfid.compute_fid(str(d_edit), str(d_real), mode="clean", custom_feat_extractor=net,
                               num_workers=0, batch_size=8, device=CPU, verbose=False)
    assert ref_fid > 0
    assert ours[f"fid_clean_{TAG}"] == pytest.approx(ref_fid, rel=1e-3)
    # KID: clean-fid's compute_kid has no custom-extractor hook, so use its folder features + kernel_distance
    f_edit = cfid.get_folder_features(str(d_edit), net, num_workers=0, batch_size=8, device=CPU, mode="clean",
                                      verbose=False)
    f_real = cfid.get_folder_features(str(d_real), net, num_workers=0, batch_size=8, device=CPU, mode="clean",
                                      verbose=False)
    np.random.seed(0)
    ref_kid = cfid.kernel_distance(f_edit, f_real)
    assert ours[f"kid_clean_{TAG}"] == pytest.approx(ref_kid, rel=1e-3, abs=1e-9)


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * root))


def test_frechet_from_streamed_moments_matches_scipy_reference():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8)) + 5.0  # large mean: exercises the shifted sums
    b = rng.normal(size=(250, 8)) * 1.5 + 4.0
    ma, mb = GaussianMoments(), GaussianMoments()
    for i in range(0, 300, 37):
        ma.update(a[i:i + 37])
    mb.update(b)
    np.testing.assert_allclose(ma.cov(), np.cov(a, rowvar=False), rtol=1e-10, atol=1e-12)
    assert frechet_from_moments(ma, mb) == pytest.approx(_scipy_fid(a, b), rel=1e-6)


def test_batch_size_invariance():
    ds = _dataset()
    one = _stream(TinyFid(EvalContext(ds, "Smiling", direction=0, device=CPU)), _edited(), batch=36)
    many = _stream(TinyFid(EvalContext(ds, "Smiling", direction=0, device=CPU)), _edited(), batch=5)
    assert many[f"fid_clean_{TAG}"] == pytest.approx(one[f"fid_clean_{TAG}"], rel=1e-6)
    assert many[f"kid_clean_{TAG}"] == pytest.approx(one[f"kid_clean_{TAG}"], rel=1e-6, abs=1e-12)


def test_reservoir_is_bounded_uniform_and_batch_invariant():
    feats = np.random.default_rng(1).normal(size=(500, 3)).astype(np.float32)
    feats[:, 0] = np.arange(500)  # row ids
    small = FeatureReservoir(cap=1000)
    small.update(feats)
    np.testing.assert_array_equal(small.features(), feats)  # below the cap: everything, in order
    samples = []
    for batch in (500, 64, 1):
        r = FeatureReservoir(cap=50, seed=7)
        for i in range(0, 500, batch):
            r.update(feats[i:i + batch])
        assert len(r) == 50
        samples.append(r.features())
    for s in samples[1:]:
        np.testing.assert_array_equal(s, samples[0])
    ids = samples[0][:, 0]
    assert len(set(ids)) == 50 and np.all(np.diff(ids) > 0)
    assert ids.max() > 250 and ids.min() < 250  # drawn from the whole stream, not its head
    other = FeatureReservoir(cap=50, seed=8)
    other.update(feats)
    assert not np.array_equal(other.features(), samples[0])


def test_fid_of_real_set_with_itself_is_zero_and_cached():
    ds = _dataset()
    real = _real_images(ds, "Smiling", 1)
    same = _stream(TinyFid(EvalContext(ds, "Smiling", direction=1, device=CPU)), real, batch=16)
    other = _stream(TinyFid(EvalContext(ds, "Smiling", direction=1, device=CPU)), _real_images(ds, "Smiling", 0), 16)
    assert other[f"fid_clean_{TAG}"] > 0
    assert abs(same[f"fid_clean_{TAG}"]) < 1e-6 * other[f"fid_clean_{TAG}"]
    from evaluators.features import fid_cache_dir

    cached = sorted(fid_cache_dir().glob("*/stats.npz"))
    assert len(cached) == 1  # the reference statistics of (Smiling, 1), computed once
    stamp = cached[0].stat().st_mtime_ns
    again = _stream(TinyFid(EvalContext(ds, "Smiling", direction=1, device=CPU)), real, batch=16)
    assert again == same and cached[0].stat().st_mtime_ns == stamp
    _stream(TinyFid(EvalContext(ds, "Smiling", direction=0, device=CPU)), real, batch=16)
    assert len(list(fid_cache_dir().glob("*/stats.npz"))) == 2  # another value, another key


def test_only_images_of_the_direction_are_counted():
    ds = _dataset()
    imgs = _edited()
    ev = TinyFid(EvalContext(ds, "Smiling", direction=1, device=CPU))
    target = torch.tensor([1, 0] * 18)
    ev.update(imgs, imgs, torch.zeros(36, 2), target)
    assert ev.stats.moments.n == 18
    alone = _stream(TinyFid(EvalContext(ds, "Smiling", direction=1, device=CPU)), imgs[target == 1], 18)
    assert ev.finalize()[f"fid_clean_{TAG}"] == pytest.approx(alone[f"fid_clean_{TAG}"], rel=1e-9)


class _FakeClassifier:
    """Stands in for evaluators.classifier's object: a seeded conv net on native-resolution images."""

    tag = "rescnn_test"

    def __init__(self):
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5, stride=2), torch.nn.ReLU(),
                                       torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())

    @torch.no_grad()
    def features(self, images):
        return self.net(images)


def test_classifier_fid_reports_its_own_name_and_matches_direct_features():
    clf = _FakeClassifier()

    class Fid(ClassifierFid):
        def load_classifier(self, ctx):
            return clf

    ds = _dataset()
    out = _stream(Fid(EvalContext(ds, "Smiling", direction=1, device=CPU)), _edited(), batch=8)
    assert set(out) == {"fid_clean_rescnn_test", "kid_clean_rescnn_test"}
    a = clf.features(_edited()).double().numpy()
    b = clf.features(_real_images(ds, "Smiling", 1)).double().numpy()
    assert out["fid_clean_rescnn_test"] == pytest.approx(_scipy_fid(a, b), rel=1e-5)
    assert out["kid_clean_rescnn_test"] == pytest.approx(
        kid_from_samples(a.astype(np.float32), b.astype(np.float32), 0), rel=1e-4)
    assert isinstance(Fid(EvalContext(ds, "Smiling", direction=1, device=CPU)).extractor, ClassifierFeatures)


def test_missing_inception_weights_offline_raise_one_clear_error(tmp_path):
    clear_shared_models()
    ctx = EvalContext(_dataset(), "Smiling", direction=1, device=CPU)
    with pytest.raises(MissingAssetError) as err:
        EVALUATORS.create("fid_inception", ctx)
    msg = str(err.value)
    assert "inception-2015-12-05.pt" in msg
    assert str(tmp_path / "cache" / "fid" / "inception-2015-12-05.pt") in msg
    assert "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt" in msg
    assert "FACEEDIT_OFFLINE" in msg
