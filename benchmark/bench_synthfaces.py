"""Speed of SynthFaces on this machine: rendering, item access, masks, counterfactuals, the render cache.

    OMP_NUM_THREADS=1 python -m benchmark.bench_synthfaces [--resolution 64] [--batch 64]

Prints images per second; the figures in docs/synthfaces.md come from this script.  Rendering
figures use ``disk_cache=False`` (they measure the renderer); the render-cache lines build the
on-disk cache in a scratch directory and read it back (``store.py``).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch

from benchmark.data.synthfaces import SynthFaces
from benchmark.data.synthfaces.params import sample_split
from benchmark.data.synthfaces.render import render


def _rate(n: int, fn, repeat: int = 3) -> float:
    """Best-of-``repeat`` images per second of ``fn`` producing ``n`` images."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    res, b = args.resolution, args.batch
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, {res} px")
    p = sample_split(0, "train", b, 1, 0).gather(torch.arange(b))
    print(f"render batch {b}:            {_rate(b, lambda: render(p, res, device=args.device)):8.0f} img/s")
    print(f"render batch {b} + supports: {_rate(b, lambda: render(p, res, device=args.device, track=True)):8.0f} img/s")

    n = 4 * b
    fresh = lambda disk=False: SynthFaces(resolution=res, n_train_ids=n, n_test_ids=1,  # noqa: E731
                                          images_per_id=1, device=args.device, disk_cache=disk).split("train")
    cold = lambda: (lambda s: [s[i] for i in range(n)])(fresh())  # noqa: E731
    print(f"items, cold cache (renders): {_rate(n, cold, 2):8.0f} img/s")
    sp = fresh()
    _ = [sp[i] for i in range(n)]
    perm = torch.randperm(n).tolist()
    print(f"items, warm cache (random):  {_rate(n, lambda: [sp[i] for i in perm]):8.0f} img/s")
    idx = torch.arange(b)
    tgt = 1 - sp.labels_matrix()[idx, sp.dataset.attribute_index("Smiling")]
    print(f"counterfactuals (all flip):  {_rate(b, lambda: sp.counterfactuals(idx, 'Smiling', tgt)):8.0f} img/s")
    print(f"region_masks (2 renders):    {_rate(b, lambda: sp.region_masks(idx, 'Smiling')):8.0f} img/s")
    with tempfile.TemporaryDirectory() as tmp:
        old, os.environ["FACEEDIT_CACHE"] = os.environ.get("FACEEDIT_CACHE"), tmp
        try:
            items = torch.arange(n)
            t0 = time.perf_counter()
            fresh(True).images(items)
            build = time.perf_counter() - t0
            print(f"render cache: build {n} images: {n / build:8.0f} img/s; read back (new split, digests "
                  f"verified): {_rate(n, lambda: fresh(True).images(items)):8.0f} img/s")
            sc = fresh(True)
            sc.region_masks(idx, "Smiling")
            print(f"render cache: masks + counterfactuals read: "
                  f"{_rate(b, lambda: (sc.region_masks(idx, 'Smiling'), sc.counterfactuals(idx, 'Smiling', tgt))):8.0f} img/s")
        finally:
            if old is None:
                os.environ.pop("FACEEDIT_CACHE")
            else:
                os.environ["FACEEDIT_CACHE"] = old
    t0 = time.perf_counter()
    _ = SynthFaces(resolution=res, n_train_ids=1000, n_test_ids=200, disk_cache=False).split("train").labels_matrix()
    print(f"labels_matrix of the default train split (5,000 images): {1000 * (time.perf_counter() - t0):.1f} ms")


if __name__ == "__main__":
    main()
