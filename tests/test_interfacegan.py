"""InterFaceGAN editor (issue 13, second half): our GAN, labeller, encoder, stages, edits, inversion.

The pipeline tests train the whole editor once (``test`` preset, a tiny SynthFaces, a private
``FACEEDIT_CACHE``) and reuse it; each assertion could fail on a wrong implementation.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import benchmark.data  # noqa: F401 - registers the datasets
from benchmark.data.base import DataError
from benchmark.registry import DATASETS, UnknownNameError
from methods.base import EditContext
from methods.training import FitContext, OptionsError

from methods.interfacegan import train as T
from methods.interfacegan.editor import InterFaceGANEditor, InterFaceGANOptions
from methods.interfacegan.labeller import judge_classifier_dir
from methods.interfacegan.manipulate import edit_latent, project_boundary
from methods.interfacegan.networks import (Discriminator, DiscriminatorConfig, Generator, GeneratorConfig)


# -- networks -------------------------------------------------------------------------------------

def test_generator_spaces_and_fixed_noise():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(resolution=32, z_dim=16, w_dim=16, channel_base=128, channel_max=16)).eval()
    assert G.num_ws == 8  # StyleGAN2: 2 * log2(32) - 2 convs + toRGB = 7 + 1
    z = G.sample(3, "cpu", torch.Generator().manual_seed(1))
    w, wp = G.to_space(z, "w"), G.to_space(z, "wp")
    assert w.shape == (3, 16) and wp.shape == (3, 8, 16)
    with torch.no_grad():
        a, b, c = G.synthesize(z, "z"), G.synthesize(w, "w"), G.synthesize(wp, "wp")
    assert a.shape == (3, 3, 32, 32)
    assert torch.equal(a, b) and torch.equal(b, c)  # same image in all three spaces, fixed noise
    with pytest.raises(ValueError, match="unknown latent space"):
        G.synthesize(z, "s")


def test_mapping_lr_multiplier_scales_bias():
    G = Generator(GeneratorConfig(resolution=8, z_dim=4, w_dim=4, mapping_layers=1))
    fc = G.mapping.fc0
    assert fc.bias_gain == pytest.approx(0.01) and fc.weight_gain == pytest.approx(0.01 / 2)
    with torch.no_grad():
        fc.weight.zero_()
        fc.bias.fill_(100.0)
    w = G.mapping(torch.randn(2, 4), update_w_avg=False)
    assert torch.allclose(w, torch.full_like(w, 1.0 * math.sqrt(2)))  # lrelu(100 * 0.01) * sqrt(2)


def test_discriminator_r1_double_backward():
    D = Discriminator(DiscriminatorConfig(resolution=16, channel_base=64, channel_max=8))
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    from methods.gan import r1_penalty

    pen = r1_penalty(D(x), x)
    pen.backward()
    for p in (D.b16.fromrgb.weight, D.b16.conv1.weight, D.b8.skip.weight, D.b4.fc.weight):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert [f.shape[-1] for f in D.features(x.detach())] == [8, 4]


# -- latent edits (no training) ---------------------------------------------------------------------

def _bare_editor(normal: torch.Tensor, direction: torch.Tensor | None = None, offset: float = 0.0,
                 sigma: float = 1.0, **options) -> InterFaceGANEditor:
    ed = InterFaceGANEditor(preset="test", **options)
    ed.normal = normal / normal.norm()
    ed.direction = (direction if direction is not None else normal) / (direction if direction is not None else normal).norm()
    ed.offset, ed.sigma = offset, sigma
    return ed


def test_edit_codes_is_genforce_edit_for_z_and_w():
    torch.manual_seed(0)
    n = torch.randn(12, dtype=torch.float64)
    codes = torch.randn(5, 12, dtype=torch.float64)
    target = torch.tensor([0, 1, 1, 0, 1.0], dtype=torch.float64)
    ed = _bare_editor(n)
    for s in (0.0, 0.5, 1.0, 2.0):
        ours = ed.edit_codes(codes, target, s)
        ref = edit_latent(codes, n, target, strength=s, max_distance=3.0)
        assert torch.allclose(ours, ref, atol=1e-10)
    assert torch.equal(ed.edit_codes(codes, target, 0.0), codes)
    at_one = ed.edit_codes(codes, target, 1.0) @ (n / n.norm())
    assert torch.allclose(at_one, (2 * target - 1) * 3.0)


def test_edit_codes_offset_sigma_and_wplus_mean():
    torch.manual_seed(1)
    n = torch.randn(8, dtype=torch.float64)
    n = n / n.norm()
    ed = _bare_editor(n, offset=0.7, sigma=2.0)
    wp = torch.randn(4, 5, 8, dtype=torch.float64)
    target = torch.tensor([1, 0, 1, 0.0], dtype=torch.float64)
    out = ed.edit_codes(wp, target, 1.0)
    mean_dist = (out @ n).mean(1) - 0.7
    assert torch.allclose(mean_dist, (2 * target - 1) * 3.0 * 2.0)
    # every layer moved by the same step: layer differences are kept
    assert torch.allclose(out - out[:, :1], wp - wp[:, :1])
    rel = _bare_editor(n, offset=0.7, sigma=2.0, wp_mode="relative").edit_codes(wp, target, 1.0)
    assert torch.allclose((rel - wp) @ n, ((2 * target - 1) * 6.0).view(-1, 1).expand(4, 5))


def test_conditional_edit_keeps_condition_distance():
    torch.manual_seed(2)
    primal, c1, c2 = (torch.randn(1, 16, dtype=torch.float64) for _ in range(3))
    direction = project_boundary(primal, c1, c2)
    ed = _bare_editor(primal.reshape(-1), direction.reshape(-1))
    codes = torch.randn(6, 16, dtype=torch.float64)
    target = torch.tensor([1, 0, 1, 0, 1, 0.0], dtype=torch.float64)
    out = ed.edit_codes(codes, target, 1.0)
    for c in (c1, c2):
        cu = (c / c.norm()).reshape(-1)
        assert torch.allclose(out @ cu, codes @ cu, atol=1e-8)  # conditions untouched
    pu = (primal / primal.norm()).reshape(-1)
    assert torch.allclose(out @ pu, (2 * target - 1) * 3.0, atol=1e-8)  # primal reaches its target


# -- the trained pipeline (test preset) -----------------------------------------------------------

@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The editor trained for Smiling, then prepared for Male from the same cache (stage records kept)."""
    cache = tmp_path_factory.mktemp("ifg_cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEEDIT_CACHE", str(cache))
    torch.set_num_threads(1)
    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=8, n_test_ids=4, images_per_id=4)
    records = []
    editors = {}
    for attr in ("Smiling", "Male"):
        ed = InterFaceGANEditor(preset="test")
        fit = FitContext(editor=ed, dataset=ds, attribute=attr, seed=0, device="cpu", cache=cache,
                         fits={"sample_every": 0}, show_progress=False)
        ed.prepare(fit)
        records += fit.records
        editors[attr] = ed
    test = ds.split("test")
    images = torch.stack([test[i]["image"] for i in range(6)])
    yield {"ds": ds, "cache": cache, "records": records, "editors": editors, "images": images}
    mp.undo()


