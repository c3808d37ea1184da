"""The attribute classifier: training from scratch, held-out accuracy, cache, config hashing, CLI.

Trained for real on ``ToyShapes``, a tiny deterministic dataset of coloured
shapes whose labels are visible by construction (and which, like SynthFaces,
can render the counterfactual with one attribute flipped).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmark.assets import MissingAssetError
from benchmark.data.base import AttributeSpec, DataError, FaceDataset, FaceSplit
from benchmark.registry import DATASETS, register_dataset
from evaluators.classifier import (
    AttributeClassifier, ClassifierConfig, ClassifierConfigError, MissingClassifierError, build_network,
    classifier_tag, evaluate_accuracy, load_classifier, train_classifier,
)
from evaluators.classifier import cache
from evaluators.classifier.train import main as train_main

SPLIT_SIZES = {"train": 640, "test": 200}
# Fast for tests: a /4 stem at 32 px; 4 epochs over 640 images take seconds on one core.
TOY_CONFIG = {"epochs": 4, "batch_size": 32, "stem_downsample": 4, "lr": 3e-3, "warmup_steps": 10}


class ToyShapesSplit(FaceSplit):
    """Items rendered on the fly from (split seed, index): same index, same image, always."""

    def __init__(self, dataset: "ToyShapes", name: str, size: int):
        self.dataset, self.split_name, self.size = dataset, name, size
        self.seed = {"train": 1, "test": 2, "val": 3}[name] * 1_000_003 + dataset.options.get("seed", 0)

    def __len__(self) -> int:
        return self.size

    def _labels(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + 7919 * i)
        return (torch.rand(len(self.dataset.attributes), generator=g) < 0.5).float()

    def _render(self, i: int, labels: torch.Tensor) -> torch.Tensor:
        """Background noise + one visible element per positive attribute; randomness independent of labels."""
        r = self.dataset.resolution
        g = torch.Generator().manual_seed(self.seed + 104729 * i)
        img = torch.rand(1, generator=g) * 0.3 - 0.3 + 0.1 * torch.randn(3, r, r, generator=g)
        jitter = torch.randint(-2, 3, (4,), generator=g).tolist()
        px = lambda f: int(round(f * r / 32))  # noqa: E731 - coordinates drawn for 32 px, scaled
        if labels[0]:  # Bangs: a brown band across the top
            img[:, : px(7 + jitter[0])] = torch.tensor([0.4, 0.0, -0.5]).view(3, 1, 1)
        if labels[1]:  # Eyeglasses: a dark blue bar across the middle
            y = px(14 + jitter[1])
            img[:, y: y + px(3), px(5): px(27)] = torch.tensor([-0.8, -0.8, 0.9]).view(3, 1, 1)
        if labels[2]:  # Smiling: a red block near the bottom
            y, x = px(23 + jitter[2]), px(12 + jitter[3])
            img[:, y: y + px(4), x: x + px(8)] = torch.tensor([0.9, -0.7, -0.7]).view(3, 1, 1)
        if labels[3]:  # Male: a global green tint
            img[1] += 0.5
        return img.clamp(-1, 1)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.size:
            raise IndexError(i)
        if self.dataset.options.get("broken_split") == self.split_name:
            raise DataError(f"toy split {self.split_name} is broken on purpose")
        labels = self._labels(i)
        return {"image": self._render(i, labels), "labels": labels, "identity": torch.tensor(i),
                "index": torch.tensor(i)}

    def counterfactuals(self, index: torch.Tensor, attribute: str, target: torch.Tensor) -> torch.Tensor:
        a = self.dataset.attribute_index(attribute)
        out = []
        for i, t in zip(index.tolist(), target.tolist()):
            labels = self._labels(i)
            labels[a] = float(t)
            out.append(self._render(i, labels))
        return torch.stack(out)


class ToyShapes(FaceDataset):
    name = "test-toyshapes"
    attributes = (AttributeSpec("Bangs", "local"), AttributeSpec("Eyeglasses", "local"),
                  AttributeSpec("Smiling", "local"), AttributeSpec("Male", "global"))
    has_counterfactuals = True

    def split(self, name: str) -> FaceSplit:
        self._check_split(name)
        return ToyShapesSplit(self, name, SPLIT_SIZES[name])


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One classifier cache for the session (both test files), so the toy classifier trains once."""
    return tmp_path_factory.getbasetemp() / "shared-classifier-cache"


@pytest.fixture
def toy_cache(shared_cache, monkeypatch) -> Path:
    monkeypatch.setenv("FACEEDIT_CACHE", str(shared_cache))
    return shared_cache


@pytest.fixture
def toy_classifier(toy_cache) -> AttributeClassifier:
    torch.manual_seed(0)
    return load_classifier(ToyShapes(resolution=32), "cpu", TOY_CONFIG)


