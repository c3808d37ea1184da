"""Cached artefacts are verified before use (issue 7): digests, incomplete entries, corrupt files.

One mechanism (``benchmark.cache``) serves every cache under ``$FACEEDIT_CACHE``: the attribute
classifier, the SynthFaces identity embedder and FID reference statistics.  Each test trains or
computes a tiny real entry in a private cache, damages it the way a user's disk or a stray script
would, and checks that the damage is named and repaired (or refused with the remedy), never used.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from benchmark import cache as entries
from benchmark.bench_evaluators import SmoothNoiseFaces
from benchmark.cache import MANIFEST, CacheCorruptError
from evaluators.classifier import cache as clf_cache
from evaluators.classifier import load_classifier, train_classifier
from evaluators.features import fid_cache_dir, tiny_random_features
from evaluators.fid import STATS_FILE, reference_stats
from test_classifier import TOY_CONFIG, ToyShapes
from test_identity import SMALL, ProcIdentityFaces

TINY = {**TOY_CONFIG, "epochs": 1, "max_train_items": 64}  # seconds on one core; quality is not the point


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    return tmp_path / "cache"


def _zero_safetensors(path: Path) -> None:
    """Rewrite a safetensors file with every tensor zeroed: same size, still parses."""
    size = path.stat().st_size
    save_file({k: torch.zeros_like(v) for k, v in load_file(str(path)).items()}, str(path))
    assert path.stat().st_size == size


def _toy_classifier_dir(ds: ToyShapes) -> Path:
    return train_classifier(ds, "cpu", TINY).directory


# -- the mechanism -------------------------------------------------------------------------------------


def test_manifest_names_the_damaged_file(tmp_path):
    entry = tmp_path / "entry"
    with entries.atomic_directory(entry) as tmp:
        (tmp / "a.bin").write_bytes(b"\x01" * 64)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.json").write_text("{}")
    assert set(entries.verify_entry(entry)["files"]) == {"a.bin", "sub/b.json"}
    (entry / "a.bin").write_bytes(b"\x00" * 64)  # same size, different content
    with pytest.raises(CacheCorruptError, match=r"a\.bin: content digest does not match"):
        entries.verify_entry(entry, "retrain it")
    (entry / "sub" / "b.json").unlink()
    (entry / MANIFEST).unlink()
    with pytest.raises(CacheCorruptError, match="incomplete cache entry"):
        entries.verify_entry(entry)


def test_ensure_entry_builds_once_and_repairs_under_the_lock(tmp_path):
    entry, builds = tmp_path / "entry", []

    def build(tmp: Path) -> None:
        builds.append(tmp)
        (tmp / "x").write_text("content")

    assert entries.ensure_entry(entry, build) == (entry, True)
    assert entries.ensure_entry(entry, build) == (entry, False) and len(builds) == 1
    (entry / "x").write_text("CONTENT")  # corrupt
    with pytest.raises(CacheCorruptError, match="x: content digest"):
        entries.ensure_entry(entry, build, rebuild=False)
    assert entries.ensure_entry(entry, build) == (entry, True)
    assert (entry / "x").read_text() == "content" and len(builds) == 2
    assert entries.ensure_entry(entry, build, force=True) == (entry, True) and len(builds) == 3  # --force
    assert sorted(p.name for p in tmp_path.iterdir()) == [".entry.lock", "entry"]  # no temp or trash left


# -- the attribute classifier --------------------------------------------------------------------------


def test_zeroed_classifier_weights_are_refused_or_retrained(cache, caplog):
    ds = ToyShapes(resolution=32)
    directory = _toy_classifier_dir(ds)
    weights = directory / clf_cache.WEIGHTS_FILE
    _zero_safetensors(weights)
    with pytest.raises(CacheCorruptError) as err:
        load_classifier(ds, "cpu", TINY, train_if_missing=False)
    msg = str(err.value)
    assert str(weights) in msg and "digest" in msg
    assert "python -m evaluators.classifier.train --dataset test-toyshapes" in msg and "--force" in msg
    with caplog.at_level(logging.WARNING, logger="benchmark.cache"):
        clf = load_classifier(ds, "cpu", TINY)  # training allowed: rebuilt, not scored with zeros
    assert str(weights) in caplog.text
    assert clf.directory == directory and entries.is_valid(directory)
    assert any(float(v.abs().max()) > 0 for v in load_file(str(weights)).values())
    images = torch.stack([ds.split("test")[i]["image"] for i in range(64)])
    assert clf.predict(images).float().std(0).min() > 0  # a zeroed network predicts one constant


@pytest.mark.parametrize("damage", ["delete-info", "delete-manifest"])
def test_incomplete_classifier_entry_is_retrained_once_under_the_lock(cache, damage):
    ds = ToyShapes(resolution=32, seed=1)
    directory = _toy_classifier_dir(ds)
    # classifier.json deleted by hand; or an entry written before manifests existed
    (directory / (clf_cache.INFO_FILE if damage == "delete-info" else MANIFEST)).unlink()
    trained: list[bool] = []
    errors: list[BaseException] = []

    def cell() -> None:  # two cells of one grid that both need the classifier now
        try:
            trained.append(train_classifier(ds, "cpu", TINY).trained)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=cell) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors  # was: OSError [Errno 39] Directory not empty on the rename
    assert sorted(trained) == [False, True]  # repaired once; the other cell waited and reused it
    assert entries.is_valid(directory) and (directory / clf_cache.INFO_FILE).is_file()
    assert train_classifier(ds, "cpu", TINY).trained is False  # and later runs find it whole
    assert [p.name for p in directory.parent.iterdir() if p.is_dir()] == [directory.name]


@pytest.mark.parametrize("name, damage, reason", [
    ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
     "cannot read classifier weights"),
    ("metrics.json", lambda p: p.write_text('{"mean_accuracy": 0.9'), "not valid JSON"),
    ("classifier.json", lambda p: p.write_text("not json"), "not valid JSON"),
])
def test_corrupt_classifier_file_is_named_with_the_remedy(cache, name, damage, reason):
    ds = ToyShapes(resolution=32, seed=2)
    directory = _toy_classifier_dir(ds)
    damage(directory / name)
    # first line of defence: the manifest (size or digest) names the file
    with pytest.raises(CacheCorruptError, match=rf"{name}: (size|content digest)"):
        load_classifier(ds, "cpu", TINY, train_if_missing=False)
    # even with a manifest that agrees (re-written over the broken file), the parser's bare
    # SafetensorError / JSONDecodeError becomes an error naming the file and the remedy
    entries.write_manifest(directory)
    with pytest.raises(CacheCorruptError) as err:
        load_classifier(ds, "cpu", TINY, train_if_missing=False)
    assert str(directory / name) in str(err.value) and reason in str(err.value)
    assert "--force" in str(err.value)


# -- the SynthFaces identity embedder ------------------------------------------------------------------


def test_zeroed_or_corrupt_identity_embedder_is_retrained(cache):
    from evaluators.identity import synth_embedder as se

    ds = ProcIdentityFaces(resolution=32)
    cfg = se.SynthEmbedderConfig.from_options({**SMALL, "epochs": 1})
    se.get_embedder(ds, cfg, "cpu")
    folder = se.cache_dir(ds, cfg)
    weights = folder / "model.safetensors"
    _zero_safetensors(weights)
    with pytest.raises(CacheCorruptError, match=r"model\.safetensors: content digest"):
        se.load_embedder(folder, cfg, "cpu")
    model = se.get_embedder(ds, cfg, "cpu")  # rebuilt under the lock, not loaded with zeros
    assert entries.is_valid(folder)
    assert float(model.trunk[0].weight.detach().abs().max()) > 0
    (folder / "metrics.json").write_text("{broken")
    entries.write_manifest(folder)  # a manifest that agrees: the parser error itself must name the file
    with pytest.raises(CacheCorruptError, match=r"metrics\.json: not valid JSON.*delete"):
        se.read_metrics(ds, cfg)


# -- FID reference statistics --------------------------------------------------------------------------


def test_bad_fid_reference_statistics_are_recomputed_or_named(cache):
    ds = SmoothNoiseFaces(resolution=32, n_test=48, seed=3)
    feats = tiny_random_features(torch.device("cpu"))
    moments, sample = reference_stats(ds, "Smiling", 1, feats)
    (entry,) = [p for p in fid_cache_dir().iterdir() if p.is_dir()]
    stats = entry / STATS_FILE
    assert entries.is_valid(entry) and stats.is_file()
    stats.write_bytes(b"PK\x03\x04 this is not a zip archive")
    again, sample2 = reference_stats(ds, "Smiling", 1, feats)  # recomputed, not read
    assert again.n == moments.n and np.allclose(again.mean(), moments.mean()) and np.array_equal(sample2, sample)
    with np.load(stats) as z:
        np.savez(stats, **{k: z[k] for k in z.files if k != "kid_sample"})  # an array missing
    entries.write_manifest(entry)
    with pytest.raises(CacheCorruptError) as err:
        reference_stats(ds, "Smiling", 1, feats)
    assert str(stats) in str(err.value) and "kid_sample" in str(err.value) and "delete" in str(err.value)


def test_manifest_json_itself_broken_is_an_incomplete_entry(cache):
    ds = SmoothNoiseFaces(resolution=32, n_test=48, seed=4)
    feats = tiny_random_features(torch.device("cpu"))
    reference_stats(ds, "Male", 0, feats)
    (entry,) = [p for p in fid_cache_dir().iterdir() if p.is_dir()]
    (entry / MANIFEST).write_text(json.dumps({"no": "files"}))
    with pytest.raises(CacheCorruptError, match="unreadable manifest"):
        entries.verify_entry(entry)
    reference_stats(ds, "Male", 0, feats)  # repaired
    assert entries.is_valid(entry)


def _later_field_keyers() -> dict:
    """Each config that has fields added later, as (its default instance, the function that keys it)."""
    from evaluators.classifier.config import ClassifierConfig
    from evaluators.identity import synth_embedder
    from methods.interfacegan.labeller import LabellerSpec

    return {"classifier": (ClassifierConfig(), ClassifierConfig.hashed_dict),
            "embedder": (synth_embedder.SynthEmbedderConfig(), synth_embedder._hashed_fields),
            "labeller": (LabellerSpec(), LabellerSpec.keyed)}


@pytest.mark.parametrize("keyer, field, old, new", [
    ("classifier", "width", None, 32),
    ("classifier", "train_degrade_prob", 0.0, 0.5),
    ("embedder", "stem_stride", 1, 2),
    ("embedder", "readout_max_items", None, 10000),
    ("embedder", "judge_ids_per_train_id", 1.6, 12.8),
    ("labeller", "degrade_prob", 0.0, 0.3),
])
def test_a_field_added_later_enters_its_key_only_when_it_differs_from_the_old_behaviour(keyer, field, old, new):
    """Entries made before a field existed behaved as its old value: at that value the field is in
    no key (so they keep theirs), at any other it is. One helper (benchmark.cache) serves every keyer."""
    from dataclasses import replace

    base, key = _later_field_keyers()[keyer]
    at_old, at_new = key(replace(base, **{field: old})), key(replace(base, **{field: new}))
    assert field not in at_old
    assert at_new[field] == new
    assert {k: v for k, v in at_new.items() if k != field} == at_old
