"""Datasets (DESIGN §3).  Importing this package registers the built-in datasets."""
from benchmark.data.base import (  # noqa: F401
    CELEBA_ATTRIBUTE_NAMES, CELEBA_ATTRIBUTES, CELEBA_GROUPS, AttributeSpec, DataError, FaceDataset, FaceSplit,
    collate_faces,
)

# built-in datasets register themselves on import (one line each)
