"""The SynthFaces ``oracle``: returns the ground-truth counterfactual (DESIGN §4's upper bound).

It is not an editor one could deploy: it reads the hidden factors of the image through
``EditContext(split=..., index=...)`` and re-renders the same person, pose and light with the
attribute set to the target.  Every metric of a method on SynthFaces is bounded by the oracle's.
``strength`` is ignored: the counterfactual is the full, binary flip.
"""
from __future__ import annotations

import torch

from benchmark.registry import register_method
from methods.training import NoOptions
from methods.base import EditContext, Editor, EditorError, EditorMeta


@register_method("oracle")
class OracleEditor(Editor):
    Options = NoOptions
    meta = EditorMeta(
        paper="ground-truth counterfactual (SynthFaces)", native_resolution=None,
        strength="ignored: the counterfactual is the full flip", trainable=False, uses_strength=False,
        notes="needs EditContext(split, index) from a dataset with counterfactuals (SynthFaces)",
        requires=("counterfactuals",),
    )

    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        split = context.split if context is not None else None
        if split is None or context.index is None:
            raise EditorError("oracle: needs context=EditContext(split=..., index=...) to render counterfactuals")
        dataset = getattr(split, "dataset", None)
        if not getattr(dataset, "has_counterfactuals", False):
            raise EditorError(f"oracle: dataset {getattr(dataset, 'name', '?')!r} has no ground-truth "
                              "counterfactuals (only SynthFaces does)")
        out = split.counterfactuals(context.index, attribute, target)
        if out is None:
            raise EditorError(f"oracle: split {getattr(split, 'split_name', '?')!r} returned no counterfactuals")
        if out.shape != images.shape:
            raise EditorError(f"oracle: counterfactuals {tuple(out.shape)} do not match images {tuple(images.shape)}")
        return out.to(device=images.device, dtype=images.dtype)
