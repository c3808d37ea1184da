"""The judges' own data (evaluators/judge_data.py), the editors' splits it must not touch, cf_gain.

Fast: a few dozen renders at 32-64 px.  The trained-judge anchors (oracle attr_success >= 0.98 on
the default judge) are slow and live in tests/test_anchors.py's style; see docs/classifier.md.
"""
from __future__ import annotations

import hashlib

import pytest
import torch

from benchmark.data.synthfaces.dataset import SynthFaces
from benchmark.data.synthfaces.params import (
    ATTRIBUTE_NAMES, JUDGE_ID_OFFSET, sample_judge_split, sample_split,
)
from evaluators.judge_data import GAP, blend_pairs, degrade, render_judge_set


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("split,index,pixels,labels", [
    ("train", [0, 1, 2499, 4999], "8bbb1df6fb3e8294", "09275fa81fc9bf9c"),
    ("test", [0, 517, 999], "99959ab52b8f7b8e", "240c78b456f67d4b"),
])
def test_editor_splits_bit_identical(split, index, pixels, labels):
    """The editors' reference fits were trained on these exact images: the judge sampler must not move them.

    Digests taken on the default SynthFaces (64 px, seed 0) before the judge sampler existed.
    """
    s = SynthFaces(resolution=64, chunk_size=1).split(split)
    x = ((s.images(torch.tensor(index)) + 1) * 127.5).round().to(torch.uint8)
    assert _digest(x) == pixels
    assert _digest(s.labels_matrix()) == labels


