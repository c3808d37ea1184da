"""Reports from a run directory: summary CSV, LaTeX table, figure grid, trade-off plot.

Everything here is derived from ``results.jsonl`` and ``images/`` alone, so a
report can be rebuilt at any time (``faceedit-bench --report RUN_DIR``) and
never changes a number.

Aggregation (DESIGN §4): per cell the two directions and their mean are
stored; here the ``mean`` direction is averaged over seeds (mean ± std, n
seeds) per (method, attribute, strength), and ``local`` / ``global`` rows are
the mean over the attributes of each group of those per-attribute means.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd

from benchmark import rundir

LOWER_IS_BETTER = ("fid", "kid", "lpips", "leak", "cf_l1", "id_param_err")


def load_results(run_dir: str | Path) -> pd.DataFrame:
    rows = rundir.latest_attempts(rundir.read_rows(Path(run_dir) / "results.jsonl"))
    df = pd.DataFrame(rows, columns=list(rundir.ROW_FIELDS))
    if not df.empty:
        df["value"] = pd.to_numeric(df["value"], errors="coerce")
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Long table of mean ± std over seeds, with ``local`` / ``global`` group rows added."""
    ok = df[(df["status"] == "ok") & (df["direction"] == "mean")]
    if ok.empty:
        return pd.DataFrame(columns=["method", "attribute", "group", "strength", "metric", "mean", "std", "seeds"])
    keys = ["method", "attribute", "group", "strength", "metric"]
    per_attr = ok.groupby(keys, sort=False)["value"].agg(mean="mean", std="std", seeds="count").reset_index()
    per_attr["std"] = per_attr["std"].fillna(0.0)
    # group rows: first the seed-wise group mean, then mean ± std over seeds
    by_seed = ok.groupby(["method", "group", "strength", "metric", "seed"], sort=False)["value"].mean().reset_index()
    groups = by_seed.groupby(["method", "group", "strength", "metric"], sort=False)["value"].agg(
        mean="mean", std="std", seeds="count").reset_index()
    groups["std"] = groups["std"].fillna(0.0)
    groups["attribute"] = groups["group"]
    return pd.concat([per_attr, groups[per_attr.columns]], ignore_index=True)


def _fmt(mean: float, std: float, seeds: int) -> str:
    if math.isnan(mean):
        return "–"
    if math.isinf(mean):
        return "∞" if mean > 0 else "-∞"
    return f"{mean:.3f}" if seeds < 2 else f"{mean:.3f} ± {std:.3f}"


def wide_table(summary: pd.DataFrame, strength: float | None = None) -> pd.DataFrame:
    """Rows (method, attribute), columns metrics, cells "mean ± std"; one strength (default: 1.0 or the first)."""
    if summary.empty:
        return pd.DataFrame()
    strengths = sorted(summary["strength"].unique())
    s = strength if strength is not None else (1.0 if 1.0 in strengths else strengths[0])
    sub = summary[summary["strength"] == s].copy()
    sub["cell"] = [_fmt(m, sd, n) for m, sd, n in zip(sub["mean"], sub["std"], sub["seeds"])]
    table = sub.pivot_table(index=["method", "attribute"], columns="metric", values="cell", aggfunc="first", sort=False)
    return table.fillna("–")


