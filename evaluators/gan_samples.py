"""Edits of a latent editor's own GAN samples, scored by the attribute judge (issue 13's first target).

Why a protocol of its own: InterFaceGAN's paper edits the GAN's own samples, where nothing is lost
before the edit; the grid's real-image protocol first inverts each test face, and the inversion's
error is charged to the editor too.  Scoring both tells a reader how much of InterFaceGAN's number
is its boundaries and how much its inversion (the ``inversion`` rows give the other half).

Protocol (``gan_samples_<judge tag>``): ``n`` codes drawn from the editor's GAN (its own sampling, a
fixed seed), the source and its edit synthesised at the dataset's resolution; GAN samples carry no
labels, so each sample's direction is the **judge's reading of its source** (0 → edited to 1 and
1 → 0).  Per direction: ``attr_success`` (share of edits the judge reads as the target) and
``attr_preserve`` (mean agreement of the other attributes with the source's reading), as in the grid.
The judge only grades here: the editor was fitted with its own labeller (``labeller`` stage).

    python -m evaluators.gan_samples --config configs/default.yaml --n 2000 [--strengths 1 2] [--grid DIR] [key=value ...]

Streams in batches (memory does not grow with ``n``); writes a JSON with ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)


@dataclass
class DirectionCounts:
    """Running counts of one direction (source read as ``1 - target``)."""

    n: int = 0
    success: int = 0
    agreements: int = 0  # integer counts: the score is exact whatever the batching

    def add(self, hit: torch.Tensor, agree: torch.Tensor) -> None:
        """``hit``: per image, edit read as the target; ``agree``: per image, other attributes agreeing."""
        self.n += int(hit.numel())
        self.success += int(hit.sum())
        self.agreements += int(agree.sum())

    def row(self, n_other: int) -> dict[str, Any]:
        """Rates of the counts; ``n_other`` attributes were read per image for ``attr_preserve``."""
        if self.n == 0:
            return {"n": 0, "attr_success": None, "attr_preserve": None}
        return {"n": self.n, "attr_success": self.success / self.n,
                "attr_preserve": self.agreements / (self.n * n_other)}


@dataclass
class SampleEditScore:
    """Both directions of one (attribute, strength), plus the judge's positive rate on the sources."""

    attribute: str
    strength: float
    n_other: int = 1  # attributes read for attr_preserve (all but the edited one)
    directions: dict[int, DirectionCounts] = field(default_factory=lambda: {0: DirectionCounts(), 1: DirectionCounts()})
    positives: int = 0

    def summary(self, tag: str) -> dict[str, Any]:
        n = sum(d.n for d in self.directions.values())
        rows = {f"{1 - t}->{t}": self.directions[t].row(self.n_other) for t in (1, 0)}
        successes = [r["attr_success"] for r in rows.values() if r["attr_success"] is not None]
        return {"protocol": f"gan_samples_{tag}", "attribute": self.attribute, "strength": self.strength, "n": n,
                "source_positive_rate": self.positives / n if n else None, "directions": rows,
                "attr_success_mean": sum(successes) / len(successes) if successes else None}


@torch.no_grad()
def score_sample_edits(editor: Any, judge: Any, attribute: str, n: int, strength: float = 1.0, seed: int = 0,
                       batch: int = 250, size: int | None = None) -> SampleEditScore:
    """Edit ``n`` of ``editor``'s GAN samples across ``attribute`` and read them with ``judge``.

    ``editor`` must offer ``sample_codes(n, seed)``, ``synthesize(codes, size)`` and
    ``edit_codes(codes, target, strength)`` (InterFaceGAN's latent API).  All ``n`` codes are drawn
    at once (n × code size floats, small) and the images made per batch, so the samples and the
    score do not depend on ``batch``.
    """
    for name in ("sample_codes", "synthesize", "edit_codes"):
        if not callable(getattr(editor, name, None)):
            raise TypeError(f"{type(editor).__name__} has no {name}(): it is not a latent editor with a GAN of its own")
    if attribute not in judge.attribute_names:
        raise KeyError(f"the judge {judge.tag!r} does not score {attribute!r} (it scores {', '.join(judge.attribute_names)})")
    ai = judge.attribute_names.index(attribute)
    others = [i for i in range(len(judge.attribute_names)) if i != ai]
    score = SampleEditScore(attribute, float(strength), max(len(others), 1))
    all_codes = editor.sample_codes(n, seed=seed)
    for start in range(0, n, batch):
        codes = all_codes[start:start + batch]
        m = codes.shape[0]
        src_pred = judge.predict(editor.synthesize(codes, size).clamp(-1, 1))
        target = 1 - src_pred[:, ai]
        edited = editor.synthesize(editor.edit_codes(codes, target.to(codes), strength), size).clamp(-1, 1)
        pred = judge.predict(edited)
        agree = (pred[:, others] == src_pred[:, others]).sum(1) if others else torch.ones(m, dtype=torch.long)
        for t in (0, 1):
            sel = target == t
            score.directions[t].add(pred[sel, ai] == t, agree[sel])
        score.positives += int(src_pred[:, ai].sum())
    return score


