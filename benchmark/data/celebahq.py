"""CelebA-HQ: the CelebAMask-HQ release (``celebahq``) and the StarGAN v2 layout (``stargan_v2_celebahq``).

CelebAMask-HQ layout under ``root``::

    <image_dir>/<idx>.jpg                      idx 0..29999 (image_dir: CelebA-HQ-img, or a
                                               resized mirror such as CelebA-HQ-img-64)
    CelebAMask-HQ-attribute-anno.txt           line 1: count; line 2: the 40 attribute names;
                                               then "<idx>.jpg" and 40 values in {-1, 1}
    CelebA-HQ-to-CelebA-mapping.txt            "idx orig_idx orig_file" (header line first)
    CelebAMask-HQ-mask-anno/<idx//2000>/<idx:05d>_<class>.png   (optional, see masks.py)

Splits: CelebAMask-HQ uses CelebA's own partition (its README: "We use the
same train/val/test split as the CelebA dataset"), i.e. by the CelebA file
number of ``orig_file``: 1..162770 train, 162771..182637 val, the rest test
(CelebA list_eval_partition.txt), which gives 24,183 / 2,993 / 2,824 images.
That needs the mapping file; ``split: index`` instead cuts idx order into
blocks of the same sizes - NOT the official split, for quick experiments only.

Files: each image is the file its attribute-file row names (``<idx>.jpg``), inside
``<image_dir>`` (symlinks resolved; a file leading out of it is an error).  Two rows
naming one idx (``0.png`` and ``00.jpg``) are an error naming both.  Listed images
are checked when a split is first built (options ``validate``, ``on_missing``,
``on_bad``: ``benchmark.data.images``); files a ``skip`` policy leaves out are
recorded on ``dataset.problems``.

Identities: the CelebAMask-HQ files carry none.  Pass ``identity_file``
(CelebA's ``identity_CelebA.txt``: "<orig_file> <id>" lines) to get them
through the mapping; otherwise every identity is -1.
"""
from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from benchmark.assets import Asset, MissingAssetError, cache_root, declare, fetch, safe_extract
from benchmark.data.base import CELEBA_ATTRIBUTE_NAMES, CELEBA_GROUPS, AttributeSpec, DataError, FaceDataset
from benchmark.data.images import (
    IMAGE_EXTENSIONS, ImageListSplit, ImagePolicy, check_listed_images, resolve_listed,
)
from benchmark.data.masks import MASK_DIR, load_region_masks
from benchmark.registry import register_dataset

log = logging.getLogger(__name__)

ATTRIBUTE_FILE = "CelebAMask-HQ-attribute-anno.txt"
MAPPING_FILE = "CelebA-HQ-to-CelebA-mapping.txt"

# CelebA list_eval_partition.txt: files 000001-162770 train, 162771-182637 val, 182638-202599 test.
CELEBA_VAL_START = 162771
CELEBA_TEST_START = 182638
# Sizes of the official CelebA-HQ split (counted from the official mapping file); used by `split: index`.
OFFICIAL_SPLIT_SIZES = {"train": 24183, "val": 2993, "test": 2824}

CELEBAMASK_HQ_ZIP = declare(Asset(
    name="CelebAMask-HQ",
    # Google Drive id from the official README (github.com/switchablenorms/CelebAMask-HQ, "Downloads").
    url="gdrive:1badu11NqxGf6qM3PTTooQDJvQbejgbTv",
    filename="CelebAMask-HQ.zip",
    sha256=None,  # the publishers give no checksum and we found no trustworthy public one
    size=None,
    licence="non-commercial research and educational use only (CelebAMask-HQ dataset agreement)",
    subdir="datasets",
    description="CelebAMask-HQ archive (30,000 CelebA-HQ images at 1024 px, attributes, masks; "
    "no checksum is published, so the download is checked by its extracted layout only)",
    how_to_get="download it from https://github.com/switchablenorms/CelebAMask-HQ (Google Drive link), "
    "or run with the dataset option download: true",
))

STARGAN_V2_CELEBAHQ_ZIP = declare(Asset(
    name="stargan-v2-celeba-hq",
    # URL from the StarGAN v2 download.sh (github.com/clovaai/stargan-v2), dl=1 for the raw file.
    url="https://www.dropbox.com/s/f7pvjij2xlpff59/celeba_hq.zip?dl=1",
    filename="celeba_hq.zip",
    sha256=None,  # not published
    licence="CelebA-HQ: non-commercial research only",
    subdir="datasets",
    description="StarGAN v2's CelebA-HQ (train/val, female/male folders); no checksum is published",
    how_to_get="run `bash download.sh celeba-hq-dataset` from github.com/clovaai/stargan-v2, "
    "or use the dataset option download: true",
))


