"""StarGAN v2's multi-task discriminator as L2M-GAN uses it (rucmlcv/L2M-GAN core/model.py
``Discriminator`` = clovaai/stargan-v2 core/model.py): one real/fake logit per domain, and the
logit of the image's (or the target's) domain is the output.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from methods.l2mgan.networks.blocks import ResBlk
from methods.l2mgan.networks.generator import check_img_size, official_dim_in


class Discriminator(nn.Module):
    """``main``: the style encoder's trunk followed by a 1×1 conv to ``num_domains`` logits."""

    def __init__(self, img_size: int = 256, num_domains: int = 2, max_conv_dim: int = 512,
                 dim_in: int | None = None):
        super().__init__()
        check_img_size(img_size)
        dim_in = official_dim_in(img_size) if dim_in is None else int(dim_in)
        blocks: list[nn.Module] = [nn.Conv2d(3, dim_in, 3, 1, 1)]
        dim_out = dim_in
        for _ in range(int(math.log2(img_size)) - 2):
            dim_out = min(dim_in * 2, max_conv_dim)
            blocks.append(ResBlk(dim_in, dim_out, downsample=True))
            dim_in = dim_out
        blocks += [nn.LeakyReLU(0.2), nn.Conv2d(dim_out, dim_out, 4, 1, 0), nn.LeakyReLU(0.2),
                   nn.Conv2d(dim_out, num_domains, 1, 1, 0)]
        self.main = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self.main(x).flatten(1)  # (B, num_domains)
        return out[torch.arange(y.shape[0], device=y.device), y]
