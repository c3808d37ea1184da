"""The multi-label attribute classifier: a torchvision ResNet adapted to small faces.

``build_network`` makes the bare ``nn.Module`` (used by training);
``AttributeClassifier`` wraps a trained one for scoring: eval mode, fixed
device, inputs in [-1, 1] at any size (resized inside to the training
resolution with antialiasing), no gradients.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from benchmark.assets import MissingAssetError, downloads_allowed
from evaluators.base import resize_square
from evaluators.classifier.config import ClassifierConfig

# torchvision's ImageNet normalisation (the transforms of its ResNet weights): inputs
# are mapped to it in every case, so pretrained and scratch networks see the same range.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _adapt_stem(net: torchvision.models.ResNet, downsample: int) -> None:
    """Replace the ImageNet stem (7×7 s2 conv + max-pool, /4) for small inputs; see ClassifierConfig."""
    if downsample == 4:
        return
    net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=downsample, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # torchvision's init
    net.maxpool = nn.Identity()


def imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    """ImageNet weights through torchvision's weights API, or one clear error when they cannot be had.

    torchvision keeps them in ``$TORCH_HOME/hub/checkpoints``; offline
    (``FACEEDIT_OFFLINE=1`` or no network) a missing file raises
    ``MissingAssetError`` saying where to put it, never a urllib stack trace.
    """
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    how = (f"download {weights.url} into {path.parent} on a machine with internet, "
           "or train from scratch (classifier option pretrained: false, the default)")
    if not path.exists() and not downloads_allowed():
        raise MissingAssetError(
            f"ImageNet weights {weights} for the attribute classifier are not cached and downloads are "
            f"disabled (FACEEDIT_OFFLINE=1).\n  put the file at: {path}\n  how to get it:   {how}"
        )
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a bad hash is a RuntimeError
        raise MissingAssetError(
            f"could not get ImageNet weights {weights} for the attribute classifier ({exc}).\n"
            f"  put the file at: {path}\n  how to get it:   {how}"
        ) from None


class SlimResNet(nn.Module):
    """ResNet-10 (default widths 16-32-64-128): torchvision's BasicBlock, one per stage, same attribute names.

    Why: the judge has ten binary attributes of clean renders to read, and on two CPU cores the
    budget is minutes; resnet18's 512-wide stages are far more than that needs.  The layout keeps
    ``conv1, bn1, relu, maxpool, layer1..4, avgpool, fc`` so ``AttributeClassifier`` treats it
    like a torchvision ResNet.  Stem: 3×3 conv of stride min(2, ``downsample``), then a 3×3 stride-2
    max-pool when ``downsample`` is 4 (total stride as ``ClassifierConfig.stem_downsample``).
    """

    def __init__(self, num_classes: int, downsample: int, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=min(2, downsample), padding=1, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if downsample == 4 else nn.Identity()
        stages, c_in = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None if stride == 1 and c_in == w else nn.Sequential(
                nn.Conv2d(c_in, w, 1, stride=stride, bias=False), nn.BatchNorm2d(w))
            stages.append(nn.Sequential(BasicBlock(c_in, w, stride=stride, downsample=down)))
            c_in = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():  # torchvision's ResNet init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_network(config: ClassifierConfig, num_attributes: int, resolution: int,
                  load_pretrained: bool = True) -> nn.Module:
    """A ResNet with an ``num_attributes``-way linear head (one logit per attribute).

    With ``config.pretrained`` the ImageNet weights are loaded into everything but
    the head and, when the stem was replaced, ``conv1``.  ``load_pretrained=False``
    builds the same shapes without touching the weights (loading a checkpoint).
    """
    if config.arch == "slim10":
        w = config.resolved_width()
        return SlimResNet(num_attributes, config.resolved_stem(resolution), tuple(w * 2 ** i for i in range(4)))
    net = torchvision.models.get_model(config.arch, weights=None, num_classes=num_attributes)
    if config.pretrained and load_pretrained:
        state = imagenet_state_dict(config.arch)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        net.load_state_dict(state, strict=False)
    _adapt_stem(net, config.resolved_stem(resolution))
    return net


class AttributeClassifier(nn.Module):
    """A trained classifier ready for scoring (eval mode, on ``device``, no gradients).

    All outputs are on the classifier's device.  ``tag`` names the protocol in
    metric names (``attr_success_<tag>``, ``fid_clean_<tag>``).
    """

    def __init__(self, net: torchvision.models.ResNet, attribute_names: tuple[str, ...], resolution: int,
                 tag: str, device: torch.device | str, metrics: dict[str, Any] | None = None,
                 directory: Path | None = None):
        super().__init__()
        self.net = net
        self.attribute_names = tuple(attribute_names)
        self.resolution = int(resolution)
        self.tag = tag
        self.metrics = dict(metrics or {})
        self.directory = directory
        self.device = torch.device(device)
        self.register_buffer("_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.to(self.device).eval()
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def accuracy(self) -> dict[str, float]:
        """Held-out accuracy per attribute, from the checkpoint's metrics.json."""
        return dict(self.metrics.get("accuracy", {}))

    def train(self, mode: bool = True) -> "AttributeClassifier":
        """A scoring network stays in eval mode (BatchNorm running statistics)."""
        return super().train(False)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> normalised network input at the training resolution."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"classifier input must be B×3×H×W, got shape {tuple(images.shape)}")
        x = resize_square(images.to(self.device, torch.float32), self.resolution)
        return normalise(x, self._mean, self._std)

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        x = n.layer4(n.layer3(n.layer2(n.layer1(x))))
        return torch.flatten(n.avgpool(x), 1)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """B×F penultimate (global-average-pooled) features, F = 8 × width for slim10 (128 by default), 512 for resnet18/34, 2048 for resnet50."""
        return self._trunk(self.prepare(images))

    @torch.no_grad()
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """B×A logits, attributes in ``attribute_names`` order."""
        return self.net.fc(self._trunk(self.prepare(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.logits(images)

    def probs(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(images))

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """B×A hard 0/1 predictions (int64), threshold 0.5 on the probability."""
        return (self.logits(images) > 0).long()


def normalise(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> ImageNet normalisation; shared by training and scoring so both see the same input."""
    return ((x + 1) * 0.5 - mean.to(x.device)) / std.to(x.device)
