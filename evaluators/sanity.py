"""Metric sanity sweeps (issue 15): controlled degradations scored by the benchmark's own judges.

Why: every editor is ranked by our scoring networks; on SynthFaces we can render exactly what an
edit should have produced, so we can check that each judge-based metric moves the way its name
promises before any editor's number is read.  The sweeps go through the real evaluators
(``id_synth``, ``attributes``) with the same options a grid would pass, so what is checked is the
metric, not a re-implementation of it.

Degradations of the test images ``x`` (``KINDS``), each at ``LEVELS`` (0 = untouched, 1 = strongest):

* ``blend_mean``: ``(1 - w) x + w m``, ``m`` the mean training face (a different, average person);
* ``blend_other``: ``(1 - w) x + w o``, ``o`` ANOTHER person rendered with x's attributes, pose,
  light, background and clothes (only the identity factors and the per-person styling swapped), so
  only identity changes; at w = 1 it is that other person;
* ``blur`` (Gaussian, σ up to 3 px per 64 px), ``noise`` (Gaussian, std up to 0.3 in [-1, 1] units),
  ``colour`` (a per-channel gain/offset cast of up to ±0.3): changes that are not identity at all
  but that editors' artefacts resemble.

Beside them, the **counterfactual** of every attribute and direction (the oracle's output: the same
person with one attribute flipped) is scored: an identity metric must stay high there.

For ``attr_success``: a share s of the images is replaced by its counterfactual (the rest stay
unedited); a judge that sees the attribute scores ≈ s (plus the no-op error rate on the rest).

``python -m evaluators.sanity`` runs every sweep on the default judges (cached; trained first if
absent) and writes ``docs/figures/metric_sanity.{png,pdf}`` and a JSON of every point;
``python -m evaluators.sanity --misses`` prints only the oracle-miss table (``oracle_misses``: which
exact counterfactuals the attribute judge misreads, ranked by how visible they are).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Iterable

import torch

from benchmark.data.synthfaces.params import IDENTITY_PARAM_NAMES, STYLE_PARAM_NAMES
from evaluators.base import EvalContext
from evaluators.judge_data import _blur

log = logging.getLogger(__name__)

LEVELS: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
KINDS: tuple[str, ...] = ("blend_mean", "blend_other", "blur", "noise", "colour")
IDENTITY_KINDS = ("blend_mean", "blend_other")  # the ones that really change who it is


def other_person(split: Any, index: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Each image re-rendered as another person of the split: identity factors and per-person
    styling from a different identity, everything else (attributes, pose, light, clothes) kept."""
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    params = split.params
    gen = torch.Generator().manual_seed(seed)
    donors = torch.randint(0, len(split), (len(index),), generator=gen)
    same = params.identity[donors] == params.identity[index]
    while bool(same.any()):  # a donor must be someone else
        donors[same] = torch.randint(0, len(split), (int(same.sum()),), generator=gen)
        same = params.identity[donors] == params.identity[index]
    p = params.gather(index)
    q = params.gather(donors)
    for name in IDENTITY_PARAM_NAMES + STYLE_PARAM_NAMES:
        p[name] = q[name]
    return split._render(p)[0]


def mean_face(dataset: Any, n: int = 500) -> torch.Tensor:
    """1×3×H×W: the pixel mean of the first ``n`` training images."""
    train = dataset.split("train")
    idx = torch.arange(min(n, len(train)))
    total = sum(train.images(idx[s:s + 128]).double().sum(0, keepdim=True) for s in range(0, len(idx), 128))
    return (total / len(idx)).float()


