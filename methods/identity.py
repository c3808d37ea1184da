"""The no-op editor: returns its input.  DESIGN §4's sanity anchor (attr_success ≈ 0, id_cos = 1, lpips = 0)."""
from __future__ import annotations

import torch

from benchmark.registry import register_method
from methods.training import NoOptions
from methods.base import EditContext, Editor, EditorMeta


@register_method("identity")
class IdentityEditor(Editor):
    Options = NoOptions
    meta = EditorMeta(paper="no-op baseline", native_resolution=None, strength="ignored", trainable=False,
                      uses_strength=False)

    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        return images.clone()