@pytest.fixture
def registered_toy():
    register_dataset(ToyShapes.name)(ToyShapes)
    yield ToyShapes
    DATASETS.unregister(ToyShapes.name)


def test_training_from_scratch_beats_chance_on_held_out_data(toy_classifier):
    ds = ToyShapes(resolution=32)
    held_out = evaluate_accuracy(toy_classifier, ds.split("test"))
    assert held_out["n"] == SPLIT_SIZES["test"]
    assert held_out["mean_baseline_accuracy"] < 0.65  # labels are balanced: chance is ~0.5
    assert held_out["mean_accuracy"] > 0.9, held_out
    assert min(held_out["accuracy"].values()) > 0.8, held_out
    # metrics.json recorded the same evaluation
    assert toy_classifier.metrics["mean_accuracy"] == pytest.approx(held_out["mean_accuracy"], abs=0.02)


def test_metrics_json_beside_safetensors_checkpoint(toy_classifier):
    d = toy_classifier.directory
    assert (d / "model.safetensors").is_file()
    m = json.loads((d / "metrics.json").read_text())
    assert set(m["accuracy"]) == set(ToyShapes.attributes[i].name for i in range(4))
    assert m["eval_split"] == "test" and m["n"] == SPLIT_SIZES["test"]
    assert m["n_train"] == SPLIT_SIZES["train"]
    assert m["train_seconds"] > 0 and m["config"]["epochs"] == TOY_CONFIG["epochs"]
    assert m["mean_accuracy"] == pytest.approx(sum(m["accuracy"].values()) / 4)
    assert toy_classifier.accuracy == m["accuracy"]


def test_second_load_is_a_cache_hit(toy_classifier):
    weights = toy_classifier.directory / "model.safetensors"
    before = weights.stat().st_mtime_ns
    ds = ToyShapes(resolution=32)
    handle = train_classifier(ds, "cpu", TOY_CONFIG)
    again = load_classifier(ds, "cpu", TOY_CONFIG, train_if_missing=False)
    assert handle.trained is False and handle.directory == toy_classifier.directory
    assert weights.stat().st_mtime_ns == before
    x = ds.split("test")[0]["image"][None]
    assert torch.equal(again.logits(x), toy_classifier.logits(x))


def test_cache_key_covers_config_dataset_and_resolution():
    ds32, ds64 = ToyShapes(resolution=32), ToyShapes(resolution=64)
    base = ClassifierConfig.from_dict(TOY_CONFIG)
    key = cache.classifier_key(ds32, base)
    assert cache.classifier_key(ds32, ClassifierConfig.from_dict(dict(TOY_CONFIG))) == key
    for changed in ({"epochs": 5}, {"lr": 1e-3}, {"seed": 1}, {"arch": "resnet34"}, {"hflip": False}):
        assert cache.classifier_key(ds32, base.with_overrides(**changed)) != key, changed
    assert cache.classifier_key(ds64, base) != key
    assert cache.classifier_key(ToyShapes(resolution=32, seed=5), base) != key
    # runtime-only fields do not change the weights, so not the key either
    assert cache.classifier_key(ds32, base.with_overrides(num_workers=2, eval_batch_size=7)) == key


def test_tag_names_the_protocol():
    ds = ToyShapes(resolution=32)
    assert classifier_tag(ds, ClassifierConfig()) == "slim10_test-toyshapes32"
    custom = classifier_tag(ds, ClassifierConfig.from_dict(TOY_CONFIG))
    assert custom.startswith("slim10_test-toyshapes32_") and custom != classifier_tag(
        ds, ClassifierConfig.from_dict({**TOY_CONFIG, "epochs": 9}))


def test_classifier_outputs_and_any_input_size(toy_classifier):
    ds = ToyShapes(resolution=32)
    x = torch.stack([ds.split("test")[i]["image"] for i in range(16)])
    logits, probs, pred = toy_classifier.logits(x), toy_classifier.probs(x), toy_classifier.predict(x)
    assert logits.shape == probs.shape == pred.shape == (16, 4)
    assert torch.all((probs >= 0) & (probs <= 1)) and set(pred.unique().tolist()) <= {0, 1}
    assert torch.equal(pred, (probs > 0.5).long())
    feats = toy_classifier.features(x)
    assert feats.shape == (16, 128) and torch.isfinite(feats).all()
    assert torch.allclose(toy_classifier.net.fc(feats), logits, atol=1e-5)
    # a 64 px copy is resized back inside: the same face gets (almost) the same answers
    big = torch.nn.functional.interpolate(x, size=(64, 64), mode="bilinear", align_corners=False)
    assert (toy_classifier.predict(big) == pred).float().mean() > 0.9
    assert toy_classifier.tag.startswith("slim10_test-toyshapes32")
    assert not toy_classifier.training
    with pytest.raises(ValueError, match="B×3×H×W"):
        toy_classifier.logits(x[:, :1])


