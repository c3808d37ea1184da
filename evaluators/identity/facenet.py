"""FaceNet (InceptionResnetV1, VGGFace2 weights) with MTCNN alignment: the ``id_cos_facenet_vggface2`` protocol.

Protocol, fixed by the metric name:

* detector: facenet-pytorch's MTCNN (P/R/O-net weights ship inside the package,
  ``facenet_pytorch/data/{p,r,o}net.pt``), its defaults (min face 20 px,
  thresholds 0.6/0.7/0.7, pyramid factor 0.709), largest face, run on the
  SOURCE image only; its box is applied to the edited image too (see
  ``common.AlignedEmbedder.embed_pairs`` for why);
* crop: the box with margin 0 (MTCNN's default), clamped to the image, resized
  to 160×160 with area interpolation (what MTCNN's ``extract_face`` does on
  tensors), kept in float (no uint8 round trip);
* standardisation: ``fixed_image_standardization`` = (x - 127.5) / 128 on
  [0, 255] pixels, MTCNN's ``post_process=True`` default and what the VGGFace2
  weights were converted for;
* no face found: the fallback box below, counted in ``id_facenet_nodetect_rate``.

The weights (facenet-pytorch's release file ``20180402-114759-vggface2.pt``,
converted from David Sandberg's TensorFlow FaceNet) go through our asset cache,
never through facenet-pytorch's own downloader, and load with
``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from benchmark.assets import Asset, AssetError, MissingAssetError, declare, fetch
from evaluators.identity.common import AlignedEmbedder, centre_box, to_unit_range

FACENET_URL = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/20180402-114759-vggface2.pt"

# sha256: facenet-pytorch publishes none.  This value is pinned identically by several
# independent public projects that verify this exact release file (Dockerfiles running
# `sha256sum -c`, evaluation harnesses); one of them also pins the MTCNN p/r/o-net hashes,
# which match byte for byte the files shipped in facenet-pytorch 2.6.0 here, so it hashed
# the real files.  Size: 111,898,327 bytes as pinned by one of those projects, consistent
# with the "107MB" of facenet-pytorch's README table.  Not verified against the file itself
# from this machine (no internet).
FACENET_VGGFACE2 = declare(Asset(
    name="facenet_vggface2",
    url=FACENET_URL,
    filename="20180402-114759-vggface2.pt",
    sha256="281cebca8662831adb987a874bdcb36e73f5b1c6dc5ee5878f305e985625d99b",
    size=111_898_327,
    licence="MIT (facenet-pytorch and davidsandberg/facenet); trained on VGGFace2 (research use)",
    subdir="weights/facenet",
    description="FaceNet InceptionResnetV1 state dict trained on VGGFace2 (facenet-pytorch release v2.2.9)",
    how_to_get=f"download {FACENET_URL} (e.g. `curl -L -o <path> <url>`), or run once with internet access",
))

IMAGE_SIZE = 160  # InceptionResnetV1's input size in facenet-pytorch (MTCNN image_size default)
# Fallback box (centre x, centre y, width, height as fractions of the image): the median MTCNN
# box on 16 CelebA-HQ samples (../shared/data/samples, 256 px), measured here: x 0.50, y 0.54,
# w 0.53, h 0.73.
FALLBACK_BOX = (0.50, 0.54, 0.53, 0.73)


def _import_facenet() -> Any:
    try:
        import facenet_pytorch
    except ImportError as exc:
        raise MissingAssetError(
            f"facenet-pytorch is not installed ({exc}); install it WITHOUT its dependencies so it "
            "cannot downgrade torch: pip install --no-deps facenet-pytorch==2.6.0"
        ) from None
    return facenet_pytorch


def load_inception_resnet_v1(path: str | Path, device: torch.device | str) -> torch.nn.Module:
    """An eval-mode ``InceptionResnetV1(pretrained=None, classify=False)`` with the state dict at ``path``.

    The released state dict also holds ``logits.*``, the 8631-way VGGFace2
    training classifier; the embedding model has no such layer, so those keys are
    dropped and everything else must match exactly (strict load).
    """
    fp = _import_facenet()
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise AssetError(f"{path}: expected a state dict, found {type(state).__name__}")
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    model = fp.InceptionResnetV1(pretrained=None, classify=False)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise AssetError(f"{path} does not fit InceptionResnetV1: {exc}") from None
    return model.eval().to(torch.device(device))


class FaceNetEmbedder(AlignedEmbedder):
    """MTCNN alignment + InceptionResnetV1 embeddings (512-d, L2-normalised by the model)."""

    def __init__(self, device: torch.device | str, asset: Asset = FACENET_VGGFACE2, cache: Path | None = None):
        fp = _import_facenet()
        self.device = torch.device(device)
        self.model = load_inception_resnet_v1(fetch(asset, cache), self.device)
        # MTCNN is used for detection only; its P/R/O-net weights are loaded from the package.
        self.mtcnn = fp.MTCNN(image_size=IMAGE_SIZE, margin=0, select_largest=True, device=self.device)
        self._standardize = fp.fixed_image_standardization

    @torch.no_grad()
    def detect(self, images: torch.Tensor) -> tuple[list[tuple[int, int, int, int]], torch.Tensor]:
        h, w = images.shape[-2:]
        pixels = to_unit_range(images.to(self.device)).permute(0, 2, 3, 1)  # B×H×W×3 in [0, 255]
        boxes, _ = self.mtcnn.detect(pixels)
        out: list[tuple[int, int, int, int]] = []
        found: list[bool] = []
        for b in boxes:
            if b is None or len(b) == 0:
                out.append(centre_box(h, w, FALLBACK_BOX))
                found.append(False)
                continue
            x0, y0, x1, y1 = (float(v) for v in b[0])  # largest face first (select_largest)
            # clamp and truncate exactly as facenet-pytorch's extract_face does
            out.append((int(max(x0, 0)), int(max(y0, 0)), int(min(x1, w)), int(min(y1, h))))
            found.append(True)
        return out, torch.tensor(found, dtype=torch.bool)

    def crop(self, images: torch.Tensor, boxes: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
        """B×3×160×160 standardised crops, ready for the model."""
        h, w = images.shape[-2:]
        pixels = to_unit_range(images.to(self.device))
        crops = []
        for img, (x0, y0, x1, y1) in zip(pixels, boxes):
            x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
            x1, y1 = max(min(x1, w), x0 + 1), max(min(y1, h), y0 + 1)
            crop = img[:, y0:y1, x0:x1].unsqueeze(0)
            crops.append(F.interpolate(crop, size=(IMAGE_SIZE, IMAGE_SIZE), mode="area"))
        return self._standardize(torch.cat(crops))

    @torch.no_grad()
    def embed_aligned(self, images: torch.Tensor, alignments: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
        return self.model(self.crop(images, alignments)).float()
