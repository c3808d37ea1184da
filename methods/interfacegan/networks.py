"""Our own StyleGAN2-like GAN: mapping network Z -> W, modulated synthesis with one style per layer.

Why our own GAN at all: InterFaceGAN edits the latent space of a pretrained face GAN, and no
pretrained face GAN can be downloaded here; users also bring datasets that no published GAN was
trained on. So the editor trains a GAN on the registered dataset (``train.py``) and fits the
boundaries in *its* latent spaces. It must be StyleGAN-like so that the three spaces of the paper
exist: Z (the Gaussian input), W (the mapping network's output) and W+ (one W code per layer).

Facts follow NVlabs/stylegan2-ada-pytorch ``training/networks.py`` (Karras et al., "Analyzing and
Improving the Image Quality of StyleGAN", CVPR 2020, and "Training Generative Adversarial Networks
with Limited Data", NeurIPS 2020), with these deliberate departures for two CPU cores:

* slim widths: channels ``min(channel_base // res, channel_max)`` as in the reference, but with a
  small ``channel_base`` / ``channel_max`` and ``z_dim = w_dim`` far below 512 (see the presets in
  ``editor.py``); mapping depth 2 is the reference's own ``auto`` config (``train.py`` cfg_specs);
* modulated convolution is always run in the reference's *non-fused* form (``modulated_conv2d``
  with ``fused_modconv=False``: scale the input by the style, ordinary conv, scale the output by the
  demodulation coefficient). It is mathematically the same layer and needs no grouped convolution,
  which is slow on a CPU;
* resampling: up-sampling is bilinear x2 (the separable [1, 3, 3, 1] FIR filter of the reference,
  up to border handling) *before* the 3x3 conv, as in StyleGAN 1; down-sampling in D is the
  [1, 3, 3, 1] blur followed by stride 2 (the reference's ``conv2d_resample`` with ``down=2``),
  written as a depthwise convolution so that R1's double back-propagation works everywhere.

Parameter names follow the reference (``mapping.fc{i}``, ``synthesis.b{res}.conv0/conv1/torgb``,
``b{res}.fromrgb/conv0/conv1/skip``, ``b4.mbstd/conv/fc/out``) for readers who know it; these are
not official checkpoints (the official generators live in ``official/``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

NoiseMode = Literal["random", "const", "none"]
LRELU_GAIN = math.sqrt(2.0)  # bias_act's def_gain for 'lrelu' (torch_utils/ops/bias_act.py)


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Pixel norm of the latent (the reference's ``normalize_2nd_moment``): unit mean square."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _lrelu(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    return F.leaky_relu(x, 0.2) * (LRELU_GAIN * gain)


def _fir_kernel(device: torch.device | None = None) -> torch.Tensor:
    """The normalised 4x4 outer product of [1, 3, 3, 1] (upfirdn2d.setup_filter of the reference)."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device)
    k = k[:, None] * k[None, :]
    return k / k.sum()


def blur_down2(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """[1, 3, 3, 1] low-pass, then keep every second pixel: H x W -> H/2 x W/2 (twice differentiable)."""
    c = x.shape[1]
    weight = kernel.to(x.dtype).expand(c, 1, 4, 4)
    return F.conv2d(F.pad(x, (1, 1, 1, 1)), weight, stride=2, groups=c)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2 (align_corners=False): the [1, 3, 3, 1] FIR up-sampling up to the border."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


# -- equalised-learning-rate layers -------------------------------------------------------------

class FullyConnectedLayer(nn.Module):
    """Linear layer with the equalised learning rate of ProGAN/StyleGAN and an lr multiplier.

    Weights are stored as N(0, 1) / lr_multiplier and scaled at run time by lr_multiplier/sqrt(in);
    the bias is scaled by lr_multiplier too (reference ``FullyConnectedLayer``), so the mapping
    network's 0.01 multiplier slows both.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.bias * self.bias_gain if self.bias is not None else None
        x = F.linear(x, self.weight * self.weight_gain, b)
        return _lrelu(x) if self.activation == "lrelu" else x


class Conv2dLayer(nn.Module):
    """Equalised-lr conv (reference ``Conv2dLayer``); ``down=2`` convolves, then blurs and strides."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1):
        super().__init__()
        self.activation = activation
        self.down = down
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.register_buffer("resample_filter", _fir_kernel(), persistent=False)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, padding=self.padding)
        if self.down == 2:
            x = blur_down2(x, self.resample_filter)
        if self.bias is not None:
            x = x + self.bias.view(1, -1, 1, 1)
        return _lrelu(x, gain) if self.activation == "lrelu" else x * gain


