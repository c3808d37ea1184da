"""Every registered editor keeps the Editor contract (timm-style: parametrised over the registry).

Each editor is prepared through the training platform on a smoke-sized SynthFaces with its
``test`` preset (tiny nets, a few steps), then edits a batch: same shape and dtype, finite, inside
[-1, 1]. A new built-in editor is covered the moment it is registered.
"""
from __future__ import annotations

import pytest
import torch

from benchmark.registry import DATASETS, METHODS
from methods.base import EditContext
from methods.training import FitContext

EDITORS = METHODS.names()


@pytest.fixture(scope="module")
def smoke_dataset():
    return DATASETS.create("synthfaces", resolution=32, n_train_ids=8, n_test_ids=4, images_per_id=4)


def _prepared(name: str, dataset, cache) -> object:
    cls = METHODS.get(name)
    opts = {"preset": "test"} if "test" in getattr(cls, "presets", {}) else {}
    editor = METHODS.create(name, **opts)
    torch.manual_seed(0)
    fit = FitContext(editor=editor, dataset=dataset, attribute="Smiling", seed=0, device="cpu",
                     fits={"reference": False, "sample_every": 0}, show_progress=False, cache=cache)
    editor.prepare(fit)
    return editor


def test_every_builtin_editor_is_registered():
    assert {"identity", "oracle", "sagan"} <= set(EDITORS)


def test_every_trainable_editor_has_the_presets_docs_promise():
    for name in EDITORS:
        cls = METHODS.get(name)
        if cls.meta.trainable and cls.Options is not None and cls.__module__.startswith("methods."):
            assert {"cpu", "reference", "paper", "test"} <= set(cls.presets), name


@pytest.mark.parametrize("name", EDITORS)
def test_edit_keeps_shape_dtype_range_and_is_finite(name, smoke_dataset, tmp_path):
    editor = _prepared(name, smoke_dataset, tmp_path)
    split = smoke_dataset.split("test")
    batch = torch.stack([split[i]["image"] for i in range(6)])
    labels = torch.stack([split[i]["labels"] for i in range(6)])
    target = 1.0 - labels[:, smoke_dataset.attribute_index("Smiling")]
    ctx = EditContext(split=split, index=torch.arange(6))
    with torch.no_grad():
        out = editor.edit(batch, "Smiling", target, 1.0, context=ctx)
    assert isinstance(out, torch.Tensor)
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert torch.isfinite(out).all()
    assert out.min() >= -1.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", EDITORS)
def test_editor_metadata_is_complete(name):
    cls = METHODS.get(name)
    assert cls.meta.paper and cls.meta.strength
    lo, hi = cls.meta.value_range
    assert lo < hi
    for asset in cls.meta.assets:
        assert asset.url and asset.name, asset
