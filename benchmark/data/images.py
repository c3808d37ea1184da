"""Robust image loading, and the generic split over a list of image files.

``load_rgb`` turns any still image PIL can decode into the tensor the dataset
contract asks for (float32, 3×R×R, [-1, 1]).  Real-world folders hold every
kind of oddity, and a silently wrong pixel becomes a wrong metric, so each
case has one documented rule:

* missing file, or a directory where a file is listed: ``DataError`` saying which.
* corrupt or truncated file: ``DataError`` naming the file.  PIL's
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` must stay False (PIL would otherwise
  pad a cut JPEG with grey); if another library flipped it on, we refuse to
  load rather than score half-grey faces.
* grayscale (``1``, ``L``): replicated to three channels.
* transparency (``LA``, ``RGBA``, ``PA``, ``P`` with a transparency key):
  alpha-composited on ``BACKGROUND`` (white), the way a viewer shows it.
* ``CMYK``, ``YCbCr``, ...: PIL's conversion to RGB.
* high bit depth: ``I;16`` / ``I;16B`` / ``I;16L`` are divided by 65535;
  ``I`` (32-bit integer: how PIL opens 16-bit PNGs, and 32-bit integer TIFFs) must
  lie in [0, 65535].  Its bit depth is read from the values, because the mode
  does not say it: a maximum <= 255 is 8-bit data (divided by 255; a real
  16-bit picture that dark would be black, max 0.4 % of full scale), anything
  above is 16-bit (divided by 65535).  ``F`` (float) must lie in [0, 1].
  Values are scaled, never clipped; out-of-range data is a ``DataError``.
* animated images (GIF, APNG, WebP, multi-page TIFF): ``DataError``.  Which
  frame is "the face" is not ours to guess, and frame 0 of an animation is
  often a blank or a title card; convert the file to a still image.
* EXIF orientation is applied (camera photos are stored rotated).
* images smaller than ``MIN_SIZE`` px on either side: ``DataError`` (there is
  no face to edit in them).
* non-square: centre crop to the shorter side, then resize, so faces keep
  their aspect ratio.
* resizing: PIL bicubic, which antialiases when downsampling (its filter
  support grows with the scale factor), as clean-fid's ``legacy_pil`` mode.

Datasets check their listed files up front (``check_listed_images``) so that a
bad file is reported with every other bad file at once, before any cell runs,
instead of failing cells one attempt at a time.  How deep, by the dataset option
``validate`` (measured on the 64 px CelebA-HQ mirror, 30,000 JPEGs, one core):

* ``header`` (default): exists, is a file, PIL identifies it, size >= ``MIN_SIZE``,
  one frame.  ~35 µs per file warm (1.0 s for 30k; 3.6 s from a cold disk cache),
  whatever the resolution, since only the header is parsed.
* ``decode``: a full decode and colour conversion of every file, which also finds
  truncated or corrupt image data.  ~0.1 ms per 64 px JPEG (3 s for 30k) but it
  grows with the pixels (~15 ms per 1024 px JPEG: 7.5 min for CelebA-HQ at full
  size), so it is opt-in.  Without it a truncated file still fails when read, with
  a ``DataError`` naming it.
* ``none``: existence only.

The policy for what is found: ``on_missing: skip`` leaves out missing files;
``on_bad: skip`` leaves out every bad file (missing, directory, undecodable,
animated, too small).  Otherwise one ``DataError`` lists them all.  Skipped
files are recorded on ``dataset.problems`` (file, label-file line, reason), for
the run's problems report.  Files outside the data root are never skipped: that
is always an error (``benchmark.data.base.resolve_inside``).
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from benchmark.data.base import DataError, FaceDataset, FaceSplit, RootResolver

log = logging.getLogger(__name__)

MIN_SIZE = 8
BACKGROUND = (255, 255, 255)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

OnMissing = Literal["error", "skip"]
Validate = Literal["header", "decode", "none"]
MAX_LISTED = 20  # bad files shown in one error message (the count says how many more)


def _decode(path: Path) -> Image.Image:
    """Open and fully decode ``path``; any decoder failure becomes a DataError."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        raise DataError(
            f"refusing to load {path}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is True (set by another "
            "library), so truncated files would load as grey-padded images; set it back to False"
        )
    problem = _file_problem(path)
    if problem is not None:
        raise DataError(f"{problem[1]}: {path}")
    try:
        with Image.open(path) as im:
            frames = _frame_count(im)
            if frames > 1:
                raise DataError(_animated_message(path, im.format, frames))
            im.load()  # decode now: Image.open is lazy and would defer a truncation error
            return ImageOps.exif_transpose(im)
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise OSError, SyntaxError, zlib.error, ...
        raise DataError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from None


def _frame_count(im: Image.Image) -> int:
    """Frames of an animation or multi-page file; 1 for a still image.

    MPO (how PIL opens many camera JPEGs: the photo plus a preview) counts as one: its first frame is
    by definition the primary image.
    """
    return 1 if im.format == "MPO" else int(getattr(im, "n_frames", 1))


def _animated_message(path: Path, fmt: str | None, frames: int) -> str:
    return (f"image {path} is animated ({fmt}, {frames} frames): which frame shows the face is ambiguous; "
            "convert it to a still image (e.g. its first frame) or leave it out")


