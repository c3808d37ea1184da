"""The on-disk render cache of SynthFaces: every image, region mask and counterfactual rendered once.

A SynthFaces split is a pure function of (dataset fingerprint, renderer code), so its renders are
cached like any other artefact: as ``benchmark.cache`` entries (files listed with their sha256 in a
``MANIFEST.json``, verified before use, built under ``entry_lock`` into an ``atomic_directory``).

Layout, under ``cache_root()/synthfaces/<dataset key>/``::

    meta.json                                   what the key stands for (fingerprint, renderer digest, ...)
    <split>/images/<start>-<stop>/data.npy      N×3×H×W uint8: the dataset images
    <split>/flipped_<attr>/<start>-<stop>/...   N×3×H×W uint8: each image with <attr> set to 1 - its label
    <split>/mask_<attr>/<start>-<stop>/...      N×1×H×W uint8 {0, 1}: the region mask of <attr>

Why these three kinds: the protocol edits every test image to the opposite of its label, so the
counterfactual of image i for attribute a is always the "flipped" render (a counterfactual with the
current label is the image itself), and ``region_masks`` depends on (image, attribute) only.

Why chunks of ``CHUNK`` images rather than one file per split: the first item of a split comes back
after one chunk is rendered (a test that reads ten images does not pay for five thousand), and a run
that evaluates 500 of 1,000 test images renders the masks and counterfactuals of those 500 only.
Chunks are aligned to multiples of ``CHUNK``; each is rendered in sub-batches of the dataset's
``chunk_size`` (the batches the in-memory path renders), so memory stays bounded at any resolution.

The dataset key hashes the fingerprint (options, resolution, ``RENDERER_VERSION``), the source of
``render.py`` and ``params.py``, the torch version and the render device type: a renderer edit, a torch
upgrade or a GPU render never reads pixels made by another.  The renderer is batch-invariant (every
op is elementwise per image; checked bit for bit in tests/test_eval_speed.py), so a cached chunk is
exactly what rendering the same images in any other batch gives.

Arrays are read memory-mapped: a process touches only the rows it asks for, and the page cache
shares them between the processes of a machine.  Each entry is verified (sha256 of every file) once
per process, when first opened.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from benchmark import cache as entries
from benchmark.assets import cache_root

log = logging.getLogger(__name__)

STORE_VERSION = 1  # bump when the layout or the meaning of an array changes
CHUNK = 256        # images per cache entry
DATA = "data.npy"
_HERE = Path(__file__).resolve().parent
_SOURCES = ("render.py", "params.py")
_renderer_digest: str | None = None


def renderer_digest() -> str:
    """sha256 of the renderer's source files: any edit of them invalidates the cached renders."""
    global _renderer_digest
    if _renderer_digest is None:
        h = hashlib.sha256()
        for name in _SOURCES:
            h.update(name.encode() + b"\0" + (_HERE / name).read_bytes() + b"\0")
        _renderer_digest = h.hexdigest()
    return _renderer_digest


def dataset_key_payload(fingerprint: dict, device: torch.device) -> dict:
    return {"store_version": STORE_VERSION, "fingerprint": fingerprint, "renderer_sources": renderer_digest(),
            "torch": torch.__version__, "device_type": torch.device(device).type}