def test_gan_stage_trained_once_for_two_attributes(pipeline):
    trained = [(r.stage, r.attribute) for r in pipeline["records"] if r.source == "trained"]
    assert trained.count(("gan", None)) == 1
    for shared in ("encoder", "labeller", "samples"):
        assert trained.count((shared, None)) == 1
    assert ("boundary", "Smiling") in trained and ("boundary", "Male") in trained
    cached = [r.stage for r in pipeline["records"] if r.source == "cache"]
    # Male's boundary reuses the GAN, the encoder and the scored samples (the labeller is then not needed)
    assert {"gan", "encoder", "samples"} <= set(cached)


def test_labeller_is_not_the_judge(pipeline):
    ds, cache = pipeline["ds"], pipeline["cache"]
    ed = pipeline["editors"]["Smiling"]
    lab = json.loads((ed.stage_dirs["labeller"] / "labeller.json").read_text())
    judge_dir = judge_classifier_dir(ds)
    assert str(judge_dir).startswith(str(cache))
    assert lab["key"] != judge_dir.name and lab["key"] == lab["key"] and lab["judge_key"] == judge_dir.name
    assert not lab["tag"].startswith(f"resnet18_{ds.name}")  # its own tag, not the judge's
    assert not judge_dir.exists()  # the judge's cache directory was never created, let alone read
    assert set(lab["heldout_accuracy"]) == set(ds.attribute_names) and lab["n_heldout"] > 0
    bnd = json.loads((ed.stage_dirs["boundary"] / "boundary.json").read_text())
    assert bnd["labeller_tag"] == lab["tag"]


