"""The official InterFaceGAN generators (PGGAN CelebA-HQ, StyleGAN CelebA-HQ and FFHQ) and their strict loader.

``load_official(path, kind, device)`` reads a converted genforce ``.pth`` with
``torch.load(weights_only=True)``, checks every key and shape against the layout the
architecture defines (``official_state_dict_shapes``) and fails with a message naming
the missing, unexpected and mis-shaped keys before anything is loaded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from benchmark.assets import Asset, fetch

from ..assets import GENERATOR_ASSETS
from .pggan import PGGANGenerator, normalize_z, pggan_state_dict_shapes
from .stylegan import (TRUNCATION_LAYERS, TRUNCATION_PSI, StyleGANGenerator, is_fused_layer,
                       stylegan_num_layers, stylegan_state_dict_shapes)

__all__ = ["OFFICIAL_MODELS", "OfficialModel", "OfficialLayoutError", "PGGANGenerator", "StyleGANGenerator",
           "build_official", "check_official_state_dict", "load_official", "load_released", "normalize_z",
           "official_state_dict_shapes"]


@dataclass(frozen=True)
class OfficialModel:
    """One released generator (genforce ``models/model_settings.py`` MODEL_POOL entry)."""

    name: str
    arch: str  # "pggan" or "stylegan"
    dataset: str
    resolution: int = 1024
    z_dim: int = 512
    w_dim: int | None = None
    num_layers: int | None = None  # rows of W+
    fused_scale: bool | str = False

    @property
    def asset(self) -> Asset:
        return GENERATOR_ASSETS[self.name]


OFFICIAL_MODELS: dict[str, OfficialModel] = {
    "pggan_celebahq": OfficialModel("pggan_celebahq", "pggan", "celebahq", fused_scale=False),
    "stylegan_celebahq": OfficialModel("stylegan_celebahq", "stylegan", "celebahq", w_dim=512,
                                       num_layers=stylegan_num_layers(1024), fused_scale="auto"),
    "stylegan_ffhq": OfficialModel("stylegan_ffhq", "stylegan", "ffhq", w_dim=512,
                                   num_layers=stylegan_num_layers(1024), fused_scale="auto"),
}
# genforce's StyleGANGenerator.model_specific_vars: rebuilt from ψ, deleted before saving
_DROPPED_KEYS = ("truncation.truncation",)


class OfficialLayoutError(ValueError):
    """A state dict does not have the official key layout; the message lists what differs."""


def _arch(kind: str) -> str:
    if kind in OFFICIAL_MODELS:
        return OFFICIAL_MODELS[kind].arch
    if kind in ("pggan", "stylegan"):
        return kind
    raise ValueError(f"unknown official generator {kind!r}; use one of "
                     f"{sorted(OFFICIAL_MODELS) + ['pggan', 'stylegan']}")


def official_state_dict_shapes(kind: str, resolution: int = 1024,
                               fused_scale: bool | str = "auto") -> dict[str, tuple[int, ...]]:
    """Every key of the converted checkpoint with its shape (no network is built)."""
    if _arch(kind) == "pggan":
        return pggan_state_dict_shapes(resolution)
    return stylegan_state_dict_shapes(resolution, fused_scale)


def build_official(kind: str, resolution: int | None = None, device: torch.device | str = "cpu",
                   truncation_psi: float | None = TRUNCATION_PSI, truncation_layers: int | None = TRUNCATION_LAYERS,
                   randomize_noise: bool = False, fused_scale: bool | str = "auto") -> nn.Module:
    """An (untrained) official generator; ``resolution`` defaults to the released 1024 px.

    ``kind``: a released model name (``pggan_celebahq``, ``stylegan_celebahq``, ``stylegan_ffhq``)
    or an architecture (``pggan``, ``stylegan``).  The truncation/noise options apply to StyleGAN.
    """
    arch = _arch(kind)
    resolution = resolution or (OFFICIAL_MODELS[kind].resolution if kind in OFFICIAL_MODELS else 1024)
    with torch.device(device):
        if arch == "pggan":
            return PGGANGenerator(resolution)
        return StyleGANGenerator(resolution, fused_scale=fused_scale, truncation_psi=truncation_psi,
                                 truncation_layers=truncation_layers, randomize_noise=randomize_noise)


def _count_outputs(keys, prefix: str) -> int:
    pat = re.compile(rf"^{re.escape(prefix)}output(\d+)\.conv\.weight$")
    return len([k for k in keys if pat.match(k)])


def infer_layout(state_dict: Mapping[str, torch.Tensor], kind: str) -> tuple[int, bool | str]:
    """(resolution, fused_scale) of a checkpoint, from its toRGB count and which up-convs are stored fused."""
    arch = _arch(kind)
    n_out = _count_outputs(state_dict.keys(), "" if arch == "pggan" else "synthesis.")
    resolution = 2 ** (n_out + 1)
    if n_out == 0 or resolution > 1024:
        raise OfficialLayoutError(f"cannot tell the resolution of this {arch} state dict: it has {n_out} toRGB "
                                  f"layers ('{'' if arch == 'pggan' else 'synthesis.'}output<j>.conv.weight'), "
                                  "expected 2 to 9")
    if arch == "pggan":
        return resolution, False
    fused = {i for i in range(2, stylegan_num_layers(resolution), 2) if f"synthesis.layer{i}.weight" in state_dict}
    for mode in ("auto", True, False):
        if fused == {i for i in range(2, stylegan_num_layers(resolution), 2) if is_fused_layer(i, mode)}:
            return resolution, mode
    return resolution, "auto"  # mixed: the strict check below names the offending keys


def check_official_state_dict(state_dict: Mapping[str, torch.Tensor], kind: str, resolution: int = 1024,
                              fused_scale: bool | str = "auto", source: str = "state dict") -> None:
    """Raise OfficialLayoutError naming missing / unexpected / mis-shaped keys; works on meta tensors."""
    expected = official_state_dict_shapes(kind, resolution, fused_scale)
    got = {k: tuple(v.shape) for k, v in state_dict.items() if k not in _DROPPED_KEYS}
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    wrong = sorted(f"{k}: {got[k]} (expected {expected[k]})" for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or unexpected or wrong:
        def show(items: list[str]) -> str:
            return ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
        parts = [f"{len(x)} {what}: {show(x)}" for what, x in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)) if x]
        raise OfficialLayoutError(f"{source} does not match the official {_arch(kind)} layout at {resolution} px "
                                  f"(fused_scale={fused_scale!r}): " + "; ".join(parts))


def load_official(path: str | Path, kind: str, device: torch.device | str,
                  truncation_psi: float | None = TRUNCATION_PSI, truncation_layers: int | None = TRUNCATION_LAYERS,
                  randomize_noise: bool = False) -> nn.Module:
    """A converted genforce checkpoint as an eval-mode generator on ``device`` with frozen weights.

    ``kind`` is a released model name (then the file must be its 1024-px layout) or an
    architecture (``pggan``/``stylegan``: the resolution is read off the file).  Loading
    is strict: any key difference raises OfficialLayoutError before the model is touched.
    A ``truncation.truncation`` entry, if present, is ignored (rebuilt from ψ as genforce does).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no official generator checkpoint at {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OfficialLayoutError(f"{path} is not a state dict of tensors (got {type(state).__name__})")
    resolution, fused = infer_layout(state, kind)
    if kind in OFFICIAL_MODELS and resolution != OFFICIAL_MODELS[kind].resolution:
        raise OfficialLayoutError(f"{path} holds a {resolution}-px {_arch(kind)}, but {kind} is "
                                  f"{OFFICIAL_MODELS[kind].resolution} px")
    check_official_state_dict(state, kind, resolution, fused, source=str(path))
    model = build_official(kind, resolution, "cpu", truncation_psi, truncation_layers, randomize_noise, fused)
    model.load_state_dict({k: v.float() for k, v in state.items() if k not in _DROPPED_KEYS}, strict=True)
    model.requires_grad_(False)
    return model.eval().to(device)


def load_released(name: str, device: torch.device | str, cache: Path | None = None,
                  allow_download: bool | None = None, **options) -> nn.Module:
    """A released generator by name (``pggan_celebahq``, ``stylegan_celebahq``, ``stylegan_ffhq``).

    The file comes from the asset cache (downloaded on first use unless offline; a missing
    file raises ``MissingAssetError`` saying where to put it); ``options`` go to ``load_official``.
    """
    if name not in OFFICIAL_MODELS:
        raise ValueError(f"unknown released InterFaceGAN generator {name!r}; use one of {sorted(OFFICIAL_MODELS)}")
    path = fetch(OFFICIAL_MODELS[name].asset, cache=cache, allow_download=allow_download)
    return load_official(path, name, device, **options)
