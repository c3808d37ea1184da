"""ArcFace IR-SE-50, the identity network of the optional identity loss.

The official L2M-GAN options name it (``--face_path expr/checkpoints/model_ir_se50.pth``,
``--net_depth 50``, ``--lambda_id``) and core/model.py imports its building blocks, but the released
code never builds it.  Architecture and key names follow the checkpoint's source,
TreB1eN/InsightFace_Pytorch model.py (``Backbone(50, drop_ratio, 'ir_se')``): ``input_layer``,
``body.{i}`` bottleneck_IR_SE units (3, 4, 14, 3 units of 64, 128, 256, 512 channels, SE
reduction 16), ``output_layer`` (BN2d, Dropout, Flatten, Linear(512·7·7, 512), BN1d), L2-normalised.

It is an editor-side network, never one of the benchmark's judges (those are FaceNet and the
SynthFaces embedder in ``evaluators/identity``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# (in_channel, depth, num_units) of the four stages of the 50-layer variant (get_blocks(50))
IR50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class Flatten(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1×1 convs ``fc1``/``fc2`` (no bias)."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, padding=0, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, padding=0, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))


class BottleneckIRSE(nn.Module):
    """``shortcut_layer`` (MaxPool2d(1, stride) or conv1×1+BN) + ``res_layer`` (BN, conv, PReLU, conv, BN, SE)."""

    def __init__(self, in_channel: int, depth: int, stride: int):
        super().__init__()
        if in_channel == depth:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channel, depth, 1, stride, bias=False),
                                                nn.BatchNorm2d(depth))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channel), nn.Conv2d(in_channel, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth), SEModule(depth, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """112×112 face crops in [-1, 1] → 512-d unit embeddings."""

    def __init__(self, drop_ratio: float = 0.6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(drop_ratio), Flatten(),
                                          nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512))
        units = []
        for in_channel, depth, num in IR50_STAGES:
            units.append(BottleneckIRSE(in_channel, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(num - 1)]
        self.body = nn.Sequential(*units)
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> "IRSE50":
        return super().train(False)  # frozen: BatchNorm and Dropout stay in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings of aligned face images of any size: resized to 256, the face crop
        [35:223, 32:220] taken and pooled to 112 px (pixel2style2pixel criteria/id_loss.py, the
        usual way to apply this checkpoint to 256 px FFHQ/CelebA-HQ-aligned faces)."""
        x = F.interpolate(x, size=256, mode="bilinear", align_corners=False)
        x = F.adaptive_avg_pool2d(x[:, :, 35:223, 32:220], 112)
        return self(x)
