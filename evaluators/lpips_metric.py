"""LPIPS (Zhang et al., CVPR 2018), AlexNet trunk, linear layers v0.1: metric ``lpips_alex_v01``.

The ``lpips`` package ships the v0.1 linear-layer weights, but its AlexNet trunk
comes from torchvision's ImageNet checkpoint, which torchvision downloads into
the torch hub cache on first use.  We build ``lpips.LPIPS(net="alex",
version="0.1", pnet_rand=True)`` (no download) and load the trunk ourselves
from ``<torch hub dir>/checkpoints/alexnet-owt-7be5be79.pth`` - the very file
torchvision would use - through ``benchmark.assets.fetch``: it is verified
against its sha256, downloaded when allowed, and missing offline with one clear
``MissingAssetError``.  The weights load with ``weights_only=True``.

Inputs are the dataset's images in [-1, 1] at their native resolution (the
package's expected range; no resizing).  The value is the mean over images of
the spatially averaged per-image distance.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from benchmark.assets import Asset, declare, fetch
from benchmark.registry import register_evaluator
from evaluators.base import Evaluator, RunningMean, shared_model

log = logging.getLogger(__name__)

# torchvision.models.AlexNet_Weights.IMAGENET1K_V1.url; the file name carries the sha256 prefix
# (torch.hub convention).  Full sha256 and size as recorded by other projects pinning this file
# (LPIPS reproducibility manifests found on GitHub); the sha256 starts with the url's 7be5be79 and
# the size agrees with torchvision's AlexNet_Weights meta "_file_size": 233.087 (MiB).
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
ALEXNET_ASSET = declare(Asset(
    name="alexnet_imagenet_torchvision",
    url=ALEXNET_URL,
    filename="alexnet-owt-7be5be79.pth",
    sha256="7be5be791159472b1fbf3c69796f7cb30dca7ad8466c2df70058c37116cdee02",
    size=244_408_911,
    licence="BSD-3-Clause (torchvision)",
    subdir="checkpoints",  # relative to torch.hub.get_dir(): torchvision's own location
    description="torchvision AlexNet ImageNet weights, the LPIPS trunk",
    how_to_get=f"download {ALEXNET_URL} (torchvision's AlexNet_Weights.IMAGENET1K_V1)",
), lambda: Path(torch.hub.get_dir()))
METRIC = "lpips_alex_v01"


def alexnet_trunk_path() -> Path:
    """The verified torchvision AlexNet checkpoint in the torch hub cache (``$TORCH_HOME``)."""
    return fetch(ALEXNET_ASSET, cache=Path(torch.hub.get_dir()))


def load_alexnet_trunk(model: Any, state: dict[str, torch.Tensor]) -> None:
    """Copy torchvision AlexNet ``features.<i>.*`` weights into lpips' ``net.slice<k>.<i>.*`` (strict).

    lpips' ``pretrained_networks.alexnet`` splits ``alexnet().features`` into
    five slices keeping each layer's index as its module name, so the mapping
    is by that index.
    """
    mapped = {}
    for key in model.net.state_dict():
        _, index_and_param = key.split(".", 1)  # "slice2.3.weight" -> "3.weight"
        mapped[key] = state[f"features.{index_and_param}"]
    model.net.load_state_dict(mapped, strict=True)


def build_lpips(device: torch.device | str, trunk: Literal["imagenet", "random"] = "imagenet",
                seed: int = 0) -> Any:
    """The LPIPS alex v0.1 module in eval mode; ``trunk="random"`` (seeded) is for offline tests only."""
    import lpips

    if trunk not in ("imagenet", "random"):
        raise ValueError(f"unknown LPIPS trunk {trunk!r}; use 'imagenet' or 'random'")
    # the weights first: offline, a missing trunk fails here in microseconds instead of after building
    # the network (0.4 s), which every cell's LPIPS-based metrics would otherwise pay again
    trunk_file = alexnet_trunk_path() if trunk == "imagenet" else None
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # lpips' pretrained=
        torch.manual_seed(seed)
        model = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    if trunk_file is not None:
        state = torch.load(trunk_file, map_location="cpu", weights_only=True)
        load_alexnet_trunk(model, state)
    return model.to(device).eval().requires_grad_(False)


def lpips_model(device: torch.device | str) -> Any:
    """The process-wide LPIPS alex v0.1 with the ImageNet trunk (MissingAssetError offline)."""
    return shared_model((METRIC, str(device)), lambda: build_lpips(device))


@torch.no_grad()
def lpips_distance(model: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) LPIPS between two batches in [-1, 1]."""
    device = next(model.parameters()).device
    return model(a.to(device).float(), b.to(device).float()).flatten().cpu()


@register_evaluator("lpips")
class LpipsEvaluator(Evaluator):
    """Mean LPIPS (alex, v0.1) between each source image and its edit; 0 for the no-op editor."""

    metrics = (METRIC,)
    higher_is_better = {METRIC: False}
    option_keys = ()

    def model(self) -> Any:
        return lpips_model(self.ctx.device)

    def reset(self) -> None:
        self.mean = RunningMean()
        self.net = self.model()  # built (or found missing) before the first batch

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        self.mean.add(lpips_distance(self.net, source, edited))

    def finalize(self) -> dict[str, float]:
        return {METRIC: self.mean.value}
