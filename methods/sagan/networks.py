"""SaGAN networks: the attribute manipulation network (AMN), the spatial attention network (SAN),
the generator that composes them, and the two-headed discriminator.

Facts (layer widths, kernels, norms, activations, parameter names) come from the paper
(Zhang, Kan, Shan, Chen, "Generative Adversarial Network with Spatial Attention for Face Attribute
Editing", ECCV 2018, §3 and its architecture table) and from the public PyTorch re-implementation
that researchers run and whose CelebA 128 px models they compare with
(github.com/elvisyjlin/SpatialAttentionGAN, MIT, ``sagan.py``).  The module tree below keeps that
implementation's names, so its ``G.state_dict()`` / ``D.state_dict()`` load with ``strict=True``:

    G:  AMN.conv.{0,3,6,9}  AMN.resblk.{0..3}.layers.{0,1,3,4}  AMN.deconv.{0,3,6,9}   (same under SAN.)
    D:  conv.{0,2,4,6,8,10}  src  cls.0

At 128 px and ``width=32`` the networks are exactly the published ones.  Widths and depth follow the
resolution for the CPU settings of this benchmark: the generator downsamples three times at 64 px
and above and twice below (a 32 px face keeps an 8×8 bottleneck), the discriminator halves until
its map is 2×2 (six convs at 128 px, as published; four at 32 px); ``width`` scales every channel
count (``d_width`` those of D).
"""
from __future__ import annotations

import torch
import torch.nn as nn

MIN_RESOLUTION = 16


class ResolutionError(ValueError):
    """The networks cannot take this resolution (not a multiple of 8, or too small)."""


def check_resolution(resolution: int) -> int:
    """Return ``resolution`` if the nets can take it; the encoder/decoder needs a multiple of 8."""
    if not isinstance(resolution, int) or resolution < MIN_RESOLUTION or resolution % 8:
        raise ResolutionError(f"sagan: resolution must be a multiple of 8 and at least {MIN_RESOLUTION} px, "
                              f"got {resolution!r}")
    return resolution


def n_downsamplings(resolution: int) -> int:
    """Stride-2 convs of AMN/SAN: three at >= 64 px (the paper's 128 px has three), two below."""
    return 3 if check_resolution(resolution) >= 64 else 2


def d_depth(resolution: int) -> tuple[int, int]:
    """(number of 4×4/2 convs, final map size) of D: halve while the map is at least 4 px.

    128 px -> 6 convs and a 2×2 map, the published D (whose ``cls`` conv has a 2×2 kernel).
    """
    size, n = check_resolution(resolution), 0
    while size >= 4:
        size, n = size // 2, n + 1
    return n, size


