"""The attribute evaluators: streaming invariance, the no-op anchor, counterfactual edits, registration."""
from __future__ import annotations

import os

import pytest
import torch

from benchmark.registry import DATASETS, EVALUATORS
from evaluators.attributes import AttributeEvaluator
from evaluators.base import EvalContext, clear_shared_models
from evaluators.classifier import ClassifierConfig, classifier_tag, load_classifier
from test_classifier import TOY_CONFIG, ToyShapes, shared_cache, toy_cache  # noqa: F401 - fixtures


@pytest.fixture
def toy(toy_cache):
    clear_shared_models()
    yield ToyShapes(resolution=32)
    clear_shared_models()


def _test_batch(ds, attribute: str, direction: int):
    """All test images whose label differs from ``direction`` (the ones the runner edits to it)."""
    split = ds.split("test")
    items = [split[i] for i in range(len(split))]
    a = ds.attribute_index(attribute)
    keep = [it for it in items if int(it["labels"][a]) != direction]
    images = torch.stack([it["image"] for it in keep])
    labels = torch.stack([it["labels"] for it in keep])
    index = torch.stack([it["index"] for it in keep])
    return split, images, labels, index, torch.full((len(keep),), direction)


def _evaluator(ds, attribute: str, direction: int, config=TOY_CONFIG) -> AttributeEvaluator:
    ctx = EvalContext(dataset=ds, attribute=attribute, direction=direction, device=torch.device("cpu"))
    return EVALUATORS.create("attributes", ctx, classifier=config)


def _run(ev: AttributeEvaluator, source, edited, labels, target, batch: int) -> dict[str, float]:
    ev.reset()
    for s in range(0, len(source), batch):
        ev.update(source[s:s + batch], edited[s:s + batch], labels[s:s + batch], target[s:s + batch])
    return ev.finalize()


def test_registered_and_metric_names_carry_the_tag(toy):
    assert "attributes" in EVALUATORS.names()
    ev = _evaluator(toy, "Smiling", 1)
    tag = classifier_tag(toy, ClassifierConfig.from_dict(TOY_CONFIG))
    _, src, labels, _, target = _test_batch(toy, "Smiling", 1)
    out = _run(ev, src, src, labels, target, 64)
    assert set(out) == {f"attr_success_{tag}", f"attr_preserve_{tag}", f"attr_source_acc_{tag}"}


