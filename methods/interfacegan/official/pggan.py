"""ProgressiveGAN generator (Karras et al., ICLR 2018) in the parameter layout of InterFaceGAN's converted checkpoint.

InterFaceGAN (genforce/interfacegan) converts NVIDIA's TensorFlow pickle
``karras2018iclr-celebahq-1024x1024.pkl`` into ``pggan_celebahq.pth``; this module
re-implements the inference generator so that file loads with strict keys and
gives the same images.  Facts below are read from genforce/interfacegan
``models/pggan_generator_model.py`` and ``models/pggan_generator.py`` (commit 8da3fc0):

* key layout: ``lod`` (a scalar), ``layer{i}.conv.weight`` [out, in, k, k] and
  ``layer{i}.wscale.bias`` [out] for the 2·(log2(res) − 1) convolutions,
  ``output{j}.conv.weight`` [3, C, 1, 1] / ``output{j}.wscale.bias`` [3] for the
  log2(res) − 1 toRGB layers (one per resolution, 4 px first);
* layer 0 is the TF "Dense" layer stored as a 4×4 convolution (padding 3) applied to
  the 512×1×1 latent, its kernel already flipped by the converter; fan-in 512·16;
* every block (convolutions and toRGB) starts with pixel norm (ε 1e-8); the first one
  normalises the latent itself (PGGAN's ``normalize_latents``);
* equalised learning rate: weights are scaled at run time by gain/√fan_in with gain
  √2 for convolutions and 1 for toRGB, the bias added after the scaling;
* leaky ReLU slope 0.2; upsampling is nearest-neighbour ×2 before the first
  convolution of each block (``fused_scale`` False for the CelebA-HQ model);
* the output is the raw toRGB of the last block: no tanh, nominal range [-1, 1];
* Z is 512-d, sampled N(0, I) and renormalised to norm √512 (``preprocess``).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PGGANGenerator", "pggan_channels", "pggan_state_dict_shapes", "normalize_z"]

LATENT_DIM = 512
LRELU_SLOPE = 0.2  # pggan_generator_model.py: nn.LeakyReLU(negative_slope=0.2)
PIXEL_NORM_EPS = 1e-8  # PixelNormLayer(epsilon=1e-8)
SUPPORTED_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)  # _RESOLUTIONS_TO_CHANNELS keys


def pggan_channels(resolution: int) -> list[int]:
    """Feature widths, latent first: genforce's ``_RESOLUTIONS_TO_CHANNELS[resolution]``.

    Entry k ≥ 1 is the width at 2^(k+1) px, min(512, 16384 / res); entry 0 is the
    latent width.  Every resolution's list is a prefix of the 1024-px one.
    """
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise ValueError(f"PGGAN resolution {resolution} is not supported; "
                         f"choose one of {list(SUPPORTED_RESOLUTIONS)}")
    stages = int(math.log2(resolution))
    return [LATENT_DIM] + [min(512, 16384 // 2 ** (k + 1)) for k in range(1, stages)]


def normalize_z(z: torch.Tensor) -> torch.Tensor:
    """Renormalise each latent to norm √dim, as genforce's ``preprocess`` does before synthesis."""
    return z / z.norm(dim=-1, keepdim=True) * math.sqrt(z.shape[-1])


def pixel_norm(x: torch.Tensor, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """x / sqrt(mean over channels of x² + eps)."""
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + eps)


