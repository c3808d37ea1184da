"""The official checkpoint's ``vgg`` entry: torchvision ResNet-18 without its classifier.

rucmlcv/L2M-GAN core/model.py ``build_model`` builds ``nn.Sequential(*list(resnet18(pretrained=True)
.children())[:-1])`` (everything up to and including the global average pool) and stores its state
dict as ``vgg`` in ``100000_nets_ema.ckpt``; the name is a leftover of a VGG-19 line commented out
beside it.  Keys are therefore ``0.weight`` (conv1), ``1.*`` (bn1), ``4.*``-``7.*`` (layer1-4).
Used only for the optional perceptual term; never trained.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torchvision

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNet18Features(nn.Module):
    """512-d pooled ResNet-18 features of images in [-1, 1] (ImageNet-normalised inside)."""

    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None)
        self.features = nn.Sequential(*list(resnet.children())[:-1])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[None, :, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[None, :, None, None], persistent=False)
        self.eval().requires_grad_(False)

    def load_official(self, state: dict[str, torch.Tensor]) -> None:
        """Load a state dict in the official ``vgg`` layout (``0.weight`` ...) strictly."""
        self.features.load_state_dict(state, strict=True)

    def load_torchvision(self, state: dict[str, torch.Tensor]) -> None:
        """Load torchvision's ``resnet18`` ImageNet state dict (``conv1.weight`` ...); ``fc.*`` is dropped."""
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
        mapped = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head == "fc":
                continue
            mapped[f"{names.index(head)}.{rest}"] = value
        self.features.load_state_dict(mapped, strict=True)

    def train(self, mode: bool = True) -> "ResNet18Features":
        return super().train(False)  # frozen feature extractor: BatchNorm stays in eval mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = ((x + 1) / 2 - self.mean) / self.std
        return self.features(x).flatten(1)
