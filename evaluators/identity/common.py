"""Shared plumbing of the face-embedding backends (FaceNet, dlib, SynthFaces).

Every real backend follows the same two steps: *align* (find the face and a
crop / landmark set) and *encode* (turn the aligned crop into an embedding).
``AlignedEmbedder`` writes the pair logic once:

* ``embed(images)``: each image is aligned on itself (what a face-verification
  benchmark does; used to check that a backend separates people);
* ``embed_pairs(source, edited)``: the alignment found on the SOURCE is applied
  to both images.  An identity metric must measure what the edit did to the
  face, not what it did to the detector: if the edited image were aligned on
  itself, an edit that moves the detector's box (a hat, a beard, bangs) would
  change the crop and score as an identity change, and an edit that fools the
  detector would get a different fallback crop.  With a shared crop the no-op
  editor scores exactly 1 and every difference comes from pixels.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.data.base import DataError
from evaluators.base import to_uint8


def check_images(images: torch.Tensor, what: str = "images") -> None:
    """B×3×H×W float tensors only; the message names what was wrong."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise DataError(f"{what}: expected a B×3×H×W image tensor in [-1, 1], got {shape}")
    if not images.is_floating_point():
        raise DataError(f"{what}: expected a float tensor in [-1, 1], got dtype {images.dtype}")


def check_pair(source: torch.Tensor, edited: torch.Tensor) -> None:
    check_images(source, "source")
    check_images(edited, "edited")
    if source.shape != edited.shape:
        raise DataError(f"source and edited images differ in shape: {tuple(source.shape)} vs {tuple(edited.shape)}")


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 255] float, clamped (editors may overshoot slightly)."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5)


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """[-1, 1] B×3×H×W -> B×H×W×3 uint8 (C-contiguous), what dlib and PIL expect."""
    u8 = to_uint8(images).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(u8)


def resize_shorter_side(images: torch.Tensor, size: int) -> tuple[torch.Tensor, float]:
    """Resize so the shorter side is ``size``; returns the images and the scale factor applied."""
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    if abs(scale - 1.0) < 1e-9:
        return images, 1.0
    out = F.interpolate(images.float(), size=(round(h * scale), round(w * scale)), mode="bilinear",
                        align_corners=False, antialias=scale < 1)
    return out, scale


def centre_box(height: int, width: int, box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """A fallback face box (x0, y0, x1, y1) in pixels from ``box`` = (centre x, centre y, width, height)
    given as fractions of the image's width and height.

    Used when no face is found: the benchmark's datasets are face-centred crops
    (CelebA-HQ / FFHQ alignment, SynthFaces), so a box where detectors usually
    put the face on such crops is the best guess; each backend measures its own.
    """
    cx, cy, bw, bh = box
    return (int(round((cx - bw / 2) * width)), int(round((cy - bh / 2) * height)),
            int(round((cx + bw / 2) * width)), int(round((cy + bh / 2) * height)))


class AlignedEmbedder(ABC):
    """Align, then encode.  Subclasses implement ``detect`` and ``embed_aligned``.

    ``batch_invariant``: True when an image's alignment and embedding do not depend on the other
    images of its batch (bit for bit; a test checks it).  Then the evaluators keep each source image's
    alignment and embedding once per run (``JudgeMemo.source_rows``) instead of once per cell.
    """

    batch_invariant: ClassVar[bool] = False

    @abstractmethod
    def detect(self, images: torch.Tensor) -> tuple[list[Any], torch.Tensor]:
        """One alignment per image (a fallback where no face is found) and a (B,) bool 'face detected'."""

    @abstractmethod
    def embed_aligned(self, images: torch.Tensor, alignments: Sequence[Any]) -> torch.Tensor:
        """B×D float embeddings (on the CPU or the backend's device) of ``images`` cropped by ``alignments``."""

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of images each aligned on itself, and the detection flags."""
        check_images(images)
        alignments, detected = self.detect(images)
        return self.embed_aligned(images, alignments), detected

    def align_and_embed(self, images: torch.Tensor) -> list[tuple[Any, bool, torch.Tensor]]:
        """Per image (its own alignment, whether a face was found, its embedding): what a source image
        contributes to every pair it is in."""
        alignments, detected = self.detect(images)
        emb = self.embed_aligned(images, alignments)
        return [(a, bool(d), e) for a, d, e in zip(alignments, detected.tolist(), emb)]

    def embed_pairs(self, source: torch.Tensor, edited: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(source embeddings, edited embeddings, detected) with the source's alignment used for both."""
        check_pair(source, edited)
        alignments, detected = self.detect(source)
        emb = self.embed_aligned(torch.cat([source, edited.to(source.device)]), list(alignments) * 2)
        b = source.shape[0]
        return emb[:b], emb[b:], detected
