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
from benchmark.data.base import FaceDataset, collate_faces
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


def kid_from_samples(feats1: np.ndarray, feats2: np.ndarray, seed: int = 0) -> float:
    """clean-fid's ``kernel_distance(feats1, feats2)`` with numpy's global RNG seeded, then restored."""
    from cleanfid.fid import kernel_distance

    if len(feats1) < 2 or len(feats2) < 2:
        return float("nan")
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        with one_blas_thread():
            return float(kernel_distance(feats1, feats2))
    finally:
        np.random.set_state(state)


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
        "version": REF_CACHE_VERSION, "dataset": dataset.fingerprint(), "split": "test",
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
        return {
            f"fid_clean_{tag}": frechet_from_moments(self.stats.moments, ref),
            f"kid_clean_{tag}": kid_from_samples(self.stats.sample.features(), ref_sample, self.kid_seed),
        }


@register_evaluator("fid_inception")
class InceptionFid(CleanFidEvaluator):
    """The standard protocol: clean-fid's TorchScript Inception-v3 (downloaded once, ~92 MB)."""

    metrics = ("fid_clean_inception", "kid_clean_inception")
    higher_is_better = {"fid_clean_inception": False, "kid_clean_inception": False}

    def build_extractor(self, ctx: EvalContext) -> FeatureExtractor:
        return shared_model(("fid_inception", str(ctx.device)), lambda: load_inception(ctx.device))


@register_evaluator("fid_classifier")
class ClassifierFid(CleanFidEvaluator):
    """Offline alternative: features of the dataset's own attribute classifier (``fid_clean_<tag>``).

    Option ``classifier`` (dict) is passed to ``load_classifier`` as its config.
    """

    metrics = ("fid_clean_<classifier>", "kid_clean_<classifier>")
    higher_is_better = {"fid_clean_": False, "kid_clean_": False}
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