def test_batch_size_invariance(toy):
    split, src, labels, index, target = _test_batch(toy, "Eyeglasses", 1)
    # an imperfect edit: the counterfactual for the first half, the source for the rest
    edited = split.counterfactuals(index, "Eyeglasses", target)
    edited[len(edited) // 2:] = src[len(edited) // 2:]
    ev = _evaluator(toy, "Eyeglasses", 1)
    whole = _run(ev, src, edited, labels, target, len(src))
    for batch in (1, 7, 32):
        assert _run(ev, src, edited, labels, target, batch) == whole


def test_noop_edit_anchor(toy):
    for attribute, direction in (("Bangs", 0), ("Male", 1)):
        _, src, labels, _, target = _test_batch(toy, attribute, direction)
        ev = _evaluator(toy, attribute, direction)
        out = _run(ev, src, src.clone(), labels, target, 50)
        clf = ev.classifier
        tag = clf.tag
        a = toy.attribute_index(attribute)
        already = (clf.predict(src)[:, a] == target).double().mean().item()
        assert out[f"attr_success_{tag}"] == pytest.approx(already, abs=1e-12)
        assert out[f"attr_success_{tag}"] < 0.1  # a good classifier: the no-op editor almost never succeeds
        assert out[f"attr_preserve_{tag}"] == 1.0
        assert out[f"attr_source_acc_{tag}"] == pytest.approx(1 - already, abs=1e-12)  # labels are 1 - target


def test_counterfactual_edit_scores_high(toy):
    for attribute in ("Eyeglasses", "Male"):
        for direction in (0, 1):
            split, src, labels, index, target = _test_batch(toy, attribute, direction)
            edited = split.counterfactuals(index, attribute, target)
            ev = _evaluator(toy, attribute, direction)
            out = _run(ev, src, edited, labels, target, 64)
            tag = ev.classifier.tag
            assert out[f"attr_success_{tag}"] > 0.85, (attribute, direction, out)
            assert out[f"attr_preserve_{tag}"] > 0.9, (attribute, direction, out)


def test_preserve_counts_only_other_attributes(toy):
    """Changing a *different* attribute lowers attr_preserve by exactly the share of flipped predictions."""
    split, src, labels, index, target = _test_batch(toy, "Bangs", 1)
    other = split.counterfactuals(index, "Smiling", 1 - labels[:, toy.attribute_index("Smiling")].long())
    ev = _evaluator(toy, "Bangs", 1)
    out = _run(ev, src, other, labels, target, 64)
    clf = ev.classifier
    changed = (clf.predict(other) != clf.predict(src))[:, [1, 2, 3]].double().mean().item()
    assert out[f"attr_preserve_{clf.tag}"] == pytest.approx(1 - changed, abs=1e-12)
    assert out[f"attr_preserve_{clf.tag}"] < 0.8  # a third of the other attributes flipped


def test_classifier_is_shared_per_process(toy):
    a, b = _evaluator(toy, "Bangs", 0), _evaluator(toy, "Male", 1)
    assert a.classifier is b.classifier


def test_empty_evaluator_reports_nan(toy):
    out = _evaluator(toy, "Bangs", 0).finalize()
    assert out and all(v != v for v in out.values())


def test_train_if_missing_false_fails_before_any_image(tmp_path, monkeypatch):
    from evaluators.classifier import MissingClassifierError

    clear_shared_models()
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    ctx = EvalContext(dataset=ToyShapes(resolution=32), attribute="Bangs", direction=1)
    with pytest.raises(MissingClassifierError, match="train it with"):
        EVALUATORS.create("attributes", ctx, classifier=TOY_CONFIG, train_if_missing=False)


# -- SynthFaces: the dataset's true counterfactual scores high ------------------------------------------
@pytest.mark.slow
def test_synthfaces_oracle_scores_high_with_default_classifier(toy_cache):
    """Issue 4's anchor: with the protocol's default classifier (64 px), the ground-truth
    counterfactual reaches attr_success >= 0.97, averaged over attributes and both directions,
    on the first 500 test images (the default config's max_test), counting the edits whose label
    vector occurs in the training split.

    Why that restriction: SynthFaces draws CelebA's hard correlations (no woman has a beard or a
    mustache), so e.g. Male 1->0 on a bearded man is a label combination the classifier never
    saw, and it answers from the correlation (measured in the default run: oracle attr_success
    Mustache 0.72, No_Beard 0.71, Male 0.80 over all images).  Those edits measure the
    classifier's extrapolation, not whether it scores a correct edit as correct.  Trains the
    default classifier (about 5-10 CPU minutes); set FACEEDIT_TEST_CACHE to reuse one."""
    if "synthfaces" not in DATASETS.names():
        pytest.skip("synthfaces dataset not registered")
    clear_shared_models()
    if os.environ.get("FACEEDIT_TEST_CACHE"):
        os.environ["FACEEDIT_CACHE"] = os.environ["FACEEDIT_TEST_CACHE"]  # restored by toy_cache's monkeypatch
    ds = DATASETS.create("synthfaces", resolution=64)
    clf = load_classifier(ds, "cpu")
    seen = {tuple(row) for row in ds.split("train").labels_matrix().int().tolist()}
    split = ds.split("test")
    index = torch.arange(500)
    items = [split[int(i)] for i in index]
    src = torch.stack([it["image"] for it in items])
    labels = torch.stack([it["labels"] for it in items])
    per_attr = {}
    for attribute in ds.attribute_names:
        col = ds.attribute_index(attribute)
        target = 1.0 - labels[:, col]
        edited = split.counterfactuals(index, attribute, target)
        flipped = labels.clone()
        flipped[:, col] = target
        in_dist = torch.tensor([tuple(r) in seen for r in flipped.int().tolist()])
        by_dir = []
        for direction in (0, 1):
            sel = (target == direction) & in_dist
            if not bool(sel.any()):
                continue
            ev = _evaluator(ds, attribute, direction, None)
            out = _run(ev, src[sel], edited[sel], labels[sel], target[sel], 100)
            by_dir.append(out[f"attr_success_{clf.tag}"])
        per_attr[attribute] = sum(by_dir) / len(by_dir)
    mean = sum(per_attr.values()) / len(per_attr)
    print(f"oracle attr_success on in-distribution edits: mean {mean:.4f}", per_attr)
    assert mean >= 0.97, per_attr


@pytest.mark.slow
def test_synthfaces_default_classifier_reaches_target(toy_cache, monkeypatch):
    """The protocol's default classifier, trained here (not the shipped weights): >= 98% mean held-out
    accuracy on SynthFaces at 64 px (issue 4)."""
    if "synthfaces" not in DATASETS.names():
        pytest.skip("synthfaces dataset not registered")
    monkeypatch.setenv("FACEEDIT_REFERENCE_JUDGES", "0")
    clf = load_classifier(DATASETS.create("synthfaces", resolution=64), "cpu")
    assert clf.tag == "slim10_judge2_synthfaces64"
    assert clf.metrics["mean_accuracy"] >= 0.98, clf.accuracy
