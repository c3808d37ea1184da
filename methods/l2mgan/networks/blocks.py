"""StarGAN v2 building blocks as L2M-GAN uses them (rucmlcv/L2M-GAN core/model.py, which keeps
clovaai/stargan-v2 core/model.py unchanged for these classes).

Parameter names (``conv1``, ``conv2``, ``norm1``, ``norm2``, ``conv1x1``, ``norm*.fc``) are the
official ones, so that the released state dicts load without renaming.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# LeakyReLU slope 0.2 everywhere (core/model.py, ``actv=nn.LeakyReLU(0.2)``)
LRELU_SLOPE = 0.2


class ResBlk(nn.Module):
    """Pre-activation residual block: [IN] → LReLU → conv3×3 → [avg-pool] → [IN] → LReLU → conv3×3.

    The shortcut is a bias-free 1×1 conv where the width changes (``conv1x1``), then the same
    average pooling; the sum is divided by √2 to keep unit variance (core/model.py ``ResBlk``).
    Both InstanceNorms are affine and act on ``dim_in`` channels (the down-sampling happens before
    ``norm2`` but the width only changes in ``conv2``).
    """

    def __init__(self, dim_in: int, dim_out: int, normalize: bool = False, downsample: bool = False):
        super().__init__()
        self.actv = nn.LeakyReLU(LRELU_SLOPE)
        self.normalize = normalize
        self.downsample = downsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        if normalize:
            self.norm1 = nn.InstanceNorm2d(dim_in, affine=True)
            self.norm2 = nn.InstanceNorm2d(dim_in, affine=True)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.learned_sc:
            x = self.conv1x1(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            x = self.norm1(x)
        x = self.conv1(self.actv(x))
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        if self.normalize:
            x = self.norm2(x)
        return self.conv2(self.actv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self._shortcut(x) + self._residual(x)) / math.sqrt(2)


class AdaIN(nn.Module):
    """Adaptive instance norm: ``(1 + γ(s)) · IN(x) + β(s)``, γ and β from one ``fc`` (style_dim → 2C).

    The ``1 +`` keeps a zero-initialised style at the identity (core/model.py ``AdaIN``).
    """

    def __init__(self, style_dim: int, num_features: int):
        super().__init__()
        self.norm = nn.InstanceNorm2d(num_features, affine=False)
        self.fc = nn.Linear(style_dim, num_features * 2)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.fc(s)[:, :, None, None].chunk(2, dim=1)
        return (1 + gamma) * self.norm(x) + beta


class AdainResBlk(nn.Module):
    """Decoder block: AdaIN → LReLU → [nearest ×2] → conv3×3 → AdaIN → LReLU → conv3×3.

    With ``w_hpf == 0`` the (up-sampled, 1×1-projected) shortcut is added and the sum divided by
    √2; with ``w_hpf > 0`` the official block returns the residual branch alone: no shortcut and
    no 1/√2 (core/model.py ``AdainResBlk.forward``).  ``conv1x1`` still exists where the width
    changes, so the official state dicts hold it in both settings.
    """

    def __init__(self, dim_in: int, dim_out: int, style_dim: int = 64, w_hpf: float = 0.0,
                 upsample: bool = False):
        super().__init__()
        self.w_hpf = w_hpf
        self.actv = nn.LeakyReLU(LRELU_SLOPE)
        self.upsample = upsample
        self.learned_sc = dim_in != dim_out
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, 1, 1)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, 1, 1)
        self.norm1 = AdaIN(style_dim, dim_in)
        self.norm2 = AdaIN(style_dim, dim_out)
        if self.learned_sc:
            self.conv1x1 = nn.Conv2d(dim_in, dim_out, 1, 1, 0, bias=False)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        if self.learned_sc:
            x = self.conv1x1(x)
        return x

    def _residual(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        x = self.actv(self.norm1(x, s))
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv1(x)
        x = self.actv(self.norm2(x, s))
        return self.conv2(x)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = self._residual(x, s)
        if self.w_hpf == 0:
            out = (out + self._shortcut(x)) / math.sqrt(2)
        return out


class HighPass(nn.Module):
    """Depth-wise 3×3 Laplacian-style high-pass filter divided by ``w_hpf`` (core/model.py ``HighPass``).

    The kernel is a non-persistent buffer: the official module keeps it as a plain tensor, so it
    is not in the official state dicts, and a buffer moves with ``.to(device)``.
    """

    def __init__(self, w_hpf: float):
        super().__init__()
        kernel = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]) / w_hpf
        self.register_buffer("filter", kernel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.filter[None, None].to(x.dtype).repeat(x.shape[1], 1, 1, 1)
        return F.conv2d(x, weight, padding=1, groups=x.shape[1])


class Attention(nn.Module):
    """Linear-ReLU-Linear on the style code: present (``attention.layers.{0,2}``) in the official
    generator and style encoder but never called by their ``forward``.  It exists here only so
    that the official state dicts load strictly; it is not trained or used.
    """

    def __init__(self, style_dim: int = 64):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(style_dim, style_dim), nn.ReLU(), nn.Linear(style_dim, style_dim))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.layers(s)
