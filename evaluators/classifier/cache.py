"""Where trained classifiers live: ``cache_root()/classifiers/<content hash>/``.

The hash covers everything that determines the weights - the dataset's
fingerprint, the resolution, the hashed training config and ``CODE_VERSION`` -
so a changed input can never be served a stale checkpoint.  A checkpoint
directory is written under a temporary name and renamed into place, so a
killed training leaves no half checkpoint, and concurrent processes that
need the same classifier serialise on a lock file instead of training twice.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from benchmark.assets import cache_root
from benchmark.data.base import FaceDataset
from evaluators.classifier.config import CODE_VERSION, ClassifierConfig

WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
INFO_FILE = "classifier.json"  # what load needs to rebuild the network (arch, stem, attributes, tag)


def classifier_key(dataset: FaceDataset, config: ClassifierConfig) -> str:
    """16-hex content hash of (dataset fingerprint, resolution, training config, code version)."""
    payload = {
        "dataset": dataset.fingerprint(),
        "resolution": dataset.resolution,
        "config": config.hashed_dict(),
        "code_version": CODE_VERSION,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def classifiers_root() -> Path:
    return cache_root() / "classifiers"


def classifier_dir(dataset: FaceDataset, config: ClassifierConfig) -> Path:
    return classifiers_root() / classifier_key(dataset, config)


def is_complete(directory: Path) -> bool:
    return all((directory / f).is_file() for f in (WEIGHTS_FILE, METRICS_FILE, INFO_FILE))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; rename it to ``final`` only if the block succeeds.

    If another process finished the same directory first, ours is discarded
    (both hold the same content by construction of the hash).
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, final)
        except OSError:
            if not is_complete(final):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def training_lock(final: Path) -> Iterator[None]:
    """An exclusive advisory lock per checkpoint (POSIX ``flock``; a no-op where unavailable)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: concurrent trainings just race to the rename
        yield
        return
    with open(final.parent / f".{final.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