def test_judge_sampler_balanced_independent_disjoint():
    sp = sample_judge_split(0, "judge", 1000, 5)
    y = sp.labels
    assert ((y.mean(0) - 0.5).abs() < 0.03).all(), y.mean(0)
    corr = torch.corrcoef(y.T)
    off = corr - torch.diag(torch.diag(corr))
    assert off.abs().max() < 0.06  # Male and No_Beard, Smiling and Mouth_Slightly_Open: independent here
    male, beard = ATTRIBUTE_NAMES.index("Male"), ATTRIBUTE_NAMES.index("No_Beard")
    assert ((y[:, male] == 0) & (y[:, beard] == 0)).float().mean() > 0.2  # bearded women exist
    # the same person is seen with and without a per-person attribute (what the identity judge needs)
    per_person = y[:, male].view(1000, 5)
    assert ((per_person.min(1).values == 0) & (per_person.max(1).values == 1)).float().mean() > 0.8
    train = sample_split(0, "train", 1000, 5, 0)
    test = sample_split(0, "test", 200, 5, 1000)
    val = sample_judge_split(0, "judge_val", 200, 5)
    ids = [set(p.identity.tolist()) for p in (train, test, sp, val)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not ids[i] & ids[j]
    assert min(ids[2]) >= JUDGE_ID_OFFSET
    assert not torch.equal(sp.latent[:200], val.latent)
    with pytest.raises(ValueError, match="judge split"):
        sample_judge_split(0, "train", 10, 5)


@pytest.fixture(scope="module")
def small_set():
    ds = SynthFaces(resolution=32, n_train_ids=2, n_test_ids=2)
    return ds, render_judge_set(ds, "judge", 12, 4, partial_fraction=0.3, pair_fraction=0.5)


def test_judge_set_labels_what_is_rendered(small_set):
    ds, d = small_set
    assert d.images.shape == (48, 3, 32, 32) and d.images.dtype == torch.uint8
    assert set(d.labels.unique().tolist()) <= {0.0, 1.0}
    assert len(d.pair_index) > 5
    # a pair differs from its image, and only because one attribute was flipped
    diff = (d.pair_images.float() - d.images[d.pair_index].float()).abs().flatten(1).amax(1)
    assert (diff > 0).float().mean() > 0.8
    # the identity factors are those of the person (the same for every image of one identity)
    assert torch.equal(d.params[0], d.params[3]) and not torch.equal(d.params[0], d.params[4])


def test_judge_renders_do_not_depend_on_the_render_batch(small_set):
    """The render batch is a speed knob, not part of the cache key: another batch size must give the
    same bytes (images, pairs, labels)."""
    ds, d = small_set
    other = render_judge_set(ds, "judge", 12, 4, partial_fraction=0.3, pair_fraction=0.5, batch=7)
    for field in ("images", "pair_images", "labels", "pair_index"):
        assert torch.equal(getattr(d, field), getattr(other, field)), field


@pytest.mark.parametrize("attr", ["Bangs", "Eyeglasses", "Mustache", "No_Beard"])
def test_recolour_repaints_only_the_attribute_layer(attr):
    """``render.recolour``: without the factors the render is the editors' (bit-identical to a zero mix);
    with them, only the pixels of the attribute's own layers change, and only on faces that carry it."""
    from benchmark.data.synthfaces.render import RECOLOUR_RGB, render

    p = sample_judge_split(0, "judge", 24, 1).gather(torch.arange(24))
    plain, support = render(p, 32, track=True)
    q = dict(p, **{k: torch.full((24,), 0.9 if k == "recolour_g" else 0.1) for k in RECOLOUR_RGB})
    q[f"recolour_{attr}"] = torch.zeros(24)
    assert torch.equal(render(q, 32)[0], plain)
    q[f"recolour_{attr}"] = torch.ones(24)
    changed = (render(q, 32)[0] != plain).any(dim=1, keepdim=True)
    carried = p[attr] < 0.5 if attr == "No_Beard" else p[attr] > 0.5
    assert not (changed & ~support[attr]).any()  # nothing outside the attribute's layers
    assert changed[carried].flatten(1).any(1).all() and not changed[~carried].any()


def test_colour_probe_frames_go_through_recolour_factors():
    """scripts/judge_frame_colour_probe.py colours frames through the renderer's ``recolour`` factors, never
    by editing ``render.GLASSES_STOPS``: with the renderer's own palette it reproduces the plain render with
    glasses on bit for bit, another palette changes only glasses pixels, and the module is left as it was."""
    from benchmark.data.synthfaces import render
    from tests.script_loader import load_script

    probe = load_script("judge_frame_colour_probe")
    own = list(render.GLASSES_STOPS)
    p = sample_judge_split(0, "judge", 24, 1).gather(torch.arange(24))
    plain, support = render.render(probe.frames_in_palette(p, None), 32, track=True)
    assert not any(k.startswith("recolour") for k in probe.frames_in_palette(p, None))
    assert torch.equal(render.render(probe.frames_in_palette(p, own), 32)[0], plain)
    gold = render.render(probe.frames_in_palette(p, probe.OFF_PALETTES["gold"]), 32)[0]
    changed = (gold != plain).any(dim=1, keepdim=True)
    assert changed.flatten(1).any(1).all() and not (changed & ~support["Eyeglasses"]).any()
    assert render.GLASSES_STOPS == own


def test_judge_set_recolours_keep_labels_and_the_set_without_them(small_set):
    """Recolours are drawn after every other artefact: the images they do not touch are the set rendered
    without them, the labels are unchanged (the attribute is still drawn whole), and some images change."""
    ds, d = small_set
    r = render_judge_set(ds, "judge", 12, 4, partial_fraction=0.3, pair_fraction=0.5, recolour_fraction=1.0)
    assert torch.equal(r.labels, d.labels) and torch.equal(r.pair_index, d.pair_index)
    same = (r.images == d.images).flatten(1).all(1)
    assert 0 < int((~same).sum()) and int(same.sum()) > 0  # faces carrying none of the four stay as they were
    cols = [ATTRIBUTE_NAMES.index(a) for a in ("Bangs", "Eyeglasses", "Mustache")]
    carries = (d.labels[:, cols] > 0.5).any(1) | (d.labels[:, ATTRIBUTE_NAMES.index("No_Beard")] < 0.5)
    assert same[~carries].all()


def test_blend_pairs_label_follows_larger_weight(small_set):
    _, d = small_set
    rows = d.pair_index
    x = d.images[rows].float() / 127.5 - 1
    y = d.labels[rows]
    gen = torch.Generator().manual_seed(0)
    xb, yb = blend_pairs(x, y, rows, d, gen, prob=1.0)
    cols = d.pair_attr
    other = d.pair_images.float() / 127.5 - 1
    # recover alpha per image from the pixels; labels flip exactly where alpha > 0.5
    num = ((xb - x) * (other - x)).flatten(1).sum(1)
    den = ((other - x) ** 2).flatten(1).sum(1).clamp_min(1e-9)
    alpha = num / den
    ok = den > 1e-3
    assert ((alpha[ok] < GAP[0] + 1e-4) | (alpha[ok] > GAP[1] - 1e-4)).all()
    flipped = yb[torch.arange(len(rows)), cols] != y[torch.arange(len(rows)), cols]
    assert torch.equal(flipped[ok], alpha[ok] > 0.5)
    untouched = torch.ones_like(yb, dtype=torch.bool)
    untouched[torch.arange(len(rows)), cols] = False
    assert torch.equal(yb[untouched], y[untouched])


def test_degrade_is_mild_and_in_range():
    x = torch.rand(64, 3, 32, 32) * 2 - 1
    out = degrade(x, torch.Generator().manual_seed(1), prob=1.0)
    assert out.shape == x.shape and out.min() >= -1 and out.max() <= 1
    assert 0.01 < (out - x).abs().mean() < 0.2
    assert torch.equal(degrade(x, torch.Generator().manual_seed(1), prob=0.0), x)


def test_cf_gain_oracle_one_noop_zero():
    from evaluators.base import EvalContext  # noqa: F401  (the evaluator's own context type)
    from evaluators.counterfactual import CounterfactualEvaluator

    ev = CounterfactualEvaluator.__new__(CounterfactualEvaluator)
    ev.lpips = lambda: None  # LPIPS is not what this test checks; its weights may be absent offline
    ev.ctx = None
    ds = SynthFaces(resolution=32, n_train_ids=2, n_test_ids=4)
    s = ds.split("test")
    idx = torch.arange(8)
    col = ds.attribute_index("Eyeglasses")
    target = 1 - s.labels_matrix()[idx, col]
    src, cf = s.images(idx), s.counterfactuals(idx, "Eyeglasses", target)
    results = {}
    for name, edited in (("oracle", cf), ("noop", src), ("half", 0.5 * (src + cf))):
        ev.reset()
        ev.update(src, edited, s.labels_matrix()[idx], target, counterfactual=cf)
        results[name] = ev.finalize()["cf_gain"]
    assert results["oracle"] == pytest.approx(1.0)
    assert results["noop"] == pytest.approx(0.0)
    assert results["half"] == pytest.approx(0.5, abs=0.01)
    assert CounterfactualEvaluator.higher_is_better["cf_gain"] is True


def test_slim10_shapes_and_baseline_warning(caplog):
    from evaluators.classifier.config import ClassifierConfig
    from evaluators.classifier.model import AttributeClassifier, build_network
    from evaluators.classifier.training import warn_below_baseline

    net = build_network(ClassifierConfig(arch="slim10"), 10, 64)
    clf = AttributeClassifier(net, ATTRIBUTE_NAMES, 64, "t", "cpu")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert clf.logits(x).shape == (2, 10) and clf.features(x).shape == (2, 128)  # width 16: 8 x 16
    assert net.layer1[0].conv1.in_channels == 16 and isinstance(net.maxpool, torch.nn.Identity)  # /2 stem at 64 px
    wide = build_network(ClassifierConfig(arch="slim10", width=32, stem_downsample=4), 10, 64)
    assert AttributeClassifier(wide, ATTRIBUTE_NAMES, 64, "t", "cpu").features(x).shape == (2, 256)
    with pytest.raises(ValueError, match="width is a slim10 option"):
        ClassifierConfig(arch="resnet18", width=16)
    metrics = {"accuracy": {"A": 0.9, "B": 0.8}, "baseline_accuracy": {"A": 0.85, "B": 0.85}}
    with caplog.at_level("WARNING"):
        assert warn_below_baseline(metrics, "unit") == ["B"]
    assert "NOT ABOVE THE MAJORITY BASELINE on B" in caplog.text


def test_identity_embedder_trains_on_judge_renders(tmp_path, monkeypatch):
    """train_data: judge trains CosFace on judge identities (disjoint from test) and keeps old keys otherwise."""
    from evaluators.identity.synth_embedder import SynthEmbedderConfig, cache_key, train_embedder

    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    ds = SynthFaces(resolution=32, n_train_ids=4, n_test_ids=4, images_per_id=3)
    cfg = SynthEmbedderConfig(image_size=32, widths=(8, 16), embedding_dim=16, epochs=1, batch_size=16,
                              max_eval_items=12, train_data="judge", judge_ids=8, judge_images_per_id=3)
    summary = train_embedder(ds, cfg, "cpu", tmp_path / "out")
    assert summary["n_train_identities"] == 8 and summary["test_identities_seen_in_train"] == 0
    assert cfg.tag != SynthEmbedderConfig().tag
    plain = SynthEmbedderConfig(image_size=32, train_data="train")  # the train path ignores the judge fields
    assert cache_key(ds, plain) == cache_key(ds, SynthEmbedderConfig(image_size=32, train_data="train", judge_ids=99))
    assert SynthEmbedderConfig().resolved(ds).train_data == "judge" and SynthEmbedderConfig().tag.endswith("_judge")


def test_classifier_train_key_ignores_judge_fields():
    """A train-split classifier's key (CelebA-HQ's default, SynthFaces' former one) ignores the judge
    fields, so the cache keys of classifiers trained before the judge path existed stay valid."""
    from evaluators.classifier.config import ClassifierConfig

    base = ClassifierConfig(train_data="train")
    assert base.hashed_dict() == ClassifierConfig(train_data="train", judge_ids=7, blend_prob=0.1).hashed_dict()
    assert "judge_ids" not in base.hashed_dict()
    judge = ClassifierConfig(train_data="judge", judge_ids=1600, judge_val_ids=200)
    assert judge.hashed_dict()["judge_code_version"] >= 1 and judge.hashed_dict() != base.hashed_dict()


def test_default_classifier_resolves_to_judge_renders_on_synthfaces_only():
    from evaluators.classifier.cache import classifier_key
    from evaluators.classifier.config import ClassifierConfig
    from evaluators.classifier.training import classifier_tag

    ds = SynthFaces(resolution=64)
    auto = ClassifierConfig().resolved(ds)
    assert (auto.train_data, auto.judge_ids, auto.judge_val_ids) == ("judge", 1600, 200)
    assert classifier_key(ds, ClassifierConfig()) == classifier_key(ds, ClassifierConfig(train_data="judge"))
    assert classifier_tag(ds, ClassifierConfig()) == "slim10_judge2_synthfaces64"
    # the colour-blind judge of 2026-12-01 (no recolours) is another protocol under another name
    assert classifier_tag(ds, ClassifierConfig(recolour_fraction=0.0)).startswith("slim10_judge_synthfaces64_")
    assert "recolour_fraction" not in ClassifierConfig(recolour_fraction=0.0).resolved(ds).hashed_dict()
    assert classifier_tag(ds, ClassifierConfig(train_data="train")).startswith("slim10_synthfaces64_")
    small = SynthFaces(resolution=32, n_train_ids=150)
    assert ClassifierConfig().resolved(small).judge_ids == 240  # scaled with the editors' train identities
    from benchmark.registry import DATASETS

    assert ClassifierConfig().resolved(DATASETS.create("toy-faces")).train_data == "train"  # cannot render judge data


@pytest.mark.slow
def test_default_judge_anchors_oracle_and_noop():
    """Issue 15's targets for the default (judge-render) attribute classifier on the default SynthFaces:
    oracle attr_success >= 0.98 per attribute and direction, attr_preserve >= 0.98, no-op <= 0.05,
    except the directions the measured default misses (docs/classifier.md; the ``judge2`` judge of 2026-12-03,
    here: Mustache 1->0 0.960, its no-op 0.051, the cost of recolouring moustaches and beards; Pale_Skin 1->0
    0.943), which must stay >= 0.92 (no-op <= 0.06).  Eyeglasses 1->0, missed before the recolours (0.971 on
    the grid), is 0.993 here."""
    from evaluators.classifier.training import load_classifier

    ds = SynthFaces(resolution=64)
    clf = load_classifier(ds, "cpu")
    assert not clf.metrics["below_baseline"], clf.metrics["below_baseline"]
    s = ds.split("test")
    labels = s.labels_matrix()
    src_pred = clf.predict(s.images(torch.arange(len(s)))).cpu()
    missed = {("Mustache", 0), ("Pale_Skin", 0)}  # (attribute, target): measured < 0.98
    for name in ds.attribute_names:
        c = ds.attribute_index(name)
        others = [j for j in range(len(ds.attribute_names)) if j != c]
        for t in (0, 1):
            idx = torch.nonzero(labels[:, c] != t).flatten()[:200]
            pred = clf.predict(s.counterfactuals(idx, name, torch.full((len(idx),), float(t)))).cpu()
            success = float((pred[:, c] == t).float().mean())
            assert success >= (0.92 if (name, t) in missed else 0.98), (name, t, success)
            assert float((pred[:, others] == src_pred[idx][:, others]).float().mean()) >= 0.98, (name, t)
            assert float((src_pred[idx, c] == t).float().mean()) <= (0.06 if (name, t) in missed else 0.05), (name, t)


def test_default_identity_judge_anchors(tmp_path, monkeypatch):
    """Issue 15's targets for the default (shipped) identity judge on the default SynthFaces: the oracle's
    counterfactual id_cos >= 0.9 for the default grid's attributes in both directions; another person with
    the same attributes, pose and light <= 0.3; a 50 % blend towards the mean face clearly below the
    oracle; monotone in the blend weight.  The attributes whose edit overrides identity factors (Blond_Hair
    replaces the hair colour, Pale_Skin the skin tone, No_Beard covers the chin) are measured below 0.9
    (docs/metrics.md) and must stay >= 0.7.  Fast: the judge is the shipped file (seconds to load)."""
    from evaluators import sanity
    from evaluators.reference_judges import ENV

    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    monkeypatch.setenv(ENV, "1")
    ds = SynthFaces(resolution=64)
    cf = sanity.counterfactual_identity(ds, ["Smiling", "Eyeglasses", "Bangs", "Male", "Young", "Blond_Hair",
                                             "Pale_Skin", "No_Beard"], n=96)
    for r in cf:
        floor = 0.7 if r["attribute"] in ("Blond_Hair", "Pale_Skin", "No_Beard") else 0.9
        assert r["id_cos"] >= floor, r
    rows = sanity.identity_sweeps(ds, n=96, levels=(0.0, 0.25, 0.5, 0.75, 1.0))
    for kind in ("blend_mean", "blend_other"):
        values = [r["id_cos"] for r in rows if r["kind"] == kind]
        # NOT met for the mean-face blend: it dips and rises again between weights 0.5 and 0.8 (0.485 at 0.5,
        # 0.526 at 0.75; docs/metrics.md): asserted monotone within 0.05 only, so a worse bump still fails
        assert sanity.is_monotone(values, tol=0.05 if kind == "blend_mean" else 0.0), (kind, values)
    other = next(r["id_cos"] for r in rows if r["kind"] == "blend_other" and r["level"] == 1.0)
    half = next(r["id_cos"] for r in rows if r["kind"] == "blend_mean" and r["level"] == 0.5)
    assert other <= 0.3, other
    assert half < min(r["id_cos"] for r in cf) - 0.05, (half, cf)


def test_oracle_misses_agree_with_attr_success_and_rank_visibility(tmp_path, monkeypatch):
    """``sanity.oracle_misses`` (docs/classifier.md's miss table) counts exactly the counterfactuals the
    ``attributes`` evaluator scores as failures, and ranks each miss's pixel change among its direction's."""
    from evaluators import sanity
    from evaluators.reference_judges import ENV

    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    monkeypatch.setenv(ENV, "1")
    ds = SynthFaces(resolution=64)
    rows = sanity.oracle_misses(ds, ["Pale_Skin"], n=120)
    share = sanity.attribute_share_sweep(ds, ["Pale_Skin"], n=120, levels=(1.0,))
    for r in rows:
        s = next(x for x in share if (x["attribute"], x["direction"]) == (r["attribute"], r["direction"]))
        assert r["misses"] == round((1 - s["attr_success"]) * r["n"]), (r, s)
        assert len(r["miss_percentiles"]) == r["misses"] == len(r["miss_changes"])
        assert all(0 <= p <= 1 for p in r["miss_percentiles"]) and r["change_median"] > 0
    assert sum(r["misses"] for r in rows) > 0  # the sample holds misses (Pale_Skin 1->0), so the check above bites


def test_recoloured_judge_reads_off_palette_frames_the_colour_blind_one_missed(capsys):
    """scripts/judge_frame_colour_probe.py on the shipped judges (docs/metrics.md, "A measured blind spot"):
    gold and orange frames, never drawn by the renderer, are read as glasses by today's judge (recolours in
    its training renders) far more often than by the colour-blind one of 2026-12-01; both read the renderer's
    own frames."""
    import json

    from tests.script_loader import load_script

    script = load_script("judge_frame_colour_probe")
    reads = {}
    for fraction in (0.2, 0.0):
        capsys.readouterr()
        assert script.main(["--n", "100", f"evaluator_options.attributes.classifier.recolour_fraction={fraction}"]) == 0
        reads[fraction] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    new, old = reads[0.2], reads[0.0]
    assert new["judge"] == "slim10_judge2_synthfaces64" and old["judge"].startswith("slim10_judge_synthfaces64_")
    shipped = "shipped (black, brown, grey, navy)"
    assert new["glasses_read"][shipped] >= 0.95 and old["glasses_read"][shipped] >= 0.95
    for colour in ("gold", "orange"):
        assert new["glasses_read"][colour] >= old["glasses_read"][colour] + 0.25, (colour, new, old)
