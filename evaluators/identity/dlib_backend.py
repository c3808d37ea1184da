"""dlib's ResNet face embedder (``dlib_face_recognition_resnet_model_v1``): the ``id_*_dlib_resnet_v1`` protocol.

A second real identity backend that works offline: the model files ship in the
``face-recognition-models`` package (CC0 / public-domain dlib models,
packaged by Adam Geitgey), no download needed.

Protocol, fixed by the metric names:

* detector: ``dlib.get_frontal_face_detector()`` (HOG) on the SOURCE image
  resized so its shorter side is 256 px, upsampled once (dlib's examples use 1),
  largest face; the rectangle is scaled back to full resolution;
* landmarks: the 5-point shape predictor on the full-resolution SOURCE image;
* alignment: ``dlib.get_face_chip(image, landmarks, size=150, padding=0.25)``
  (the chip the model expects, dlib's defaults) - the SOURCE landmarks are used
  for the edited image too (see ``common.AlignedEmbedder.embed_pairs``);
* descriptor: 128-d, no jitter; similarity = cosine; a pair "matches" when the
  Euclidean distance is < 0.6, dlib's threshold: "When using a distance
  threshold of 0.6, the dlib model obtains an accuracy of 99.38% on the
  standard LFW face recognition benchmark" (dlib, python_examples/face_recognition.py
  and http://dlib.net/face_recognition.py.html).

dlib runs on the CPU here (the dlib-bin wheels have no CUDA); embeddings are
returned as CPU tensors whatever ``device`` is.
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.util
from pathlib import Path
from typing import Any, Sequence

import torch

from benchmark.assets import MissingAssetError
from evaluators.identity.common import AlignedEmbedder, centre_box, resize_shorter_side, to_uint8_hwc

PACKAGE = "face_recognition_models"
PIP_HINT = "pip install dlib-bin face-recognition-models==0.3.0   (or: pip install 'faceedit-bench[dlib]')"
RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"

MATCH_THRESHOLD = 0.6  # dlib's same-person Euclidean distance threshold (see module docstring)
DETECT_SIZE = 256
DETECT_UPSAMPLE = 1
CHIP_SIZE, CHIP_PADDING = 150, 0.25  # dlib.get_face_chip defaults, what the ResNet model was trained on
# Fallback rectangle (centre x, centre y, width, height as fractions): the median frontal-detector
# rectangle on 16 CelebA-HQ samples (../shared/data/samples, 256 px, upsample 1), measured here.
FALLBACK_BOX = (0.48, 0.62, 0.61, 0.61)


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise MissingAssetError(f"dlib is not installed ({exc}); install it with: {PIP_HINT}") from None
    return dlib


def model_dir() -> Path:
    """The ``models/`` folder of face-recognition-models, found WITHOUT importing the package.

    Its ``__init__`` imports ``pkg_resources``, which recent setuptools no longer
    ships; ``find_spec`` on a top-level package only locates it.
    """
    spec = importlib.util.find_spec(PACKAGE)
    candidates: list[Path] = []
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(p) / "models" for p in spec.submodule_search_locations]
    try:
        for f in md.files("face-recognition-models") or ():
            if f.name == RECOGNITION_MODEL:
                candidates.append(Path(str(f.locate())).parent)
    except md.PackageNotFoundError:
        pass
    for c in candidates:
        if (c / RECOGNITION_MODEL).is_file() and (c / SHAPE_MODEL).is_file():
            return c
    raise MissingAssetError(
        f"dlib face models not found: the package 'face-recognition-models' with {RECOGNITION_MODEL} and "
        f"{SHAPE_MODEL} is not installed (looked in {[str(c) for c in candidates] or 'no location'}); "
        f"install it with: {PIP_HINT}"
    )


class DlibEmbedder(AlignedEmbedder):
    """Frontal detector + 5-point landmarks + face chip + ResNet descriptor (128-d)."""

    # detection runs image by image and dlib's descriptor does not depend on its batch (tested bit for
    # bit in tests/test_identity.py), so a source image's alignment and embedding can be kept per image
    batch_invariant = True

    def __init__(self, device: torch.device | str = "cpu"):
        dlib = _import_dlib()
        models = model_dir()
        self.dlib = dlib
        self.device = torch.device(device)  # kept for the interface; dlib computes on the CPU
        self.detector = dlib.get_frontal_face_detector()
        self.shape_predictor = dlib.shape_predictor(str(models / SHAPE_MODEL))
        self.recognizer = dlib.face_recognition_model_v1(str(models / RECOGNITION_MODEL))

    def _rectangle(self, small: Any, scale: float, h: int, w: int) -> tuple[Any, bool]:
        dets = self.detector(small, DETECT_UPSAMPLE)
        if len(dets) == 0:
            return self.dlib.rectangle(*centre_box(h, w, FALLBACK_BOX)), False
        r = max(dets, key=lambda d: d.area())
        return self.dlib.rectangle(int(round(r.left() / scale)), int(round(r.top() / scale)),
                                   int(round(r.right() / scale)), int(round(r.bottom() / scale))), True

    def detect(self, images: torch.Tensor) -> tuple[list[Any], torch.Tensor]:
        h, w = images.shape[-2:]
        small, scale = resize_shorter_side(images.detach().float().cpu(), DETECT_SIZE)
        small_u8, full_u8 = to_uint8_hwc(small), to_uint8_hwc(images)
        shapes, found = [], []
        for s_img, f_img in zip(small_u8, full_u8):
            rect, ok = self._rectangle(s_img, scale, h, w)
            shapes.append(self.shape_predictor(f_img, rect))
            found.append(ok)
        return shapes, torch.tensor(found, dtype=torch.bool)

    def embed_aligned(self, images: torch.Tensor, alignments: Sequence[Any]) -> torch.Tensor:
        pixels = to_uint8_hwc(images)
        chips = [self.dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
                 for img, shape in zip(pixels, alignments)]
        descriptors = self.recognizer.compute_face_descriptor(chips)
        return torch.tensor([list(d) for d in descriptors], dtype=torch.float32)