# -- parsing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributeTable:
    """The parsed attribute file: CelebA-HQ indices and an N×40 {0, 1} matrix."""

    names: tuple[str, ...]
    indices: np.ndarray  # int64 (N,)
    values: np.ndarray  # uint8 (N, 40)
    files: tuple[str, ...] = ()  # the file name each row lists, as written
    linenos: tuple[int, ...] = ()  # the line of each row in the file (1-based)


def _parse_header(lines: list[str], path: Path) -> tuple[int, tuple[str, ...]]:
    if len(lines) < 2:
        raise DataError(f"{path}: expected a count line and an attribute-name line, file has {len(lines)} lines")
    try:
        count = int(lines[0].strip())
    except ValueError:
        raise DataError(f"{path}:1: expected the image count, got {lines[0].strip()[:60]!r}") from None
    names = tuple(lines[1].split())
    unknown = [n for n in names if n not in CELEBA_GROUPS]
    if unknown:
        raise DataError(f"{path}:2: unknown attribute name(s) {unknown}; valid: {', '.join(CELEBA_ATTRIBUTE_NAMES)}")
    if len(set(names)) != len(names):
        raise DataError(f"{path}:2: duplicate attribute names in {names}")
    return count, names


def _parse_row(line: str, lineno: int, n_attr: int, path: Path) -> tuple[int, list[int]]:
    parts = line.split()
    if len(parts) != n_attr + 1:
        raise DataError(f"{path}:{lineno}: expected a file name and {n_attr} values, got {len(parts) - 1} values")
    name = parts[0]
    stem = name.rsplit(".", 1)[0]
    if not stem.isdigit():
        raise DataError(f"{path}:{lineno}: expected '<idx>.jpg', got {name!r}")
    bad = [v for v in parts[1:] if v not in ("1", "-1")]
    if bad:
        raise DataError(f"{path}:{lineno}: attribute values must be -1 or 1, got {bad[0]!r}")
    return int(stem), [1 if v == "1" else 0 for v in parts[1:]]


def parse_attribute_file(path: str | Path) -> AttributeTable:
    """Parse ``CelebAMask-HQ-attribute-anno.txt``; any malformed line is a DataError with its line number."""
    path = Path(path)
    lines = path.read_text().splitlines()
    count, names = _parse_header(lines, path)
    indices: list[int] = []
    rows: list[list[int]] = []
    files: list[str] = []
    linenos: list[int] = []
    for lineno, line in enumerate(lines[2:], start=3):
        if not line.strip():
            continue
        idx, row = _parse_row(line, lineno, len(names), path)
        indices.append(idx)
        rows.append(row)
        files.append(line.split()[0])
        linenos.append(lineno)
    if len(rows) != count:
        raise DataError(f"{path}:1: header says {count} images, the file lists {len(rows)}")
    _check_unique_indices(indices, files, linenos, path)
    return AttributeTable(names, np.asarray(indices, dtype=np.int64), np.asarray(rows, dtype=np.uint8),
                          tuple(files), tuple(linenos))


def _check_unique_indices(indices: list[int], files: list[str], linenos: list[int], path: Path) -> None:
    """Each CelebA-HQ idx once: ``0.png`` and ``00.jpg`` are both image 0, and one face cannot have two rows."""
    first: dict[int, int] = {}
    clashes: list[str] = []
    for k, idx in enumerate(indices):
        if idx in first:
            j = first[idx]
            clashes.append(f"{files[j]!r} (line {linenos[j]}) and {files[k]!r} (line {linenos[k]}) "
                           f"both name image {idx}")
        else:
            first[idx] = k
    if clashes:
        raise DataError(f"{path}: {len(clashes)} image index(es) listed twice: " + "; ".join(clashes[:20])
                        + ("; ..." if len(clashes) > 20 else "") + ". List each image once.")