def degrade(kind: str, x: torch.Tensor, level: float, mean: torch.Tensor, other: torch.Tensor,
            seed: int = 0) -> torch.Tensor:
    """``x`` degraded by ``kind`` at ``level`` in [0, 1] (level 0 returns ``x`` unchanged)."""
    if kind not in KINDS:
        raise ValueError(f"unknown degradation {kind!r}; valid: {', '.join(KINDS)}")
    if level == 0:
        return x.clone()
    if kind == "blend_mean":
        return (1 - level) * x + level * mean.to(x)
    if kind == "blend_other":
        return (1 - level) * x + level * other.to(x)
    if kind == "blur":
        return _blur(x, 3.0 * level * x.shape[-1] / 64)
    gen = torch.Generator().manual_seed(seed)
    if kind == "noise":
        return (x + 0.3 * level * torch.randn(x.shape, generator=gen)).clamp(-1, 1)
    sign = torch.randint(0, 2, (x.shape[0], 3, 1, 1), generator=gen).float() * 2 - 1
    return (x * (1 + 0.3 * level * sign) + 0.3 * level * sign.flip(1)).clamp(-1, 1)


def _evaluate(evaluator: Any, source: torch.Tensor, edited: torch.Tensor, labels: torch.Tensor,
              target: torch.Tensor, index: torch.Tensor) -> dict[str, float]:
    evaluator.reset()
    evaluator.update(source, edited, labels, target, index=index)
    return evaluator.finalize()


def identity_sweeps(dataset: Any, options: dict | None = None, n: int = 96, device: str = "cpu",
                    levels: Iterable[float] = LEVELS, attribute: str = "Smiling") -> list[dict]:
    """Rows {kind, level, id_cos, id_param_err} of ``id_synth`` on degraded test images.

    ``attribute`` is the cell's attribute passed to the evaluator (it only decides which factors
    ``id_param_err`` leaves out; a local one hides almost none)."""
    from evaluators.identity import SynthIdentityEvaluator

    test = dataset.split("test")
    idx = torch.arange(min(n, len(test)))
    x = test.images(idx)
    labels = test.labels_matrix()[idx]
    col = dataset.attribute_index(attribute)
    target = 1 - labels[:, col]
    mean, other = mean_face(dataset), other_person(test, idx)
    ev = SynthIdentityEvaluator(EvalContext(dataset, attribute, 1, torch.device(device)), **(options or {}))
    rows = []
    for kind in KINDS:
        for level in levels:
            out = _evaluate(ev, x, degrade(kind, x, level, mean, other), labels, target, idx)
            rows.append({"kind": kind, "level": float(level), "id_cos": out[ev.cos_metric],
                         "id_param_err": out[ev.param_metric]})
    return rows


def _directions(labels: torch.Tensor, col: int, n: int | None) -> list[tuple[int, torch.Tensor]]:
    """(target value, the first ``n`` test indices that carry the other value; ``None``: all) for each
    target of attribute column ``col`` that has any such image: the images an edit to it starts from."""
    out = []
    for t in (0, 1):
        idx = torch.nonzero(labels[:, col] != t).flatten()[:n]
        if len(idx):
            out.append((t, idx))
    return out


def counterfactual_identity(dataset: Any, attributes: Iterable[str], options: dict | None = None,
                            n: int = 96, device: str = "cpu") -> list[dict]:
    """Rows {attribute, direction, n, id_cos, id_param_err}: ``id_synth`` on the exact counterfactuals."""
    from evaluators.identity import SynthIdentityEvaluator

    test = dataset.split("test")
    labels_all = test.labels_matrix()
    rows = []
    for attribute in attributes:
        col = dataset.attribute_index(attribute)
        ev = None
        for t, idx in _directions(labels_all, col, n):
            ev = ev or SynthIdentityEvaluator(EvalContext(dataset, attribute, t, torch.device(device)),
                                              **(options or {}))
            tgt = torch.full((len(idx),), float(t))
            out = _evaluate(ev, test.images(idx), test.counterfactuals(idx, attribute, tgt), labels_all[idx], tgt, idx)
            rows.append({"attribute": attribute, "direction": f"{1 - t}to{t}", "n": len(idx),
                         "id_cos": out[ev.cos_metric], "id_param_err": out[ev.param_metric]})
    return rows