def test_labeller_degradation_is_keyed_only_when_on():
    """labeller_degrade_prob came after the shipped boundaries: off, the labeller's key (and so the
    samples' and the boundaries') is what it was; on, it is a labeller of its own, trained with it."""
    from methods.interfacegan.labeller import LabellerSpec

    assert LabellerSpec().keyed() == {"arch": "resnet18", "epochs": 15, "seed": 1, "split_seed": 1}
    assert LabellerSpec(degrade_prob=0.5).keyed()["degrade_prob"] == 0.5
    assert LabellerSpec(degrade_prob=0.5).config()["train_degrade_prob"] == 0.5
    with pytest.raises(ValueError, match="labeller_degrade_prob"):
        InterFaceGANOptions(labeller_degrade_prob=2.0)


def test_boundary_and_samples_records(pipeline):
    ed = pipeline["editors"]["Male"]
    bnd = json.loads((ed.stage_dirs["boundary"] / "boundary.json").read_text())
    assert bnd["attribute"] == "Male" and bnd["space"] == "w" and bnd["dim"] == 16
    assert 0 <= bnd["primal"]["val_accuracy"] <= 1 and 0 <= bnd["primal"]["remaining_accuracy"] <= 1
    assert bnd["primal"]["chosen_num"] == int(512 * 0.02)
    assert bnd["sigma"] > 0
    smp = json.loads((ed.stage_dirs["samples"] / "samples.json").read_text())
    assert smp["n_samples"] == 512 and any(k.startswith("fid_labeller_") for k in smp)
    assert torch.allclose(ed.normal.norm(), torch.tensor(1.0))


def test_edit_shapes_ranges_and_errors(pipeline):
    ed, x = pipeline["editors"]["Smiling"], pipeline["images"]
    target = torch.tensor([1, 0, 1, 0, 1, 0.0])
    out = ed.edit(x, "Smiling", target, 1.0)
    assert out.shape == x.shape and out.dtype == x.dtype  # 32 px in and out; the GAN runs at 16 px
    assert torch.isfinite(out).all() and out.min() >= -1 and out.max() <= 1
    assert ed.edit(x[:1], "Smiling", target[:1], 2.0).shape == (1, 3, 32, 32)
    with pytest.raises(Exception, match="fitted for 'Smiling'"):
        ed.edit(x, "Male", target, 1.0)
    with pytest.raises(Exception, match="0 or 1"):
        ed.edit(x, "Smiling", torch.full((6,), 0.5), 1.0)


def test_strength_zero_reproduces_the_inversion(pipeline):
    ed, x = pipeline["editors"]["Smiling"], pipeline["images"]
    ctx = EditContext()
    out0 = ed.edit(x, "Smiling", torch.ones(6), 0.0, context=ctx)
    recon = ctx.extras["inversion"]
    assert recon.shape == x.shape
    assert torch.equal(out0, recon)
    with torch.no_grad():
        again = ed.synthesize(ed.invert(x), 32).clamp(-1, 1)
    assert torch.allclose(out0, again, atol=1e-6)
    assert not torch.allclose(ed.edit(x, "Smiling", torch.ones(6), 1.0), out0)  # strength 1 does edit
    metrics = ed.inversion_metrics()
    assert metrics["n"] >= 6 and 0 < metrics["inv_psnr"] < 60


def test_optimisation_lowers_reconstruction_error(pipeline):
    base = pipeline["editors"]["Smiling"]
    ed = InterFaceGANEditor(preset="test", invert_steps=25, cache_inversions=0)
    fit = FitContext(editor=ed, dataset=pipeline["ds"], attribute="Smiling", seed=0, device="cpu",
                     cache=pipeline["cache"], show_progress=False)
    ed.prepare(fit)  # every stage from the cache: edit-time options key nothing
    assert all(r.source == "cache" for r in fit.records)
    assert all(ed.stage_dirs[k] == base.stage_dirs[k] for k in ("gan", "encoder", "boundary"))
    x = pipeline["images"]
    xw = T.resize(x, ed.work_res)

    def err(codes):
        with torch.no_grad():
            return float((ed.synthesize(codes) - xw).square().mean())

    enc = ed.encode_only(x)
    opt = ed.invert(x)
    rand = ed.gan.to_space(ed.gan.sample(6, "cpu", torch.Generator().manual_seed(3)), "wp")
    assert err(opt) < err(enc) and err(opt) < err(rand)


