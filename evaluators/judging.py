"""Judge forwards shared between evaluators, the two directions of a cell and the cells of a run.

Several evaluators run the same scoring network on the same images: ``attributes`` and
``fid_classifier`` both run the attribute classifier on the edited images, and ``attributes`` and
``id_synth`` run their networks on the *source* images, which are the same dataset images in every
cell of a run (and, for the no-op editor, the edited images too).  The runner hands evaluators that
list ``"judge_memo"`` in ``requires`` a ``JudgeMemo`` for the batch (one per direction); they ask it
for a network's output instead of calling the network, and it calls the network once:

* ``memo.run(model, kind, "source", fn)``: ``fn(source images)``, kept across cells (process-wide,
  bounded) under the split and the exact list of indices of this batch-direction;
* ``memo.run(model, kind, "edited", fn)``: ``fn(edited images)``, kept for this batch-direction, so
  the second evaluator asking gets the first one's tensor.  Where the edited images *are* the source
  images (bit for bit) it is the source's output;
* ``memo.source_rows(model, kind, fn)``: ``fn(source images)`` kept per source IMAGE, so every cell
  and direction of the run shares it; only for an ``fn`` that is batch-invariant bit for bit (dlib's
  alignment and descriptor; see the exactness note below for why the others are kept per batch);
* ``memo.quantised()``: the edited images through the 8-bit quantisation (``to_uint8``) the FID
  features see, and whether that changed anything (an editor whose output is already 8-bit exact,
  like the oracle and the no-op editor, lets FID reuse the classifier pass of ``attributes``).

Exactness: every output is what the evaluator's own call would have computed, on the same images in
the same batch: the memo only avoids computing it twice.  Why not score each source image once per
split instead, in batches of our choosing: a network's output for an image depends, in the last
bits, on the size of the batch it rides in (oneDNN and MKL pick other kernels for small batches;
measured here: the classifier differs for a batch of 1, the identity embedder for batches of up to 5,
by ~1e-6), so batches other than the evaluators' own would change reported numbers.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Literal, Sequence

import torch

from evaluators.base import to_uint8

Which = Literal["source", "edited"]

# Source-side outputs kept per network across cells, bounded by the image rows they hold (each kind
# counts): 50,000 rows of 512-d features are ~100 MB; the default grid holds 10,000 (500 images × 10
# attributes × 2 kinds).
MAX_SOURCE_ROWS = 50_000


class _SourceOutputs:
    """LRU of one network's outputs on source batches: (split, kind, indices) -> output."""

    def __init__(self) -> None:
        self.items: OrderedDict[tuple, Any] = OrderedDict()
        self.rows = 0

    def get(self, key: tuple) -> Any | None:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: tuple, value: Any, rows: int) -> None:
        self.items[key] = (value, rows)
        self.rows += rows
        while self.rows > MAX_SOURCE_ROWS and len(self.items) > 1:
            _, (_, r) = self.items.popitem(last=False)
            self.rows -= r


_SOURCE: "weakref.WeakKeyDictionary[Any, _SourceOutputs]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()
stats = {"source_hits": 0, "source_misses": 0, "edited_hits": 0, "edited_misses": 0, "edited_is_source": 0,
         "row_hits": 0, "row_misses": 0}


def clear() -> None:
    """Forget every kept source output (tests; a changed dataset under the same split token)."""
    with _LOCK:
        _SOURCE.clear()
    for k in stats:
        stats[k] = 0


def _source_outputs(model: Any) -> _SourceOutputs:
    with _LOCK:
        table = _SOURCE.get(model)
        if table is None:
            table = _SOURCE[model] = _SourceOutputs()
        return table


