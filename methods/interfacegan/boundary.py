"""Semantic boundaries: fitting a linear SVM on (latent code, attribute score) pairs, and reading ``.npy`` normals.

``train_boundary`` follows genforce/interfacegan ``utils/manipulator.py::train_boundary``
(driven by ``train_boundary.py``; commit 8da3fc0) step by step:

1. drop samples whose score equals ``invalid_value`` (and, here, non-finite scores);
2. sort by score, highest first;
3. ``chosen_num``: ``int(N · r)`` when 0 < r ≤ 1, else ``int(r)``, capped at N // 2; the
   top ``chosen_num`` codes are positives, the bottom ``chosen_num`` negatives (2 % each
   by default);
4. shuffle each side and split it ``split_ratio`` (0.7) train / rest validation;
5. fit ``sklearn.svm.SVC(kernel='linear')`` (C = 1) on the training codes;
6. validation accuracy on the held-out extremes; *remaining* accuracy on the middle
   N − 2·chosen_num codes, labelled 1 where their score ≥ (max score + min score) / 2 —
   genforce's ``decision_value`` (the midpoint of the score range, not a sign);
7. the boundary is the SVM's weight vector scaled to unit norm, shape 1×D, float32.
   The intercept is not part of it: the official edits measure distances to the
   hyperplane through the origin, ``zᵀn`` (the fitted offset is reported in the stats).

Differences, both without effect on the fitted normal: the shuffles use
``np.random.default_rng(seed)`` instead of the global NumPy RNG (reproducible), and
accuracies are computed from the fitted linear decision function X·w + b, which is
what ``SVC.predict`` evaluates for a linear kernel, but without its per-support-vector
kernel sums (seconds instead of minutes on the 500k-sample middle set).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["train_boundary", "load_boundary", "save_boundary", "chosen_count", "SVM_DESCRIPTION"]

SVM_DESCRIPTION = "sklearn.svm.SVC(kernel='linear', C=1.0)"  # genforce: svm.SVC(kernel='linear')
UNIT_NORM_TOLERANCE = 1e-3


def _as_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    return x


def chosen_count(num_samples: int, chosen_num_or_ratio: float) -> int:
    """Codes per side: ``int(N·r)`` for 0 < r ≤ 1, else ``int(r)``; at most N // 2 (genforce's rule)."""
    if not chosen_num_or_ratio > 0:
        raise ValueError(f"chosen_num_or_ratio must be positive, got {chosen_num_or_ratio}")
    if chosen_num_or_ratio <= 1:
        chosen = int(num_samples * chosen_num_or_ratio)
    else:
        chosen = int(chosen_num_or_ratio)
    return min(chosen, num_samples // 2)


def _check_inputs(latent_codes: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    codes = _as_numpy(latent_codes, "latent_codes")
    s = _as_numpy(scores, "scores")
    if codes.ndim != 2:
        raise ValueError(f"latent_codes must be [num_samples, dim] (flatten W+ codes first), got {codes.shape}")
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1 or s.shape[0] != codes.shape[0]:
        raise ValueError(f"scores must be [num_samples] or [num_samples, 1] with num_samples={codes.shape[0]}, "
                         f"got {s.shape}")
    if not np.isfinite(codes).all():
        raise ValueError("latent_codes contain non-finite values")
    return codes.astype(np.float64, copy=False), s.astype(np.float64, copy=False)


def train_boundary(latent_codes: Any, scores: Any, chosen_num_or_ratio: float = 0.02, split_ratio: float = 0.7,
                   invalid_value: float | None = None, seed: int = 0) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the boundary of one attribute; returns (unit normal 1×D float32, stats).

    ``latent_codes`` N×D and ``scores`` N (or N×1, higher = more of the attribute), as
    numpy arrays or tensors.  The normal points towards high scores.  ``stats`` holds
    ``val_accuracy`` and ``remaining_accuracy`` (None when that set is empty), the
    counts of every set, the score thresholds, the SVM's offset and its description, for
    a fit's provenance.  Fails clearly when fewer than one training code per side remains
    or when the positive and negative sets share scores (the labels would be arbitrary).
    """
    from sklearn.svm import SVC  # lazy: scikit-learn is needed only for fitting

    codes, s = _check_inputs(latent_codes, scores)
    if not 0 < split_ratio <= 1:
        raise ValueError(f"split_ratio must be in (0, 1], got {split_ratio}")
    num_given = codes.shape[0]
    keep = np.isfinite(s) if invalid_value is None else np.isfinite(s) & (s != invalid_value)
    codes, s = codes[keep], s[keep]
    order = np.argsort(-s, kind="stable")  # highest score first
    codes, s = codes[order], s[order]
    n, dim = codes.shape
    chosen = chosen_count(n, chosen_num_or_ratio)
    train_num = int(chosen * split_ratio)
    val_num = chosen - train_num
    if train_num < 1:
        raise ValueError(f"too few codes to fit a boundary: {n} valid samples with chosen_num_or_ratio="
                         f"{chosen_num_or_ratio} give {chosen} per side and {train_num} training codes per side")
    top_min, bottom_max = float(s[chosen - 1]), float(s[n - chosen])
    if not top_min > bottom_max:
        raise ValueError(f"the top and bottom {chosen} codes share scores (lowest positive {top_min}, highest "
                         f"negative {bottom_max}): the scores do not separate this attribute (one class only?)")

    rng = np.random.default_rng(seed)
    pos, neg = codes[:chosen][rng.permutation(chosen)], codes[n - chosen:][rng.permutation(chosen)]
    x_train = np.concatenate([pos[:train_num], neg[:train_num]])
    y_train = np.concatenate([np.ones(train_num, np.int64), np.zeros(train_num, np.int64)])
    x_val = np.concatenate([pos[train_num:], neg[train_num:]])
    y_val = np.concatenate([np.ones(val_num, np.int64), np.zeros(val_num, np.int64)])
    x_rest, s_rest = codes[chosen:n - chosen], s[chosen:n - chosen]
    decision_value = (float(s[0]) + float(s[-1])) / 2  # genforce: (scores[0] + scores[-1]) / 2 after sorting
    y_rest = (s_rest >= decision_value).astype(np.int64)

    clf = SVC(kernel="linear").fit(x_train, y_train)
    coef = clf.coef_.reshape(dim)
    norm = float(np.linalg.norm(coef))
    if not norm > 0:
        raise ValueError("the SVM returned a zero weight vector; the codes carry no linear signal for these scores")
    intercept = float(clf.intercept_[0])

    def accuracy(x: np.ndarray, y: np.ndarray) -> float | None:
        return float(np.mean(((x @ coef + intercept) > 0).astype(np.int64) == y)) if len(y) else None

    stats: dict[str, Any] = {
        "num_given": int(num_given), "num_invalid": int(num_given - n), "num_samples": int(n), "dim": int(dim),
        "chosen_num": int(chosen), "train_num": int(train_num), "val_num": int(val_num),
        "remaining_num": int(len(y_rest)), "remaining_positive": int(y_rest.sum()),
        "remaining_negative": int(len(y_rest) - y_rest.sum()),
        "train_accuracy": accuracy(x_train, y_train), "val_accuracy": accuracy(x_val, y_val),
        "remaining_accuracy": accuracy(x_rest, y_rest),
        "positive_min_score": top_min, "negative_max_score": bottom_max, "decision_value": decision_value,
        "offset": -intercept / norm,  # the fitted plane is nᵀx = offset; the official edits assume 0
        "num_support_vectors": int(clf.support_.shape[0]), "svm": SVM_DESCRIPTION,
        "chosen_num_or_ratio": float(chosen_num_or_ratio), "split_ratio": float(split_ratio), "seed": int(seed),
    }
    return (coef / norm).reshape(1, dim).astype(np.float32), stats


def load_boundary(path: str | Path, dim: int = 512, renormalise: bool = False) -> np.ndarray:
    """A boundary ``.npy`` (the official files: 1×512 float64, unit norm) as a 1×dim float64 array.

    Accepts shape (dim,) or (1, dim) and any float dtype (InterFaceGAN++'s files are
    float32).  Refuses pickled objects, other shapes, non-finite values and — unless
    ``renormalise`` — normals whose norm is off 1 by more than 1e-3.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no boundary file at {path}")
    try:
        a = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path} is not a plain .npy array ({exc})") from None
    if not isinstance(a, np.ndarray) or not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{path}: a boundary must be a float array, got dtype {getattr(a, 'dtype', type(a))}")
    if a.shape not in ((dim,), (1, dim)):
        raise ValueError(f"{path}: a boundary must have shape (1, {dim}), got {a.shape}")
    a = a.reshape(1, dim).astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{path}: the boundary has non-finite values")
    norm = float(np.linalg.norm(a))
    if renormalise:
        if not norm > 0:
            raise ValueError(f"{path}: the boundary is the zero vector")
        return a / norm
    if abs(norm - 1.0) > UNIT_NORM_TOLERANCE:
        raise ValueError(f"{path}: the boundary has norm {norm:.6f}, not 1; pass renormalise=True to accept it")
    return a


def save_boundary(path: str | Path, normal: Any) -> Path:
    """Write a 1×D unit normal as ``.npy`` (float64, like the official files)."""
    a = _as_numpy(normal, "normal").astype(np.float64)
    if a.ndim == 1:
        a = a.reshape(1, -1)
    if a.ndim != 2 or a.shape[0] != 1:
        raise ValueError(f"a boundary must have shape (1, D), got {a.shape}")
    if abs(float(np.linalg.norm(a)) - 1.0) > UNIT_NORM_TOLERANCE:
        raise ValueError(f"a boundary must have unit norm, got {float(np.linalg.norm(a)):.6f}")
    path = Path(path)
    if path.suffix != ".npy":  # np.save would append it anyway
        path = path.with_name(path.name + ".npy")
    np.save(path, a)
    return path
