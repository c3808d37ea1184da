"""SynthFaces: procedurally rendered faces with ground truth (identity factors, masks, counterfactuals).

The offline default dataset of the benchmark; see docs/synthfaces.md.
"""
from benchmark.data.synthfaces.dataset import SynthFaces, SynthFacesSplit  # noqa: F401
from benchmark.data.synthfaces.params import ATTRIBUTE_NAMES, IDENTITY_PARAM_NAMES  # noqa: F401
