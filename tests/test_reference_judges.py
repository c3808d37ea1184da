"""Shipped judge weights (evaluators/reference_judges.py): used instead of training, verified, replaceable."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from benchmark import cache as entries
from evaluators import reference_judges as rj
from evaluators.classifier import cache as clf_cache
from evaluators.classifier import training as clf_training
from evaluators.classifier.config import ClassifierConfig
from tests.test_classifier import TOY_CONFIG, ToyShapes


@pytest.fixture
def shipped_root(tmp_path, monkeypatch):
    monkeypatch.setattr(rj, "ROOT", tmp_path / "judge_weights")
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(rj.ENV, raising=False)
    return rj.ROOT


def _train_and_ship(ds: ToyShapes) -> tuple[str, dict]:
    handle = clf_training.train_classifier(ds, "cpu", TOY_CONFIG)
    weights = load_file(str(handle.directory / "model.safetensors"))
    shipped = rj._export("classifiers", handle.directory)
    entries.remove_entry(handle.directory)
    assert shipped.name == handle.key and not handle.directory.exists()
    return handle.key, weights


def test_a_shipped_judge_is_used_instead_of_training(shipped_root, monkeypatch):
    ds = ToyShapes(resolution=32)
    key, weights = _train_and_ship(ds)

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped judge must not be trained")

    monkeypatch.setattr(clf_training, "_train_into", no_training)
    handle = clf_training.train_classifier(ds, "cpu", TOY_CONFIG)
    assert handle.key == key and not handle.trained
    assert json.loads((handle.directory / rj.INFO).read_text())["copied_from"].endswith(key)
    clf = clf_training.load_classifier(ds, "cpu", TOY_CONFIG, train_if_missing=False)
    for k, v in clf.net.state_dict().items():
        assert torch.equal(v.cpu(), weights[k]), k


def test_a_different_local_judge_of_the_same_key_is_replaced(shipped_root, caplog):
    ds = ToyShapes(resolution=32)
    key, weights = _train_and_ship(ds)
    local = clf_cache.classifier_dir(ds, ClassifierConfig.from_dict(TOY_CONFIG))
    with entries.atomic_directory(local) as tmp:  # another machine's judge under the same key
        for f in rj.reference_dir("classifiers", key).iterdir():
            if f.name != entries.MANIFEST:
                (tmp / f.name).write_bytes(f.read_bytes())
        state = {k: v + 1 if v.is_floating_point() else v for k, v in weights.items()}
        from safetensors.torch import save_file

        save_file(state, str(tmp / "model.safetensors"))
    with caplog.at_level("WARNING"):
        clf = clf_training.load_classifier(ds, "cpu", TOY_CONFIG)
    assert "differs from the shipped judge" in caplog.text
    assert torch.equal(clf.net.fc.weight.cpu(), weights["fc.weight"])


def test_a_damaged_shipped_judge_is_an_error_and_the_switch_trains(shipped_root, monkeypatch):
    ds = ToyShapes(resolution=32)
    key, _ = _train_and_ship(ds)
    path = rj.reference_dir("classifiers", key) / "metrics.json"
    path.write_text(path.read_text().replace("accuracy", "accuracx"))
    with pytest.raises(entries.CacheCorruptError, match=r"(?s)metrics.json.*git checkout"):
        clf_training.load_classifier(ds, "cpu", TOY_CONFIG)
    monkeypatch.setenv(rj.ENV, "0")  # the from-scratch path
    handle = clf_training.train_classifier(ds, "cpu", TOY_CONFIG)
    assert handle.trained and not (handle.directory / rj.INFO).exists()


def test_the_shipped_default_judges_match_todays_keys():
    """The committed weights answer for today's default configs: a change of key (config, code version,
    dataset fingerprint) without re-export would silently bring training back, so it fails here."""
    from benchmark.registry import DATASETS
    from evaluators.classifier.config import default_config
    from evaluators.identity import synth_embedder as se

    ds = DATASETS.create("synthfaces", resolution=64)
    for kind, final in (("classifiers", clf_cache.classifier_dir(ds, default_config(ds))),
                        (se.CACHE_SUBDIR, se.cache_dir(ds, se.SynthEmbedderConfig()))):
        shipped = rj.reference_dir(kind, final.name)
        assert shipped.is_dir(), f"no shipped judge for {kind}/{final.name}: run python -m evaluators.reference_judges export"
        entries.verify_entry(shipped)
    metrics = json.loads((rj.reference_dir("classifiers", clf_cache.classifier_dir(ds, default_config(ds)).name)
                          / "metrics.json").read_text())
    assert metrics["tag"] == "slim10_judge2_synthfaces64" and metrics["mean_accuracy"] >= 0.98


SHIPPED = sorted(p for kind in ("classifiers", "id_embedders") for p in (rj.ROOT / kind).iterdir() if p.is_dir())


@pytest.mark.parametrize("entry", SHIPPED, ids=[f"{p.parent.name}/{p.name}" for p in SHIPPED])
def test_every_shipped_judge_verifies_and_is_filed_under_its_own_key(entry):
    """Each committed judge passes its manifest (sha256 per file) and says, in its own metrics, that it was
    trained under the key it is filed under: a judge copied into the wrong folder would score under another
    protocol's name."""
    entries.verify_entry(entry)
    metrics = json.loads((entry / "metrics.json").read_text())
    assert metrics.get("key", entry.name) == entry.name
    assert (rj.ROOT / "README.md").read_text().count(entry.name) >= 1  # listed, with its data and licence


def test_the_shipped_celebahq_judge_matches_todays_key_wherever_the_data_is():
    """configs/celebahq64.yaml's judge is shipped (trained on the 64 px mirror's train split, one thread):
    today's key for that config, computed from ../shared/data and from another spelling of the same folder,
    is the committed entry, so a reader scores with the same weights and trains nothing."""
    import os
    from pathlib import Path

    from benchmark.registry import DATASETS
    from evaluators.classifier.config import default_config

    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celebahq"
    if not (root / "CelebAMask-HQ-attribute-anno.txt").is_file():
        pytest.skip("no ../shared/data/celebahq")
    keys = set()
    for spelling in (str(root), os.path.relpath(root)):
        ds = DATASETS.create("celebahq", resolution=64, root=spelling, image_dir="CelebA-HQ-img-64", download=False)
        keys.add(clf_cache.classifier_dir(ds, default_config(ds)).name)
    (key,) = keys
    shipped = rj.reference_dir("classifiers", key)
    assert shipped.is_dir(), f"no shipped CelebA-HQ judge for {key}: python -m evaluators.reference_judges export"
    metrics = json.loads((shipped / "metrics.json").read_text())
    assert metrics["tag"] == "slim10_celebahq64" and metrics["n_train"] == 24183 and metrics["torch_threads"] == 1