def parse_mapping_file(path: str | Path) -> dict[int, str]:
    """``CelebA-HQ-to-CelebA-mapping.txt`` -> {CelebA-HQ idx: CelebA file name}."""
    path = Path(path)
    out: dict[int, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts or (lineno == 1 and parts[0] == "idx"):
            continue
        if len(parts) != 3 or not parts[0].isdigit() or not parts[2].split(".")[0].isdigit():
            raise DataError(f"{path}:{lineno}: expected 'idx orig_idx orig_file', got {line.strip()[:80]!r}")
        out[int(parts[0])] = parts[2]
    return out


def official_split(celeba_file: str) -> str:
    """CelebA's partition of a file such as ``182638.jpg`` (numbers are 1-based)."""
    number = int(celeba_file.split(".")[0])
    return "train" if number < CELEBA_VAL_START else "val" if number < CELEBA_TEST_START else "test"


def parse_identity_file(path: str | Path) -> dict[str, int]:
    """CelebA ``identity_CelebA.txt``: ``<file> <identity>`` lines -> {file: identity}."""
    path = Path(path)
    out: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{path}:{lineno}: expected '<file> <identity>', got {line.strip()[:80]!r}")
        out[parts[0]] = int(parts[1])
    return out


# -- obtaining the data ----------------------------------------------------------------------------


def ensure_extracted(asset: Asset, root: Path, marker: str, download: bool, layout: str) -> None:
    """Make sure ``root/marker`` exists: download and extract ``asset`` if allowed, else one clear error.

    The archive's single top-level folder becomes ``root``.
    """
    if (root / marker).exists():
        return
    if not download:
        raise MissingAssetError(
            f"missing dataset '{asset.name}': {root / marker} does not exist.\n"
            f"  put the data at: {root}  (layout: {layout})\n"
            f"  how to get it:   {asset.how_to_get}\n"
            f"  licence: {asset.licence}"
        )
    if root.exists() and any(root.iterdir()):
        raise DataError(f"{root} exists but lacks {marker}; fix its layout ({layout}) or point root elsewhere")
    archive = fetch(asset)  # FACEEDIT_OFFLINE=1 still forbids the download
    staging = root.parent / f".{root.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        safe_extract(archive, staging)
        tops = [p for p in staging.iterdir() if not p.name.startswith(("__MACOSX", "."))]
        top = tops[0] if len(tops) == 1 and tops[0].is_dir() else staging
        if not (top / marker).exists():
            raise DataError(f"{archive} did not contain {marker} (expected layout: {layout})")
        if root.exists():
            root.rmdir()  # empty (checked above)
        top.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # a refused or broken archive leaves no half tree


def _flag(options: dict, key: str) -> bool:
    """A boolean option; a string such as "false" from a hand-written config must not read as True."""
    value = options.get(key, False)
    if not isinstance(value, bool):
        raise DataError(f"option {key} must be true or false, got {value!r}")
    return value


def _select_attributes(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    if requested is None:
        return list(available)
    unknown = [a for a in requested if a not in available]
    if unknown:
        raise DataError(f"unknown attribute(s) {unknown}; valid: {', '.join(available)}")
    return list(requested)


# -- celebahq ---------------------------------------------------------------------------------------


class CelebAHQSplit(ImageListSplit):
    """A CelebAMask-HQ split; also knows each item's CelebA-HQ idx for masks."""

    def __init__(self, dataset: "CelebAHQ", split_name: str, idx: np.ndarray, rows: np.ndarray, ids: np.ndarray,
                 paths: Sequence[Path]):
        super().__init__(dataset, split_name, paths, rows, ids)
        self.celebahq_idx = torch.as_tensor(idx, dtype=torch.int64)

    def region_masks(self, index: torch.Tensor, attribute: str) -> torch.Tensor | None:
        self.dataset.attribute_index(attribute)
        idx = [int(self.celebahq_idx[int(i)]) for i in torch.as_tensor(index).reshape(-1)]
        mask_root = self.dataset.root / MASK_DIR
        if not mask_root.is_dir():
            return None
        return load_region_masks(mask_root, idx, attribute, self.dataset.resolution)


@register_dataset("celebahq")
class CelebAHQ(FaceDataset):
    """CelebA-HQ in the CelebAMask-HQ layout (module docstring).

    Options: ``root`` (default ``<cache>/datasets/CelebAMask-HQ``), ``image_dir``
    (``CelebA-HQ-img``), ``download`` (False), ``attributes`` (all 40),
    ``max_items`` (per split, first in idx order), ``on_missing`` / ``on_bad``
    (``error`` | ``skip``), ``validate`` (``header`` | ``decode`` | ``none``),
    ``split`` (``official`` | ``index``), ``identity_file``.
    """

    has_masks = True
    split_names = ("train", "val", "test")
    location_free = True  # the official release: name + options (image_dir, ...) say which images, wherever kept
    # ``label_digest()`` of the release's CelebAMask-HQ-attribute-anno.txt (file sha256 ec5e4bb1af5cac97...,
    # 30,000 rows) with CelebA-HQ-to-CelebA-mapping.txt (sha256 d8d43deb196384cc...), the official split and
    # no identity file: measured on the copy ../shared/data/README.md describes as the official files
    # (tests/test_celebahq.py checks it there).  Any other labels, split or identities get a key of their own.
    official_label_digests = frozenset({"2263a684f7563664"})

    def __init__(self, resolution: int = 64, **options):
        super().__init__(resolution, **options)
        self.root = Path(options.get("root") or cache_root() / "datasets" / "CelebAMask-HQ").expanduser()
        self.image_root = self.root / options.get("image_dir", "CelebA-HQ-img")
        self.policy = ImagePolicy.from_options(options, "celebahq")
        self.on_missing = self.policy.on_missing
        self.max_items = options.get("max_items")
        self.split_scheme = options.get("split", "official")
        if self.split_scheme not in ("official", "index"):
            raise DataError(f"celebahq option split must be 'official' or 'index', got {self.split_scheme!r}")
        ensure_extracted(CELEBAMASK_HQ_ZIP, self.root, ATTRIBUTE_FILE, _flag(options, "download"),
                         "CelebA-HQ-img/<idx>.jpg, CelebAMask-HQ-attribute-anno.txt, CelebA-HQ-to-CelebA-mapping.txt")
        self.table = parse_attribute_file(self.root / ATTRIBUTE_FILE)
        chosen = _select_attributes(options.get("attributes"), self.table.names)
        self.attributes = tuple(AttributeSpec(a, CELEBA_GROUPS[a]) for a in chosen)
        self._columns = [self.table.names.index(a) for a in chosen]
        self._split_of = self._assign_splits()
        self._identities = self._load_identities(options.get("identity_file"))
        self.has_identities = options.get("identity_file") is not None  # type: ignore[misc]
        self._splits: dict[str, CelebAHQSplit] = {}

    def label_parts(self) -> tuple:
        """What the label files say: every row's index, file name and 40 values, its split and identity."""
        t = self.table
        return list(t.names), t.indices, list(t.files), t.values, [str(x) for x in self._split_of], self._identities

    def _mapping(self) -> dict[int, str]:
        path = self.root / MAPPING_FILE
        if not path.is_file():
            raise DataError(
                f"{path} is missing: the official CelebA-HQ train/val/test split needs it (it maps each image to its "
                "CelebA file). It ships with CelebAMask-HQ; or set the option split: index for a NON-official split."
            )
        mapping = parse_mapping_file(path)
        missing = [int(i) for i in self.table.indices if int(i) not in mapping]
        if missing:
            raise DataError(f"{path} lacks {len(missing)} image indices of the attribute file (e.g. {missing[:3]})")
        return mapping

    def _assign_splits(self) -> np.ndarray:
        """The split name of every row of the attribute table."""
        if self.split_scheme == "index":
            order = np.argsort(np.argsort(self.table.indices))  # rank of each idx
            edges = np.cumsum([OFFICIAL_SPLIT_SIZES["train"], OFFICIAL_SPLIT_SIZES["val"]])
            return np.where(order < edges[0], "train", np.where(order < edges[1], "val", "test"))
        mapping = self._mapping()
        return np.asarray([official_split(mapping[int(i)]) for i in self.table.indices])

    def _load_identities(self, identity_file: str | None) -> np.ndarray:
        ids = np.full(len(self.table.indices), -1, dtype=np.int64)
        if identity_file is None:
            return ids
        by_file = parse_identity_file(Path(identity_file).expanduser())
        mapping = self._mapping()
        for row, idx in enumerate(self.table.indices):
            ids[row] = by_file.get(mapping[int(idx)], -1)
        unknown = int((ids == -1).sum())
        if unknown:
            log.warning("celebahq: %d images have no identity in %s", unknown, identity_file)
        return ids

    def split(self, name: str) -> CelebAHQSplit:
        self._check_split(name)
        if name not in self._splits:
            self._splits[name] = self._build_split(name)
        return self._splits[name]

    def _build_split(self, name: str) -> CelebAHQSplit:
        rows = np.flatnonzero(self._split_of == name)
        rows = rows[np.argsort(self.table.indices[rows], kind="stable")]
        if not self.image_root.is_dir():
            raise DataError(f"celebahq: image folder {self.image_root} does not exist (option image_dir)")
        where = [f"{self.root / ATTRIBUTE_FILE}:{self.table.linenos[r]}" for r in rows]
        paths = resolve_listed(self.image_root, [self.table.files[r] for r in rows], where)
        hint = (f"Folder {self.image_root.name} may hold only some splits (the 256 px mirror holds only the "
                "official test split). ")
        limit = None if self.max_items is None else int(self.max_items)
        keep, problems = check_listed_images(paths, where, self.policy, f"celebahq {name} split in {self.image_root}",
                                             hint, limit=limit)
        self.problems += [{"dataset": self.name, "split": name, **pr} for pr in problems]
        rows = rows[keep]
        values = self.table.values[rows][:, self._columns]
        return CelebAHQSplit(self, name, self.table.indices[rows], values, self._identities[rows],
                             [paths[k] for k in keep])


# -- stargan_v2_celebahq ----------------------------------------------------------------------------


@register_dataset("stargan_v2_celebahq")
class StarGANv2CelebAHQ(FaceDataset):
    """StarGAN v2's CelebA-HQ: ``<root>/{train,val}/{female,male}/*.jpg``; one attribute, ``Male``.

    StarGAN v2 has no test folder; its ``val`` folder is our ``test`` split.
    Options: ``root`` (default ``<cache>/datasets/celeba_hq``), ``download``,
    ``max_items`` (per split; the genders are interleaved so both appear),
    ``on_bad`` / ``validate`` (as ``celebahq``).  Each gender folder may be a
    symlink (data kept elsewhere); a file inside it may not lead out of it.
    """

    attributes = (AttributeSpec("Male", CELEBA_GROUPS["Male"]),)
    split_names = ("train", "test")
    location_free = True  # the official StarGAN v2 release
    FOLDERS = {"train": "train", "test": "val"}

    def __init__(self, resolution: int = 64, **options):
        super().__init__(resolution, **options)
        self.root = Path(options.get("root") or cache_root() / "datasets" / "celeba_hq").expanduser()
        self.max_items = options.get("max_items")
        self.policy = ImagePolicy.from_options(options, "stargan_v2_celebahq")
        ensure_extracted(STARGAN_V2_CELEBAHQ_ZIP, self.root, "train", _flag(options, "download"),
                         "{train,val}/{female,male}/*.jpg")
        self._splits: dict[str, ImageListSplit] = {}

    def split(self, name: str) -> ImageListSplit:
        self._check_split(name)
        if name not in self._splits:
            self._splits[name] = self._build_split(name)
        return self._splits[name]

    def label_parts(self) -> tuple:
        """The file names in each split's gender folders (the folders are the labels); the release's
        listing is not known here, so every copy's keys carry it.  Why: another folder in this layout
        (``root`` is not in the keys) or a file moved between genders must not share a cache entry."""
        listing: list[str] = []
        for name, folder in sorted(self.FOLDERS.items()):
            for gender in ("female", "male"):
                sub = self.root / folder / gender
                names = self._image_names(sub) if sub.is_dir() else ["<missing>"]
                listing += [f"{name}/{gender}/{n}" for n in names]
        return (listing,)

    def _gender_files(self, sub: Path) -> list[Path]:
        if not sub.is_dir():
            raise DataError(f"stargan_v2_celebahq: folder {sub} is missing (layout {{train,val}}/{{female,male}})")
        names = self._image_names(sub)
        return resolve_listed(sub, names, [str(sub)] * len(names))

    @staticmethod
    def _image_names(sub: Path) -> list[str]:
        return sorted(p.name for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)

    def _build_split(self, name: str) -> ImageListSplit:
        folder = self.root / self.FOLDERS[name]
        paths: list[Path] = []
        labels: list[int] = []
        for label, gender in ((0, "female"), (1, "male")):
            files = self._gender_files(folder / gender)
            paths += files
            labels += [label] * len(files)
        if not paths:
            raise DataError(f"stargan_v2_celebahq: no images under {folder}")
        order = list(range(len(paths)))
        if self.max_items is not None:
            # interleave genders so that a short run still sees both labels
            order = np.argsort(np.concatenate([np.arange(labels.count(0)), np.arange(labels.count(1))]),
                               kind="stable").tolist()
        where = [str(p.parent) for p in paths]
        limit = None if self.max_items is None else int(self.max_items)
        keep, problems = check_listed_images([paths[i] for i in order], [where[i] for i in order], self.policy,
                                             f"stargan_v2_celebahq {name} split in {folder}", limit=limit)
        self.problems += [{"dataset": self.name, "split": name, **pr} for pr in problems]
        chosen = sorted(order[k] for k in keep)
        return ImageListSplit(self, name, [paths[i] for i in chosen],
                              np.asarray([labels[i] for i in chosen], dtype=np.float32)[:, None])
