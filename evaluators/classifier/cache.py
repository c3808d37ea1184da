"""Where trained classifiers live: ``cache_root()/classifiers/<content hash>/``.

The hash covers everything that determines the weights - the dataset's content
fingerprint (not where its files are), the resolution, the hashed training config and ``CODE_VERSION`` -
so a changed input can never be served a stale checkpoint.

The directory is a cache entry of ``benchmark.cache`` (the one mechanism for every cached
artefact): built under a temporary name and renamed into place under a lock, with a
``MANIFEST.json`` of every file's sha256 and size written last and verified before the weights
are used.  So a killed training leaves nothing half-written, concurrent processes that need the
same classifier train it once, and a checkpoint whose files were deleted, truncated or zeroed
(zeroed weights still parse, and score every image alike) is rebuilt or refused, never used.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from benchmark import cache as entries
from benchmark.assets import cache_root
from benchmark.data.base import FaceDataset, content_fingerprint
from evaluators.classifier.config import CODE_VERSION, ClassifierConfig

WEIGHTS_FILE = "model.safetensors"
METRICS_FILE = "metrics.json"
INFO_FILE = "classifier.json"  # what load needs to rebuild the network (arch, stem, attributes, tag)

# the shared mechanism, under the names this module has always offered
atomic_directory = entries.atomic_directory
training_lock = entries.entry_lock


def classifier_key(dataset: FaceDataset, config: ClassifierConfig) -> str:
    """16-hex content hash of (dataset content fingerprint, resolution, training config, code version).

    The fingerprint leaves out where the data lives (``content_fingerprint``), so a judge trained or shipped
    for CelebA-HQ answers wherever a reader keeps the images."""
    payload = {
        "dataset": content_fingerprint(dataset),
        "resolution": dataset.resolution,
        "config": config.resolved(dataset).hashed_dict(),
        "code_version": CODE_VERSION,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def classifiers_root() -> Path:
    return cache_root() / "classifiers"


def classifier_dir(dataset: FaceDataset, config: ClassifierConfig) -> Path:
    return classifiers_root() / classifier_key(dataset, config)


def is_complete(directory: Path) -> bool:
    """True when the entry's manifest lists every file with a matching size and digest."""
    return entries.is_valid(directory)


def read_json(path: Path, remedy: str = "") -> dict[str, Any]:
    """A JSON file of a checkpoint; a broken one is a ``CacheCorruptError`` naming it."""
    return entries.read_json_file(path, remedy)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
