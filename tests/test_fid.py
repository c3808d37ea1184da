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
    fid_floor,
    frechet_from_moments,
    frechet_from_samples,
    kid_from_samples,
    kid_with_se,
    one_blas_thread,
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


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal dicts of floats, NaN equal to NaN."""
    return a.keys() == b.keys() and all(a[k] == b[k] or (np.isnan(a[k]) and np.isnan(b[k])) for k in a)


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
    assert _same(again, same) and cached[0].stat().st_mtime_ns == stamp
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
    assert set(out) == {f"{p}_clean_rescnn_test" for p in ("fid", "fid_floor", "fid_n_below_dim", "kid", "kid_se")}
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


# -- small n: the real-vs-real floor, KID's standard error, the n < d flag ----------------------------

def _gaussian(n: int, dim: int, seed: int, shift: float = 0.0) -> np.ndarray:
    mix = np.random.default_rng(100).normal(size=(dim, dim)) / np.sqrt(dim)  # one covariance for all draws
    return (np.random.default_rng(seed).normal(size=(n, dim)) @ mix + shift).astype(np.float32)


@pytest.mark.parametrize("n_a, n_b, dim", [(40, 40, 64), (40, 55, 64), (300, 250, 8), (60, 90, 40)])
def test_frechet_from_samples_matches_the_moment_route(n_a, n_b, dim):
    a, b = _gaussian(n_a, dim, 1), _gaussian(n_b, dim, 2, shift=0.3)
    ma, mb = GaussianMoments(), GaussianMoments()
    ma.update(a)
    mb.update(b)
    ours = frechet_from_samples(a, b)
    assert ours == pytest.approx(frechet_from_moments(ma, mb), rel=1e-6)
    if n_a > dim and n_b > dim:  # full rank: scipy's sqrtm is accurate there
        assert ours == pytest.approx(_scipy_fid(a.astype(np.float64), b.astype(np.float64)), rel=1e-9)
    assert np.isnan(frechet_from_samples(a[:1], b))


def test_floor_is_positive_and_falls_as_n_grows():
    pool = _gaussian(4000, 32, 3)
    floors = [fid_floor(pool, n, seed=0) for n in (10, 40, 160, 640, 2000)]
    assert all(why == "" for _, why in floors)
    values = [v for v, _ in floors]
    assert all(v > 0 for v in values)
    assert all(b < a for a, b in zip(values, values[1:])), values
    assert fid_floor(pool, 40, seed=0) == floors[1]  # deterministic: seeded by (seed, n)
    assert fid_floor(pool, 40, seed=1)[0] != values[1]


def test_floor_is_nan_with_too_few_real_images(caplog):
    pool = _gaussian(30, 8, 4)
    value, why = fid_floor(pool, 16)
    assert np.isnan(value) and "fewer than 2n = 32" in why
    assert not np.isnan(fid_floor(pool, 15)[0])
    assert np.isnan(fid_floor(pool, 1)[0])
    ds = _dataset()  # 48 test images, about half of each Smiling value: fewer than 2 × 36
    import evaluators.fid as fid_module

    fid_module._FLOOR_WARNED.clear()  # warned once per process and (set, n); earlier tests may have
    with caplog.at_level("WARNING", logger="evaluators.fid"):
        out = _stream(TinyFid(EvalContext(ds, "Smiling", direction=1, device=CPU)), _edited(36), batch=12)
    assert np.isnan(out[f"fid_floor_clean_{TAG}"]) and np.isfinite(out[f"fid_clean_{TAG}"])
    assert "FID floor" in caplog.text and "fewer than 2n = 72" in caplog.text


@pytest.mark.parametrize("n1, n2, subsets", [(30, 30, 100), (40, 70, 100), (1100, 1300, 8)])
def test_kid_value_is_cleanfids_kernel_distance_to_the_bit(n1, n2, subsets):
    from cleanfid.fid import kernel_distance

    f1, f2 = _gaussian(n1, 16, 5, shift=0.2), _gaussian(n2, 16, 6)
    before = np.random.get_state()[1].copy()
    ours = kid_with_se(f1, f2, seed=3, num_subsets=subsets)[0]
    assert np.array_equal(np.random.get_state()[1], before)  # numpy's global generator untouched
    np.random.seed(3)
    with one_blas_thread():
        ref = kernel_distance(f1, f2, num_subsets=subsets)  # subsets of 1,000 in the last case
    assert ours == ref
    if subsets == 100:
        assert kid_from_samples(f1, f2, seed=3) == ref


def test_kid_standard_error_is_positive_finite_and_shrinks():
    for shift in (0.5, 0.0):  # different distributions, then the same one
        ses = []
        for n in (40, 160, 640):
            kid, se = kid_with_se(_gaussian(n, 16, 7, shift=shift), _gaussian(n, 16, 8), seed=0, num_subsets=20)
            assert np.isfinite(kid) and np.isfinite(se) and se > 0
            ses.append(se)
        assert ses[0] > ses[1] > ses[2], (shift, ses)
    kid, se = kid_with_se(_gaussian(400, 16, 7, shift=0.5), _gaussian(400, 16, 8), seed=0)
    assert kid > 3 * se  # a clear difference stands out of its error bar
    assert all(np.isnan(v) for v in kid_with_se(_gaussian(1, 16, 7), _gaussian(9, 16, 8)))


def test_kid_standard_error_matches_the_spread_over_fresh_samples():
    """The first-order SE is a standard error: near (a little above) the spread of KID over independent draws."""
    kids, ses = [], []
    for r in range(12):
        kid, se = kid_with_se(_gaussian(200, 8, 1000 + r, shift=0.3), _gaussian(200, 8, 2000 + r), seed=r,
                              num_subsets=5)
        kids.append(kid)
        ses.append(se)
    assert 0.5 < np.std(kids, ddof=1) / np.mean(ses) < 2.0


def test_n_below_dim_flag():
    ds = _dataset()
    few = _stream(TinyFid(EvalContext(ds, "Smiling", direction=0, device=CPU)), _edited(10), batch=4)
    many = _stream(TinyFid(EvalContext(ds, "Smiling", direction=0, device=CPU)), _edited(16), batch=4)
    assert few[f"fid_n_below_dim_clean_{TAG}"] == 1.0  # 10 images, 16-d features
    assert many[f"fid_n_below_dim_clean_{TAG}"] == 0.0  # n = d: the covariance can be full rank


def test_small_n_rows_are_batch_size_invariant():
    ds = _dataset()
    outs = [_stream(TinyFid(EvalContext(ds, "Smiling", direction=0, device=CPU)), _edited(10), batch=b)
            for b in (10, 3, 1)]
    assert np.isfinite(outs[0][f"fid_floor_clean_{TAG}"]) and outs[0][f"fid_floor_clean_{TAG}"] > 0
    assert np.isfinite(outs[0][f"kid_se_clean_{TAG}"]) and outs[0][f"kid_se_clean_{TAG}"] > 0
    for out in outs[1:]:
        for p in ("fid_floor", "fid_n_below_dim"):  # functions of the cached real sample and n only
            assert out[f"{p}_clean_{TAG}"] == outs[0][f"{p}_clean_{TAG}"]
        assert out[f"kid_se_clean_{TAG}"] == pytest.approx(outs[0][f"kid_se_clean_{TAG}"], rel=1e-6)
        assert out[f"fid_clean_{TAG}"] == pytest.approx(outs[0][f"fid_clean_{TAG}"], rel=1e-6)