def attribute_share_sweep(dataset: Any, attributes: Iterable[str], options: dict | None = None,
                          n: int = 96, device: str = "cpu", levels: Iterable[float] = LEVELS) -> list[dict]:
    """Rows {attribute, direction, share, attr_success}: a share of the images really carries the target."""
    from evaluators.attributes import AttributeEvaluator

    test = dataset.split("test")
    labels_all = test.labels_matrix()
    rows = []
    for attribute in attributes:
        col = dataset.attribute_index(attribute)
        for t, idx in _directions(labels_all, col, n):
            ev = AttributeEvaluator(EvalContext(dataset, attribute, t, torch.device(device)), **(options or {}))
            tgt = torch.full((len(idx),), float(t))
            x = test.images(idx)
            cf = test.counterfactuals(idx, attribute, tgt)
            order = torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))
            for share in levels:
                k = int(round(share * len(idx)))
                mixed = x.clone()
                mixed[order[:k]] = cf[order[:k]]
                out = _evaluate(ev, x, mixed, labels_all[idx], tgt, idx)
                succ = next(v for key, v in out.items() if key.startswith("attr_success_"))
                rows.append({"attribute": attribute, "direction": f"{1 - t}to{t}", "share": float(share),
                             "true_share": k / len(idx), "attr_success": succ})
    return rows


def oracle_misses(dataset: Any, attributes: Iterable[str], options: dict | None = None, n: int | None = None,
                  device: str = "cpu", batch: int = 250) -> list[dict]:
    """Rows {attribute, direction, n, misses, change_median, miss_changes, miss_percentiles}: where the
    attribute judge misreads the exact counterfactual, and how visible those counterfactuals are
    (per direction the first ``n`` test images that carry the other value; ``None``: all of them).

    Why: an oracle miss is either the judge's fault or the renderer's (a grey moustache drawn on a grey
    beard changes a few pixels by a few levels).  ``change`` is the counterfactual's mean absolute
    pixel change from its source in 8-bit levels; ``miss_percentiles`` ranks each miss's change among
    all counterfactuals of that direction (0 = the least visible).  Misses clustered near 0 sit at the
    renderer's visibility floor; misses at ordinary percentiles are the judge's errors."""
    from evaluators.attributes import shared_classifier

    test = dataset.split("test")
    labels_all = test.labels_matrix()
    rows = []
    for attribute in attributes:
        col = dataset.attribute_index(attribute)
        clf = shared_classifier(EvalContext(dataset, attribute, 1, torch.device(device)), options, True)
        for t, idx in _directions(labels_all, col, n):
            wrong, change = [], []
            for s in range(0, len(idx), batch):
                i = idx[s:s + batch]
                x = test.images(i)
                cf = test.counterfactuals(i, attribute, torch.full((len(i),), float(t)))
                wrong.append(clf.predict(cf).cpu()[:, col] != t)
                change.append((x - cf).abs().flatten(1).mean(1) * 127.5)  # [-1, 1] -> 8-bit levels
            wrong_t, change_t = torch.cat(wrong), torch.cat(change)
            rank = change_t.argsort().argsort().double() / max(len(idx) - 1, 1)
            rows.append({"attribute": attribute, "direction": f"{1 - t}to{t}", "n": len(idx),
                         "misses": int(wrong_t.sum()), "change_median": float(change_t.median()),
                         "miss_changes": [round(float(v), 3) for v in change_t[wrong_t]],
                         "miss_percentiles": [round(float(v), 3) for v in rank[wrong_t]]})
    return rows


def is_monotone(values: list[float], decreasing: bool = True, tol: float = 0.0) -> bool:
    """Monotone within ``tol`` (a later point may exceed an earlier one by at most ``tol``)."""
    pairs = zip(values, values[1:])
    return all((b <= a + tol) if decreasing else (b >= a - tol) for a, b in pairs)


# -- figure -----------------------------------------------------------------------------------------------