# -- generator ----------------------------------------------------------------------------------

class MappingNetwork(nn.Module):
    """Z -> W: pixel norm, ``num_layers`` lrelu FC layers with lr multiplier 0.01, tracked ``w_avg``.

    Returns one W code per sample (B x w_dim); the Generator broadcasts it to W+ (B x num_ws x w_dim).
    ``w_avg`` is updated with decay 0.995 in training mode (reference ``MappingNetwork``).
    """

    def __init__(self, z_dim: int, w_dim: int, num_layers: int = 2, lr_multiplier: float = 0.01,
                 w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_layers, self.w_avg_beta = z_dim, w_dim, num_layers, w_avg_beta
        feats = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnectedLayer(feats[i], feats[i + 1], activation="lrelu",
                                                       lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, update_w_avg: bool | None = None) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"mapping: z must be B x {self.z_dim}, got {tuple(z.shape)}")
        x = normalize_2nd_moment(z.float())
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg if update_w_avg is not None else self.training:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv with demodulation, per-pixel noise, bias and lrelu (reference ``SynthesisLayer``).

    ``affine`` maps the layer's W code to per-input-channel scales (bias init 1); the conv runs in the
    reference's non-fused form (see the module docstring). ``up=2`` up-samples the input first.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: int = 1,
                 use_noise: bool = True):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        styles = self.affine(w)  # B x in
        weight = self.weight
        # demodulation coefficient of the modulated weight: rsqrt(sum_{i,k} (w_oik * s_i)^2 + 1e-8)
        dcoefs = (weight.square().sum(dim=(2, 3)).unsqueeze(0) * styles.square().unsqueeze(1)).sum(2)
        dcoefs = (dcoefs + 1e-8).rsqrt()  # B x out
        if self.up == 2:
            x = upsample2(x)
        x = x * styles.view(x.shape[0], -1, 1, 1)
        x = F.conv2d(x, weight, padding=1)
        x = x * dcoefs.view(x.shape[0], -1, 1, 1)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            else:
                noise = self.noise_const.to(x.dtype)
            x = x + noise * self.noise_strength
        return _lrelu(x + self.bias.view(1, -1, 1, 1))


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation to RGB (reference ``ToRGBLayer``)."""

    def __init__(self, in_channels: int, w_dim: int, out_channels: int = 3):
        super().__init__()
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = F.conv2d(x * styles.view(x.shape[0], -1, 1, 1), self.weight)
        return x + self.bias.view(1, -1, 1, 1)


class SynthesisBlock(nn.Module):
    """One resolution of the 'skip' generator: (const | conv0 up) -> conv1 -> torgb added to the image."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, use_noise: bool = True):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.num_conv = 0
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, use_noise=use_noise)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, use_noise=use_noise)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, w_dim)
        self.num_torgb = 1

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                noise_mode: NoiseMode) -> tuple[torch.Tensor, torch.Tensor]:
        w_iter = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = self.conv0(x, next(w_iter), noise_mode)
        x = self.conv1(x, next(w_iter), noise_mode)
        y = self.torgb(x, next(w_iter))
        img = y if img is None else upsample2(img) + y
        return x, img


