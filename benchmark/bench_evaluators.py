"""Throughput and peak memory of the evaluators that run offline, on synthetic 64 px images.

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmark.bench_evaluators [--sizes 1000 10000] [--only leak lpips]

Each (evaluator, n) runs in a fresh subprocess so that peak-memory figures do
not contaminate each other:

* ``py_peak`` - tracemalloc's peak of Python-heap allocations (numpy arrays included)
  during streaming + finalize;
* ``rss_peak`` - the process's peak RSS during streaming + finalize, above its RSS just before
  (torch CPU tensors count here).  psutil is not installed: on Linux the high-water mark is reset
  by writing 5 to /proc/self/clear_refs and read back as VmHWM from /proc/self/status; elsewhere
  it falls back to the growth of ``resource.getrusage`` ru_maxrss (a lifetime peak, which can hide
  growth below the peak reached while importing).

A streaming evaluator shows the same memory at 1k and 10k images.  Images are
generated per batch (smooth random faces-sized noise), so the generator holds
no data set in memory either.  The LPIPS trunk and the FID feature net are
seeded random networks here (the ImageNet/Inception weights are not on this
machine): the compute per image is the same as with the real weights.

``SmoothNoiseFaces`` is also the tiny in-memory dataset of the evaluator tests.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.data.base import CELEBA_GROUPS, AttributeSpec, FaceDataset, FaceSplit

REPO = Path(__file__).resolve().parents[1]


def smooth_images(n: int, resolution: int = 64, seed: int = 0, coarse: int = 8) -> torch.Tensor:
    """n×3×R×R smooth random images in [-1, 1] (bilinear upsampling of coarse noise), deterministic."""
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n, 3, coarse, coarse, generator=g)
    return torch.tanh(F.interpolate(low, size=(resolution, resolution), mode="bilinear", align_corners=False))


class _NoiseSplit(FaceSplit):
    def __init__(self, dataset: "SmoothNoiseFaces", name: str, n: int, seed: int):
        self.dataset, self.split_name, self.n, self.seed = dataset, name, n, seed
        g = torch.Generator().manual_seed(seed + 1)
        self.labels = (torch.rand(n, len(dataset.attributes), generator=g) < 0.5).float()

    def __len__(self) -> int:
        return self.n

    def image(self, i: int) -> torch.Tensor:
        img = smooth_images(1, self.dataset.resolution, seed=self.seed * 1_000_003 + i)[0]
        shift = 0.3 * (self.labels[i, 0] * 2 - 1)  # attribute 0 brightens / darkens: two distinct populations
        u8 = ((img + shift).clamp(-1, 1).add(1).mul(127.5)).round()
        return u8 / 127.5 - 1.0  # exactly representable as uint8, like a decoded image file

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return {"image": self.image(i), "labels": self.labels[i], "identity": torch.tensor(-1),
                "index": torch.tensor(i)}

    def labels_matrix(self) -> torch.Tensor:
        return self.labels.clone()


class SmoothNoiseFaces(FaceDataset):
    """A synthetic, generated-on-demand dataset for evaluator tests and benchmarks (not registered)."""

    name = "smooth_noise_faces"
    attributes = tuple(AttributeSpec(a, CELEBA_GROUPS[a]) for a in ("Smiling", "Male"))  # type: ignore[arg-type]
    has_masks = True
    has_counterfactuals = True

    def __init__(self, resolution: int = 64, n_train: int = 16, n_test: int = 64, seed: int = 0, **options):
        super().__init__(resolution, n_train=n_train, n_test=n_test, seed=seed, **options)
        self.sizes = {"train": n_train, "test": n_test}
        self.seed = seed

    def split(self, name: str) -> FaceSplit:
        self._check_split(name)
        return _NoiseSplit(self, name, self.sizes[name], self.seed * 2 + (name == "test"))


def box_masks(n: int, resolution: int) -> torch.Tensor:
    """n×1×R×R masks of the lower-middle box (a stand-in mouth region)."""
    m = torch.zeros(n, 1, resolution, resolution)
    m[:, :, resolution // 2: resolution * 7 // 8, resolution // 4: resolution * 3 // 4] = 1.0
    return m


# -- benchmark -------------------------------------------------------------------------------------

BATCH = 64
EVALUATORS = ("leak", "counterfactual", "lpips", "fid_tinyrand")


def _build(name: str, n: int):
    """An evaluator whose heavy network (if any) is a seeded random one, plus its extras maker."""
    from evaluators.base import EvalContext
    from evaluators.counterfactual import CounterfactualEvaluator
    from evaluators.features import tiny_random_features
    from evaluators.fid import CleanFidEvaluator
    from evaluators.leak import LeakEvaluator
    from evaluators.lpips_metric import LpipsEvaluator, build_lpips

    cpu = torch.device("cpu")
    ctx = EvalContext(SmoothNoiseFaces(64, n_test=256), "Smiling", direction=1, device=cpu)
    random_lpips = build_lpips(cpu, trunk="random", seed=0)

    class RandLpips(LpipsEvaluator):
        def model(self):
            return random_lpips

    class RandCf(CounterfactualEvaluator):
        def lpips(self):
            return random_lpips

    class TinyFid(CleanFidEvaluator):
        def build_extractor(self, ctx):
            return tiny_random_features(cpu, seed=0, dim=64)

    cls = {"leak": LeakEvaluator, "counterfactual": RandCf, "lpips": RandLpips, "fid_tinyrand": TinyFid}[name]
    extras = {"leak": lambda b, s: {"mask": box_masks(b, 64)},
              "counterfactual": lambda b, s: {"counterfactual": smooth_images(b, 64, seed=s + 7)}}.get(
        name, lambda b, s: {})
    return cls(ctx), extras


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _status_kib("VmHWM") is not None
    except OSError:
        return False


def measure(name: str, n: int) -> dict:
    """Stream ``n`` synthetic images through evaluator ``name``; time and memory figures."""
    evaluator, extras = _build(name, n)
    if name == "fid_tinyrand":
        evaluator.finalize()  # builds and caches the (fixed-size) reference statistics outside the measurement
    labels = torch.zeros(BATCH, 2)
    hwm = _reset_peak_rss()
    rss0 = _status_kib("VmRSS") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    t0 = time.perf_counter()
    done = 0
    while done < n:
        b = min(BATCH, n - done)
        src = smooth_images(b, 64, seed=done)
        edited = (src + 0.1 * smooth_images(b, 64, seed=done + 10**6)).clamp(-1, 1)
        evaluator.update(src, edited, labels[:b], torch.ones(b), **extras(b, done))
        done += b
    values = evaluator.finalize()
    seconds = time.perf_counter() - t0
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = _status_kib("VmHWM") if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"evaluator": name, "n": n, "seconds": seconds, "images_per_s": n / seconds,
            "py_peak_mib": py_peak / 2**20, "rss_peak_mib": (rss1 - rss0) / 1024,
            "rss_before_mib": rss0 / 1024, "hwm_reset": hwm, "values": values}


def _child(name: str, n: int, cache: str) -> dict:
    import os

    env = {**os.environ, "FACEEDIT_CACHE": cache, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    out = subprocess.run([sys.executable, "-m", "benchmark.bench_evaluators", "--child", name, str(n)],
                         cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--only", nargs="+", choices=EVALUATORS, default=list(EVALUATORS))
    ap.add_argument("--child", nargs=2, metavar=("EVALUATOR", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        torch.set_num_threads(1)
        print(json.dumps(measure(args.child[0], int(args.child[1])), default=float))
        return
    import tempfile

    print(f"{'evaluator':<16}{'n':>7}{'img/s':>10}{'py_peak MiB':>13}{'rss_peak MiB':>14}{'rss_before MiB':>16}")
    with tempfile.TemporaryDirectory() as cache:
        for name in args.only:
            for n in args.sizes:
                r = _child(name, n, cache)
                print(f"{name:<16}{n:>7}{r['images_per_s']:>10.1f}{r['py_peak_mib']:>13.2f}"
                      f"{r['rss_peak_mib']:>14.1f}{r['rss_before_mib']:>16.1f}", flush=True)


if __name__ == "__main__":
    main()
