"""The L2M-GAN style encoder with its latent factorisation (rucmlcv/L2M-GAN core/model.py
``StyleEncoder``; the trunk and per-domain heads are StarGAN v2's).

Paper (Yang et al., CVPR 2021, §3): the style code s of image x is split by a *decomposer* into an
attribute-irrelevant part s_un and the attribute-relevant rest s_re = s − s_un; a per-target-domain
*transformer* maps s_re to the edited relevant code s̃_re; the generator gets s_un + s̃_re.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn

from methods.l2mgan.networks.blocks import Attention, ResBlk
from methods.l2mgan.networks.generator import check_img_size, official_dim_in


class StyleCodes(NamedTuple):
    """The encoder's four outputs in the official order (``s, s1, s2, s3`` in core/model.py)."""

    s: torch.Tensor           # full style code of x, from the head of the source domain
    s_un: torch.Tensor        # attribute-irrelevant part: transform1(s)
    s_re: torch.Tensor        # attribute-relevant part: s - s_un (exactly)
    s_re_tilde: torch.Tensor  # edited relevant part: transform2[target](s_re)

    def edited(self, degree: float | torch.Tensor = 1.0) -> torch.Tensor:
        """Generator input ``s_un + s_re + degree · (s̃_re − s_re)`` (metrics/eval.py of the official
        repository); degree 1 is s_un + s̃_re, degree 0 the reconstruction path G(x, s).

        s_un + s_re is s by construction (s_re := s − s_un), so s is used directly: the same value
        without the rounding of (s − s_un) + s_un, which keeps degree 0 bit-identical to G(x, s).
        """
        if isinstance(degree, torch.Tensor) and degree.dim() == 1:
            degree = degree[:, None]
        return self.s + degree * (self.s_re_tilde - self.s_re)


def _mlp(style_dim: int) -> nn.Sequential:
    """Linear-ReLU-Linear-ReLU-Linear on the 64-d code (``transform1`` / ``transform2.{d}``)."""
    return nn.Sequential(nn.Linear(style_dim, style_dim), nn.ReLU(), nn.Linear(style_dim, style_dim), nn.ReLU(),
                         nn.Linear(style_dim, style_dim))


class StyleEncoder(nn.Module):
    """E(x, y, y'): ``shared`` trunk → ``unshared[y]`` → (s, s_un, s_re, transform2[y'](s_re)).

    ``shared``: conv3×3, ``log2(img_size) − 2`` down-sampling ResBlks without normalisation (4×4
    left), LReLU, conv4×4 (valid, to 1×1), LReLU.  The second argument picks the unshared head (the
    domain x belongs to), the third the transformer head (the domain to edit towards).
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, num_domains: int = 2, max_conv_dim: int = 512,
                 dim_in: int | None = None):
        super().__init__()
        check_img_size(img_size)
        dim_in = official_dim_in(img_size) if dim_in is None else int(dim_in)
        self.num_domains = num_domains
        blocks: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
        dim_out = dim_in
        for _ in range(int(math.log2(img_size)) - 2):
            dim_out = min(dim_in * 2, max_conv_dim)
            blocks.append(ResBlk(dim_in, dim_out, downsample=True))
            dim_in = dim_out
        blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2)]
        self.shared = nn.Sequential(*blocks)
        self.unshared = nn.ModuleList(nn.Linear(dim_out, style_dim) for _ in range(num_domains))
        self.transform1 = _mlp(style_dim)  # the decomposer
        self.transform2 = nn.ModuleList(_mlp(style_dim) for _ in range(num_domains))  # the transformers
        self.attention = Attention(style_dim)  # in the official state dict, never called

    def style(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """s = unshared[y](shared(x)): the full code of x read by the head of domain y."""
        h = self.shared(x).flatten(1)
        out = torch.stack([head(h) for head in self.unshared], dim=1)  # (B, domains, style_dim)
        return out[torch.arange(y.shape[0], device=y.device), y]

    def decompose(self, s: torch.Tensor, y_trg: torch.Tensor) -> StyleCodes:
        """(s, s_un, s_re, s̃_re) of a code s, transformed towards domain ``y_trg``."""
        s_un = self.transform1(s)
        s_re = s - s_un
        out = torch.stack([t(s_re) for t in self.transform2], dim=1)
        return StyleCodes(s, s_un, s_re, out[torch.arange(y_trg.shape[0], device=y_trg.device), y_trg])

    def forward(self, x: torch.Tensor, y: torch.Tensor, y_trg: torch.Tensor) -> StyleCodes:
        return self.decompose(self.style(x, y), y_trg)