@dataclass(frozen=True)
class GeneratorConfig:
    """Everything that fixes the generator's shapes (saved beside its weights as ``generator.json``)."""

    resolution: int = 32
    z_dim: int = 128
    w_dim: int = 128
    mapping_layers: int = 2
    channel_base: int = 2048
    channel_max: int = 128
    use_noise: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def channels_for(resolution: int, channel_base: int, channel_max: int) -> int:
    """The reference's ``min(channel_base // res, channel_max)``."""
    return max(1, min(channel_base // resolution, channel_max))


def check_resolution(resolution: int) -> None:
    """Powers of two from 8 px (the reference's assert in ``SynthesisNetwork``; 4 px has no blocks)."""
    if not isinstance(resolution, int) or resolution < 8 or resolution & (resolution - 1):
        raise ValueError(f"interfacegan: the GAN's resolution must be a power of two >= 8, got {resolution!r}")


class SynthesisNetwork(nn.Module):
    """W+ (B x num_ws x w_dim) -> image B x 3 x R x R, blocks b4 .. bR, 'skip' architecture.

    ``num_ws`` counts every conv plus the last toRGB; block k's toRGB reads the W code that the next
    block's conv0 reads (reference ``SynthesisNetwork.forward``, ``ws.narrow``).
    """

    def __init__(self, w_dim: int, img_resolution: int, channel_base: int, channel_max: int,
                 use_noise: bool = True):
        super().__init__()
        check_resolution(img_resolution)
        self.w_dim, self.img_resolution = w_dim, img_resolution
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            cin = channels_for(res // 2, channel_base, channel_max) if res > 4 else 0
            cout = channels_for(res, channel_base, channel_max)
            block = SynthesisBlock(cin, cout, w_dim, res, use_noise=use_noise)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's toRGB

    def forward(self, ws: torch.Tensor, noise_mode: NoiseMode = "random") -> torch.Tensor:
        if ws.dim() != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"synthesis: ws must be B x {self.num_ws} x {self.w_dim}, got {tuple(ws.shape)}")
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            cur = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            x, img = block(x, img, cur, noise_mode)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """Mapping + synthesis, with helpers for the three latent spaces of InterFaceGAN.

    * ``mapping(z) -> w`` (B x w_dim); ``broadcast(w) -> ws`` (B x num_ws x w_dim), the W+ code of w;
    * ``synthesis(ws)``: images in about [-1, 1] (no tanh, as in the reference);
    * ``truncate(w, psi, cutoff)``: ``w_avg + psi (w - w_avg)`` on the first ``cutoff`` layers.

    For editing it offers the interface of the official generators (``official/stylegan.py``):
    ``spaces``, ``sample``, ``to_space`` and ``synthesize``, with the same conventions: Z and W
    codes are truncated on the way to the image (``truncation_psi``, default 1: none), W+ codes are
    not, and noise is the fixed per-layer buffer (``noise_mode="const"``), so that an image is a
    function of its code alone (genforce's ``randomize_noise=False``).
    """

    spaces = ("z", "w", "wp")

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        self.config = config
        self.z_dim, self.w_dim, self.img_resolution = config.z_dim, config.w_dim, config.resolution
        self.resolution = config.resolution
        self.synthesis = SynthesisNetwork(config.w_dim, config.resolution, config.channel_base,
                                          config.channel_max, config.use_noise)
        self.num_ws = self.synthesis.num_ws
        self.num_layers = self.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, config.mapping_layers)
        self.truncation_psi: float = 1.0
        self.truncation_cutoff: int | None = None
        self.noise_mode: NoiseMode = "const"

    @property
    def w_avg(self) -> torch.Tensor:
        return self.mapping.w_avg

    def sample(self, n: int, device: torch.device | str, generator: torch.Generator | None = None) -> torch.Tensor:
        """n Z codes, drawn on the CPU (``generator`` a CPU generator) so that seeds agree across devices."""
        return torch.randn(n, self.z_dim, generator=generator).to(device)

    def to_space(self, z: torch.Tensor, space: str) -> torch.Tensor:
        """Z codes in ``space``: z, w = mapping(z), or wp = truncation(broadcast(w))."""
        space = _check_space(space)
        if space == "z":
            return z
        w = self.mapping(z, update_w_avg=False)
        return w if space == "w" else self.truncate(self.broadcast(w), self.truncation_psi, self.truncation_cutoff)

    def synthesize(self, codes: torch.Tensor, space: str = "z") -> torch.Tensor:
        """Images from codes of ``space`` (Z, W truncated as configured; W+ as given), fixed noise."""
        space = _check_space(space)
        if space == "z":
            codes = self.mapping(codes, update_w_avg=False)
        if space in ("z", "w"):
            codes = self.truncate(self.broadcast(codes), self.truncation_psi, self.truncation_cutoff)
        return self.synthesis(codes, noise_mode=self.noise_mode)

    def broadcast(self, w: torch.Tensor) -> torch.Tensor:
        return w.unsqueeze(1).expand(-1, self.num_ws, -1)

    def truncate(self, ws: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        if psi == 1.0:
            return ws
        avg = self.mapping.w_avg
        out = ws.clone()
        sl = slice(0, cutoff)
        out[:, sl] = avg.lerp(ws[:, sl], psi)
        return out

    def forward(self, z: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None,
                noise_mode: NoiseMode = "random") -> torch.Tensor:
        ws = self.truncate(self.broadcast(self.mapping(z)), truncation_psi, truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)


def _check_space(space: str) -> str:
    s = str(space).lower()
    if s not in Generator.spaces:
        raise ValueError(f"unknown latent space {space!r}; valid: {', '.join(Generator.spaces)}")
    return s


# -- discriminator ----------------------------------------------------------------------------

@dataclass(frozen=True)
class DiscriminatorConfig:
    resolution: int = 32
    channel_base: int = 2048
    channel_max: int = 128
    mbstd_group_size: int = 4
    mbstd_num_channels: int = 1  # 0 disables the minibatch-stddev layer

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class DiscriminatorBlock(nn.Module):
    """'resnet' D block (reference ``DiscriminatorBlock``): fromrgb (first), conv0, conv1 down, 1x1 skip down."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int):
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(3, tmp_channels, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the group standard deviation of the features (Karras et al. 2018, §3; reference layer)."""

    def __init__(self, group_size: int, num_channels: int = 1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = 1 if n % 2 else math.gcd(n, g)  # the reference needs n divisible by g; keep it valid
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()
        y = y.mean(dim=(2, 3, 4)).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


def add_discriminator_blocks(module: nn.Module, resolution: int, channel_base: int,
                             channel_max: int) -> tuple[list[int], Callable[[int], int]]:
    """Give ``module`` the residual trunk ``b{R} .. b8`` (R px down to 4 px) that the discriminator and
    the inversion encoder share; returns the block resolutions and the channels-per-resolution rule.
    The attribute names ``b{res}`` are the checkpoint keys of both networks."""
    check_resolution(resolution)
    block_resolutions = [2 ** i for i in range(int(math.log2(resolution)), 2, -1)]
    ch = lambda r: channels_for(r, channel_base, channel_max)  # noqa: E731
    for res in block_resolutions:
        cin = ch(res) if res < resolution else 0
        setattr(module, f"b{res}", DiscriminatorBlock(cin, ch(res), ch(res // 2)))
    return block_resolutions, ch


def run_discriminator_blocks(module: nn.Module, block_resolutions: Sequence[int], img: torch.Tensor) -> list[torch.Tensor]:
    """Each trunk block's output, from R/2 px down to 4 px (``add_discriminator_blocks``)."""
    x, out = None, []
    for res in block_resolutions:
        x = getattr(module, f"b{res}")(x, img)
        out.append(x)
    return out


class DiscriminatorEpilogue(nn.Module):
    """4x4 head: mbstd -> conv -> fc -> out (reference ``DiscriminatorEpilogue``, unconditional)."""

    def __init__(self, in_channels: int, mbstd_group_size: int, mbstd_num_channels: int):
        super().__init__()
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu")
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.out(self.fc(self.conv(x).flatten(1)))


class Discriminator(nn.Module):
    """Residual discriminator from R px down to 4 px; ``features`` exposes each block's output."""

    def __init__(self, config: DiscriminatorConfig):
        super().__init__()
        self.config = config
        self.block_resolutions, ch = add_discriminator_blocks(self, config.resolution, config.channel_base,
                                                              config.channel_max)
        self.b4 = DiscriminatorEpilogue(ch(4), config.mbstd_group_size, config.mbstd_num_channels)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        """Each block's output (R/2 .. 4 px); the inversion's feature loss compares these."""
        return run_discriminator_blocks(self, self.block_resolutions, img)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.b4(run_discriminator_blocks(self, self.block_resolutions, img)[-1])