def plot(identity_rows: list[dict], cf_rows: list[dict], share_rows: list[dict], path: Path,
         title: str = "") -> list[Path]:
    """Three panels: id_cos vs degradation level (the counterfactuals' range shaded), id_param_err,
    attr_success vs the share of really edited images.  PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.1), constrained_layout=True)
    styles = {"blend_mean": "-o", "blend_other": "-s", "blur": "--^", "noise": "--v", "colour": "--d"}
    for key, ax, label in (("id_cos", axes[0], "id_cos_synth"), ("id_param_err", axes[1], "id_param_err_synth")):
        for kind in KINDS:
            pts = [r for r in identity_rows if r["kind"] == kind]
            ax.plot([r["level"] for r in pts], [r[key] for r in pts], styles[kind], ms=3.5, lw=1.2, label=kind)
        vals = [r[key] for r in cf_rows if math.isfinite(r[key])]
        if vals:
            ax.axhspan(min(vals), max(vals), color="tab:green", alpha=0.15, lw=0,
                       label="counterfactuals (min-max)")
        ax.set_xlabel("degradation level")
        ax.set_ylabel(label + (" ↑" if key == "id_cos" else " ↓"))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6.5, loc="lower left")
    ax = axes[2]
    for (attr, direction) in sorted({(r["attribute"], r["direction"]) for r in share_rows}):
        pts = [r for r in share_rows if r["attribute"] == attr and r["direction"] == direction]
        ax.plot([r["true_share"] for r in pts], [r["attr_success"] for r in pts], "-", lw=1, alpha=0.8,
                label=f"{attr} {direction}")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
    ax.set_xlabel("share of images really edited")
    ax.set_ylabel("attr_success ↑")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=5.5, ncol=2, loc="upper left")
    if title:
        fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".pdf"):
        p = path.with_suffix(ext)
        fig.savefig(p, dpi=200)
        out.append(p)
    plt.close(fig)
    return out


def misses_table(rows: list[dict]) -> str:
    """Markdown: per direction the oracle's misses and where their visibility ranks."""
    out = ["| attribute | direction | n | oracle misses | median change (8-bit) | misses' change | misses' percentile |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        ch = ", ".join(f"{v:.1f}" for v in r["miss_changes"]) or "-"
        pc = ", ".join(f"{v:.2f}" for v in r["miss_percentiles"]) or "-"
        out.append(f"| {r['attribute']} | {r['direction']} | {r['n']} | {r['misses']} | {r['change_median']:.1f} | "
                   f"{ch} | {pc} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from benchmark.registry import DATASETS

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="docs/figures/metric_sanity", help="figure path without extension")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--n", type=int, default=96, help="test images per sweep point")
    p.add_argument("--attributes", default="Smiling,Eyeglasses,Bangs,Male,Young,Mustache,No_Beard,Blond_Hair,"
                                           "Pale_Skin,Mouth_Slightly_Open")
    p.add_argument("--classifier", default="{}", help="JSON: the attributes evaluator's classifier options")
    p.add_argument("--id-synth", default="{}", help="JSON: the id_synth evaluator's options")
    p.add_argument("--device", default="cpu")
    p.add_argument("--misses", action="store_true",
                   help="only the oracle-miss table (oracle_misses) on the whole test split, printed as Markdown")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ds = DATASETS.create("synthfaces", resolution=args.resolution)
    attrs = [a for a in args.attributes.split(",") if a]
    id_opts, clf_opts = json.loads(args.id_synth), json.loads(args.classifier)
    if args.misses:
        print(misses_table(oracle_misses(ds, attrs, clf_opts, device=args.device)))
        return 0
    ident = identity_sweeps(ds, id_opts, args.n, args.device)
    cf = counterfactual_identity(ds, attrs, id_opts, args.n, args.device)
    share = attribute_share_sweep(ds, attrs, {"classifier": clf_opts}, args.n, args.device)
    out = Path(args.out)
    files = plot(ident, cf, share, out, title=f"metric sanity sweeps, SynthFaces {args.resolution} px, "
                                               f"{args.n} test images per point")
    data = {"identity": ident, "counterfactual_identity": cf, "attribute_share": share,
            "command": "python -m evaluators.sanity " + " ".join(sys.argv[1:] if argv is None else argv)}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    for r in ident:
        print(f"{r['kind']:12s} level {r['level']:.1f}  id_cos {r['id_cos']:.3f}  id_param_err {r['id_param_err']:.3f}")
    for r in cf:
        print(f"counterfactual {r['attribute']:20s} {r['direction']}  id_cos {r['id_cos']:.3f}")
    print("wrote", ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