def test_missing_classifier_without_training_says_how_to_train(registered_toy, tmp_path, monkeypatch):
    """The error names the exact command, and running that command makes the load succeed."""
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    ds, cfg = ToyShapes(resolution=32, seed=3), {**TOY_CONFIG, "epochs": 1, "max_train_items": 64, "hflip": None}
    with pytest.raises(MissingClassifierError, match="python -m evaluators.classifier.train --dataset test-toyshapes") as err:
        load_classifier(ds, "cpu", cfg, train_if_missing=False)
    command = str(err.value).split("python -m evaluators.classifier.train ", 1)[1].split()
    assert train_main(command) == 0
    assert load_classifier(ds, "cpu", cfg, train_if_missing=False).directory.parent == tmp_path / "classifiers"


def test_failed_training_leaves_no_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    ds = ToyShapes(resolution=32, broken_split="test")  # training succeeds, held-out evaluation fails
    with pytest.raises(DataError, match="broken on purpose"):
        train_classifier(ds, "cpu", {**TOY_CONFIG, "epochs": 1, "max_train_items": 64})
    root = cache.classifiers_root()
    assert not cache.classifier_dir(ds, ClassifierConfig.from_dict({**TOY_CONFIG, "epochs": 1,
                                                                    "max_train_items": 64})).exists()
    assert not [p for p in root.iterdir() if p.is_dir()]  # no temporary directory left behind


def test_atomic_directory_only_appears_when_complete(tmp_path):
    final = tmp_path / "classifiers" / "abc"
    with pytest.raises(RuntimeError):
        with cache.atomic_directory(final) as tmp:
            (tmp / "model.safetensors").write_bytes(b"half")
            raise RuntimeError("killed")
    assert not final.exists() and list(final.parent.iterdir()) == []
    with cache.atomic_directory(final) as tmp:
        (tmp / "x").write_text("done")
    assert (final / "x").read_text() == "done"


def test_small_input_stem():
    resnet = ClassifierConfig(arch="resnet18")
    net32 = build_network(resnet, 4, 32)
    assert net32.conv1.kernel_size == (3, 3) and net32.conv1.stride == (2, 2)
    assert isinstance(net32.maxpool, torch.nn.Identity)
    net16 = build_network(resnet, 4, 16)
    assert net16.conv1.stride == (1, 1) and isinstance(net16.maxpool, torch.nn.Identity)
    net64 = build_network(resnet, 4, 64)
    assert net64.conv1.kernel_size == (7, 7) and isinstance(net64.maxpool, torch.nn.MaxPool2d)
    net256 = build_network(resnet, 4, 256)
    assert net256.conv1.kernel_size == (7, 7) and isinstance(net256.maxpool, torch.nn.MaxPool2d)
    assert net32(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    # the default slim10 keeps twice the resolution: /1 at 32 px, /2 at 64 px, /4 from 128 px
    slim = ClassifierConfig()
    assert [slim.resolved_stem(r) for r in (32, 64, 128, 256)] == [1, 2, 4, 4]
    assert build_network(slim, 4, 32)(torch.zeros(2, 3, 32, 32)).shape == (2, 4)


def test_added_fields_keep_old_cache_keys():
    """``width`` came after checkpoints were cached: a resnet config hashes as before, slim10 carries its
    rule version, so a checkpoint made under an older slim10 rule is never reused."""
    resnet = ClassifierConfig(arch="resnet18").hashed_dict()
    assert "width" not in resnet and "slim_code_version" not in resnet
    slim = ClassifierConfig().hashed_dict()
    assert slim["slim_code_version"] >= 2 and "width" not in slim
    assert ClassifierConfig(width=24).hashed_dict()["width"] == 24
    # train_degrade_prob (InterFaceGAN's labeller) came later too: off, it leaves every key as it was
    assert "train_degrade_prob" not in slim and "train_degrade_prob" not in resnet
    assert ClassifierConfig(train_degrade_prob=0.5).hashed_dict()["train_degrade_prob"] == 0.5
    with pytest.raises(ClassifierConfigError, match="train_degrade_prob"):
        ClassifierConfig(train_degrade_prob=1.5)


def test_balanced_accuracy_marks_unjudgeable_attributes():
    from evaluators.classifier.train import report_table
    from evaluators.classifier.training import _accuracy_summary

    n = 100  # A: always "no" on 10 % positives (accuracy 0.9, balanced 0.5); B: perfect; C: one class only
    pos = torch.tensor([10, 50, 0])
    figures = _accuracy_summary(("A", "B", "C"), n, correct=torch.tensor([90, 100, 100]), positives=pos,
                                true_pos=torch.tensor([0, 50, 0]), true_neg=torch.tensor([90, 50, 100]))
    assert figures["accuracy"]["A"] == pytest.approx(0.9) and figures["balanced_accuracy"]["A"] == pytest.approx(0.5)
    assert figures["balanced_accuracy"]["B"] == pytest.approx(1.0)
    assert figures["balanced_accuracy"]["C"] != figures["balanced_accuracy"]["C"]  # NaN: undefined, not 0.5
    assert figures["unreliable_attributes"] == ["A", "C"]
    table = report_table(figures)
    assert "| A | 0.900 | 0.500 | 0.900 | **no**" in table and "| B | 1.000 | 1.000 | 0.500 | yes |" in table


def test_bad_config_is_named():
    with pytest.raises(ClassifierConfigError, match="unknown classifier option.*epochz"):
        ClassifierConfig.from_dict({"epochz": 3})
    with pytest.raises(ClassifierConfigError, match="unknown classifier arch 'vgg'"):
        ClassifierConfig.from_dict({"arch": "vgg"})


def test_pretrained_offline_fails_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingAssetError, match=r"(?s)ImageNet weights.*put the file at: .*resnet18-"):
        build_network(ClassifierConfig(arch="resnet18", pretrained=True), 4, 32)


