"""FID and KID with clean-fid's protocol, streaming.

Per direction t (``ctx.direction``): the edited images whose target is t are
compared with the REAL test images of the dataset whose label is t.  The runner
averages the two directions.

Memory: FID keeps Gaussian moments only - the feature sum and the sum of outer
products in float64 (O(F^2), 32 MiB for Inception's 2048-d features), never a
list of features.  The Frechet distance itself is clean-fid's
``cleanfid.fid.frechet_distance``.

KID needs samples, not moments.  We keep a bounded, uniform random sample of at
most ``kid_max_samples`` (default 10,000; 80 MiB of float32 Inception features)
features per set - a bottom-k sample on hashed priorities of each image's
position in the stream, so it is deterministic and does not depend on the batch
size - and call clean-fid's ``kernel_distance`` on the two samples (its
100 subsets of at most 1,000, with numpy's RNG seeded by ``kid_seed``).  Below
the cap the sample is the whole set, and KID equals clean-fid's ``compute_kid``
on the same images.

Small n (docs/metrics.md, "FID at small n"): a direction may have only ~70 edited
images against 256-2048-d features, where FID mostly measures n.  Beside each FID
and KID three rows say how far to trust them (``<p>`` = the protocol suffix,
``inception`` or the classifier's tag):

- ``fid_floor_clean_<p>``: the FID between two disjoint random subsets of n real
  images of the target value each (n = the edited images of the direction),
  taken from the cached reference sample (``kid_sample`` of ``stats.npz``, a
  uniform sample of the real set): what a perfect editor would score with n
  images on both sides.  NaN, with a logged reason, when that sample holds
  fewer than 2n features.  Seeded by (``kid_seed``, n), computed exactly in
  the rank-n subspace (``frechet_from_samples``), no network pass.
- ``kid_se_clean_<p>``: the standard error of ``kid_clean_<p>``, from the
  same kernel matrices as the KID value (``kid_with_se``).
- ``fid_n_below_dim_clean_<p>``: 1.0 when n < the feature dimension (the
  edited covariance is singular), else 0.0.

Two protocols, two names (DESIGN §3): ``fid_inception`` reports
``fid_clean_inception`` / ``kid_clean_inception`` (needs the Inception weights,
downloaded once), ``fid_classifier`` reports ``fid_clean_<tag>`` /
``kid_clean_<tag>`` with the dataset's own attribute classifier as feature
extractor (runs offline; "clean" there means the same uint8 quantization, at the
dataset's resolution, no resize).  The two are not comparable with each other.

Reference statistics of the real set are cached by content hash (dataset
fingerprint, attribute, value, extractor, preprocessing, sample cap) under
``cache_root()/fid_refs/<key>/stats.npz``, a ``benchmark.cache`` entry whose manifest
(sha256 + size) is verified before the statistics are used.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from benchmark import cache as entries
from benchmark.data.base import FaceDataset, collate_faces, content_fingerprint
from benchmark.registry import register_evaluator
from evaluators.base import EvalContext, Evaluator, MetricUnavailable, shared_model
from evaluators.features import ClassifierFeatures, FeatureExtractor, fid_cache_dir, load_inception
from evaluators.judging import JudgeMemo

log = logging.getLogger(__name__)

KID_MAX_SAMPLES = 10_000
REF_CACHE_VERSION = 1
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


class GaussianMoments:
    """Streaming mean and covariance (unbiased, as ``np.cov``) from float64 sums.

    Sums are taken around a shift (the first batch's mean) so that the
    covariance does not lose precision when the mean is large next to the spread.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: np.ndarray | None = None
        self.s1: np.ndarray | None = None
        self.s2: np.ndarray | None = None

    def update(self, feats: torch.Tensor | np.ndarray) -> None:
        x = np.asarray(feats, dtype=np.float64)
        if len(x) == 0:
            return
        if self.shift is None:
            self.shift = x.mean(axis=0)
            self.s1 = np.zeros_like(self.shift)
            self.s2 = np.zeros((x.shape[1], x.shape[1]))
        xc = x - self.shift
        self.s1 += xc.sum(axis=0)
        self.s2 += xc.T @ xc
        self.n += len(x)

    def mean(self) -> np.ndarray:
        return self.shift + self.s1 / self.n

    def cov(self) -> np.ndarray:
        c = (self.s2 - np.outer(self.s1, self.s1) / self.n) / (self.n - 1)
        return (c + c.T) / 2


def _priorities(positions: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (position, seed): i.i.d.-looking uint64 keys, a pure function of the position."""
    with np.errstate(over="ignore"):
        z = (positions.astype(np.uint64) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


class FeatureReservoir:
    """A uniform sample without replacement of at most ``cap`` rows of a stream (bottom-k priorities).

    The kept rows are those whose hashed stream positions have the ``cap``
    smallest priorities: the same rows whatever the batching.  ``features()``
    returns them in stream order, so below the cap it is the whole stream.
    """

    def __init__(self, cap: int = KID_MAX_SAMPLES, seed: int = 0):
        if cap < 2:
            raise ValueError(f"kid_max_samples must be >= 2, got {cap}")
        self.cap, self.seed, self.seen = int(cap), int(seed), 0
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._full: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # feats, positions, priorities

    def __len__(self) -> int:
        return len(self._full[0]) if self._full is not None else sum(len(c[0]) for c in self._chunks)

    def update(self, feats: torch.Tensor | np.ndarray) -> None:
        x = np.asarray(feats, dtype=np.float32)
        pos = np.arange(self.seen, self.seen + len(x), dtype=np.int64)
        self.seen += len(x)
        pri = _priorities(pos, self.seed)
        if self._full is None:
            self._chunks.append((x.copy(), pos, pri))
            if len(self) > self.cap:
                self._full = self._trim(*(np.concatenate(a) for a in zip(*self._chunks)))
                self._chunks = []
            return
        self._replace(x, pos, pri)

    def _trim(self, x: np.ndarray, pos: np.ndarray, pri: np.ndarray):
        keep = np.argpartition(pri, self.cap - 1)[: self.cap]
        return x[keep], pos[keep], pri[keep]

    def _replace(self, x: np.ndarray, pos: np.ndarray, pri: np.ndarray) -> None:
        fx, fpos, fpri = self._full
        cand = np.nonzero(pri < fpri.max())[0]
        if len(cand) == 0:
            return
        merged = np.concatenate([fpri, pri[cand]])
        winners = np.zeros(len(merged), dtype=bool)
        winners[np.argpartition(merged, self.cap - 1)[: self.cap]] = True
        evicted = np.nonzero(~winners[: self.cap])[0]
        accepted = cand[np.nonzero(winners[self.cap:])[0]]
        fx[evicted], fpos[evicted], fpri[evicted] = x[accepted], pos[accepted], pri[accepted]

    def features(self) -> np.ndarray:
        if self._full is None:
            if not self._chunks:
                return np.zeros((0, 0), dtype=np.float32)
            x, pos, _ = (np.concatenate(a) for a in zip(*self._chunks))
        else:
            x, pos, _ = self._full
        return x[np.argsort(pos, kind="stable")]


def frechet_from_moments(a: GaussianMoments, b: GaussianMoments) -> float:
    """clean-fid's Frechet distance of two streamed Gaussians; NaN with fewer than 2 samples."""
    from cleanfid.fid import frechet_distance

    if a.n < 2 or b.n < 2:
        return float("nan")
    return float(frechet_distance(a.mean(), a.cov(), b.mean(), b.cov()))


def one_blas_thread():
    """A context that runs numpy's BLAS on one thread (``threadpoolctl``; a no-op without it).

    Why for KID: ``kernel_distance`` makes 300 small matrix products (m×F by F×m, m <= 1,000);
    OpenBLAS threads cost more than they give there, and on shared cores their spin-waiting
    costs ~15× the single-threaded CPU time (measured: 0.2-0.3 s against 3-5.5 s per call on 512-d
    classifier features, the same value to the last bit).
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def kid_with_se(feats1: np.ndarray, feats2: np.ndarray, seed: int = 0, num_subsets: int = 100,
                max_subset_size: int = 1000) -> tuple[float, float]:
    """(KID, its standard error) of two feature samples; (NaN, NaN) with fewer than 2 in either.

    The value is clean-fid's ``kernel_distance(feats1, feats2)`` after ``np.random.seed(seed)``, to
    the last bit: the same subset draws (a ``RandomState(seed)``, which is what seeding numpy's
    global generator sets up, so the global state is left alone), the same float32 arithmetic in
    the same order.  Each subset s gives the unbiased MMD^2 estimate of m real against m edited
    features (m = min(len1, len2, max_subset_size)); KID is their mean.

    The standard error is not the spread of the subset estimates over sqrt(#subsets): with m =
    min(len1, len2) the smaller set is the whole of every subset, so that spread sees only the
    resampling of the larger set (and is exactly 0 when both sets have m features).  It is the
    first-order (Hoeffding / delta-method) standard error of the U-statistic, per subset

        var_s = 4/m * (Var_i[hr_i] + Var_j[he_j]),
        hr_i = mean_{i'!=i} k(r_i, r_i') - mean_j k(r_i, e_j),
        he_j = mean_{j'!=j} k(e_j, e_j') - mean_i k(r_i, e_j),

    (r real, e edited, sample variances), and SE = sqrt(mean_s var_s): the standard error of one
    subset's estimate, which bounds that of their mean from above; conservative (the plug-in h adds
    its own noise: ~1.3× the spread of KID over fresh draws when the distributions differ, ~1.7×
    when they are equal, docs/metrics.md).  It shrinks as 1/sqrt(m) when the distributions differ
    and as 1/m when they are equal (where the first-order term vanishes).
    """
    if len(feats1) < 2 or len(feats2) < 2:
        return float("nan"), float("nan")
    rng = np.random.RandomState(seed)
    dim = feats1.shape[1]
    m = min(min(feats1.shape[0], feats2.shape[0]), max_subset_size)
    total = 0
    variances = np.empty(num_subsets)
    with one_blas_thread():
        for s in range(num_subsets):
            real = feats2[rng.choice(feats2.shape[0], m, replace=False)]
            edit = feats1[rng.choice(feats1.shape[0], m, replace=False)]
            k_rr = (real @ real.T / dim + 1) ** 3
            k_ee = (edit @ edit.T / dim + 1) ** 3
            within = k_rr + k_ee
            cross = (real @ edit.T / dim + 1) ** 3
            total += (within.sum() - np.diag(within).sum()) / (m - 1) - cross.sum() * 2 / m
            # the per-point projections, in float64
            c64 = cross.astype(np.float64)
            h_real = (k_rr.sum(axis=1, dtype=np.float64) - np.diag(k_rr)) / (m - 1) - c64.mean(axis=1)
            h_edit = (k_ee.sum(axis=1, dtype=np.float64) - np.diag(k_ee)) / (m - 1) - c64.mean(axis=0)
            variances[s] = 4.0 / m * (h_real.var(ddof=1) + h_edit.var(ddof=1))
    kid = total / num_subsets / m
    return float(kid), float(np.sqrt(variances.mean()))


def kid_from_samples(feats1: np.ndarray, feats2: np.ndarray, seed: int = 0) -> float:
    """clean-fid's ``kernel_distance(feats1, feats2)`` as if numpy's global RNG were seeded with ``seed``."""
    return kid_with_se(feats1, feats2, seed)[0]


def frechet_from_samples(a: np.ndarray, b: np.ndarray) -> float:
    """The Frechet distance of the Gaussians fitted to two feature samples (unbiased covariances), exactly.

    tr sqrt(S_a S_b) is the sum of the singular values of A B^T / sqrt((n_a-1)(n_b-1)), A and B the
    centred samples, so no d×d square root is taken: an n×n SVD when both sets have at most d
    rows (the singular case, where clean-fid's ``sqrtm`` is slow and approximate), else the SVD of
    the product of the two d×d QR factors.  Agrees with ``frechet_distance`` on the same moments to
    ~1e-7 relative in the singular case, ~1e-12 otherwise (tests/test_fid.py).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    diff = a.mean(axis=0) - b.mean(axis=0)
    da, db = len(a) - 1, len(b) - 1
    if max(len(a), len(b)) <= a.shape[1]:
        prod = ca @ cb.T
    else:
        prod = np.linalg.qr(ca, mode="r") @ np.linalg.qr(cb, mode="r").T
    cross = np.linalg.svd(prod, compute_uv=False).sum() / np.sqrt(da * db)
    return float(diff @ diff + (ca * ca).sum() / da + (cb * cb).sum() / db - 2.0 * cross)


def fid_floor(real_sample: np.ndarray, n: int, seed: int = 0) -> tuple[float, str]:
    """(real-vs-real FID of two disjoint random n-subsets of ``real_sample``, why NaN or "").

    The subsets are the first and second n of a permutation drawn from ``default_rng([seed, n])``:
    a function of the sample, n and the seed only.
    """
    n = int(n)
    if n < 2:
        return float("nan"), f"{n} edited image(s): FID needs at least 2"
    if len(real_sample) < 2 * n:
        return float("nan"), (f"the real sample holds {len(real_sample)} features, fewer than 2n = {2 * n} "
                              f"(two disjoint subsets of n = {n})")
    order = np.random.default_rng([int(seed), n]).permutation(len(real_sample))
    return frechet_from_samples(real_sample[order[:n]], real_sample[order[n:2 * n]]), ""


@dataclass
class StreamStats:
    """Moments for FID plus a bounded sample for KID of one image set."""

    moments: GaussianMoments
    sample: FeatureReservoir

    @classmethod
    def empty(cls, cap: int, seed: int) -> "StreamStats":
        return cls(GaussianMoments(), FeatureReservoir(cap, seed))

    def update(self, feats: torch.Tensor) -> None:
        arr = feats.numpy()
        self.moments.update(arr)
        self.sample.update(arr)


# -- reference statistics of the real test set ---------------------------------------------------

def reference_key(dataset: FaceDataset, attribute: str, value: int, extractor: FeatureExtractor,
                  kid_cap: int, kid_seed: int) -> str:
    payload = {
        "version": REF_CACHE_VERSION, "dataset": content_fingerprint(dataset), "split": "test",
        "attribute": attribute, "value": int(value), "extractor": extractor.cache_id,
        "kid_max_samples": kid_cap, "kid_seed": kid_seed,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _stream_real(dataset: FaceDataset, attribute: str, value: int, extractor: FeatureExtractor,
                 stats: StreamStats, batch_size: int) -> None:
    split = dataset.split("test")
    labels = split.labels_matrix()[:, dataset.attribute_index(attribute)]
    index = torch.nonzero(labels == value).flatten().tolist()
    if not index:
        raise MetricUnavailable(f"FID: no test images of dataset {dataset.name!r} with {attribute}={value}")
    loader = DataLoader(Subset(split, index), batch_size=batch_size, shuffle=False, collate_fn=collate_faces)
    for batch in loader:
        stats.update(extractor(batch["image"]))


STATS_FILE = "stats.npz"
_STATS_ARRAYS = ("n", "shift", "s1", "s2", "kid_sample")


def _read_stats(path: Path) -> tuple[GaussianMoments, np.ndarray]:
    """Moments and KID sample from ``stats.npz``; a missing array is an error (``KeyError`` names it)."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in _STATS_ARRAYS}
    moments = GaussianMoments()
    moments.n, moments.shift, moments.s1, moments.s2 = int(arrays["n"]), arrays["shift"], arrays["s1"], arrays["s2"]
    return moments, arrays["kid_sample"]


def reference_stats(dataset: FaceDataset, attribute: str, value: int, extractor: FeatureExtractor,
                    kid_cap: int = KID_MAX_SAMPLES, kid_seed: int = 0, batch_size: int = 64
                    ) -> tuple[GaussianMoments, np.ndarray]:
    """(moments, KID sample) of the real test images with ``attribute == value``, cached on disk.

    The cache entry ``fid_refs/<key>/`` (``benchmark.cache``: ``stats.npz`` plus a manifest) is
    verified before use; a missing, incomplete or corrupt one is recomputed once, under its lock.
    """
    entry = fid_cache_dir() / reference_key(dataset, attribute, value, extractor, kid_cap, kid_seed)
    remedy = f"delete {entry} and run again: the statistics are recomputed from the real test images"

    def build(tmp: Path) -> None:
        stats = StreamStats.empty(kid_cap, kid_seed)
        _stream_real(dataset, attribute, value, extractor, stats, batch_size)
        m = stats.moments
        np.savez(tmp / STATS_FILE, n=np.array(m.n), shift=m.shift, s1=m.s1, s2=m.s2,
                 kid_sample=stats.sample.features())
        log.info("FID reference statistics of %s %s=%d (%d images) cached at %s",
                 dataset.name, attribute, value, m.n, entry)

    entries.ensure_entry(entry, build, remedy=remedy)
    return entries.read_entry_file(entry / STATS_FILE, _read_stats, "FID reference statistics", remedy)


# -- evaluators -----------------------------------------------------------------------------------

# How far to trust FID / KID, not scores of the editor: declared with no better direction (no
# arrow, never bold in the tables).
SMALL_N_ROWS: dict[str, bool | None] = {"fid_floor_clean_": None, "fid_n_below_dim_clean_": None,
                                        "kid_se_clean_": None}

_FLOOR_WARNED: set[tuple] = set()  # (dataset, attribute, value, extractor tag, n) already warned about


class CleanFidEvaluator(Evaluator):
    """Streaming FID + KID against the real test images of the target value; subclasses pick the features.

    Options: ``kid_max_samples`` (default 10,000), ``kid_seed`` (0), ``ref_batch_size`` (64).
    """

    requires = frozenset()
    option_keys = ("kid_max_samples", "kid_seed", "ref_batch_size")

    def __init__(self, ctx: EvalContext, **options: Any):
        self.options = opts = {**ctx.options, **options}
        self.kid_cap = int(opts.get("kid_max_samples", KID_MAX_SAMPLES))
        self.kid_seed = int(opts.get("kid_seed", 0))
        self.ref_batch_size = int(opts.get("ref_batch_size", 64))
        self.extractor = self.build_extractor(ctx)  # fail fast (missing weights) before any image is edited
        super().__init__(ctx, **options)

    def build_extractor(self, ctx: EvalContext) -> FeatureExtractor:
        raise NotImplementedError

    def reset(self) -> None:
        self.stats = StreamStats.empty(self.kid_cap, self.kid_seed)

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        keep = target.flatten().cpu() == self.ctx.direction
        if bool(keep.any()):
            self.stats.update(self.extractor(edited[keep]))

    def finalize(self) -> dict[str, float]:
        ref, ref_sample = reference_stats(self.ctx.dataset, self.ctx.attribute, self.ctx.direction,
                                          self.extractor, self.kid_cap, self.kid_seed, self.ref_batch_size)
        tag = self.extractor.tag
        n, dim = self.stats.moments.n, int(ref.shift.shape[0])
        floor, why = fid_floor(ref_sample, n, self.kid_seed)
        if why and (key := (self.ctx.dataset.name, self.ctx.attribute, self.ctx.direction, tag, n)) not in _FLOOR_WARNED:
            _FLOOR_WARNED.add(key)  # once per process and (set, n): every editor of a grid has the same n
            log.warning("FID floor of %s %s=%d (%s) is NaN: %s", self.ctx.dataset.name, self.ctx.attribute,
                        self.ctx.direction, tag, why)
        kid, kid_se = kid_with_se(self.stats.sample.features(), ref_sample, self.kid_seed)
        return {
            f"fid_clean_{tag}": frechet_from_moments(self.stats.moments, ref),
            f"fid_floor_clean_{tag}": floor,
            f"fid_n_below_dim_clean_{tag}": float(n < dim),
            f"kid_clean_{tag}": kid,
            f"kid_se_clean_{tag}": kid_se,
        }


@register_evaluator("fid_inception")
class InceptionFid(CleanFidEvaluator):
    """The standard protocol: clean-fid's TorchScript Inception-v3 (downloaded once, ~92 MB)."""

    metrics = ("fid_clean_inception", "fid_floor_clean_inception", "fid_n_below_dim_clean_inception",
               "kid_clean_inception", "kid_se_clean_inception")
    higher_is_better = {"fid_clean_inception": False, "kid_clean_inception": False, **SMALL_N_ROWS}

    def build_extractor(self, ctx: EvalContext) -> FeatureExtractor:
        return shared_model(("fid_inception", str(ctx.device)), lambda: load_inception(ctx.device))


@register_evaluator("fid_classifier")
class ClassifierFid(CleanFidEvaluator):
    """Offline alternative: features of the dataset's own attribute classifier (``fid_clean_<tag>``).

    Option ``classifier`` (dict) is passed to ``load_classifier`` as its config.
    """

    metrics = ("fid_clean_<classifier>", "fid_floor_clean_<classifier>", "fid_n_below_dim_clean_<classifier>",
               "kid_clean_<classifier>", "kid_se_clean_<classifier>")
    higher_is_better = {"fid_clean_": False, "kid_clean_": False, **SMALL_N_ROWS}
    option_keys = ("kid_max_samples", "kid_seed", "ref_batch_size", "classifier")
    requires = frozenset({"judge_memo"})  # optional: the classifier pass shared with ``attributes``

    def build_extractor(self, ctx: EvalContext) -> FeatureExtractor:
        return ClassifierFeatures(self.load_classifier(ctx), ctx.device)

    def load_classifier(self, ctx: EvalContext) -> Any:
        """The process-wide classifier of this config (``attributes`` gets the same object)."""
        try:
            from evaluators.attributes import shared_classifier
        except ImportError as exc:
            raise MetricUnavailable(f"fid_classifier needs evaluators.classifier ({exc})") from None
        return shared_classifier(ctx, self.options.get("classifier"), True)

    def update(self, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor, target: torch.Tensor,
               **extras: torch.Tensor) -> None:
        memo = extras.get("judge_memo")
        keep = target.flatten().cpu() == self.ctx.direction
        if isinstance(memo, JudgeMemo) and len(memo) == edited.shape[0] and bool(keep.all()):
            self.stats.update(self._features(memo))
        else:
            super().update(source, edited, labels, target, **extras)

    def _features(self, memo: JudgeMemo) -> torch.Tensor:
        """What ``self.extractor(edited)`` returns, through the memo.

        The extractor quantises to 8 bits first; where that leaves the edit unchanged (an 8-bit
        exact editor) its features are the classifier pass ``attributes`` makes on the same images.
        """
        from evaluators.attributes import classifier_features

        clf = self.extractor.classifier
        q, exact = memo.quantised()
        if exact:
            feats = classifier_features(clf, memo, "edited")
        else:
            feats = memo.run(clf, "features_of_quantised", "edited", lambda _: clf.features(q.to(self.extractor.device)))
        return feats.detach().float().cpu().reshape(len(memo), -1)
