"""StyleGAN generator (Karras et al., CVPR 2019) in the parameter layout of InterFaceGAN's converted checkpoints.

InterFaceGAN (genforce/interfacegan) converts NVIDIA's pickles
``karras2019stylegan-{celebahq,ffhq}-1024x1024.pkl`` into ``stylegan_{celebahq,ffhq}.pth``;
this module re-implements the inference generator so those files load with strict keys
and give the same images.  Facts below are read from genforce/interfacegan
``models/stylegan_generator_model.py``, ``models/stylegan_generator.py`` and
``models/model_settings.py`` (commit 8da3fc0):

* spaces: Z (512, N(0, I) renormalised to norm √512), W (512, the mapping's output,
  *before* truncation: the ``*_w_boundary.npy`` files live there) and W+ (num_layers×512,
  18×512 at 1024 px, *after* truncation);
* mapping: pixel norm (ε 1e-8), then eight dense layers ``mapping.dense{i}`` (weight
  [out, in], no bias in the linear, ``wscale.bias`` added after), gain √2, lrelu 0.2,
  learning-rate multiplier 0.01 on the weight scale *and* on the bias;
* truncation: ``truncation.w_avg`` [512]; w' = w_avg + ψ(w − w_avg) on layers
  0..truncation_layers−1 (ψ 0.7, 8 layers: model_settings.py), later layers untouched;
  the coefficient table ``truncation.truncation`` is rebuilt from ψ and is absent from the
  converted files;
* synthesis layer i runs at 2^(i//2 + 2) px.  Layer 0: the learned constant
  ``first_layer`` [1, 512, 4, 4]; odd layers: 3×3 conv; even layers ≥ 2: ×2 upsampling
  then 3×3 conv then the [1, 2, 1]⊗[1, 2, 1]/16 blur (blur after the conv).  From 128 px
  on (``fused_scale='auto'``: layers 10, 12, 14, 16 at 1024 px) the up-conv is fused
  into a transposed conv whose weight is stored ``[3, 3, in, out]`` as ``layer{i}.weight``;
  otherwise ``layer{i}.conv.weight`` [out, in, 3, 3].  Conv gain √2, lr multiplier 1;
* every layer's epilogue: + noise·``apply_noise.weight`` (fixed noise buffers
  ``apply_noise.noise`` [1, 1, r, r] unless ``randomize_noise``), + ``bias``, lrelu 0.2,
  instance norm (ε 1e-8), style modulation x·(s + 1) + b with (s, b) from the dense
  ``style_mod.dense`` (gain 1, lr multiplier 1) on that layer's w;
* toRGB ``output{j}``: 1×1 conv scaled 1/√C, + ``bias`` [3]; no tanh.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .pggan import normalize_z, pixel_norm

__all__ = ["StyleGANGenerator", "stylegan_channels", "stylegan_num_layers", "stylegan_state_dict_shapes",
           "is_fused_layer"]

LATENT_DIM = 512
W_DIM = 512
MAPPING_LAYERS = 8
MAPPING_LR_MULTIPLIER = 0.01  # DenseBlock(wscale_lr_multiplier=0.01) in MappingModule
LRELU_SLOPE = 0.2
INSTANCE_NORM_EPS = 1e-8  # InstanceNormLayer(epsilon=1e-8)
TRUNCATION_PSI = 0.7  # model_settings.STYLEGAN_TRUNCATION_PSI
TRUNCATION_LAYERS = 8  # model_settings.STYLEGAN_TRUNCATION_LAYERS
AUTO_FUSED_SCALE_MIN_RES = 128  # _AUTO_FUSED_SCALE_MIN_RES
SUPPORTED_RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)


def stylegan_channels(resolution: int) -> list[int]:
    """Widths per resolution stage (entry k ≥ 1 at 2^(k+1) px), the same table as PGGAN's."""
    if resolution not in SUPPORTED_RESOLUTIONS:
        raise ValueError(f"StyleGAN resolution {resolution} is not supported; "
                         f"choose one of {list(SUPPORTED_RESOLUTIONS)}")
    stages = int(math.log2(resolution))
    return [512] + [min(512, 16384 // 2 ** (k + 1)) for k in range(1, stages)]


def stylegan_num_layers(resolution: int) -> int:
    """Synthesis layers = rows of W+: 2·log2(res) − 2 (18 at 1024 px)."""
    return 2 * int(math.log2(resolution)) - 2


def layer_resolution(layer_idx: int) -> int:
    """Spatial size at which synthesis layer ``layer_idx`` runs."""
    return 2 ** (layer_idx // 2 + 2)


def is_fused_layer(layer_idx: int, fused_scale: bool | str = "auto") -> bool:
    """Whether even layer ``layer_idx`` ≥ 2 uses the fused transposed up-conv (stored [3, 3, in, out])."""
    if fused_scale not in (True, False, "auto"):
        raise ValueError(f"fused_scale must be True, False or 'auto', got {fused_scale!r}")
    if layer_idx < 2 or layer_idx % 2:
        return False
    if fused_scale == "auto":
        return layer_resolution(layer_idx) >= AUTO_FUSED_SCALE_MIN_RES
    return bool(fused_scale)


class WScale(nn.Module):
    """x·gain/√fan_in·lr_mul + bias·lr_mul; the bias is the checkpoint's ``wscale.bias``."""

    def __init__(self, in_features: int, out_features: int, gain: float, lr_multiplier: float):
        super().__init__()
        self.scale = gain / math.sqrt(in_features) * lr_multiplier
        self.lr_multiplier = lr_multiplier
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.bias * self.lr_multiplier


class DenseBlock(nn.Module):
    """linear (no bias) → wscale → lrelu/linear, genforce's StyleGAN ``DenseBlock``."""

    def __init__(self, in_features: int, out_features: int, gain: float = math.sqrt(2.0),
                 lr_multiplier: float = MAPPING_LR_MULTIPLIER, activate: bool = True):
        super().__init__()
        self.activate = activate
        self.linear = nn.Linear(in_features, out_features, bias=False)
        nn.init.normal_(self.linear.weight, std=1.0 / lr_multiplier)  # StyleGAN's init: N(0, 1/lr_mul)
        self.wscale = WScale(in_features, out_features, gain, lr_multiplier)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.wscale(self.linear(x))
        return F.leaky_relu(x, LRELU_SLOPE) if self.activate else x


class MappingNetwork(nn.Module):
    """Z → W: pixel norm then eight lrelu dense layers ``dense0`` … ``dense7`` with lr multiplier 0.01."""

    def __init__(self, z_dim: int = LATENT_DIM, w_dim: int = W_DIM, hidden: int = 512,
                 num_layers: int = MAPPING_LAYERS):
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            self.add_module(f"dense{i}", DenseBlock(z_dim if i == 0 else hidden,
                                                    w_dim if i == num_layers - 1 else hidden))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2:
            raise ValueError(f"the mapping expects codes of shape [batch, dim], got {tuple(z.shape)}")
        x = pixel_norm(z)
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return x


class Truncation(nn.Module):
    """W → W+ (broadcast to every layer) with the truncation trick on the first layers only."""

    def __init__(self, num_layers: int, w_dim: int = W_DIM, psi: float | None = TRUNCATION_PSI,
                 layers: int | None = TRUNCATION_LAYERS):
        super().__init__()
        self.num_layers, self.w_dim = num_layers, w_dim
        self.register_buffer("w_avg", torch.zeros(w_dim))
        # not persistent: the converted .pth files omit `truncation.truncation` and genforce rebuilds it
        self.register_buffer("truncation", torch.ones(1, num_layers, 1), persistent=False)
        self.set_truncation(psi, layers)

    def set_truncation(self, psi: float | None, layers: int | None) -> None:
        """ψ on layers [0, layers); None for either disables truncation (genforce's convention)."""
        coefs = torch.ones(1, self.num_layers, 1, device=self.truncation.device)
        if psi is not None and layers is not None:
            coefs[:, : max(0, int(layers))] = float(psi)
        self.psi, self.layers = psi, layers
        self.truncation.copy_(coefs)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if w.dim() == 2:
            w = w.unsqueeze(1).expand(-1, self.num_layers, -1)
        if w.dim() != 3 or w.shape[1:] != (self.num_layers, self.w_dim):
            raise ValueError(f"truncation expects W [batch, {self.w_dim}] or W+ [batch, {self.num_layers}, "
                             f"{self.w_dim}], got {tuple(w.shape)}")
        avg = self.w_avg.view(1, 1, -1)
        # rows with coefficient 1 are passed through bit for bit (genforce's formula would round them)
        return torch.where(self.truncation == 1, w, avg + (w - avg) * self.truncation)


def instance_norm(x: torch.Tensor, eps: float = INSTANCE_NORM_EPS) -> torch.Tensor:
    """Per-sample, per-channel normalisation over H×W with eps inside the square root (genforce: 1e-8)."""
    x = x - x.mean(dim=(2, 3), keepdim=True)
    return x * torch.rsqrt(x.pow(2).mean(dim=(2, 3), keepdim=True) + eps)


class NoiseInput(nn.Module):
    """Adds per-channel-weighted noise; the fixed noise map is the checkpoint's ``apply_noise.noise``."""

    def __init__(self, layer_idx: int, channels: int, randomize_noise: bool = False):
        super().__init__()
        self.res = layer_resolution(layer_idx)
        self.randomize_noise = randomize_noise
        self.register_buffer("noise", torch.randn(1, 1, self.res, self.res))
        self.weight = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.randomize_noise:
            noise = torch.randn(x.shape[0], 1, self.res, self.res, device=x.device, dtype=x.dtype)
        else:
            noise = self.noise
        return x + noise * self.weight.view(1, -1, 1, 1)


class StyleModulation(nn.Module):
    """AdaIN's style: (s, b) = dense(w), x·(s + 1) + b (the +1 is in genforce's StyleModulationLayer)."""

    def __init__(self, channels: int, w_dim: int = W_DIM):
        super().__init__()
        self.channels = channels
        self.dense = DenseBlock(w_dim, channels * 2, gain=1.0, lr_multiplier=1.0, activate=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.dense(w).view(-1, 2, self.channels, 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class Epilogue(nn.Module):
    """noise → bias → lrelu → instance norm → style modulation."""

    def __init__(self, layer_idx: int, channels: int, randomize_noise: bool = False):
        super().__init__()
        self.apply_noise = NoiseInput(layer_idx, channels, randomize_noise)
        self.bias = nn.Parameter(torch.zeros(channels))
        self.style_mod = StyleModulation(channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = self.apply_noise(x) + self.bias.view(1, -1, 1, 1)
        return self.style_mod(instance_norm(F.leaky_relu(x, LRELU_SLOPE)), w)


class Blur(nn.Module):
    """Depthwise 3×3 [1, 2, 1]⊗[1, 2, 1]/16 filter; its kernel is a buffer that the converted files carry."""

    def __init__(self, channels: int):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k) / 16.0
        self.register_buffer("kernel", k.view(1, 1, 3, 3).repeat(channels, 1, 1, 1))
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=self.channels)


class FirstBlock(nn.Module):
    """Layer 0: the learned 4×4 constant, then the epilogue."""

    def __init__(self, channels: int, randomize_noise: bool = False):
        super().__init__()
        self.first_layer = nn.Parameter(torch.ones(1, channels, 4, 4))
        self.epilogue = Epilogue(0, channels, randomize_noise)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.epilogue(self.first_layer.expand(w.shape[0], -1, -1, -1), w)


def fused_upconv(x: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """StyleGAN's fused ×2 upsample + 3×3 conv: a stride-2 transposed conv with the 4×4 kernel
    made by summing the four one-pixel shifts of the scaled 3×3 kernel ([3, 3, in, out] layout).

    It equals nearest ×2 upsampling followed by a 3×3 cross-correlation with the spatially
    flipped kernel (the TF ``upscale2d_conv2d`` convention; asserted in the tests).
    """
    k = F.pad(weight * scale, (0, 0, 0, 0, 1, 1, 1, 1))  # [5, 5, in, out]
    k = k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]  # [4, 4, in, out]
    return F.conv_transpose2d(x, k.permute(2, 3, 0, 1), stride=2, padding=1)


class UpBlock(nn.Module):
    """Even layers ≥ 2: (fused) ×2 up-conv → blur → epilogue."""

    def __init__(self, layer_idx: int, in_channels: int, out_channels: int, fused_scale: bool | str = "auto",
                 randomize_noise: bool = False):
        super().__init__()
        self.fused = is_fused_layer(layer_idx, fused_scale)
        self.scale = math.sqrt(2.0) / math.sqrt(in_channels * 9)
        if self.fused:
            self.weight = nn.Parameter(torch.randn(3, 3, in_channels, out_channels))
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
            nn.init.normal_(self.conv.weight)
        self.blur = Blur(out_channels)
        self.epilogue = Epilogue(layer_idx, out_channels, randomize_noise)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fused:
            x = fused_upconv(x, self.weight, self.scale)
        else:
            x = self.conv(F.interpolate(x, scale_factor=2, mode="nearest")) * self.scale
        return self.epilogue(self.blur(x), w)


class ConvBlock(nn.Module):
    """Odd layers: 3×3 conv → epilogue."""

    def __init__(self, layer_idx: int, channels: int, randomize_noise: bool = False):
        super().__init__()
        self.scale = math.sqrt(2.0) / math.sqrt(channels * 9)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        nn.init.normal_(self.conv.weight)
        self.epilogue = Epilogue(layer_idx, channels, randomize_noise)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self.epilogue(self.conv(x) * self.scale, w)


class ToRGB(nn.Module):
    """1×1 conv scaled 1/√C plus bias; linear, no tanh."""

    def __init__(self, in_channels: int, out_channels: int = 3):
        super().__init__()
        self.scale = 1.0 / math.sqrt(in_channels)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        nn.init.normal_(self.conv.weight)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * self.scale + self.bias.view(1, -1, 1, 1)


class Synthesis(nn.Module):
    """W+ → image, with genforce's level-of-detail switch (``lod`` 0 for the released models)."""

    def __init__(self, resolution: int = 1024, fused_scale: bool | str = "auto", output_channels: int = 3,
                 randomize_noise: bool = False):
        super().__init__()
        self.channels = stylegan_channels(resolution)
        self.num_layers = stylegan_num_layers(resolution)
        for b in range(1, len(self.channels)):
            cin, cout = self.channels[b - 1], self.channels[b]
            if b == 1:
                self.add_module("layer0", FirstBlock(cin, randomize_noise))
            else:
                self.add_module(f"layer{2 * b - 2}", UpBlock(2 * b - 2, cin, cout, fused_scale, randomize_noise))
            self.add_module(f"layer{2 * b - 1}", ConvBlock(2 * b - 1, cout, randomize_noise))
            self.add_module(f"output{b - 1}", ToRGB(cout, output_channels))
        self.register_buffer("lod", torch.zeros(()))

    def forward(self, wp: torch.Tensor) -> torch.Tensor:
        if wp.dim() != 3 or wp.shape[1] != self.num_layers:
            raise ValueError(f"synthesis expects W+ codes [batch, {self.num_layers}, 512], got {tuple(wp.shape)}")
        lod = float(self.lod)
        n = len(self.channels)
        x = image = None
        for b in range(1, n):
            if b + lod < n:
                x = self.layer0(wp[:, 0]) if b == 1 else getattr(self, f"layer{2 * b - 2}")(x, wp[:, 2 * b - 2])
                x = getattr(self, f"layer{2 * b - 1}")(x, wp[:, 2 * b - 1])
                image = getattr(self, f"output{b - 1}")(x)
            else:
                image = F.interpolate(image, scale_factor=2, mode="nearest")
        return image


class StyleGANGenerator(nn.Module):
    """mapping (Z → W) → truncation (W → W+) → synthesis (W+ → image), genforce's ``StyleGANGeneratorModel``."""

    spaces = ("z", "w", "wp")

    def __init__(self, resolution: int = 1024, fused_scale: bool | str = "auto",
                 truncation_psi: float | None = TRUNCATION_PSI, truncation_layers: int | None = TRUNCATION_LAYERS,
                 randomize_noise: bool = False, output_channels: int = 3):
        super().__init__()
        self.resolution = resolution
        self.z_dim, self.w_dim = LATENT_DIM, W_DIM
        self.num_layers = stylegan_num_layers(resolution)
        self.mapping = MappingNetwork(self.z_dim, self.w_dim)
        self.truncation = Truncation(self.num_layers, self.w_dim, truncation_psi, truncation_layers)
        self.synthesis = Synthesis(resolution, fused_scale, output_channels, randomize_noise)

    def preprocess(self, z: torch.Tensor) -> torch.Tensor:
        """Z codes as the official code feeds them: renormalised to norm √512."""
        return normalize_z(z)

    def sample(self, n: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
        """n preprocessed Z codes, drawn on the CPU (``generator`` a CPU generator) so seeds agree across devices."""
        return self.preprocess(torch.randn(n, self.z_dim, generator=generator).to(device))

    def to_space(self, z: torch.Tensor, space: str) -> torch.Tensor:
        """Z codes expressed in ``space``: z itself, w = mapping(z), or wp = truncation(mapping(z))."""
        space = _check_space(space)
        if space == "z":
            return z
        w = self.mapping(z)
        return w if space == "w" else self.truncation(w)

    def synthesize(self, codes: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Images from codes of ``space``; as in genforce, Z and W codes are truncated, W+ codes are not."""
        space = _check_space(space)
        if space == "z":
            codes = self.mapping(codes)
        if space in ("z", "w"):
            codes = self.truncation(codes)
        return self.synthesis(codes)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesize(z, "z")


def _check_space(space: str) -> str:
    s = space.lower()
    if s not in StyleGANGenerator.spaces:
        raise ValueError(f"unknown latent space {space!r}; StyleGAN has {list(StyleGANGenerator.spaces)}")
    return s


def stylegan_state_dict_shapes(resolution: int = 1024, fused_scale: bool | str = "auto") -> dict[str, tuple[int, ...]]:
    """The converted checkpoint's keys and shapes, computed without building the network.

    Mirrors the shape comments of genforce's ``_STYLEGAN_PTH_VARS_TO_TF_VARS`` plus the blur
    kernels (buffers of ``model.state_dict()`` that the converter saves) and minus
    ``truncation.truncation`` (deleted before saving).
    """
    ch = stylegan_channels(resolution)
    shapes: dict[str, tuple[int, ...]] = {"truncation.w_avg": (W_DIM,), "synthesis.lod": ()}
    for i in range(MAPPING_LAYERS):
        shapes[f"mapping.dense{i}.linear.weight"] = (512, 512)
        shapes[f"mapping.dense{i}.wscale.bias"] = (512,)
    for i in range(stylegan_num_layers(resolution)):
        b = i // 2 + 1
        cin, cout = ch[b - 1], ch[b]
        p = f"synthesis.layer{i}"
        if i == 0:
            shapes[f"{p}.first_layer"] = (1, cout, 4, 4)
        elif i % 2:
            shapes[f"{p}.conv.weight"] = (cout, cout, 3, 3)
        else:
            if is_fused_layer(i, fused_scale):
                shapes[f"{p}.weight"] = (3, 3, cin, cout)
            else:
                shapes[f"{p}.conv.weight"] = (cout, cin, 3, 3)
            shapes[f"{p}.blur.kernel"] = (cout, 1, 3, 3)
        r = layer_resolution(i)
        shapes[f"{p}.epilogue.apply_noise.noise"] = (1, 1, r, r)
        shapes[f"{p}.epilogue.apply_noise.weight"] = (cout,)
        shapes[f"{p}.epilogue.bias"] = (cout,)
        shapes[f"{p}.epilogue.style_mod.dense.linear.weight"] = (2 * cout, W_DIM)
        shapes[f"{p}.epilogue.style_mod.dense.wscale.bias"] = (2 * cout,)
        if i % 2:
            shapes[f"synthesis.output{i // 2}.conv.weight"] = (3, cout, 1, 1)
            shapes[f"synthesis.output{i // 2}.bias"] = (3,)
    return shapes