@torch.no_grad()
def sample_edit_grid(editor: Any, k: int = 8, strength: float = 1.0, seed: int = 0,
                     size: int | None = None) -> torch.Tensor:
    """The first ``k`` samples of ``score_sample_edits``' draw as three rows: source, edited to 1, edited to 0.

    Why: a success rate on GAN samples says nothing about *what* the boundary changes (a smile, or
    the whole face); this is the picture to look at beside the number.  Both targets are shown for
    every sample, so a reader also sees what "editing" a sample that already has the attribute does.
    Returns a [3k, 3, H, W] batch in [-1, 1], rows in that order (``torchvision``'s ``make_grid``
    with ``nrow=k`` lays it out).
    """
    codes = editor.sample_codes(k, seed=seed)
    rows = [editor.synthesize(codes, size)]
    for t in (1.0, 0.0):
        target = torch.full((k,), t, dtype=codes.dtype, device=codes.device)
        rows.append(editor.synthesize(editor.edit_codes(codes, target, strength), size))
    return torch.cat(rows).clamp(-1, 1)


def _save_grid(images: torch.Tensor, k: int, path: Path) -> None:
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image((images + 1) / 2, path, nrow=k, padding=1)


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m evaluators.gan_samples", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/default.yaml", help="the grid config whose dataset, fits and judge are used")
    p.add_argument("--method", default="interfacegan", help="a latent editor of the config (default interfacegan)")
    p.add_argument("--n", type=int, default=2000, help="GAN samples per attribute and strength (default 2000)")
    p.add_argument("--strengths", type=float, nargs="+", default=[1.0], help="edit strengths (default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--device", default=None, help="torch device (default: the config's)")
    p.add_argument("--out", default=None, help="write every summary as JSON here")
    p.add_argument("--grid", default=None, metavar="DIR",
                   help="also save DIR/gan_samples_<attribute>_s<strength>.png: the first 8 samples, edited to 1 and to 0")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value, as for run_benchmark.py")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from benchmark.config import load_config
    from benchmark.runner import GridRunner, resolve_device
    from evaluators.attributes import grid_judge

    a = _args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_config(a.config, a.overrides)
    device = resolve_device(a.device or cfg.device)
    with tempfile.TemporaryDirectory() as run_dir:  # fits.jsonl of the lookups only; nothing else is written
        runner = GridRunner(cfg, Path(run_dir), device)
        runner.progress = False
        judge = grid_judge(cfg, runner.dataset, runner.attributes[0], device)  # the very judge a run scores with
        out = []
        for attr in runner.attributes:
            editor = runner.editor_for(a.method, attr, cfg.seeds[0])
            for s in a.strengths:
                summary = score_sample_edits(editor, judge, attr, a.n, s, a.seed, a.batch,
                                             size=runner.dataset.resolution).summary(judge.tag)
                summary["fit_key"] = runner.fit_keys.get((a.method, attr, cfg.seeds[0]))
                out.append(summary)
                if a.grid:
                    _save_grid(sample_edit_grid(editor, 8, s, a.seed, runner.dataset.resolution), 8,
                               Path(a.grid) / f"gan_samples_{attr}_s{s:g}.png")
                d = summary["directions"]
                print(f"{a.method} {attr:<11} strength {s:g}: 0->1 {_fmt(d['0->1'])}  1->0 {_fmt(d['1->0'])}  "
                      f"(sources positive {summary['source_positive_rate']:.3f}, n {summary['n']})", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


def _fmt(row: dict[str, Any]) -> str:
    if not row["n"]:
        return "n 0"
    return f"success {row['attr_success']:.3f} preserve {row['attr_preserve']:.3f} (n {row['n']})"


if __name__ == "__main__":
    sys.exit(main())