def dataset_key(fingerprint: dict, device: torch.device) -> str:
    blob = json.dumps(dataset_key_payload(fingerprint, device), sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def chunk_bounds(i: int, n: int) -> tuple[int, int]:
    start = (i // CHUNK) * CHUNK
    return start, min(start + CHUNK, n)


class RenderStore:
    """Cached uint8 renders of one split; ``rows(kind, index, render)`` is the only way in.

    ``render(start, stop) -> uint8 tensor`` makes a missing chunk; the store keeps the opened,
    verified arrays of this process (memory-mapped, so holding them costs address space, not RAM).
    """

    def __init__(self, root: Path, split_name: str, n: int, meta: dict):
        self.root, self.split_name, self.n, self.meta = Path(root), split_name, int(n), meta
        self._open: dict[tuple[str, int], np.ndarray] = {}
        self._meta_written = False

    @classmethod
    def for_split(cls, fingerprint: dict, device: torch.device, split_name: str, n: int) -> "RenderStore":
        key = dataset_key(fingerprint, device)
        return cls(cache_root() / "synthfaces" / key, split_name, n, dataset_key_payload(fingerprint, device))

    def __getstate__(self) -> dict:
        # DataLoader workers under spawn/forkserver: reopen (and re-verify) the maps in the worker
        return {**self.__dict__, "_open": {}}

    def entry(self, kind: str, start: int, stop: int) -> Path:
        return self.root / self.split_name / kind / f"{start:07d}-{stop:07d}"

    def _write_meta(self) -> None:
        if self._meta_written:
            return
        path = self.root / "meta.json"
        if not path.is_file():
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".meta.json.{id(self)}.tmp")
            tmp.write_text(json.dumps(self.meta, indent=1, sort_keys=True, default=str) + "\n")
            tmp.replace(path)
        self._meta_written = True

    def chunk(self, kind: str, start: int, stop: int,
              render: Callable[[int, int], torch.Tensor]) -> np.ndarray:
        """The verified, memory-mapped uint8 array of rows ``start..stop-1`` of ``kind`` (built if missing)."""
        key = (kind, start)
        if key in self._open:
            return self._open[key]
        final = self.entry(kind, start, stop)
        remedy = f"delete {final} and run again: it is re-rendered"

        def build(tmp: Path) -> None:
            arr = render(start, stop)
            if arr.dtype != torch.uint8 or arr.shape[0] != stop - start:
                raise RuntimeError(f"render of {kind} {start}..{stop} gave {arr.dtype} {tuple(arr.shape)}")
            np.save(tmp / DATA, arr.numpy(), allow_pickle=False)

        self._write_meta()
        entries.ensure_entry(final, build, remedy=remedy, extra={"kind": kind, "split": self.split_name,
                                                                  "rows": [start, stop]})
        arr = entries.read_entry_file(final / DATA, lambda p: np.load(p, mmap_mode="r", allow_pickle=False),
                                      "cached SynthFaces renders", remedy)
        if arr.dtype != np.uint8 or arr.shape[0] != stop - start:
            raise entries.CacheCorruptError(final / DATA, f"holds {arr.dtype} {arr.shape}, expected "
                                            f"{stop - start} uint8 rows", remedy)
        self._open[key] = arr
        return arr

    def put(self, kind: str, start: int, stop: int, array: torch.Tensor) -> None:
        """Cache ``array`` as rows ``start..stop-1`` of ``kind`` unless a valid entry is there already.

        For by-products (the flipped renders a mask build makes anyway).  Never call it while
        building ``kind`` itself; entries built this way are keyed and verified like any other.
        """
        if (kind, start) in self._open:
            return

        def build(tmp: Path) -> None:
            np.save(tmp / DATA, array.numpy(), allow_pickle=False)

        self._write_meta()
        entries.ensure_entry(self.entry(kind, start, stop), build,
                             extra={"kind": kind, "split": self.split_name, "rows": [start, stop]})

    def rows(self, kind: str, index: torch.Tensor, render: Callable[[int, int], torch.Tensor]) -> torch.Tensor:
        """uint8 rows ``index`` (any order, repeats allowed) of ``kind``, as one new tensor."""
        index = index.reshape(-1)
        if index.numel() == 0:
            first = self.chunk(kind, *chunk_bounds(0, self.n), render)
            return torch.empty((0, *first.shape[1:]), dtype=torch.uint8)
        chunk_of = torch.div(index, CHUNK, rounding_mode="floor")
        out: torch.Tensor | None = None
        for c in torch.unique(chunk_of).tolist():
            start, stop = chunk_bounds(c * CHUNK, self.n)
            arr = self.chunk(kind, start, stop, render)
            where = (chunk_of == c).nonzero().flatten()
            block = torch.from_numpy(np.ascontiguousarray(arr[(index[where] - start).numpy()]))
            if out is None:
                out = torch.empty((index.numel(), *block.shape[1:]), dtype=torch.uint8)
            out[where] = block
        assert out is not None
        return out
