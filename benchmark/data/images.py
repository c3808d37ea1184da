"""Robust image loading, and the generic split over a list of image files.

``load_rgb`` turns any still image PIL can decode into the tensor the dataset
contract asks for (float32, 3×R×R, [-1, 1]).  Real-world folders hold every
kind of oddity, and a silently wrong pixel becomes a wrong metric, so each
case has one documented rule:

* corrupt or truncated file: ``DataError`` naming the file.  PIL's
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (PIL would otherwise
  pad a cut JPEG with grey); if another library flipped it on, we refuse to
  load rather than score half-grey faces.
* grayscale (``1``, ``L``): replicated to three channels.
* transparency (``LA``, ``RGBA``, ``PA``, ``P`` with a transparency key):
  alpha-composited on ``BACKGROUND`` (white), the way a viewer shows it.
* ``CMYK``, ``YCbCr``, ...: PIL's conversion to RGB.
* high bit depth: ``I;16`` / ``I;16B`` / ``I;16L`` are divided by 65535;
  ``I`` (32-bit integer, how PIL often opens 16-bit PNGs) must lie in
  [0, 65535] and is divided by 65535; ``F`` (float) must lie in [0, 1].
  Values are scaled, never clipped; out-of-range data is a ``DataError``.
* EXIF orientation is applied (camera photos are stored rotated).
* images smaller than ``MIN_SIZE`` px on either side: ``DataError`` (there is
  no face to edit in them).
* non-square: centre crop to the shorter side, then resize, so faces keep
  their aspect ratio.
* resizing: PIL bicubic, which antialiases when downsampling (its filter
  support grows with the scale factor), as clean-fid's ``legacy_pil`` mode.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from benchmark.data.base import DataError, FaceDataset, FaceSplit

log = logging.getLogger(__name__)

MIN_SIZE = 8
BACKGROUND = (255, 255, 255)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

OnMissing = Literal["error", "skip"]


def _decode(path: Path) -> Image.Image:
    """Open and fully decode ``path``; any decoder failure becomes a DataError."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(
            f"refusing to load {path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by another "
            "library), so truncated files would load as grey-padded images; set it back to False"
        )
    if not path.is_file():
        raise DataError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            im.load()  # decode now: Image.open is lazy and would defer a truncation error
            return ImageOps.exif_transpose(im)
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, zlib.error, ...
        raise DataError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None


def _high_bit_to_unit(im: Image.Image, path: Path) -> np.ndarray:
    """H×W float32 in [0, 1] from a 16-bit, 32-bit integer or float single-channel image."""
    arr = np.asarray(im)
    if im.mode.startswith("I;16"):
        return arr.astype(np.float32) / 65535.0
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"image {path} (mode {im.mode}) holds NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if im.mode == "I":
        if lo < 0 or hi > 65535:
            raise DataError(f"image {path} (mode I) has values in [{lo:g}, {hi:g}], outside the 16-bit range")
        return (arr / 65535.0).astype(np.float32)
    if lo < 0 or hi > 1:  # mode F
        raise DataError(f"image {path} (mode F) has values in [{lo:g}, {hi:g}]; float images must lie in [0, 1]")
    return arr.astype(np.float32)


def _to_rgb(im: Image.Image, path: Path) -> Image.Image | np.ndarray:
    """An RGB PIL image (8-bit sources) or an H×W×3 float array in [0, 1] (high bit depth)."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        return np.repeat(_high_bit_to_unit(im, path)[:, :, None], 3, axis=2)
    has_alpha = im.mode in ("LA", "La", "RGBA", "RGBa", "PA") or (im.mode == "P" and "transparency" in im.info)
    try:
        if has_alpha:
            rgba = im.convert("RGBA")
            canvas = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
            return Image.alpha_composite(canvas, rgba).convert("RGB")
        return im.convert("RGB")
    except (ValueError, OSError) as exc:
        raise DataError(f"cannot convert image {path} from mode {im.mode} to RGB: {exc}") from None


def _square_box(w: int, h: int) -> tuple[int, int, int, int]:
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return left, top, left + side, top + side


def _resize_float(arr: np.ndarray, resolution: int) -> np.ndarray:
    """Bicubic resize of an H×W×3 float array channel by channel in PIL's ``F`` mode (keeps precision)."""
    chans = [
        np.asarray(Image.fromarray(arr[:, :, c], mode="F").resize((resolution, resolution), Image.BICUBIC))
        for c in range(3)
    ]
    return np.clip(np.stack(chans, axis=2), 0.0, 1.0)  # clip bicubic overshoot only


