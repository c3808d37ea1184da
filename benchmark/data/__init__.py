"""Datasets (DESIGN §3).  Importing this package registers the built-in datasets."""
from benchmark.data.base import (  # noqa: F401
    CELEBA_ATTRIBUTE_NAMES, CELEBA_ATTRIBUTES, CELEBA_GROUPS, AttributeSpec, DataError, FaceDataset, FaceSplit,
    collate_faces,
)

# built-in datasets register themselves on import (one line each)
from benchmark.data import celebahq  # noqa: E402,F401  celebahq, stargan_v2_celebahq
from benchmark.data import folder  # noqa: E402,F401  image_folder
from benchmark.data import synthfaces  # noqa: F401,E402
