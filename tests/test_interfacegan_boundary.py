"""InterFaceGAN boundaries and latent manipulation: the official .npy files, SVM fitting, edits, conditional normals.

The real boundary files come from ../shared/data/samples/interfacegan_boundaries (the 39
files of genforce/interfacegan at commit 8da3fc0 under head/, and the 156 InterFaceGAN++
files of commit 150882e); they are read in place, never copied.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.assets import sha256_file
from methods.interfacegan.assets import OFFICIAL_BOUNDARY_SHA256, boundary_asset
from methods.interfacegan.boundary import chosen_count, load_boundary, save_boundary, train_boundary
from methods.interfacegan.manipulate import (edit_latent, linear_interpolate, move_to_distance, project_boundary,
                                             shift_along, signed_distance, target_distance)

BOUNDARIES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "samples" / "interfacegan_boundaries"
HEAD = BOUNDARIES / "head" / "boundaries"
needs_files = pytest.mark.skipif(not HEAD.is_dir(), reason=f"official boundary samples absent ({HEAD})")


def official(stem: str) -> np.ndarray:
    return load_boundary(HEAD / f"{stem}_boundary.npy")


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# -- the official files -----------------------------------------------------------------------------


@needs_files
def test_every_official_boundary_file_loads_as_a_unit_1x512_normal():
    files = sorted(BOUNDARIES.rglob("*.npy"))
    assert len(files) >= 39
    worst = 0.0
    for f in files:
        b = load_boundary(f)
        assert b.shape == (1, 512) and b.dtype == np.float64
        worst = max(worst, abs(float(np.linalg.norm(b)) - 1.0))
    # measured: all 195 files are unit norm within 1.2e-7 (float32 rounding in the InterFaceGAN++ set)
    assert worst < 1e-6, f"largest deviation from unit norm: {worst:.3e}"
    raw = np.load(HEAD / "stylegan_ffhq_smile_boundary.npy")
    assert raw.shape == (1, 512) and raw.dtype == np.float64  # the release format itself


@needs_files
def test_declared_boundary_hashes_are_those_of_the_released_files():
    stems = sorted(p.name[: -len("_boundary.npy")] for p in HEAD.glob("*_boundary.npy"))
    assert stems == sorted(OFFICIAL_BOUNDARY_SHA256)
    for stem in stems:
        asset = boundary_asset(stem)
        path = HEAD / asset.filename
        assert sha256_file(path) == asset.sha256 and path.stat().st_size == asset.size
        assert asset.url.endswith(f"/boundaries/{asset.filename}") and "raw.githubusercontent.com" in asset.url
    with pytest.raises(KeyError, match="unknown official InterFaceGAN boundary"):
        boundary_asset("stylegan_ffhq_beard")


@needs_files
@pytest.mark.parametrize("stem", ["pggan_celebahq_smile", "stylegan_ffhq_age", "stylegan_celebahq_gender_w"])
def test_a_real_boundary_moves_a_code_along_its_normal(stem):
    n = official(stem)
    z = torch.randn(4, 512, generator=torch.Generator().manual_seed(0))
    z = z / z.norm(dim=1, keepdim=True) * math.sqrt(512)  # official Z codes have norm √512
    target = torch.tensor([1.0, 0.0, 1.0, 0.0])
    edited = edit_latent(z, n, target)
    assert edited.dtype == z.dtype and edited.shape == z.shape
    assert torch.allclose(signed_distance(edited, n), torch.tensor([3.0, -3.0, 3.0, -3.0]), atol=1e-4)
    step = (edited - z).double().numpy()
    for row in step:  # the move is along ±n only
        assert abs(abs(_cos(row, n)) - 1.0) < 1e-6
    half = edit_latent(z, n, target, strength=0.5)
    d0 = signed_distance(z, n)
    assert torch.allclose(signed_distance(half, n), 0.5 * d0 + 0.5 * target_distance(target).float(), atol=1e-4)
    assert torch.equal(edit_latent(z, n, target, strength=0.0), z)


@needs_files
def test_linear_interpolate_matches_genforce_semantics():
    n = official("pggan_celebahq_pose")
    z = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    codes = linear_interpolate(z, n)  # numpy in, numpy out
    assert isinstance(codes, np.ndarray) and codes.shape == (10, 512) and codes.dtype == np.float32
    assert np.allclose(codes @ n.T, np.linspace(-3, 3, 10).reshape(-1, 1), atol=1e-4)
    wp = np.random.default_rng(1).standard_normal((1, 18, 512)).astype(np.float32)
    shifted = linear_interpolate(wp, n, -2.0, 2.0, 5)  # W+: shifted by d·n on every layer
    assert shifted.shape == (5, 18, 512)
    expected = wp + np.linspace(-2, 2, 5).reshape(-1, 1, 1) * n.reshape(1, 1, -1)
    assert np.allclose(shifted, expected, atol=1e-5)


@needs_files
def test_project_boundary_reproduces_the_released_conditional_boundaries():
    checked = 0
    for path in sorted(HEAD.glob("*_c_*_boundary.npy")):
        stem = path.name[: -len("_boundary.npy")]
        head, conds = stem.split("_c_")
        model, primal = head.rsplit("_", 1)
        cond_stems = [f"{model}_{c}" for c in conds.split("_")]
        got = project_boundary(official(head), *[official(c) for c in cond_stems])
        assert _cos(got, load_boundary(path)) > 1 - 1e-9, stem
        checked += 1
    assert checked == 13


@needs_files
@pytest.mark.parametrize("conditions", [["gender"], ["gender", "eyeglasses"], ["gender", "eyeglasses", "smile"],
                                        ["gender", "eyeglasses", "smile", "pose"]])
def test_conditional_directions_are_orthogonal_to_their_conditions(conditions):
    primal = official("pggan_celebahq_age")
    conds = [official(f"pggan_celebahq_{c}") for c in conditions]
    new = project_boundary(primal, *conds)
    assert new.shape == (1, 512) and abs(np.linalg.norm(new) - 1) < 1e-9
    for c in conds:
        assert abs((new @ c.T).item()) < 1e-6
    assert _cos(new, primal) > 0.5  # still the primal attribute
    # editing along it keeps every condition's distance
    z = np.random.default_rng(2).standard_normal((3, 512))
    edited = edit_latent(z, new, np.array([1.0, 0.0, 1.0]))
    for c in conds:
        assert np.allclose(edited @ c.T, z @ c.T, atol=1e-6)


def test_project_boundary_edge_cases():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((1, 64)) for _ in range(3))
    # two conditions: genforce's closed form agrees with least squares
    closed = project_boundary(a, b, c)
    basis = np.concatenate([b / np.linalg.norm(b), c / np.linalg.norm(c)])
    ls = a - (basis.T @ np.linalg.lstsq(basis.T, a.T, rcond=None)[0]).T
    assert _cos(closed, ls) > 1 - 1e-9
    assert np.allclose(project_boundary(a), a / np.linalg.norm(a))
    t = project_boundary(torch.from_numpy(a).float(), torch.from_numpy(b))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    assert abs((t @ torch.from_numpy(b).float().T).item()) < 1e-5
    with pytest.raises(ValueError, match="span of the conditions"):
        project_boundary(b + c, b, c, rng.standard_normal((1, 64)))
    with pytest.raises(ValueError, match="dimension"):
        project_boundary(a, rng.standard_normal((1, 32)))


# -- edits ------------------------------------------------------------------------------------------


def test_edit_reaches_the_signed_distance_and_strength_zero_is_identity():
    rng = np.random.default_rng(0)
    n = rng.standard_normal((1, 32))
    n /= np.linalg.norm(n)
    z = torch.from_numpy(rng.standard_normal((6, 32))).float()
    target = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.float32)
    for strength in (1.0, 2.0):
        d = signed_distance(edit_latent(z, n, target, strength=strength, max_distance=2.5), n)
        d0 = signed_distance(z, n)
        assert torch.allclose(d, d0 + strength * (target_distance(target, 2.5).float() - d0), atol=1e-5)
    assert torch.equal(edit_latent(z, n, target, strength=0.0), z)
    rel = edit_latent(z, n, target, mode="relative", strength=0.5)
    assert torch.allclose(signed_distance(rel, n) - signed_distance(z, n), 1.5 * (2 * target - 1), atol=1e-5)
    assert torch.allclose(signed_distance(move_to_distance(z, n, 0.7), n), torch.full((6,), 0.7), atol=1e-5)
    with pytest.raises(ValueError, match="targets must be 0 or 1"):
        edit_latent(z, n, torch.full((6,), 0.5))
    with pytest.raises(ValueError, match="dimension 32"):
        edit_latent(z, np.ones((1, 16)), target)


def test_wplus_edits_every_layer_or_a_chosen_range():
    rng = np.random.default_rng(1)
    n = rng.standard_normal(16)
    n /= np.linalg.norm(n)
    wp = torch.from_numpy(rng.standard_normal((2, 6, 16))).float()
    target = torch.tensor([1.0, 0.0])
    out = edit_latent(wp, n, target)  # genforce: shift by d·n on every layer
    shift = signed_distance(out, n) - signed_distance(wp, n)
    assert torch.allclose(shift, torch.tensor([[3.0] * 6, [-3.0] * 6]), atol=1e-5)
    part = edit_latent(wp, n, target, layers=range(0, 3))
    shift = signed_distance(part, n) - signed_distance(wp, n)
    assert torch.allclose(shift[:, :3], torch.tensor([[3.0] * 3, [-3.0] * 3]), atol=1e-5)
    assert torch.equal(part[:, 3:], wp[:, 3:])
    absolute = edit_latent(wp, n, target, mode="absolute", layers=[4, 5])
    assert torch.allclose(signed_distance(absolute, n)[:, 4:], torch.tensor([[3.0] * 2, [-3.0] * 2]), atol=1e-5)
    assert torch.equal(absolute[:, :4], wp[:, :4])
    assert torch.equal(edit_latent(wp, n, target, strength=0.0), wp)
    assert torch.allclose(shift_along(wp, n, 1.0) - wp, torch.from_numpy(n).float().expand(2, 6, 16), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        edit_latent(wp, n, target, layers=[6])


# -- fitting ----------------------------------------------------------------------------------------


def planted(num: int, dim: int, seed: int, offset: float = 0.0, noise: float = 0.1):
    rng = np.random.default_rng(seed)
    normal = rng.standard_normal(dim)
    normal /= np.linalg.norm(normal)
    codes = rng.standard_normal((num, dim)).astype(np.float32)
    return codes, codes @ normal + offset + noise * rng.standard_normal(num), normal


def test_train_boundary_recovers_a_planted_plane():
    codes, scores, normal = planted(10_000, 128, seed=0)
    b, stats = train_boundary(codes, scores[:, None])  # genforce's [N, 1] scores
    assert b.shape == (1, 128) and b.dtype == np.float32 and abs(np.linalg.norm(b) - 1) < 1e-6
    assert _cos(b, normal) >= 0.95  # measured 0.98; the sign points towards high scores
    assert stats["chosen_num"] == 200 and stats["train_num"] == 140 and stats["val_num"] == 60
    assert stats["remaining_num"] == 10_000 - 400
    assert stats["val_accuracy"] == 1.0 and stats["remaining_accuracy"] > 0.85
    again, _ = train_boundary(codes, scores, seed=0)
    assert np.array_equal(b, again)  # seeded


def test_remaining_codes_are_labelled_by_the_midpoint_of_the_score_range():
    # all scores positive: a sign threshold would call every middle code positive
    codes, scores, normal = planted(6_000, 32, seed=1, offset=10.0)
    b, stats = train_boundary(codes, scores, chosen_num_or_ratio=300, split_ratio=0.8)
    assert stats["decision_value"] == pytest.approx((scores.max() + scores.min()) / 2)
    assert 0.35 < stats["remaining_positive"] / stats["remaining_num"] < 0.65
    assert stats["remaining_accuracy"] > 0.85
    assert stats["chosen_num"] == 300 and stats["train_num"] == 240
    assert _cos(b, normal) >= 0.95


def test_train_boundary_filters_invalid_scores_and_rejects_bad_input():
    codes, scores, _ = planted(2_000, 16, seed=2)
    scores[:50] = -1.0
    scores[50:60] = np.nan
    _, stats = train_boundary(torch.from_numpy(codes), torch.from_numpy(scores), invalid_value=-1.0)
    assert stats["num_invalid"] == 60 and stats["num_samples"] == 1_940
    with pytest.raises(ValueError, match="share scores"):
        train_boundary(codes, np.ones(2_000))
    with pytest.raises(ValueError, match="too few codes"):
        train_boundary(codes[:40], scores[:40])
    with pytest.raises(ValueError, match="num_samples"):
        train_boundary(codes, scores[:10])
    with pytest.raises(ValueError, match="flatten W\\+"):
        train_boundary(codes.reshape(2_000, 4, 4), scores)
    with pytest.raises(ValueError, match="positive"):
        train_boundary(codes, scores, chosen_num_or_ratio=0)


def test_chosen_count_follows_genforce():
    assert chosen_count(500_000, 0.02) == 10_000
    assert chosen_count(100, 1.0) == 50  # ratio 1 means all, capped at half
    assert chosen_count(100, 30) == 30 and chosen_count(100, 80) == 50


# -- files ------------------------------------------------------------------------------------------


def test_load_and_save_boundary_check_what_they_read(tmp_path):
    n = np.random.default_rng(0).standard_normal((1, 512))
    n /= np.linalg.norm(n)
    path = save_boundary(tmp_path / "b", n)
    assert path.name == "b.npy" and np.array_equal(load_boundary(path), n)
    np.save(tmp_path / "flat.npy", n.ravel().astype(np.float32))
    assert load_boundary(tmp_path / "flat.npy").shape == (1, 512)
    np.save(tmp_path / "long.npy", 2 * n)
    with pytest.raises(ValueError, match="norm 2.0"):
        load_boundary(tmp_path / "long.npy")
    assert np.allclose(load_boundary(tmp_path / "long.npy", renormalise=True), n)
    np.save(tmp_path / "shape.npy", np.zeros((2, 512)))
    with pytest.raises(ValueError, match="shape \\(1, 512\\)"):
        load_boundary(tmp_path / "shape.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a plain .npy"):
        load_boundary(tmp_path / "obj.npy")
    np.save(tmp_path / "int.npy", np.ones((1, 512), dtype=np.int64))
    with pytest.raises(ValueError, match="float array"):
        load_boundary(tmp_path / "int.npy")
    with pytest.raises(FileNotFoundError):
        load_boundary(tmp_path / "absent.npy")
    with pytest.raises(ValueError, match="unit norm"):
        save_boundary(tmp_path / "c.npy", 3 * n)


@needs_files
def test_fetch_boundary_verifies_a_cached_file_and_explains_a_missing_one(tmp_path):
    import shutil

    from benchmark.assets import MissingAssetError
    from methods.interfacegan.assets import fetch_boundary

    asset = boundary_asset("stylegan_ffhq_smile")
    dest = asset.path(tmp_path)
    dest.parent.mkdir(parents=True)
    shutil.copyfile(HEAD / asset.filename, dest)  # into a temporary cache, not the repository
    assert np.array_equal(fetch_boundary("stylegan_ffhq_smile", cache=tmp_path, allow_download=False),
                          official("stylegan_ffhq_smile"))
    with pytest.raises(MissingAssetError, match="stylegan_ffhq_age_boundary.npy"):
        fetch_boundary("stylegan_ffhq_age", cache=tmp_path, allow_download=False)