def test_conditional_boundary_stage(pipeline):
    """conditions=[Male]: the boundary stage fits Male too and moves along a direction orthogonal to it."""
    ed = InterFaceGANEditor(preset="test", conditions=["Male"])
    fit = FitContext(editor=ed, dataset=pipeline["ds"], attribute="Smiling", seed=0, device="cpu",
                     cache=pipeline["cache"], show_progress=False)
    ed.prepare(fit)
    sources = {r.stage: r.source for r in fit.records}
    assert sources["boundary"] == "trained" and sources["gan"] == sources["samples"] == "cache"
    rec = json.loads((ed.stage_dirs["boundary"] / "boundary.json").read_text())
    assert set(rec["conditions"]) == {"Male"} and abs(rec["cos_direction_conditions"]["Male"]) < 1e-6
    male = torch.as_tensor(np.load(ed.stage_dirs["boundary"] / "boundary_Male.npy").reshape(-1), dtype=torch.float32)
    assert abs(float(ed.direction @ male)) < 1e-5
    assert torch.allclose(ed.normal, pipeline["editors"]["Smiling"].normal)  # same primal as without conditions
    codes = ed.sample_codes(8, seed=1)
    out = ed.edit_codes(codes, torch.ones(8), 1.0)
    assert torch.allclose(out @ male, codes @ male, atol=1e-4)


def test_save_load_round_trip(pipeline, tmp_path):
    ed, x = pipeline["editors"]["Male"], pipeline["images"]
    ed.save(tmp_path / "fit")
    other = InterFaceGANEditor(preset="test")
    other.load(tmp_path / "fit", "cpu")
    target = torch.tensor([0, 1, 0, 1, 0, 1.0])
    assert torch.equal(other.normal, ed.normal) and other.offset == ed.offset and other.sigma == ed.sigma
    assert torch.equal(ed.edit(x, "Male", target, 1.0), other.edit(x, "Male", target, 1.0))


# -- bad input fails before training ---------------------------------------------------------------

def _fit(ds, attr, tmp_path, **options):
    ed = InterFaceGANEditor(preset="test", **options)
    return ed, FitContext(editor=ed, dataset=ds, attribute=attr, seed=0, device="cpu", cache=tmp_path,
                          show_progress=False)


def test_bad_input_fails_before_training(tmp_path):
    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=4, n_test_ids=2, images_per_id=2)
    with pytest.raises(OptionsError, match="unknown option"):
        InterFaceGANEditor(preset="test", spacee="w")
    with pytest.raises(OptionsError, match="space must be"):
        InterFaceGANEditor(preset="test", space="x")
    with pytest.raises(OptionsError, match="power of two"):
        InterFaceGANEditor(preset="test", resolution=24)
    ed, fit = _fit(ds, "Smiling", tmp_path, conditions=["Smiling"])
    with pytest.raises(OptionsError, match="include the edited attribute"):
        ed.prepare(fit)
    ed, fit = _fit(ds, "Smiling", tmp_path, conditions=["Nope"])
    with pytest.raises(UnknownNameError):
        ed.prepare(fit)
    ds1 = DATASETS.create("synthfaces", resolution=32, n_train_ids=1, n_test_ids=1, images_per_id=1)
    col = ds1.split("train").labels_matrix()[0]
    one_class = ds1.attribute_names[int(torch.nonzero(col == 0)[0])]
    ed, fit = _fit(ds1, one_class, tmp_path)
    with pytest.raises(DataError, match="only one class"):
        ed.prepare(fit)
    assert not any(tmp_path.glob("editors/*/gan-*"))  # nothing was trained


# -- the inversion evaluator -------------------------------------------------------------------------

def test_inversion_evaluator_rows():
    from evaluators.base import EvalContext
    from evaluators.inversion import InversionEvaluator

    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=2, n_test_ids=2, images_per_id=2)
    ev = InversionEvaluator(EvalContext(ds, "Smiling", 1), lpips=False)
    src = torch.zeros(2, 3, 8, 8)
    ev.update(src, src, torch.zeros(2, 10), torch.ones(2))  # no inversion extra: nothing
    assert ev.finalize() == {}
    inv = src.clone()
    inv[:, :, :4] = 0.2  # half the pixels off by 0.1 in [0, 1] units
    ev.update(src, src, torch.zeros(2, 10), torch.ones(2), inversion=inv)
    out = ev.finalize()
    assert out["inv_l1"] == pytest.approx(0.05)
    assert out["inv_psnr"] == pytest.approx(10 * math.log10(1 / 0.005))


# -- official generators and boundaries (paper preset paths, offline) --------------------------------

