"""FAN, the face-landmark network behind L2M-GAN's high-pass skips (``fan`` in the official
checkpoints; StarGAN v2's ``wing.ckpt``).

Re-implemented from the published architecture as StarGAN v2 ships it (clovaai/stargan-v2
core/wing.py, identical in rucmlcv/L2M-GAN core/wing.py), which adapts the FAN of Bulat &
Tzimiropoulos (1adrianb/face-alignment) with the CoordConv and boundary channels of AdaptiveWing
(Wang et al. 2019, protossw512/AdaptiveWingLoss): one hourglass of depth 4, 98 landmarks + 1
boundary map.  Module names follow the official ones so that ``wing.ckpt`` and the ``fan`` entry
of ``100000_nets_ema.ckpt`` load strictly.

``get_heatmap`` turns the 98 landmark heatmaps into the two soft face masks the generator uses
(``preprocess`` in core/wing.py): mask 0 covers the whole face (face line, brows, nose, eyes,
lips), mask 1 the inner face without face line, lips and eyebrows.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FAN_INPUT = 256          # get_heatmap resizes every image to 256 px first (core/wing.py)
NUM_LANDMARKS = 98       # WFLW landmarks; ``l0`` outputs one extra boundary channel


class AddCoords(nn.Module):
    """Appends 2 coordinate channels in [-1, 1] (+ a radius channel with ``with_r``).

    The first channel varies along the height, the second along the width, as in ``AddCoordsTh``
    of core/wing.py.  The boundary channels of ``AddCoordsTh`` need a heatmap, and FAN's single
    hourglass is always called with ``heatmap=None``, so they never occur and are left out; the
    conv widths below still count them exactly as the official ``CoordConvTh`` does.
    """

    def __init__(self, height: int, width: int, with_r: bool):
        super().__init__()
        xs = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width) / (height - 1) * 2 - 1
        ys = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width) / (width - 1) * 2 - 1
        coords = [xs, ys]
        if with_r:
            rr = torch.sqrt(xs**2 + ys**2)
            coords.append(rr / rr.max())
        self.register_buffer("coords", torch.stack(coords)[None], persistent=False)  # not in official dicts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.coords.to(x.dtype).expand(x.shape[0], -1, -1, -1)], dim=1)


class CoordConv(nn.Module):
    """AddCoords then a conv (``CoordConvTh``): input width + 2, + 1 with r, + 2 for boundary
    channels unless ``first_one`` (core/wing.py)."""

    def __init__(self, height: int, width: int, with_r: bool, with_boundary: bool, in_channels: int,
                 first_one: bool = False, **conv_kwargs):
        super().__init__()
        self.addcoords = AddCoords(height, width, with_r)
        in_channels += 2 + (1 if with_r else 0) + (2 if with_boundary and not first_one else 0)
        self.conv = nn.Conv2d(in_channels=in_channels, **conv_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.addcoords(x))


class ConvBlock(nn.Module):
    """FAN's hierarchical block: three BN-ReLU-conv3×3 of widths C/2, C/4, C/4 concatenated, plus
    the input (through BN-ReLU-conv1×1 ``downsample`` where the width changes)."""

    def __init__(self, in_planes: int, out_planes: int):
        super().__init__()
        half, quarter = out_planes // 2, out_planes // 4
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, half, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, quarter, 3, 1, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(quarter)
        self.conv3 = nn.Conv2d(quarter, quarter, 3, 1, 1, bias=False)
        self.downsample = None
        if in_planes != out_planes:
            self.downsample = nn.Sequential(nn.BatchNorm2d(in_planes), nn.ReLU(True),
                                            nn.Conv2d(in_planes, out_planes, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out1 = self.conv1(F.relu(self.bn1(x)))
        out2 = self.conv2(F.relu(self.bn2(out1)))
        out3 = self.conv3(F.relu(self.bn3(out2)))
        residual = x if self.downsample is None else self.downsample(x)
        return torch.cat([out1, out2, out3], dim=1) + residual


class HourGlass(nn.Module):
    """Recursive hourglass of ``depth`` levels on 256 channels at 64×64, with a CoordConv in front.

    Modules ``b1_<l>``, ``b2_<l>``, ``b3_<l>`` per level and ``b2_plus_1`` at the bottom; down by
    average pooling, up by nearest ×2 (core/wing.py ``HourGlass``).
    """

    def __init__(self, depth: int = 4, num_features: int = 256, first_one: bool = True):
        super().__init__()
        self.depth = depth
        self.coordconv = CoordConv(64, 64, True, True, num_features, first_one,
                                   out_channels=num_features, kernel_size=1, stride=1, padding=0)
        self._build(depth, num_features)

    def _build(self, level: int, c: int) -> None:
        self.add_module(f"b1_{level}", ConvBlock(c, c))
        self.add_module(f"b2_{level}", ConvBlock(c, c))
        if level > 1:
            self._build(level - 1, c)
        else:
            self.add_module(f"b2_plus_{level}", ConvBlock(c, c))
        self.add_module(f"b3_{level}", ConvBlock(c, c))

    def _forward(self, level: int, x: torch.Tensor) -> torch.Tensor:
        up1 = self._modules[f"b1_{level}"](x)
        low = self._modules[f"b2_{level}"](F.avg_pool2d(x, 2, stride=2))
        low = self._forward(level - 1, low) if level > 1 else self._modules[f"b2_plus_{level}"](low)
        low = self._modules[f"b3_{level}"](low)
        return up1 + F.interpolate(low, scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(self.depth, self.coordconv(x))


class FAN(nn.Module):
    """Landmark network: CoordConv 7×7/2 → BN-ReLU → ConvBlocks → hourglass → 99 heatmaps at 64×64.

    Weights are never trained here (StarGAN v2 and L2M-GAN keep FAN frozen and in eval mode).
    """

    def __init__(self, num_landmarks: int = NUM_LANDMARKS):
        super().__init__()
        self.conv1 = CoordConv(FAN_INPUT, FAN_INPUT, True, False, in_channels=3, out_channels=64,
                               kernel_size=7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = ConvBlock(64, 128)
        self.conv3 = ConvBlock(128, 128)
        self.conv4 = ConvBlock(128, 256)
        self.m0 = HourGlass(4, 256, first_one=True)
        self.top_m_0 = ConvBlock(256, 256)
        self.conv_last0 = nn.Conv2d(256, 256, 1, 1, 0)
        self.bn_end0 = nn.BatchNorm2d(256)
        self.l0 = nn.Conv2d(256, num_landmarks + 1, 1, 1, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: B×3×256×256 in [0, 1]; returns B×99×64×64 heatmaps (98 landmarks + boundary)."""
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.avg_pool2d(self.conv2(x), 2, stride=2)
        x = self.conv4(self.conv3(x))
        ll = self.top_m_0(self.m0(x))
        ll = F.relu(self.bn_end0(self.conv_last0(ll)))
        return self.l0(ll)

    @torch.no_grad()
    def get_heatmap(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two B×1×256×256 masks in [0, 1] for images ``x`` in [-1, 1] of any size (core/wing.py).

        Resize to 256 (bilinear; align_corners=False, the default of the official call), map to
        [0, 1], drop the boundary channel, up-sample the 64×64 heatmaps ×4 (bilinear,
        align_corners=True as in the official call), then ``preprocess``.
        """
        x = F.interpolate(x, size=FAN_INPUT, mode="bilinear", align_corners=False)
        heatmaps = self(x * 0.5 + 0.5)[:, :-1]
        scale = x.shape[2] // heatmaps.shape[2]
        heatmaps = F.interpolate(heatmaps, scale_factor=scale, mode="bilinear", align_corners=True)
        return preprocess(heatmaps)


# -- heatmaps to masks (core/wing.py "Mask related functions") ----------------------------------

# landmark index ranges [start, end) of the 98-point WFLW layout, as in core/wing.py ``index_map``
CHIN, EYEBROWS, EYEBROWS_EDGES = (8, 25), (33, 51), (33, 46)
NOSE, NOSTRILS, EYES = (51, 55), (55, 60), (60, 76)
LIP_EDGES, LIP_UPPER, LIP_LOWER, LIP_INNER = (76, 82), (77, 82), (83, 88), (88, 96)


def _normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel min-max normalisation to [0, 1]."""
    flat = x.flatten(2)
    lo, hi = flat.min(dim=2, keepdim=True)[0], flat.max(dim=2, keepdim=True)[0]
    return ((flat - lo) / (hi - lo + eps)).view_as(x)


def _shift(x: torch.Tensor, n: int) -> torch.Tensor:
    """Rows rolled up by ``n`` pixels (down for n < 0), wrapping around: core/wing.py ``shift``
    builds exactly this permutation of the height axis."""
    return torch.roll(x, shifts=-n, dims=2)


def preprocess(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """98 heatmaps (B×98×H×W) → (mask 0, mask 1), each B×1×H×W in [0, 1] (core/wing.py ``preprocess``).

    Truncate below 0.1, min-max normalise, shift and sharpen parts (chin, brows, nostrils, lips),
    zero the outer face line and the brow/lip end points, move the nose down and widen the eyes
    upwards; mask 1 also drops face line, lips and eyebrows.  The shifts scale with H/256 except the
    two eye shifts, which the official code leaves at -8 and -24 pixels.
    """
    x = x.clone()
    x = torch.where(x < 0.1, torch.zeros_like(x), x)
    x = _normalize(x)
    sw = x.shape[2] // 256
    for (start, end), shift, power in ((CHIN, 0, 3), (EYEBROWS, -7 * sw, 2), (NOSTRILS, 8 * sw, 4),
                                       (LIP_UPPER, -8 * sw, 4), (LIP_LOWER, 8 * sw, 4), (LIP_INNER, -2 * sw, 3)):
        x[:, start:end] = _shift(x[:, start:end], shift) ** power
    zero_out = list(range(0, CHIN[0])) + list(range(CHIN[1], 33)) + \
        [EYEBROWS_EDGES[0], EYEBROWS_EDGES[1], LIP_EDGES[0], LIP_EDGES[1]]
    x[:, zero_out] = 0
    x[:, NOSE[0] + 1:NOSE[1]] = _shift(x[:, NOSE[0] + 1:NOSE[1]], 4 * sw)  # the official ``** 1`` is a no-op
    eyes = x[:, EYES[0]:EYES[1]]
    x[:, EYES[0]:EYES[1]] = _shift(eyes, -8) ** 3 + _shift(eyes, -24)
    x2 = x.clone()
    x2[:, CHIN[0]:CHIN[1]] = 0
    x2[:, LIP_EDGES[0]:LIP_INNER[1]] = 0
    x2[:, EYEBROWS[0]:EYEBROWS[1]] = 0
    m1, m2 = x.sum(dim=1, keepdim=True), x2.sum(dim=1, keepdim=True)
    m1 = torch.where(torch.isnan(m1), torch.zeros_like(m1), m1)  # official x[x != x] = 0 (for x2 a no-op)
    return m1.clamp(0, 1), m2.clamp(0, 1)