def test_cli_trains_then_hits_the_cache(registered_toy, toy_cache, capsys):
    args = ["--dataset", ToyShapes.name, "--resolution", "32"] + [
        a for k, v in TOY_CONFIG.items() for a in ("--set", f"{k}={v}")]
    assert train_main(args) == 0
    out = capsys.readouterr().out
    assert "mean accuracy" in out and "Eyeglasses" in out
    report = toy_cache / "report.json"
    assert train_main(args + ["--report-split", "test", "--report-json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "on the test split (n=200)" in out and "| balanced accuracy |" in out
    figures = json.loads(report.read_text())
    assert figures["split"] == "test" and set(figures["balanced_accuracy"]) == set(figures["accuracy"])


def test_cli_errors_are_one_message(registered_toy, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    monkeypatch.setenv("FACEEDIT_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert train_main(["--dataset", "no-such-dataset"]) == 2
    assert "unknown dataset 'no-such-dataset'" in capsys.readouterr().err
    assert train_main(["--dataset", ToyShapes.name, "--resolution", "32", "--pretrained"]) == 2
    err = capsys.readouterr().err  # the default slim10 has none
    assert err.startswith("error: ") and "slim10 has no ImageNet weights" in err and "Traceback" not in err
    assert train_main(["--dataset", ToyShapes.name, "--resolution", "32", "--arch", "resnet18", "--pretrained"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "ImageNet weights" in err and "Traceback" not in err
    assert train_main(["--dataset", ToyShapes.name, "--set", "epochz=1"]) == 2
    assert "epochz" in capsys.readouterr().err


def test_learning_curve_does_not_change_the_weights(tmp_path, monkeypatch):
    """eval_every_epoch is a runtime field: same key, and the same trained weights with or without it."""
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    ds = ToyShapes(resolution=32)
    cfg = {**TOY_CONFIG, "epochs": 2, "max_train_items": 96}
    plain = train_classifier(ds, "cpu", cfg)
    x = ds.split("test")[0]["image"][None]
    before = load_classifier(ds, "cpu", cfg).logits(x)
    curved = train_classifier(ds, "cpu", {**cfg, "eval_every_epoch": True}, force=True)
    assert curved.directory == plain.directory and curved.trained
    assert len(curved.metrics["epoch_accuracy"]) == 2 and plain.metrics["epoch_accuracy"] == []
    assert curved.metrics["epoch_accuracy"][-1] == pytest.approx(curved.mean_accuracy)
    assert torch.allclose(load_classifier(ds, "cpu", cfg).logits(x), before, atol=1e-5)


def test_grid_warns_once_when_the_judge_cannot_judge_the_attribute(caplog):
    from evaluators.attributes import warn_if_unreliable

    metrics = {"unreliable_attributes": ["Young"], "balanced_accuracy": {"Young": 0.75, "Smiling": 0.91}}
    clf = AttributeClassifier(build_network(ClassifierConfig(), 2, 32), ("Smiling", "Young"), 32,
                              "unreliable-test", "cpu", metrics=metrics)
    with caplog.at_level("WARNING"):
        assert warn_if_unreliable(clf, "Young") and not warn_if_unreliable(clf, "Smiling")
        assert warn_if_unreliable(clf, "Young")  # still unreliable, but said once
    assert caplog.text.count("unreliable on Young: held-out balanced accuracy 0.750") == 1