class ResBlk(nn.Module):
    """conv3×3 - BN - ReLU - conv3×3 - BN, plus the input; no ReLU after the addition.

    As in elvisyjlin/SpatialAttentionGAN ``sagan.py`` ``ResBlk`` (names ``layers.{0,1,3,4}``).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderDecoder(nn.Module):
    """The body shared by AMN and SAN (the paper: "the same architecture" but for in/out channels).

    conv7×7 (width) - IN - ReLU, ``n_down`` × [conv4×4/2 - IN - ReLU] doubling the width,
    ``n_res`` residual blocks, ``n_down`` × [deconv4×4/2 - IN - ReLU] halving it, then a 7×7
    transposed conv to ``out_channels`` and ``tanh`` (AMN) or ``sigmoid`` (SAN).  The last layer
    is a ``ConvTranspose2d`` in the public implementation, so its weight is (in, out, 7, 7).
    InstanceNorm has no affine parameters there (PyTorch's default), hence no state-dict entries.
    """

    def __init__(self, in_channels: int, out_channels: int, last: str, resolution: int = 128,
                 width: int = 32, n_res: int = 4):
        super().__init__()
        n_down = n_downsamplings(resolution)
        chans = [width * 2 ** i for i in range(n_down + 1)]  # 32, 64, 128, 256 at 128 px
        enc: list[nn.Module] = [nn.Conv2d(in_channels, chans[0], 7, 1, 3), nn.InstanceNorm2d(chans[0]),
                                nn.ReLU(inplace=True)]
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            enc += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.InstanceNorm2d(c_out), nn.ReLU(inplace=True)]
        self.conv = nn.Sequential(*enc)
        self.resblk = nn.Sequential(*[ResBlk(chans[-1]) for _ in range(n_res)])
        dec: list[nn.Module] = []
        for c_in, c_out in zip(chans[:0:-1], chans[-2::-1]):
            dec += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.InstanceNorm2d(c_out), nn.ReLU(inplace=True)]
        dec += [nn.ConvTranspose2d(chans[0], out_channels, 7, 1, 3), nn.Tanh() if last == "tanh" else nn.Sigmoid()]
        self.deconv = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.resblk(self.conv(x)))


class AMN(EncoderDecoder):
    """Attribute manipulation network: RGB + the target value tiled as a 4th plane -> edited RGB (tanh)."""

    def __init__(self, resolution: int = 128, width: int = 32, n_res: int = 4):
        super().__init__(4, 3, "tanh", resolution, width, n_res)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        # the label plane comes after the RGB channels (sagan.py: torch.cat((x, a), dim=1))
        plane = c.to(x.dtype).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, x.shape[2], x.shape[3])
        return super().forward(torch.cat([x, plane], dim=1))


class SAN(EncoderDecoder):
    """Spatial attention network: RGB only -> a one-channel mask in [0, 1] (sigmoid); no label input."""

    def __init__(self, resolution: int = 128, width: int = 32, n_res: int = 4):
        super().__init__(3, 1, "sigmoid", resolution, width, n_res)


def compose(x: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """``x + strength * m * (AMN(x, c) - x)``; at strength 1 the paper's ``m * AMN + (1 - m) * x``."""
    return x + strength * (mask * (edited - x))


class Generator(nn.Module):
    """G(x, c) = (x', m): AMN edits, SAN says where, the composite keeps the rest of x.

    ``c`` is the wanted attribute value (B,) or (B, 1) of 0/1: one model per attribute, both directions.
    """

    def __init__(self, resolution: int = 128, width: int = 32, n_res: int = 4):
        super().__init__()
        self.resolution = check_resolution(resolution)
        self.AMN = AMN(resolution, width, n_res)
        self.SAN = SAN(resolution, width, n_res)

    def forward(self, x: torch.Tensor, c: torch.Tensor, strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.AMN(x, c)
        m = self.SAN(x)
        return compose(x, y, m, strength), m


class Discriminator(nn.Module):
    """Shared trunk of 4×4/2 convs with LeakyReLU(0.2); ``src``: PatchGAN real/fake map (3×3 conv);
    ``cls``: the attribute logit (a conv over the whole final map, 2×2 at 128 px).

    Widths 32 -> 1024 doubling at 128 px (sagan.py ``Discriminator``).  The public implementation
    ends ``cls`` with a Sigmoid and uses ``BCELoss``; this one returns the logit and the losses use
    the equivalent, numerically stable ``binary_cross_entropy_with_logits`` (no parameters differ).
    """

    def __init__(self, resolution: int = 128, width: int = 32):
        super().__init__()
        n, final = d_depth(resolution)
        chans = [3] + [width * 2 ** i for i in range(n)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        self.conv = nn.Sequential(*layers)
        self.src = nn.Conv2d(chans[-1], 1, 3, 1, 1)
        self.cls = nn.Sequential(nn.Conv2d(chans[-1], 1, final, 1, 0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B×1×k×k real/fake scores, (B,) attribute logits)."""
        h = self.conv(x)
        return self.src(h), self.cls(h).flatten(1)[:, 0]


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) weights and zero biases for convs: elvisyjlin/SpatialAttentionGAN ``train.py`` ``init_weights``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
