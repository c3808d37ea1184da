"""The L2M-GAN generator: StarGAN v2's encoder-decoder with AdaIN decoding (rucmlcv/L2M-GAN
core/model.py ``Generator``; identical to clovaai/stargan-v2 core/model.py except for the unused
``attention`` module).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from methods.l2mgan.networks.blocks import AdainResBlk, Attention, HighPass, ResBlk


def official_dim_in(img_size: int) -> int:
    """First width of every L2M-GAN / StarGAN v2 network: 2^14 / img_size (64 at 256 px)."""
    return 2**14 // img_size


def check_img_size(img_size: int, minimum: int = 16) -> None:
    """The nets halve the resolution repeatedly: img_size must be a power of two ≥ ``minimum``."""
    if not isinstance(img_size, int) or img_size < minimum or img_size & (img_size - 1):
        raise ValueError(f"L2M-GAN networks need a power-of-two image size >= {minimum}, got {img_size!r}")


class Generator(nn.Module):
    """G(x, s): ``from_rgb`` → ``encode.{i}`` → ``decode.{i}``(·, s) → ``to_rgb``.

    * encode: ``log2(img_size) − 4`` down-sampling ResBlks (affine IN, avg-pool), one more with
      ``w_hpf > 0``, then 2 bottleneck ResBlks; widths double from ``dim_in`` up to ``max_conv_dim``.
    * decode mirrors it with AdainResBlks (nearest up-sampling); the official code inserts each
      block at index 0 ("stack-like"), so ``decode.0`` and ``decode.1`` are the bottleneck blocks
      and the last one returns to ``dim_in``.
    * with ``w_hpf > 0`` and FAN ``masks``, the encoder features at 32/64/128 px are multiplied by
      the resized mask (mask 0 at 32 px, mask 1 at 64 and 128 px; bilinear, align_corners=False,
      the ``F.interpolate`` default the official call relies on), high-pass filtered and added to
      the decoder output of the same size.
    * ``to_rgb``: affine IN → LReLU → 1×1 conv to 3 channels (no tanh, as in the official code).

    ``dim_in=None`` is the official 2^14 / img_size; a smaller value gives the slim CPU variants.
    """

    def __init__(self, img_size: int = 256, style_dim: int = 64, max_conv_dim: int = 512, w_hpf: float = 1.0,
                 dim_in: int | None = None):
        super().__init__()
        check_img_size(img_size)
        dim_in = official_dim_in(img_size) if dim_in is None else int(dim_in)
        self.img_size, self.style_dim, self.w_hpf = img_size, style_dim, float(w_hpf)
        self.from_rgb = nn.Conv2d(3, dim_in, 3, 1, 1)
        self.encode = nn.ModuleList()
        self.decode = nn.ModuleList()
        self.to_rgb = nn.Sequential(nn.InstanceNorm2d(dim_in, affine=True), nn.LeakyReLU(0.2),
                                    nn.Conv2d(dim_in, 3, 1, 1, 0))
        self.attention = Attention(style_dim)  # in the official state dict, never called

        repeat_num = int(math.log2(img_size)) - 4 + (1 if w_hpf > 0 else 0)
        dim_out = dim_in
        for _ in range(repeat_num):
            dim_out = min(dim_in * 2, max_conv_dim)
            self.encode.append(ResBlk(dim_in, dim_out, normalize=True, downsample=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_in, style_dim, w_hpf=w_hpf, upsample=True))
            dim_in = dim_out
        for _ in range(2):  # bottleneck blocks
            self.encode.append(ResBlk(dim_out, dim_out, normalize=True))
            self.decode.insert(0, AdainResBlk(dim_out, dim_out, style_dim, w_hpf=w_hpf))
        if w_hpf > 0:
            self.hpf = HighPass(w_hpf)

    def forward(self, x: torch.Tensor, s: torch.Tensor,
                masks: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.from_rgb(x)
        cache: dict[int, torch.Tensor] = {}
        for block in self.encode:
            if masks is not None and x.shape[2] in (32, 64, 128):
                cache[x.shape[2]] = x
            x = block(x)
        for block in self.decode:
            x = block(x, s)
            if masks is not None and x.shape[2] in (32, 64, 128):
                mask = masks[0] if x.shape[2] == 32 else masks[1]
                mask = F.interpolate(mask, size=x.shape[2], mode="bilinear", align_corners=False)
                x = x + self.hpf(mask * cache[x.shape[2]])
        return self.to_rgb(x)
