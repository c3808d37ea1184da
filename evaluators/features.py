"""Feature extractors for distribution metrics (FID / KID), behind one small interface.

A ``FeatureExtractor`` maps a batch of images in [-1, 1] (B×3×H×W, the dataset
contract) to a B×F float32 CPU tensor.  Every extractor first quantizes to
uint8, exactly as images written to disk as PNG would be, so that a metric
computed on tensors in memory equals the same metric computed by clean-fid on
the saved image folders.

Two families:

* ``CleanFidFeatures``: clean-fid's "clean" protocol (Parmar et al., CVPR 2022):
  uint8 -> per-channel PIL bicubic resize to 299×299 in float (clean-fid's
  ``build_resizer("clean")``) -> a network taking B×3×299×299 float32 in
  [0, 255], which is the input contract of clean-fid's feature extractors
  (``cleanfid.utils.ResizeDataset`` + ``cleanfid.fid.get_batch_features``).
  With the TorchScript Inception of ``load_inception`` this is the standard
  ``fid_clean_inception`` protocol.
* ``ClassifierFeatures``: the penultimate features of the dataset's own
  attribute classifier (``evaluators.classifier``), at the dataset's
  resolution: an offline alternative, reported under a different metric name.
"""
from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from benchmark.assets import Asset, cache_root, declare, fetch
from evaluators.base import to_uint8  # noqa: F401 - re-exported: the quantisation FID sees

# The TorchScript translation of the TF Inception-v3 (2015-12-05) that StyleGAN2-ADA
# and clean-fid use; url from cleanfid/downloads_helper.py (``inception_url``).
# NVIDIA publishes no sha256 for it, so it is verified by presence only (see
# benchmark.assets.verify) - add the hash here once one is pinned.
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"
INCEPTION_ASSET = declare(Asset(
    name="inception_v3_fid_torchscript",
    url=INCEPTION_URL,
    filename="inception-2015-12-05.pt",
    sha256=None,
    licence="Apache-2.0 (TensorFlow Inception-v3 2015-12-05); TorchScript port by NVIDIA",
    subdir="fid",
    description="clean-fid / StyleGAN2-ADA TorchScript Inception-v3 for FID and KID",
    how_to_get=(
        f"download {INCEPTION_URL} (clean-fid keeps its own copy at /tmp/inception-2015-12-05.pt; "
        "copying that file works too)"
    ),
))

CLEAN_SIZE = 299  # clean-fid's build_resizer("clean") output size



def clean_resize(images_u8: torch.Tensor) -> torch.Tensor:
    """B×3×H×W uint8 -> B×3×299×299 float32 in [0, 255] through clean-fid's own resizer."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")
    hwc = images_u8.permute(0, 2, 3, 1).numpy()
    out = torch.empty(len(hwc), 3, CLEAN_SIZE, CLEAN_SIZE)  # filled in place: one batch-sized buffer
    for i, img in enumerate(hwc):
        out[i] = torch.from_numpy(resize(img)).permute(2, 0, 1)  # 299×299×3 float32, clipped to [0, 255]
    return out


class FeatureExtractor(ABC):
    """Images in [-1, 1] -> B×F float32 CPU features.  ``tag`` goes into metric names."""

    tag: str
    preprocessing: str

    @property
    def cache_id(self) -> dict[str, Any]:
        """What determines the features (for the reference-statistics cache key)."""
        return {"tag": self.tag, "preprocessing": self.preprocessing}

    @abstractmethod
    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class CleanFidFeatures(FeatureExtractor):
    """clean-fid's "clean" preprocessing in front of any net taking 299×299 [0, 255] input."""

    preprocessing = "clean-fid clean: uint8, PIL bicubic float resize to 299, [0,255]"

    def __init__(self, net: Callable[[torch.Tensor], torch.Tensor], tag: str, device: torch.device,
                 weights_id: str = ""):
        self.net, self.tag, self.device, self.weights_id = net, tag, torch.device(device), weights_id

    @property
    def cache_id(self) -> dict[str, Any]:
        return {**super().cache_id, "weights": self.weights_id}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        batch = clean_resize(to_uint8(images)).to(self.device)
        return self.net(batch).detach().float().cpu().reshape(len(images), -1)


class ClassifierFeatures(FeatureExtractor):
    """Penultimate features of the dataset's attribute classifier (``.features(images)``, ``.tag``)."""

    preprocessing = "uint8 quantization, native dataset resolution, [-1,1]"

    def __init__(self, classifier: Any, device: torch.device):
        self.classifier, self.tag, self.device = classifier, str(classifier.tag), torch.device(device)

    @property
    def cache_id(self) -> dict[str, Any]:
        # the checkpoint directory's name is the classifier's content hash (evaluators.classifier.cache)
        directory = getattr(self.classifier, "directory", None)
        return {**super().cache_id, "weights": Path(directory).name if directory else ""}

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        quantized = to_uint8(images).float().div_(127.5).sub_(1.0).to(self.device)
        return self.classifier.features(quantized).detach().float().cpu().reshape(len(images), -1)


def load_inception(device: torch.device, cache: Path | None = None) -> CleanFidFeatures:
    """clean-fid's TorchScript Inception (2048-d pool features), from our asset cache.

    clean-fid itself downloads to /tmp on first use; we resolve the file through
    ``benchmark.assets.fetch`` instead, so offline runs fail with one clear
    ``MissingAssetError`` and the file lives under ``cache_root()/fid/``.
    """
    from cleanfid.inception_torchscript import InceptionV3W

    path = fetch(INCEPTION_ASSET, cache=cache)
    net = InceptionV3W(str(path.parent), download=False, resize_inside=False).to(device).eval()
    return CleanFidFeatures(net, tag="inception", device=device, weights_id=INCEPTION_ASSET.filename)


class TinyRandomNet(nn.Module):
    """A fixed, seeded, random-init conv net on clean-fid's 299×299 [0, 255] input.

    For tests and benchmarks only (it measures nothing about faces): it lets the
    whole clean-fid pipeline run offline, where the Inception weights are absent.
    """

    def __init__(self, seed: int = 0, dim: int = 16):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 7, stride=4, padding=3), nn.ReLU(),
                nn.Conv2d(8, dim, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
        self.seed, self.dim = seed, dim
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - 128.0) / 128.0)

    def weights_id(self) -> str:
        h = hashlib.sha256()
        for t in self.state_dict().values():
            h.update(t.detach().cpu().numpy().tobytes())
        return h.hexdigest()[:16]


def tiny_random_features(device: torch.device, seed: int = 0, dim: int = 16) -> CleanFidFeatures:
    """``TinyRandomNet`` behind clean-fid's clean preprocessing (tag ``tinyrand<dim>s<seed>``)."""
    net = TinyRandomNet(seed, dim).to(device)
    return CleanFidFeatures(net, tag=f"tinyrand{dim}s{seed}", device=device, weights_id=net.weights_id())


def fid_cache_dir() -> Path:
    return cache_root() / "fid_refs"
