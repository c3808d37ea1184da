"""Shared fixtures: a tiny registered dataset and evaluator that exercise the frame without heavy models.

They are real implementations of the contracts (not mocks): the dataset draws
coloured squares whose labels are visible in the pixels, the evaluator
measures the mean absolute pixel change.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from benchmark.data.base import AttributeSpec, FaceDataset, FaceSplit
from benchmark.registry import DATASETS, EVALUATORS, METHODS
from evaluators.base import Evaluator, RunningMean
from methods.base import Editor, EditorMeta

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# The whole suite runs on one torch thread, whatever file runs first or alone.  The small judges and
# fits the tests train depend on the thread count (float reductions split across threads), so a test
# run on its own must see the thread count the full suite sees (it used to be set by two test modules
# at import, so the count depended on which files were collected).
torch.set_num_threads(1)


class _ToySplit(FaceSplit):
    def __init__(self, dataset: "ToyFaces", name: str, n: int, offset: int):
        self.dataset, self.split_name, self.n, self.offset = dataset, name, n, offset

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        g = torch.Generator().manual_seed(self.offset + i)
        labels = (torch.rand(2, generator=g) > 0.5).float()
        r = self.dataset.resolution
        img = torch.full((3, r, r), -0.5)
        img[0, : r // 2, : r // 2] = 1.0 if labels[0] else -1.0  # attribute "Smiling": top-left square red
        img[2] = 1.0 if labels[1] else -1.0  # attribute "Male": blue channel everywhere
        return {"image": img, "labels": labels, "identity": torch.tensor(self.offset + i),
                "index": torch.tensor(i)}


@DATASETS.register("toy-faces")
class ToyFaces(FaceDataset):
    """Coloured squares with visible labels (test fixture)."""

    attributes = (AttributeSpec("Smiling", "local"), AttributeSpec("Male", "global"))

    def split(self, name: str) -> FaceSplit:
        self._check_split(name)
        n = int(self.options.get("n", 20))
        return _ToySplit(self, name, n, 0 if name == "train" else 10_000)


@EVALUATORS.register("mean-abs-change")
class MeanAbsChange(Evaluator):
    """Mean absolute pixel change (test fixture)."""

    metrics = ("mean_abs_change",)

    def reset(self) -> None:
        self.mean = RunningMean()

    def update(self, source, edited, labels, target, **extras) -> None:
        self.mean.add((edited - source).abs().mean(dim=(1, 2, 3)))

    def finalize(self) -> dict[str, float]:
        return {"mean_abs_change": self.mean.value}


@METHODS.register("toy-flip")
class ToyFlip(Editor):
    """Sets the toy attribute's pixels to the target (test fixture); fails on request."""

    meta = EditorMeta(paper="test fixture", trainable=False)

    def edit(self, images, attribute, target, strength=1.0, context=None):
        time.sleep(float(self.options.get("sleep", 0.0)))  # lets a test kill a run mid-grid
        if self.options.get("fail_on") == attribute:
            raise RuntimeError(f"toy-flip was told to fail on {attribute}")
        out = images.clone()
        r = images.shape[-1]
        val = (target * 2 - 1).view(-1, 1, 1)
        if attribute == "Smiling":
            out[:, 0, : r // 2, : r // 2] = val
        else:
            out[:, 2] = val
        return out


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("FACEEDIT_CACHE", str(d))
    return d
