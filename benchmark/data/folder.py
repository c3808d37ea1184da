"""``image_folder``: your own faces, as a folder of images plus a CSV of CelebA attribute labels.

CSV (``csv`` option, default ``<root>/attributes.csv``; comma-separated, header row):

* ``filename`` (option ``filename_column``): the image path relative to ``root``;
* one column per attribute, named by its CelebA name (``Smiling``, ``Male``, ...);
  a column holds 0/1 or -1/1 (-1 and 0 both mean "absent", but one column
  may not mix them: that usually means a third value such as "unknown");
* optional ``identity`` (integer person id; default -1);
* optional ``split`` (``train`` / ``val`` / ``test``).  Without it the split is
  a deterministic hash of the file name: an image is ``test`` when the first 8
  hex digits of sha1(filename) / 16**8 < ``test_fraction`` (default 0.1), else
  ``train``; the same file keeps its split whatever else the CSV holds.

Any other column is an error that lists the valid CelebA names, unless named
in ``ignore_columns``.  Bad cells are DataErrors with their CSV line number, and
so is a row with more or fewer values than the header has columns.

File names are resolved (symlinks included) and must lie inside ``root``: a
``../`` row, an absolute path elsewhere or a symlink leading out is an error
with its CSV line, never skipped (``benchmark.data.base.resolve_inside``).  A
file listed twice, under any spelling (``a.png`` / ``./a.png`` / a symlink to
it), is an error naming the file and both lines.  The listed images are checked
when a split is first built (options ``validate``, ``on_missing``, ``on_bad``:
``benchmark.data.images``); files a ``skip`` policy leaves out are recorded on
``dataset.problems``.
"""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from benchmark.data.base import CELEBA_ATTRIBUTE_NAMES, CELEBA_GROUPS, AttributeSpec, DataError, FaceDataset
from benchmark.data.images import ImageListSplit, ImagePolicy, check_listed_images, resolve_listed
from benchmark.registry import register_dataset

SPLITS = ("train", "val", "test")


def hashed_split(filename: str, test_fraction: float) -> str:
    """``test`` for a stable ``test_fraction`` share of file names, else ``train``."""
    h = int(hashlib.sha1(filename.encode("utf-8")).hexdigest()[:8], 16) / 16**8
    return "test" if h < test_fraction else "train"


def _parse_label(cell: str, column: str, lineno: int, path: Path) -> int:
    value = cell.strip()
    if value not in ("0", "1", "-1"):
        raise DataError(f"{path}:{lineno}: column {column!r} must hold 0/1 or -1/1, got {cell!r}")
    return int(value)


def _labels_to_01(raw: np.ndarray, columns: list[str], linenos: list[int], path: Path) -> np.ndarray:
    """Map each column's -1/1 or 0/1 coding to 0/1; a column mixing -1 and 0 is an error."""
    for j, col in enumerate(columns):
        values = raw[:, j]
        if (values == -1).any() and (values == 0).any():
            first = max(int(np.flatnonzero(values == -1)[0]), int(np.flatnonzero(values == 0)[0]))
            raise DataError(
                f"{path}:{linenos[first]}: column {col!r} mixes -1 and 0; use 0/1 or -1/1 throughout the column"
            )
    return (raw == 1).astype(np.float32)