def _file_problem(path: Path) -> tuple[str, str] | None:
    """(kind, reason) when ``path`` is not a regular file, else None (one ``stat``)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "missing", "image file not found"
    except OSError as exc:
        return "unreadable", f"cannot read image file ({exc.strerror})"
    if stat.S_ISDIR(mode):
        return "directory", "listed image is a directory, not an image file"
    if not stat.S_ISREG(mode):
        return "not_a_file", "listed image is not a regular file"
    return None


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
        full_scale = 255.0 if hi <= 255 else 65535.0  # the bit depth the values show (module docstring)
        return (arr / full_scale).astype(np.float32)
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


@dataclass(frozen=True)
class ImagePolicy:
    """What a dataset does about bad listed files (dataset options ``on_missing``, ``on_bad``, ``validate``)."""

    on_missing: OnMissing = "error"
    on_bad: OnMissing = "error"
    validate: Validate = "header"

    @classmethod
    def from_options(cls, options: Mapping, dataset: str) -> "ImagePolicy":
        """Read and check the three options, so a typo fails when the dataset is built, not mid-run."""
        values = {"on_missing": options.get("on_missing", "error"), "on_bad": options.get("on_bad", "error"),
                  "validate": options.get("validate", "header")}
        allowed = {"on_missing": ("error", "skip"), "on_bad": ("error", "skip"),
                   "validate": ("header", "decode", "none")}
        for key, value in values.items():
            if value not in allowed[key]:
                raise DataError(f"{dataset}: option {key} must be one of {list(allowed[key])}, got {value!r}")
        return cls(**values)

    def skips(self, kind: str) -> bool:
        return self.on_bad == "skip" or (kind == "missing" and self.on_missing == "skip")


def probe_image(path: Path, validate: Validate = "header") -> tuple[str, str] | None:
    """(kind, reason) of what is wrong with image file ``path`` at depth ``validate``, or None if usable."""
    problem = _file_problem(path)
    if problem is not None or validate == "none":
        return problem
    if validate == "decode":
        try:
            _to_rgb(_decode(path), path)
        except DataError as exc:
            return "undecodable", str(exc)
        return None
    try:
        with Image.open(path) as im:
            (w, h), frames, fmt = im.size, _frame_count(im), im.format
    except Exception as exc:  # noqa: BLE001 - PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        return "undecodable", f"cannot decode image: {type(exc).__name__}: {exc}"
    if frames > 1:
        return "animated", _animated_message(path, fmt, frames)
    if min(w, h) < MIN_SIZE:
        return "too_small", f"image is {w}×{h} px, smaller than the minimum {MIN_SIZE} px"
    return None


def _listing(lines: Sequence[str]) -> str:
    """The first ``MAX_LISTED`` lines, indented, and how many more there are."""
    more = f"\n  ... and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return "\n".join(f"  {line}" for line in lines[:MAX_LISTED]) + more


def resolve_listed(root: Path, names: Sequence[str], where: Sequence[str]) -> list[Path]:
    """``resolve_inside(root, name, where)`` for every listed name; all those outside ``root`` in one DataError.

    Never skippable (unlike a bad image): a label file that reaches out of its dataset is wrong as a
    whole, and quietly dropping the row would hide that.
    """
    resolver = RootResolver(root)
    out: list[Path] = []
    errors: list[str] = []
    for name, w in zip(names, where):
        try:
            out.append(resolver.resolve(name, w))
        except DataError as exc:
            errors.append(str(exc))
    if errors:
        raise DataError(f"{len(errors)} listed path(s) lead outside the data root {root}:\n{_listing(errors)}")
    return out


def check_listed_images(
    paths: Sequence[Path], where: Sequence[str], policy: ImagePolicy, what: str, hint: str = "",
    limit: int | None = None,
) -> tuple[np.ndarray, list[dict]]:
    """Check the listed images up front; return (indices to keep, problems of the files skipped).

    ``where[i]`` locates entry i in its label file (``attributes.csv:7``).  Every bad file is
    found first, then the policy applies: a problem the policy does not skip raises one
    ``DataError`` listing all of them (file, line, reason), so a user fixes the folder in one pass.
    Skipping every file is an error too: an empty split only hides the real problem.  With
    ``limit`` (a split's ``max_items``) checking stops once that many good files are found, so a
    short run does not pay for checking a whole collection.
    """
    problems: list[dict] = []
    keep: list[int] = []
    for i, path in enumerate(paths):
        if limit is not None and len(keep) >= limit:
            break
        found = probe_image(Path(path), policy.validate)
        if found is None:
            keep.append(i)
        else:
            problems.append({"file": str(path), "where": where[i], "kind": found[0], "reason": found[1],
                             "action": "skipped"})
    fatal = any(not policy.skips(pr["kind"]) for pr in problems)
    if fatal or (problems and not keep):
        shown = _listing([f"{pr['where']}: {pr['file']}: {pr['reason']}" for pr in problems])
        advice = ("None is left to use." if not keep else
                  "Fix or remove them, or set on_bad: skip to leave them out (on_missing: skip covers missing "
                  "files only); skipped files are listed in the run's problems.")
        raise DataError(f"{what}: {len(problems)} of {len(paths)} listed images are unusable:\n{shown}\n"
                        f"{hint}{advice}")
    if problems:
        log.warning("%s: skipped %d of %d listed images (%s)", what, len(problems), len(paths),
                    "; ".join(f"{pr['file']}: {pr['kind']}" for pr in problems[:3]))
    return np.asarray(keep, dtype=np.int64), problems


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