class WScale(nn.Module):
    """Equalised-lr scaling gain/√fan_in, then the (trainable) bias; the bias is the checkpoint's ``wscale.bias``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float):
        super().__init__()
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias.view(1, -1, 1, 1)


class ConvBlock(nn.Module):
    """pixel norm → (nearest ×2) → conv (no bias) → wscale → lrelu/linear, genforce's PGGAN ``ConvBlock``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 upsample: bool = False, gain: float = math.sqrt(2.0), activate: bool = True):
        super().__init__()
        self.upsample = upsample
        self.activate = activate
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        nn.init.normal_(self.conv.weight)  # equalised lr: N(0, 1) weights, He scale applied at run time
        self.wscale = WScale(in_channels, out_channels, kernel_size, gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.wscale(self.conv(x))
        return F.leaky_relu(x, LRELU_SLOPE) if self.activate else x


class PGGANGenerator(nn.Module):
    """The PGGAN generator; ``resolution`` < 1024 builds the same net truncated (for tests and small runs)."""

    spaces = ("z",)

    def __init__(self, resolution: int = 1024, fused_scale: bool = False, output_channels: int = 3):
        super().__init__()
        if fused_scale:
            raise ValueError("PGGAN with fused_scale=True is not implemented: the released CelebA-HQ "
                             "model (model_settings.py, pggan_celebahq) uses fused_scale=False")
        self.resolution = resolution
        self.channels = pggan_channels(resolution)
        self.z_dim = self.channels[0]
        self.num_blocks = len(self.channels) - 1
        for b in range(1, len(self.channels)):
            cin, cout = self.channels[b - 1], self.channels[b]
            if b == 1:  # the TF dense layer as a 4×4 conv on the 1×1 latent, padding 3 -> 4×4
                first = ConvBlock(cin, cout, kernel_size=4, padding=3)
            else:
                first = ConvBlock(cin, cout, upsample=True)
            self.add_module(f"layer{2 * b - 2}", first)
            self.add_module(f"layer{2 * b - 1}", ConvBlock(cout, cout))
            self.add_module(f"output{b - 1}", ConvBlock(cout, output_channels, kernel_size=1, padding=0,
                                                          gain=1.0, activate=False))
        # level of detail of progressive training; 0 for the released model (a buffer, not trained)
        self.register_buffer("lod", torch.zeros(()))

    def preprocess(self, z: torch.Tensor) -> torch.Tensor:
        """Z codes as the official code feeds them: renormalised to norm √512."""
        return normalize_z(z)

    def sample(self, n: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
        """n preprocessed Z codes (N(0, I), then norm √512), like genforce's ``easy_sample``.

        Drawn on the CPU (``generator`` is a CPU generator) so a seed gives the same codes on every device.
        """
        return self.preprocess(torch.randn(n, self.z_dim, generator=generator).to(device))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images B×3×res×res, nominally in [-1, 1] (not clamped), from B×512 codes."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"PGGAN expects latents of shape [batch, {self.z_dim}], got {tuple(z.shape)}")
        x = z.view(z.shape[0], z.shape[1], 1, 1)
        lod = float(self.lod)
        image = None
        for b in range(1, self.num_blocks + 1):
            # genforce runs block b while b + lod < number of channel entries, then only upsamples
            if b + lod < self.num_blocks + 1:
                x = getattr(self, f"layer{2 * b - 1}")(getattr(self, f"layer{2 * b - 2}")(x))
                image = getattr(self, f"output{b - 1}")(x)
            else:
                image = F.interpolate(image, scale_factor=2, mode="nearest")
        return image

    def synthesize(self, codes: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Images from codes of ``space`` (PGGAN has only Z); codes are used as given (no renormalisation)."""
        if space.lower() != "z":
            raise ValueError(f"PGGAN has only the Z space, not {space!r}")
        return self(codes)


def pggan_state_dict_shapes(resolution: int = 1024) -> dict[str, tuple[int, ...]]:
    """The converted checkpoint's keys and shapes, computed without building the network.

    Mirrors the shape comments of genforce's ``_PGGAN_PTH_VARS_TO_TF_VARS`` (truncated
    to ``resolution``).
    """
    ch = pggan_channels(resolution)
    shapes: dict[str, tuple[int, ...]] = {"lod": ()}
    for b in range(1, len(ch)):
        k = 4 if b == 1 else 3
        shapes[f"layer{2 * b - 2}.conv.weight"] = (ch[b], ch[b - 1], k, k)
        shapes[f"layer{2 * b - 2}.wscale.bias"] = (ch[b],)
        shapes[f"layer{2 * b - 1}.conv.weight"] = (ch[b], ch[b], 3, 3)
        shapes[f"layer{2 * b - 1}.wscale.bias"] = (ch[b],)
        shapes[f"output{b - 1}.conv.weight"] = (3, ch[b], 1, 1)
        shapes[f"output{b - 1}.wscale.bias"] = (3,)
    return shapes