@register_dataset("image_folder")
class ImageFolder(FaceDataset):
    """Images under ``root`` with labels from a CSV (module docstring for the format).

    Options: ``root`` (required), ``csv``, ``filename_column`` (``filename``),
    ``attributes`` (subset of the CSV's), ``ignore_columns``, ``test_fraction``
    (0.1), ``on_missing`` / ``on_bad`` (``error`` | ``skip``), ``validate``
    (``header`` | ``decode`` | ``none``), ``max_items`` (per split).
    """

    def __init__(self, resolution: int = 64, **options):
        super().__init__(resolution, **options)
        if not options.get("root"):
            raise DataError("image_folder needs the option root (the folder of images)")
        self.root = Path(options["root"]).expanduser()
        self.csv_path = Path(options.get("csv") or self.root / "attributes.csv").expanduser()
        if not self.csv_path.is_absolute():
            self.csv_path = self.root / self.csv_path
        self.policy = ImagePolicy.from_options(options, "image_folder")
        self.on_missing = self.policy.on_missing
        self.max_items = options.get("max_items")
        self._read_csv(options)
        self._resolve_files()
        self.split_names = ("train", "val", "test") if "val" in set(self._splits_col) else ("train", "test")
        self._select(options.get("attributes"))
        self._splits: dict[str, ImageListSplit] = {}

    def _header(self, header: list[str], options: dict) -> tuple[str, list[str]]:
        fcol = options.get("filename_column", "filename")
        if fcol not in header:
            raise DataError(f"{self.csv_path}:1: no filename column {fcol!r} (columns: {header})")
        ignored = set(options.get("ignore_columns", ())) | {fcol, "identity", "split"}
        attrs = [h for h in header if h not in ignored]
        unknown = [a for a in attrs if a not in CELEBA_GROUPS]
        if unknown:
            raise DataError(
                f"{self.csv_path}:1: unknown attribute column(s) {unknown}; attribute columns must be CelebA names: "
                f"{', '.join(CELEBA_ATTRIBUTE_NAMES)} (or list other columns in ignore_columns)"
            )
        if not attrs:
            raise DataError(f"{self.csv_path}:1: no attribute columns (CelebA names such as Smiling, Male)")
        return fcol, attrs

    def _read_csv(self, options: dict) -> None:
        if not self.csv_path.is_file():
            raise DataError(f"image_folder: label file {self.csv_path} not found (option csv)")
        with open(self.csv_path, newline="") as f:
            reader = csv.DictReader(f)
            fcol, self._csv_attrs = self._header(list(reader.fieldnames or []), options)
            files, raw, ids, splits, linenos = [], [], [], [], []
            test_fraction = float(options.get("test_fraction", 0.1))
            for row in reader:
                lineno = reader.line_num
                self._check_row_length(row, reader.fieldnames or [], lineno)
                name = (row.get(fcol) or "").strip()
                if not name:
                    raise DataError(f"{self.csv_path}:{lineno}: empty file name")
                files.append(name)
                linenos.append(lineno)
                raw.append([_parse_label(row.get(a) or "", a, lineno, self.csv_path) for a in self._csv_attrs])
                ids.append(self._parse_identity(row.get("identity"), lineno))
                splits.append(self._parse_split(row.get("split"), name, test_fraction, lineno))
        if not files:
            raise DataError(f"{self.csv_path}: no rows")
        self._files, self._linenos = files, linenos
        self._labels = _labels_to_01(np.asarray(raw, dtype=np.int64), self._csv_attrs, linenos, self.csv_path)
        self._ids = np.asarray(ids, dtype=np.int64)
        self._splits_col = np.asarray(splits)

    def label_parts(self) -> tuple:
        """What the CSV says: file names, attribute columns and values, identities and splits (``root`` is
        in the keys already; the CSV's content is not, and an edited CSV in the same folder needs a new key)."""
        return list(self._csv_attrs), list(self._files), self._labels, self._ids, [str(x) for x in self._splits_col]

    def _check_row_length(self, row: dict, header: list[str], lineno: int) -> None:
        """csv.DictReader files surplus values under the key None and pads short rows with None: both errors."""
        extra = row.get(None)
        if extra:
            raise DataError(f"{self.csv_path}:{lineno}: {len(header) + len(extra)} values, but the header has "
                            f"{len(header)} columns (extra: {extra}); quote cells that contain commas")
        short = [h for h in header if row.get(h) is None]
        if short:
            raise DataError(f"{self.csv_path}:{lineno}: {len(header) - len(short)} values, but the header has "
                            f"{len(header)} columns (missing: {short})")

    def _where(self, row: int) -> str:
        return f"{self.csv_path}:{self._linenos[row]}"

    def _resolve_files(self) -> None:
        """Resolve every listed file inside ``root`` (all escapes in one error), then refuse duplicates.

        Duplicates are found on the resolved paths, so ``a.png``, ``./a.png`` and a link to it count
        as one file: the same face twice would weigh twice in every metric, or sit in two splits.
        """
        self._paths = resolve_listed(self.root, self._files, [self._where(r) for r in range(len(self._files))])
        rows_of: dict[Path, list[int]] = {}
        for r, path in enumerate(self._paths):
            rows_of.setdefault(path, []).append(r)
        dups = [rows for rows in rows_of.values() if len(rows) > 1]
        if dups:
            lines = [f"{self._files[rows[0]]!r} on lines {', '.join(str(self._linenos[r]) for r in rows)}"
                     + (f" (as {', '.join(repr(self._files[r]) for r in rows[1:])})"
                        if len({self._files[r] for r in rows}) > 1 else "") for rows in dups]
            raise DataError(f"{self.csv_path}: {len(dups)} file(s) listed more than once: " + "; ".join(lines[:20])
                            + ("; ..." if len(lines) > 20 else "") + ". List each image once.")

    def _parse_identity(self, cell: str | None, lineno: int) -> int:
        if cell is None or not cell.strip():
            return -1
        try:
            return int(cell.strip())
        except ValueError:
            raise DataError(f"{self.csv_path}:{lineno}: identity must be an integer, got {cell!r}") from None

    def _parse_split(self, cell: str | None, name: str, test_fraction: float, lineno: int) -> str:
        if cell is None:
            return hashed_split(name, test_fraction)
        value = cell.strip()
        if value not in SPLITS:
            raise DataError(f"{self.csv_path}:{lineno}: split must be one of {SPLITS}, got {cell!r}")
        return value

    def _select(self, requested: list[str] | None) -> None:
        chosen = list(self._csv_attrs) if requested is None else list(requested)
        unknown = [a for a in chosen if a not in self._csv_attrs]
        if unknown:
            raise DataError(f"image_folder: attribute(s) {unknown} not in {self.csv_path}; it has {self._csv_attrs}")
        self.attributes = tuple(AttributeSpec(a, CELEBA_GROUPS[a]) for a in chosen)
        self._columns = [self._csv_attrs.index(a) for a in chosen]

    def split(self, name: str) -> ImageListSplit:
        """The split, built (and its images checked) once; skipped files go to ``self.problems``."""
        self._check_split(name)
        if name not in self._splits:
            self._splits[name] = self._build_split(name)
        return self._splits[name]

    def _build_split(self, name: str) -> ImageListSplit:
        rows = np.flatnonzero(self._splits_col == name)
        limit = None if self.max_items is None else int(self.max_items)
        keep, problems = check_listed_images([self._paths[r] for r in rows], [self._where(r) for r in rows],
                                             self.policy, f"image_folder {name} split ({self.csv_path})", limit=limit)
        self.problems += [{"dataset": self.name, "split": name, **pr} for pr in problems]
        rows = rows[keep]
        paths = [self._paths[r] for r in rows]
        return ImageListSplit(self, name, paths, self._labels[rows][:, self._columns], self._ids[rows])