class JudgeMemo:
    """Outputs of judge networks on one batch-direction (``select``) of one runner batch.

    ``source`` must be exactly the split's images at ``index`` (the runner's guarantee; the split is
    named by ``split_token``), ``edited`` the editor's output for them.
    """

    def __init__(self, source: torch.Tensor, edited: torch.Tensor, index: torch.Tensor, split_token: tuple):
        self.source, self.edited = source, edited
        self.index = torch.as_tensor(index).reshape(-1).cpu()
        self.split_token = split_token
        self._edited: dict[tuple[int, str], Any] = {}
        self._edited_models: list[Any] = []  # keeps the models alive as long as their id() keys
        self._is_source: bool | None = None
        self._quantised: tuple[torch.Tensor, bool] | None = None

    def select(self, sel: torch.Tensor) -> "JudgeMemo":
        """The memo of the images ``sel`` (a bool mask over the batch): one per direction."""
        sel_cpu = sel.cpu()
        return JudgeMemo(self.source[sel.to(self.source.device)], self.edited[sel.to(self.edited.device)],
                         self.index[sel_cpu], self.split_token)

    def __len__(self) -> int:
        return int(self.index.numel())

    @property
    def edited_is_source(self) -> bool:
        """True when the editor returned the source images unchanged (bit for bit): the no-op editor."""
        if self._is_source is None:
            self._is_source = bool(self.source.shape == self.edited.shape and torch.equal(self.source, self.edited))
        return self._is_source

    def quantised(self) -> tuple[torch.Tensor, bool]:
        """(edited images through ``to_uint8`` back to [-1, 1] floats on the CPU, whether that equals ``edited``).

        The same ops as ``evaluators.features.ClassifierFeatures`` applies, so the tensor is the one
        FID's classifier features would be computed from.
        """
        if self._quantised is None:
            q = to_uint8(self.edited).float().div_(127.5).sub_(1.0)
            same = bool(q.shape == self.edited.shape and torch.equal(q, self.edited.detach().float().cpu()))
            self._quantised = (q, same)
        return self._quantised

    def run(self, model: Any, kind: str, which: Which, fn: Callable[[torch.Tensor], Any]) -> Any:
        """``fn(images)`` for the source or the edited images of this batch-direction, computed once.

        ``model`` is the network object ``fn`` runs (outputs of different objects never mix);
        ``kind`` names what ``fn`` returns of it (``"features"``, ``"logits"``, ...).  ``fn`` must be
        a pure function of its input tensor.  Returns whatever ``fn`` returns (do not modify it).
        """
        if which == "edited" and self.edited_is_source:
            stats["edited_is_source"] += 1
            which = "source"
        if which == "source":
            return self._run_source(model, kind, fn)
        if which != "edited":
            raise ValueError(f"which must be 'source' or 'edited', not {which!r}")
        key = (id(model), kind)
        if key in self._edited:
            stats["edited_hits"] += 1
            return self._edited[key]
        stats["edited_misses"] += 1
        with torch.inference_mode():
            out = fn(self.edited)
        self._edited[key] = out
        self._edited_models.append(model)
        return out

    def source_rows(self, model: Any, kind: str, fn: Callable[[torch.Tensor], Sequence[Any]]) -> list[Any]:
        """``fn(source images)`` image by image: each source image of the split is computed once per
        process, whatever batch, direction or cell asks, and only the missing ones are computed.

        Only for an ``fn`` whose item for an image does not depend on the other images of its batch (bit
        for bit: dlib's detector and descriptor, tested); ``run`` keeps whole batches for the networks
        whose outputs do.  ``fn`` returns one item per image.  Returns the items in batch order."""
        table = _source_outputs(model)
        keys = [(self.split_token, kind, "row", i) for i in self.index.tolist()]
        with _LOCK:
            got = [table.get(k) for k in keys]
        missing = [j for j, hit in enumerate(got) if hit is None]
        stats["row_hits"] += len(keys) - len(missing)
        stats["row_misses"] += len(missing)
        if missing:
            sel = torch.tensor(missing, dtype=torch.long)
            with torch.inference_mode():
                items = list(fn(self.source[sel.to(self.source.device)]))
            if len(items) != len(missing):
                raise ValueError(f"{kind}: fn returned {len(items)} items for {len(missing)} images")
            with _LOCK:
                for j, item in zip(missing, items):
                    table.put(keys[j], item, 1)
                    got[j] = (item, 1)
        return [hit[0] for hit in got]

    def _run_source(self, model: Any, kind: str, fn: Callable[[torch.Tensor], Any]) -> Any:
        table = _source_outputs(model)
        key = (self.split_token, kind, tuple(self.index.tolist()))
        with _LOCK:
            hit = table.get(key)
        if hit is not None:
            stats["source_hits"] += 1
            return hit[0]
        stats["source_misses"] += 1
        with torch.inference_mode():
            out = fn(self.source)
        with _LOCK:
            table.put(key, out, len(self))
        return out


def split_token(dataset: Any, split_name: str) -> tuple:
    """Names the images of a split for the memo: the dataset's content fingerprint and the split."""
    import json

    return (json.dumps(dataset.fingerprint(), sort_keys=True, default=str), split_name)
