"""The registered ``synthfaces`` dataset: splits, items, ground-truth masks and counterfactuals.

Renders are cached on disk (``disk_cache=True``, the default): images, region masks and
counterfactuals are rendered once per (dataset fingerprint, renderer code) and read back
memory-mapped by every later cell, process and run (``store.py``; the judges and editors see the
same bits either way).

Without the disk cache, item access renders in *chunks*: the ``chunk_size`` consecutive images
around the requested index are rendered as one vectorised batch and kept, as uint8, in a small LRU
cache bounded in bytes.  Why chunks rather than pre-rendering the split: the first item comes back
in a fraction of a second (a DataLoader or a test that reads ten images does not pay for five
thousand), a 256 px split does not have to fit in memory, and once the cache holds the whole split
(the default 512 MB holds all 6,000 default images up to 128 px) random access costs one tensor
copy.  Each DataLoader worker keeps its own cache; a sequential sampler touches each chunk once.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F

from benchmark.data.base import CELEBA_GROUPS, AttributeSpec, DataError, FaceDataset, FaceSplit
from benchmark.data.synthfaces.params import (
    ATTRIBUTE_NAMES, IDENTITY_PARAM_NAMES, SplitParams, sample_split,
)
from benchmark.data.synthfaces.render import PERSON, render
from benchmark.data.synthfaces.store import RenderStore
from benchmark.registry import register_dataset

log = logging.getLogger(__name__)

MIN_RESOLUTION, MAX_RESOLUTION = 32, 256
# Bump whenever the renderer or the factor sampling changes what an image or a label is: the
# version is part of ``fingerprint()``, which keys every cache built on this dataset (classifiers,
# FID reference statistics, identity embedders), so stale entries are never reused.
# 2: mouths drawn to read at 64 px (teeth in a smile, 2-3 px open gap), lips over facial hair.
RENDERER_VERSION = 2


def _to_u8(img: torch.Tensor) -> torch.Tensor:
    return ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _from_u8(img: torch.Tensor) -> torch.Tensor:
    return img.to(torch.float32) / 127.5 - 1


class SynthFacesSplit(FaceSplit):
    """One split: N = n_ids × images_per_id images, identities contiguous (images of one person adjacent)."""

    def __init__(self, dataset: "SynthFaces", split_name: str, params: SplitParams):
        self.dataset = dataset
        self.split_name = split_name
        self.params = params
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()
        res = dataset.resolution
        chunk_bytes = dataset.chunk_size * 3 * res * res
        self._max_chunks = max(1, int(dataset.cache_mb * 2**20) // chunk_bytes)
        self._store: RenderStore | None = None
        self._store_failed = False

    def __len__(self) -> int:
        return len(self.params)

    # -- the disk cache (store.py) ----------------------------------------------------------
    def store(self) -> RenderStore | None:
        """The split's on-disk render cache, or None (``disk_cache=False``, or the cache is not writable)."""
        if not self.dataset.disk_cache or self._store_failed:
            return None
        if self._store is None:
            self._store = RenderStore.for_split(self.dataset.fingerprint(), self.dataset.device,
                                                self.split_name, len(self))
        return self._store

    def _cached(self, kind: str, idx: torch.Tensor, make) -> torch.Tensor | None:
        """uint8 rows ``idx`` of ``kind`` from the disk cache (``make(start, stop)`` renders a chunk), or None."""
        store = self.store()
        if store is None:
            return None
        try:
            return store.rows(kind, idx, make)
        except OSError as exc:  # read-only or full cache directory: render in memory instead
            log.warning("synthfaces: render cache unavailable (%s); rendering in memory", exc)
            self._store_failed = True
            return None

    def _batches(self, start: int, stop: int):
        cs = self.dataset.chunk_size
        for s in range(start, stop, cs):
            yield torch.arange(s, min(s + cs, stop))

    def _render_images_u8(self, start: int, stop: int) -> torch.Tensor:
        return torch.cat([_to_u8(self._render(self.params.gather(b))[0]) for b in self._batches(start, stop)])

    def _render_flipped_u8(self, attribute: str, start: int, stop: int) -> torch.Tensor:
        """Every image of ``start..stop-1`` with ``attribute`` set to the opposite of its label."""
        col = self.dataset.attribute_index(attribute)
        out = []
        for b in self._batches(start, stop):
            p = self.params.gather(b)
            p[attribute] = 1.0 - self.params.labels[b, col]
            out.append(_to_u8(self._render(p)[0]))
        return torch.cat(out)

    def _render_masks_u8(self, attribute: str, start: int, stop: int) -> torch.Tensor:
        """Region masks of ``start..stop-1``; the flipped renders they need are cached on the way.

        The mask is the union of the supports at both values of the attribute, i.e. at the label
        (the image) and at its opposite (the counterfactual): two renders give both entries,
        where computing them apart would take three.
        """
        masks, flipped = [], []
        for b in self._batches(start, stop):
            m, f = self._masks_and_flipped(b, attribute)
            masks.append(m.to(torch.uint8))
            flipped.append(_to_u8(f))
        store = self.store()
        if store is not None:
            store.put(f"flipped_{attribute}", start, stop, torch.cat(flipped))
        return torch.cat(masks)

    def _masks_and_flipped(self, idx: torch.Tensor, attribute: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(region masks, flipped renders) of ``idx``: what ``_render_masks`` and the counterfactuals give."""
        col = self.dataset.attribute_index(attribute)
        key = attribute if self.dataset.group(attribute) == "local" else PERSON
        res = self.dataset.resolution
        mask = torch.zeros(idx.numel(), 1, res, res, dtype=torch.bool)
        p = self.params.gather(idx)
        supports = [self._render(p, track=True)[1]]
        p[attribute] = 1.0 - self.params.labels[idx, col]
        img, support = self._render(p, track=True)
        for sup in (*supports, support):
            if key in sup:
                mask |= sup[key]
        r = max(1, round(res / 64))
        return F.max_pool2d(mask.float(), 2 * r + 1, stride=1, padding=r), img

    # -- rendering ------------------------------------------------------------------
    def _render(self, p: dict[str, torch.Tensor], track: bool = False):
        img, support = render(p, self.dataset.resolution, device=self.dataset.device, track=track)
        return img.cpu(), {k: v.cpu() for k, v in support.items()}

    def _chunk(self, c: int) -> torch.Tensor:
        """uint8 images of chunk ``c`` (LRU-cached)."""
        if c in self._cache:
            self._cache.move_to_end(c)
            return self._cache[c]
        cs = self.dataset.chunk_size
        idx = torch.arange(c * cs, min((c + 1) * cs, len(self)))
        imgs = _to_u8(self._render(self.params.gather(idx))[0])
        self._cache[c] = imgs
        while len(self._cache) > self._max_chunks:
            self._cache.popitem(last=False)
        return imgs

    def _index(self, index) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"synthfaces/{self.split_name}: index out of range 0..{len(self) - 1}")
        return idx

    def images(self, index) -> torch.Tensor:
        """B×3×H×W float images in [-1, 1] (the dataset images, through the disk or the chunk cache)."""
        idx = self._index(index)
        u8 = self._cached("images", idx, self._render_images_u8)
        if u8 is not None:
            return _from_u8(u8)
        cs = self.dataset.chunk_size
        return torch.stack([_from_u8(self._chunk(int(i) // cs)[int(i) % cs]) for i in idx])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        i = int(i)
        if i < 0:
            i += len(self)
        idx = self._index(i)
        return {
            "image": self.images(idx)[0],
            "labels": self.params.labels[i].clone(),
            "identity": self.params.identity[i].clone(),
            "index": torch.tensor(i, dtype=torch.long),
        }

    def __getitems__(self, indices: list[int]) -> list[dict[str, torch.Tensor]]:
        """The items ``indices`` (what ``__getitem__`` gives for each), their images fetched in one call.

        ``DataLoader`` calls this for a whole batch (``Subset`` forwards it), which saves the
        per-item round trip through the caches.
        """
        idx = torch.as_tensor([int(i) + len(self) if int(i) < 0 else int(i) for i in indices], dtype=torch.long)
        images = self.images(idx)
        return [{"image": images[k], "labels": self.params.labels[i].clone(),
                 "identity": self.params.identity[i].clone(), "index": torch.tensor(int(i), dtype=torch.long)}
                for k, i in enumerate(idx.tolist())]

    # -- ground truth -----------------------------------------------------------------
    def labels_matrix(self) -> torch.Tensor:
        """N×A labels straight from the sampled factors (no rendering)."""
        return self.params.labels.clone()

    def identities(self) -> torch.Tensor:
        return self.params.identity.clone()

    def identity_params(self, index) -> torch.Tensor:
        """B×P identity factors, standardised (zero mean, unit variance); names in ``identity_param_names``."""
        idx = self._index(index)
        return (self.params.latent[self.params.person[idx]] - 0.5) * math.sqrt(12.0)

    def _targets(self, idx: torch.Tensor, target) -> torch.Tensor:
        t = torch.as_tensor(target).reshape(-1).to(torch.float32)
        if t.numel() == 1 and idx.numel() != 1:
            t = t.expand(idx.numel())
        if t.numel() != idx.numel():
            raise DataError(f"target has {t.numel()} values for {idx.numel()} indices")
        if not bool(((t == 0) | (t == 1)).all()):
            raise DataError("target values must be 0 or 1")
        return t

    def counterfactuals(self, index, attribute: str, target) -> torch.Tensor:
        """B×3×H×W: the same person, pose and light with ``attribute`` set to ``target``, all else equal.

        Where ``target`` equals the current label the dataset image itself is returned (bit-identical).
        """
        col = self.dataset.attribute_index(attribute)
        idx = self._index(index)
        t = self._targets(idx, target)
        out = self.images(idx)
        flip = (self.params.labels[idx, col] != t).nonzero().flatten()
        if not flip.numel():
            return out
        # a flip sets the attribute to 1 - label: the cached "flipped" render of the image
        u8 = self._cached(f"flipped_{attribute}", idx[flip],
                          lambda start, stop: self._render_flipped_u8(attribute, start, stop))
        if u8 is not None:
            out[flip] = _from_u8(u8)
        else:
            p = self.params.gather(idx[flip])
            p[attribute] = t[flip]
            out[flip] = self._render(p)[0]
        return out

    def region_masks(self, index, attribute: str) -> torch.Tensor:
        """B×1×H×W {0,1}: pixels that ``attribute`` can change in these images.

        Local attribute: the union, over both attribute values, of the support of every layer that
        depends on it, dilated by one pixel per 64 px of resolution.  Global attribute: the same
        union over the whole person (everything but the background).
        """
        self.dataset.attribute_index(attribute)
        idx = self._index(index)
        u8 = self._cached(f"mask_{attribute}", idx, lambda start, stop: self._render_masks_u8(attribute, start, stop))
        if u8 is not None:
            return u8.to(torch.float32)
        return self._render_masks(idx, attribute)

    def _render_masks(self, idx: torch.Tensor, attribute: str) -> torch.Tensor:
        key = attribute if self.dataset.group(attribute) == "local" else PERSON
        res = self.dataset.resolution
        mask = torch.zeros(idx.numel(), 1, res, res, dtype=torch.bool)
        for value in (0.0, 1.0):
            p = self.params.gather(idx)
            p[attribute] = torch.full_like(p[attribute], value)
            support = self._render(p, track=True)[1]
            if key in support:
                mask |= support[key]
        r = max(1, round(res / 64))
        return F.max_pool2d(mask.float(), 2 * r + 1, stride=1, padding=r)


@register_dataset("synthfaces")
class SynthFaces(FaceDataset):
    """Procedurally rendered faces whose every factor is known (see docs/synthfaces.md).

    Defaults: 1,000 training and 200 test identities × 5 images = 5,000 / 1,000 images at 64 px.
    ``seed`` fixes everything (bit-identical on CPU); ``device`` is where batches are rendered
    (results always come back on the CPU); ``chunk_size`` and ``cache_mb`` tune the in-memory item
    cache; ``disk_cache`` (default true) keeps every render in the on-disk render cache
    (``store.py``).  None of the last four changes a pixel, so none is part of ``fingerprint()``.
    """

    attributes = tuple(AttributeSpec(n, CELEBA_GROUPS[n]) for n in ATTRIBUTE_NAMES)
    has_masks = True
    has_identities = True
    location_free = True  # rendered from its options: no files to locate
    has_counterfactuals = True
    split_names = ("train", "test")
    identity_param_names: tuple[str, ...] = IDENTITY_PARAM_NAMES

    def __init__(self, resolution: int = 64, n_train_ids: int = 1000, n_test_ids: int = 200,
                 images_per_id: int = 5, seed: int = 0, device: str | torch.device = "cpu",
                 chunk_size: int = 64, cache_mb: float = 512, disk_cache: bool = True, **options):
        if not (isinstance(resolution, int) and MIN_RESOLUTION <= resolution <= MAX_RESOLUTION):
            raise DataError(f"synthfaces: resolution must be an int in {MIN_RESOLUTION}..{MAX_RESOLUTION}, "
                            f"got {resolution!r}")
        for name, val in (("n_train_ids", n_train_ids), ("n_test_ids", n_test_ids),
                          ("images_per_id", images_per_id), ("chunk_size", chunk_size)):
            if not isinstance(val, int) or val < 1:
                raise DataError(f"synthfaces: {name} must be a positive int, got {val!r}")
        if options:
            raise DataError(f"synthfaces: unknown options {sorted(options)}")
        super().__init__(resolution, n_train_ids=n_train_ids, n_test_ids=n_test_ids,
                         images_per_id=images_per_id, seed=int(seed))
        self.n_train_ids, self.n_test_ids = n_train_ids, n_test_ids
        self.images_per_id, self.seed = images_per_id, int(seed)
        self.device = torch.device(device)
        self.chunk_size, self.cache_mb = chunk_size, float(cache_mb)
        if not isinstance(disk_cache, bool):
            raise DataError(f"synthfaces: disk_cache must be true or false, got {disk_cache!r}")
        self.disk_cache = disk_cache
        self._splits: dict[str, SynthFacesSplit] = {}

    def fingerprint(self) -> dict:
        """The base fingerprint plus ``RENDERER_VERSION``: same options, new renderer -> new content."""
        return {**super().fingerprint(), "renderer_version": RENDERER_VERSION}

    def split(self, name: str) -> SynthFacesSplit:
        self._check_split(name)
        if name not in self._splits:
            n_ids, offset = ((self.n_train_ids, 0) if name == "train" else (self.n_test_ids, self.n_train_ids))
            params = sample_split(self.seed, name, n_ids, self.images_per_id, offset)
            self._splits[name] = SynthFacesSplit(self, name, params)
        return self._splits[name]