@pytest.mark.slow  # ~15 s: a 512-channel StyleGAN through encoder, labeller and samples stages
def test_official_layout_checkpoint_runs_the_pipeline(tmp_path, monkeypatch):
    """A StyleGAN state dict in genforce's key layout (built here, 8 px) loads via ``checkpoint`` and edits."""
    from methods.interfacegan.official import build_official

    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = build_official("stylegan", resolution=8)
    with torch.no_grad():  # a "trained-looking" net: a zero constant input would be instance-normed to 0/eps
        model.synthesis.layer0.first_layer.normal_()
        model.synthesis.layer0.epilogue.apply_noise.weight.fill_(0.1)
    path = tmp_path / "stylegan8.pth"
    torch.save({k: v for k, v in model.state_dict().items() if k != "truncation.truncation"}, path)
    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=4, n_test_ids=2, images_per_id=4)
    ed = InterFaceGANEditor(preset="test", checkpoint=str(path), n_samples=100, encoder_steps=2, invert_steps=2,
                            encoder_channel_base=64, encoder_channel_max=8)
    fit = FitContext(editor=ed, dataset=ds, attribute="Smiling", seed=0, device="cpu", cache=tmp_path / "cache",
                     show_progress=False)
    ed.prepare(fit)
    stages = [r.stage for r in fit.records]
    assert "gan" not in stages and {"encoder", "labeller", "samples", "boundary"} <= set(stages)
    assert ed.normal.shape == (512,) and ed.work_res == 8
    x = torch.stack([ds.split("test")[i]["image"] for i in range(2)])
    out = ed.edit(x, "Smiling", torch.tensor([1.0, 0.0]), 1.0)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_official_boundary_files_edit_along_their_normal(tmp_path):
    """genforce's real .npy files (shared samples) drive the edit: W codes land at distance ±3 on the normal."""
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "shared/data/samples/interfacegan_boundaries/head/boundaries"
    if not src.is_dir():
        pytest.skip(f"no official boundary samples at {src}")
    dest = tmp_path / "weights/interfacegan/boundaries"
    dest.mkdir(parents=True)
    for stem in ("stylegan_celebahq_gender_w", "stylegan_celebahq_age_w"):
        shutil.copy(src / f"{stem}_boundary.npy", dest / f"{stem}_boundary.npy")
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEEDIT_CACHE", str(tmp_path))
    mp.setenv("FACEEDIT_OFFLINE", "1")
    try:
        ed = InterFaceGANEditor(preset="test", conditions=["Young"])
        ed.attribute = "Male"
        ed._use_official_boundaries({"Male": "stylegan_celebahq_gender_w", "Young": "stylegan_celebahq_age_w"}, "cpu")
    finally:
        mp.undo()
    gender = np.load(src / "stylegan_celebahq_gender_w_boundary.npy").reshape(-1)
    age = np.load(src / "stylegan_celebahq_age_w_boundary.npy").reshape(-1)
    assert np.allclose(ed.normal.numpy(), gender, atol=1e-6)
    assert abs(float(ed.direction.double().numpy() @ age)) < 1e-6  # conditional: orthogonal to age
    codes = torch.randn(4, 512, dtype=torch.float64)
    out = ed.edit_codes(codes, torch.tensor([1, 0, 1, 0.0], dtype=torch.float64), 1.0)
    g = torch.as_tensor(gender)
    assert torch.allclose(out @ g, torch.tensor([3.0, -3.0, 3.0, -3.0], dtype=torch.float64), atol=1e-4)
    assert torch.allclose(out @ torch.as_tensor(age), codes @ torch.as_tensor(age), atol=1e-4)


def test_paper_preset_offline_fails_clearly(tmp_path, monkeypatch):
    from benchmark.assets import AssetError

    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=4, n_test_ids=2, images_per_id=2)
    ed = InterFaceGANEditor(preset="paper")
    assert ed.opts.checkpoint == "stylegan_celebahq" and ed.opts.space == "w"
    fit = FitContext(editor=ed, dataset=ds, attribute="Male", seed=0, device="cpu", cache=tmp_path,
                     show_progress=False)
    with pytest.raises(AssetError, match="stylegan_celebahq"):
        ed.prepare(fit)