def latex_table(table: pd.DataFrame, caption: str) -> str:
    """A booktabs table; arrows say which direction is better."""
    if table.empty:
        return "% no results\n"
    cols = list(table.columns)
    heads = [_latex_escape(c) + (r" $\downarrow$" if c.startswith(LOWER_IS_BETTER) else r" $\uparrow$") for c in cols]
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{ll" + "c" * len(cols) + "}",
             r"\toprule", "Method & Attribute & " + " & ".join(heads) + r" \\", r"\midrule"]
    for (method, attr), row in table.iterrows():
        cells = [_latex_escape(str(v)).replace("±", r"$\pm$").replace("∞", r"$\infty$").replace("–", "--")
                 for v in row]
        label = rf"\textit{{{attr} (mean)}}" if attr in ("local", "global") else _latex_escape(attr)
        lines.append(f"{_latex_escape(method)} & {label} & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{_latex_escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    return re.sub(r"([_%&#$])", r"\\\1", text)


_SLUG = re.compile(r"^(?P<method>.+)__(?P<attr>.+)__s(?P<strength>[-0-9.e+]+)__seed(?P<seed>-?\d+)$")


def _default_strips(images: Path) -> dict[tuple[str, str], Path]:
    """Per (method, attribute), the saved strip whose strength is nearest 1.0 (then the lowest seed)."""
    best: dict[tuple[str, str], tuple[tuple[float, int], Path]] = {}
    for p in sorted(images.glob("*.png")):
        m = _SLUG.match(p.stem)
        if not m:
            continue
        rank = (abs(float(m["strength"]) - 1.0), int(m["seed"]))
        key = (m["method"], m["attr"])
        if key not in best or rank < best[key][0]:
            best[key] = (rank, p)
    return {k: v[1] for k, v in best.items()}


def figure_grid(run_dir: Path, out: Path, k: int = 4) -> bool:
    """Rows: attributes; columns: k sources, then each method's k edits (same test images)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    strips = _default_strips(run_dir / "images")
    if not strips:
        return False
    methods = sorted({m for m, _ in strips})
    attrs = sorted({a for _, a in strips})
    fig, axes = plt.subplots(len(attrs), len(methods) + 1, figsize=(2.2 * k * (len(methods) + 1) / 2, 1.4 * len(attrs) + 0.5),
                             squeeze=False)
    for i, attr in enumerate(attrs):
        for j, col in enumerate(["source"] + methods):
            ax = axes[i][j]
            ax.axis("off")
            path = strips.get((methods[0] if col == "source" else col, attr))
            if path is None:
                continue
            img = np.asarray(Image.open(path).convert("RGB"))
            h = img.shape[0] // 2
            n = min(k, img.shape[1] // h)
            tile = img[:h, : n * h] if col == "source" else img[h:, : n * h]
            ax.imshow(tile)
            if i == 0:
                ax.set_title(col, fontsize=9)
            if j == 0:
                ax.text(-0.02, 0.5, attr, transform=ax.transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def tradeoff_plot(summary: pd.DataFrame, out: Path) -> bool:
    """Attribute success against identity similarity across strengths, one curve per method and group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    succ = [m for m in summary["metric"].unique() if m.startswith("attr_success")]
    ident = [m for m in summary["metric"].unique() if m.startswith("id_cos")]
    if not succ or not ident:
        return False
    xs, ys = succ[0], ident[0]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), squeeze=False)
    for ax, group in zip(axes[0], ("local", "global")):
        g = summary[summary["attribute"] == group]
        for method, gm in g.groupby("method"):
            x = gm[gm["metric"] == xs].set_index("strength")["mean"]
            y = gm[gm["metric"] == ys].set_index("strength")["mean"]
            common = x.index.intersection(y.index).sort_values()
            if len(common):
                ax.plot(x[common], y[common], marker="o", label=method)
                for s in common:
                    ax.annotate(f"{s:g}", (x[s], y[s]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_title(f"{group} attributes")
        ax.set_xlabel(xs)
        ax.set_ylabel(ys)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return True


def generate(run_dir: str | Path) -> Path:
    """Write ``report/`` (summary.csv, table.csv, table.tex, figure_grid.png, tradeoff.png, errors.csv)."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.jsonl").exists():
        raise FileNotFoundError(f"{run_dir} has no results.jsonl (not a run directory?)")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    df = load_results(run_dir)
    summary = summarize(df)
    rundir.atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    table = wide_table(summary)
    rundir.atomic_write_text(out / "table.csv", table.to_csv())
    rundir.atomic_write_text(out / "table.tex", latex_table(table, f"faceedit-bench results ({run_dir.name})"))
    problems = df[df["status"] != "ok"] if not df.empty else df
    rundir.atomic_write_text(out / "problems.csv", problems.to_csv(index=False))
    figure_grid(run_dir, out / "figure_grid.png")
    if not summary.empty:
        tradeoff_plot(summary, out / "tradeoff.png")
    return out