def load_rgb(path: str | os.PathLike, resolution: int) -> torch.Tensor:
    """Float32 tensor 3×R×R in [-1, 1] from any still image (rules in the module docstring)."""
    path = Path(path)
    if resolution < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    im = _decode(path)
    w, h = im.size
    if min(w, h) < MIN_SIZE:
        raise DataError(f"image {path} is {w}×{h} px, smaller than the minimum {MIN_SIZE} px")
    rgb = _to_rgb(im, path)
    box = _square_box(w, h)
    if isinstance(rgb, np.ndarray):
        left, top, right, bottom = box
        unit = _resize_float(np.ascontiguousarray(rgb[top:bottom, left:right]), resolution)
    else:
        if box != (0, 0, w, h):
            rgb = rgb.crop(box)
        if rgb.size != (resolution, resolution):
            rgb = rgb.resize((resolution, resolution), Image.BICUBIC)
        unit = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(unit.transpose(2, 0, 1))).float().mul_(2.0).sub_(1.0)


# -- the generic split over image files -----------------------------------------------------------


def filter_missing(
    paths: Sequence[Path], on_missing: OnMissing, what: str, hint: str = ""
) -> np.ndarray:
    """Indices of ``paths`` that exist.  ``error``: raise if any is missing; ``skip``: log the count
    (still an error when nothing is left: an empty split only hides the real problem).

    Directory listings are read once per folder: 30,000 ``stat`` calls on a
    network file system cost more than one ``listdir``.
    """
    if on_missing not in ("error", "skip"):
        raise DataError(f"on_missing must be 'error' or 'skip', got {on_missing!r}")
    listings: dict[Path, set[str]] = {}
    keep: list[int] = []
    missing: list[Path] = []
    for i, p in enumerate(paths):
        folder = p.parent
        if folder not in listings:
            listings[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        if p.name in listings[folder]:
            keep.append(i)
        else:
            missing.append(p)
    if missing and (on_missing == "error" or not keep):
        shown = ", ".join(str(m) for m in missing[:3])
        raise DataError(
            f"{what}: {len(missing)} of {len(paths)} listed images are missing from disk (e.g. {shown}). "
            + (f"{hint}Set on_missing: skip to leave them out." if keep else f"{hint}None is left to use.")
        )
    if missing:
        log.warning("%s: skipped %d of %d listed images missing from disk", what, len(missing), len(paths))
    return np.asarray(keep, dtype=np.int64)


class ImageListSplit(FaceSplit):
    """A split given by image paths, a label matrix and identities; images are decoded on access."""

    def __init__(
        self,
        dataset: FaceDataset,
        split_name: str,
        paths: Sequence[Path],
        labels: np.ndarray,
        identities: np.ndarray | None = None,
    ):
        if len(paths) != len(labels):
            raise ValueError(f"{len(paths)} paths but {len(labels)} label rows")
        self.dataset, self.split_name = dataset, split_name
        self.paths = list(paths)
        labels = np.asarray(labels, dtype=np.float32)
        if labels.ndim != 2:
            raise ValueError(f"labels must be an N×A matrix, got shape {labels.shape}")
        self.labels = torch.from_numpy(labels.copy())
        ids = np.full(len(self.paths), -1) if identities is None else np.asarray(identities)
        self.identities = torch.as_tensor(ids, dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for split {self.split_name!r} of size {len(self)}")
        i = i % len(self)
        return {
            "image": load_rgb(self.paths[i], self.dataset.resolution),
            "labels": self.labels[i].clone(),
            "identity": self.identities[i].clone(),
            "index": torch.tensor(i, dtype=torch.int64),
        }

    def labels_matrix(self) -> torch.Tensor:
        return self.labels.clone()