def test_residual_mode_carries_only_the_change(pipeline):
    base = pipeline["editors"]["Smiling"]
    ed = InterFaceGANEditor(preset="test", residual=True)
    fit = FitContext(editor=ed, dataset=pipeline["ds"], attribute="Smiling", seed=0, device="cpu",
                     cache=pipeline["cache"], show_progress=False)
    ed.prepare(fit)
    x, t = pipeline["images"], torch.tensor([1, 0, 1, 0, 1, 0.0])
    assert torch.equal(ed.edit(x, "Smiling", t, 0.0), x)
    with torch.no_grad():
        codes = base.invert(x)
        change = base.synthesize(base.edit_codes(codes, t, 1.0), 32) - base.synthesize(codes, 32)
    expected = (x + change).clamp(-1, 1)
    assert torch.allclose(ed.edit(x, "Smiling", t, 1.0), expected, atol=1e-5)


def test_inverted_codes_are_kept_on_disk_for_the_next_process(pipeline, monkeypatch):
    """A re-run (a new process: the in-memory cache empty) reads the codes instead of optimising again;
    a damaged entry is recomputed, not used."""
    from methods.interfacegan import editor as E

    ed, x = pipeline["editors"]["Smiling"], pipeline["images"]
    codes = ed.invert(x)
    disk = ed._inversion_dir()
    assert disk is not None and disk.is_relative_to(pipeline["cache"]) and len(list(disk.iterdir())) >= 6
    E._INVERSIONS.clear()

    def no_optimisation(*args, **kwargs):
        raise AssertionError("the codes are on disk: nothing to optimise")

    with monkeypatch.context() as mp:
        mp.setattr(E, "optimise_codes", no_optimisation)
        assert torch.equal(ed.invert(x), codes)
    import hashlib

    entry = disk / hashlib.sha1(x[0].float().numpy().tobytes()).hexdigest()  # the first image's code
    assert entry.is_dir()
    (entry / "code.safetensors").write_bytes(b"damaged")
    E._INVERSIONS.clear()
    calls = []
    real = E.optimise_codes
    with monkeypatch.context() as mp:
        mp.setattr(E, "optimise_codes", lambda render, xs, *a, **k: calls.append(len(xs)) or real(render, xs, *a, **k))
        assert torch.allclose(ed.invert(x), codes, atol=1e-5)
    assert calls == [1]  # only the damaged one was optimised again


def test_own_sample_edits_are_scored_per_direction_the_reader_sees(pipeline):
    """evaluators.gan_samples on the pipeline's GAN; the reader is the editor's own labeller (a real
    classifier with the judge's interface; in a run the judge reads, never the labeller)."""
    from evaluators.gan_samples import sample_edit_grid, score_sample_edits
    from methods.interfacegan.labeller import load_labeller

    ed = pipeline["editors"]["Smiling"]
    reader = load_labeller(ed.stage_dirs["labeller"], "cpu")
    still = score_sample_edits(ed, reader, "Smiling", n=40, strength=0.0, batch=16, size=32)
    d0, d1 = still.directions[0], still.directions[1]
    assert d0.n + d1.n == 40 and still.positives == d0.n  # sources read as 1 are edited to 0
    # strength 0 edits nothing: no edit reaches its target and every other attribute agrees
    assert d0.success == 0 and d1.success == 0
    assert all(abs(d.row(still.n_other)["attr_preserve"] - 1.0) < 1e-9 for d in (d0, d1) if d.n)
    moved = score_sample_edits(ed, reader, "Smiling", n=40, strength=3.0, batch=7, size=32)
    assert moved.positives == still.positives  # the same samples, whatever the strength and batch
    same = score_sample_edits(ed, reader, "Smiling", n=40, strength=3.0, batch=40, size=32)
    assert same.summary(reader.tag) == moved.summary(reader.tag)  # batch-size invariant
    summary = moved.summary(reader.tag)
    assert summary["protocol"] == f"gan_samples_{reader.tag}" and summary["n"] == 40
    with pytest.raises(KeyError, match="does not score"):
        score_sample_edits(ed, reader, "Not_An_Attribute", n=4)
    grid = sample_edit_grid(ed, k=5, strength=3.0, size=32)
    assert grid.shape == (15, 3, 32, 32)
    assert torch.equal(ed.sample_codes(40, seed=0)[:5], ed.sample_codes(5, seed=0))  # the scored draw's first 5
    assert torch.equal(grid[:5], ed.synthesize(ed.sample_codes(5, seed=0), 32).clamp(-1, 1))  # row 1: the sources
    assert not torch.allclose(grid[5:10], grid[10:])  # the two targets move the samples apart
    with pytest.raises(TypeError, match="latent editor"):
        score_sample_edits(object(), reader, "Smiling", n=4)
