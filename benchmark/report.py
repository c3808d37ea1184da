"""Reports from one or several run directories: tables (CSV, LaTeX), figures (PNG, PDF), one HTML page.

Everything here is derived from ``results.jsonl``, ``fits.jsonl``, ``config.yaml``,
``env*.json`` and ``images/`` alone, so a report can be rebuilt at any time
(``faceedit-bench --report RUN_DIR [RUN_DIR ...]``) and never changes a number.

Aggregation (DESIGN §4): per cell the two directions and their mean are
stored; here the ``mean`` direction is averaged over seeds (mean ± sample std,
n seeds) per (method, attribute, strength), and ``local`` / ``global`` rows are
the mean over the attributes of each group, taken per seed first, so that their
std is also a spread over seeds.

Merging: several runs are read as one results table (``load_results``); a cell
present in more than one run keeps the row of the run named last, and the
report's ``problems.csv`` says so.  That is how seeds or editors run apart
(e.g. on different machines) are put in one table.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from benchmark import rundir

ARROWS = {"higher": r" $\uparrow$", "lower": r" $\downarrow$", None: ""}
UNICODE_ARROWS = {"higher": " ↑", "lower": " ↓", None: ""}
# anchors are not competitors: the no-op wins identity metrics, the oracle uses the ground truth
ANCHORS = ("identity", "oracle")
# metric order in the tables (by prefix); names matching none keep their order after these
METRIC_ORDER = ("attr_success", "attr_preserve", "id_cos", "id_match", "id_param_err", "id_", "lpips",
                "cf_lpips", "cf_l1", "cf_psnr", "leak", "fid_clean", "fid", "kid_clean", "kid_se", "kid")
# reported in the CSV, left out of the LaTeX tables: the judge's accuracy on the sources is the
# same for every editor (a sanity figure of the classifier, not a score); so are FID's real-vs-real
# floor and its n < d flag, which depend on the test split only (the CSV and the HTML keep them)
TABLE_EXCLUDE = ("attr_source_acc", "fid_floor", "fid_n_below_dim")
GROUP_LABELS = {"local": "Local", "global": "Global"}


def metric_direction(metric: str) -> str | None:
    from evaluators.base import metric_direction as declared  # lazy: imports the registered evaluators

    return declared(metric)


def direction_arrow(metric: str) -> str:
    """The LaTeX arrow of ``metric`` from its evaluator's ``higher_is_better``; none when undeclared."""
    return ARROWS[metric_direction(metric)]


# -- reading -----------------------------------------------------------------------------------------

def load_results(run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """The latest complete attempt of every cell of one run, or of several runs merged (later runs win)."""
    dirs = [Path(run_dirs)] if isinstance(run_dirs, (str, Path)) else [Path(d) for d in run_dirs]
    frames = []
    for d in dirs:
        rows = rundir.latest_attempts(rundir.read_rows(d / "results.jsonl"))
        df = pd.DataFrame(rows, columns=[*rundir.ROW_FIELDS, "fit_key"])
        df["run"] = d.name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*rundir.ROW_FIELDS, "run"])
    if not df.empty:
        df["value"] = pd.to_numeric(df["value"], errors="coerce")
        df["strength"] = pd.to_numeric(df["strength"]).astype(float)
        df["seed"] = pd.to_numeric(df["seed"]).astype(int)
    return df


def merge_duplicates(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with each cell from the last run holding it, one row per cell dropped from an earlier run)."""
    if df.empty or df["run"].nunique() < 2:
        return df, pd.DataFrame(columns=["cell", "kept_run", "dropped_run"])
    cell = list(rundir.CELL_FIELDS)
    runs = list(dict.fromkeys(df["run"]))
    last = df.groupby(cell, sort=False)["run"].agg(lambda r: max(r, key=runs.index)).rename("kept_run")
    df = df.join(last, on=cell)
    dropped = df[df["run"] != df["kept_run"]].drop_duplicates(cell + ["run"])
    notes = pd.DataFrame({"cell": ["/".join(str(v) for v in row) for row in dropped[cell].itertuples(index=False)],
                          "kept_run": dropped["kept_run"].values, "dropped_run": dropped["run"].values})
    return df[df["run"] == df["kept_run"]].drop(columns="kept_run"), notes


# -- aggregation -------------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["method", "attribute", "group", "strength", "metric", "mean", "std", "seeds", "direction"]


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Long table of mean ± std over seeds per attribute, plus ``local`` / ``global`` group rows.

    A group row averages its attributes per seed, then takes mean ± std of those over
    seeds; ``direction`` is the metric's declared better direction.
    """
    ok = df[(df["status"] == "ok") & (df["direction"] == "mean")] if not df.empty else df
    if ok.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    keys = ["method", "attribute", "group", "strength", "metric"]
    per_attr = ok.groupby(keys, sort=False)["value"].agg(mean="mean", std="std", seeds="count").reset_index()
    by_seed = ok.groupby(["method", "group", "strength", "metric", "seed"], sort=False)["value"].mean().reset_index()
    groups = by_seed.groupby(["method", "group", "strength", "metric"], sort=False)["value"].agg(
        mean="mean", std="std", seeds="count").reset_index()
    groups["attribute"] = groups["group"]
    out = pd.concat([per_attr, groups[per_attr.columns]], ignore_index=True)
    out["std"] = out["std"].fillna(0.0)
    out["direction"] = [metric_direction(m) or "" for m in out["metric"]]
    return out[SUMMARY_COLUMNS]


def default_strength(summary: pd.DataFrame) -> float:
    """The strength the tables show: 1.0 when swept, else the one nearest 1.0."""
    strengths = sorted(float(s) for s in summary["strength"].unique())
    return min(strengths, key=lambda s: (abs(s - 1.0), s))


def ordered_metrics(metrics: Iterable[str], for_latex: bool = False) -> list[str]:
    metrics = [m for m in dict.fromkeys(metrics) if not (for_latex and m.startswith(TABLE_EXCLUDE))]

    def rank(m: str) -> int:
        return next((i for i, p in enumerate(METRIC_ORDER) if m.startswith(p)), len(METRIC_ORDER))

    return sorted(metrics, key=rank)


JUDGED = ("attr_success_", "attr_preserve_", "attr_source_acc_", "id_cos_", "id_param_err_", "id_match_",
          "fid_clean_", "kid_clean_", "kid_se_clean_", "fid_floor_clean_", "fid_n_below_dim_clean_")


def short_names(metrics: Iterable[str]) -> tuple[dict[str, str], str]:
    """Column labels without the judge's name (``attr_success_resnet18_synthfaces64`` -> ``attr_success``),
    and a sentence naming the judges for the caption; a label two metrics would share stays in full.
    """
    metrics = list(metrics)
    short, judges = {}, {}
    for m in metrics:
        prefix = next((p for p in JUDGED if m.startswith(p) and len(m) > len(p)), None)
        short[m] = prefix.rstrip("_") if prefix else m
        if prefix:
            judges.setdefault(m[len(prefix):], []).append(short[m])
    clashes = {v for v in short.values() if list(short.values()).count(v) > 1}
    short = {m: (m if v in clashes else v) for m, v in short.items()}
    note = "; ".join(f"{', '.join(sorted(set(v)))} judged by {k}" for k, v in judges.items())
    return short, note


def _fmt(mean: float, std: float, seeds: int) -> str:
    if math.isnan(mean):
        return "–"
    if math.isinf(mean):
        return "∞" if mean > 0 else "-∞"
    return f"{mean:.3f}" if seeds < 2 else f"{mean:.3f} ± {std:.3f}"


def _methods_order(summary: pd.DataFrame) -> list[str]:
    """Editors in run order, anchors (identity, oracle) last."""
    methods = list(dict.fromkeys(summary["method"]))
    return [m for m in methods if m not in ANCHORS] + [m for m in ANCHORS if m in methods]


def block_tables(summary: pd.DataFrame, blocks: list[str], strength: float,
                 for_latex: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(text, mean) tables indexed (Attributes, Method), one row block per entry of ``blocks``."""
    sub = summary[(summary["strength"] == strength) & summary["attribute"].isin(blocks)].copy()
    metrics = ordered_metrics(sub["metric"], for_latex)
    sub["cell"] = [_fmt(m, sd, n) for m, sd, n in zip(sub["mean"], sub["std"], sub["seeds"])]
    idx = pd.MultiIndex.from_tuples([(b, m) for b in blocks for m in _methods_order(summary)
                                     if ((sub["attribute"] == b) & (sub["method"] == m)).any()],
                                    names=["Attributes", "Method"])
    text = sub.pivot_table(index=["attribute", "method"], columns="metric", values="cell", aggfunc="first")
    mean = sub.pivot_table(index=["attribute", "method"], columns="metric", values="mean", aggfunc="first",
                           dropna=False)
    text = text.reindex(index=idx, columns=metrics).fillna("–")
    mean = mean.reindex(index=idx, columns=metrics)
    text.columns.name = mean.columns.name = None
    return text, mean


def wide_table(summary: pd.DataFrame, strength: float | None = None) -> pd.DataFrame:
    """Rows (method, attribute), columns metrics, cells "mean ± std"; one strength (default: nearest 1.0)."""
    if summary.empty:
        return pd.DataFrame()
    s = default_strength(summary) if strength is None else strength
    sub = summary[summary["strength"] == s].copy()
    sub["cell"] = [_fmt(m, sd, n) for m, sd, n in zip(sub["mean"], sub["std"], sub["seeds"])]
    table = sub.pivot_table(index=["method", "attribute"], columns="metric", values="cell", aggfunc="first", sort=False)
    return table.reindex(columns=ordered_metrics(table.columns)).fillna("–")


# -- LaTeX -------------------------------------------------------------------------------------------

def _latex_escape(text: str) -> str:
    return re.sub(r"([_%&#$])", r"\\\1", text)


def _latex_cell(value: str) -> str:
    return _latex_escape(str(value)).replace("±", r"$\pm$").replace("-∞", r"$-\infty$").replace(
        "∞", r"$\infty$").replace("–", "--")


def best_mask(means: pd.DataFrame, exclude: tuple[str, ...] = ANCHORS) -> pd.DataFrame:
    """True where a value is the best of its column within its row block (first index level), by direction.

    Anchors are left out of the competition; a block needs two competing finite
    values, and ties at the printed precision are all bold.
    """
    mask = pd.DataFrame(False, index=means.index, columns=means.columns)
    if means.empty or means.index.nlevels < 2:
        return mask
    methods = means.index.get_level_values(-1)
    blocks = means.index.get_level_values(0)
    for col in means.columns:
        direction = metric_direction(col)
        if direction is None:
            continue
        for block in dict.fromkeys(blocks):
            sel = (blocks == block) & ~methods.isin(exclude)
            vals = means.loc[sel, col].astype(float).round(3)
            vals = vals[np.isfinite(vals)]
            if len(vals) < 2:
                continue
            best = vals.max() if direction == "higher" else vals.min()
            mask.loc[vals.index[vals == best], col] = True
    return mask


def latex_table(table: pd.DataFrame, caption: str, means: pd.DataFrame | None = None, label: str | None = None,
                environment: str = "table", display: dict[str, str] | None = None) -> str:
    """A booktabs table through pandas' ``Styler.to_latex``; arrows from each metric's declared direction.

    ``means`` (numeric, same shape) marks the best value per column and row block in bold.
    The tabular shrinks to the line width when wider (needs ``graphicx``); ``display``
    relabels columns (arrows still come from the full metric names).
    """
    display = display or {}
    if table.empty:
        return "% no results\n"
    bold = best_mask(means) if means is not None else pd.DataFrame(False, index=table.index, columns=table.columns)
    flat = table.map(_latex_cell)
    flat = flat.where(~bold.reindex_like(flat).fillna(False).astype(bool), r"\textbf{" + flat + "}")
    names = [str(n).capitalize() for n in table.index.names]
    body = flat.reset_index()
    for i, name in enumerate(table.index.names):
        col = body[name].astype(str)
        labels = [(rf"\textit{{{GROUP_LABELS[v]} (mean)}}" if v in GROUP_LABELS else _latex_escape(v)) for v in col]
        if i == 0 and table.index.nlevels > 1 and table.index.names[0] != "method":
            labels = [lab if j == 0 or col.iloc[j - 1] != col.iloc[j] else "" for j, lab in enumerate(labels)]
        body[name] = labels
    body.columns = names + [_latex_escape(display.get(c, c)) + direction_arrow(c) for c in table.columns]
    styler = body.style.hide(axis="index")
    tex = styler.to_latex(hrules=True, column_format="l" * len(names) + "c" * len(table.columns))
    tex = _block_rules(tex, list(body.iloc[:, 0]) if table.index.names[0] != "method" else [])
    head = rf"\begin{{{environment}}}[t]" + "\n" + r"\centering" + "\n" + r"\small" + "\n"
    head += r"\resizebox{\ifdim\width>\linewidth\linewidth\else\width\fi}{!}{%" + "\n"
    tail = "}\n" + rf"\caption{{{_latex_cell(caption)}}}" + "\n"
    if label:
        tail += rf"\label{{{label}}}" + "\n"
    return head + tex + tail + rf"\end{{{environment}}}" + "\n"


def _block_rules(tex: str, first_col: list[str]) -> str:
    """A ``\\midrule`` before each new row block (its label is set only on the block's first row)."""
    if not first_col:
        return tex
    lines = tex.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == r"\midrule") + 1
    out, row = lines[:start], 0
    for line in lines[start:]:
        if line.strip() == r"\bottomrule":
            out.append(line)
            continue
        if line.rstrip().endswith(r"\\") and row < len(first_col):
            if row > 0 and first_col[row]:
                out.append(r"\midrule")
            row += 1
        out.append(line)
    return "\n".join(out) + "\n"


STANDALONE = r"""\documentclass{article}
\usepackage[margin=1in]{geometry}
\usepackage{booktabs}
\usepackage{graphicx}
\begin{document}
%s
\end{document}
"""


# -- products ----------------------------------------------------------------------------------------

def table_products(summary: pd.DataFrame, out: Path, title: str) -> dict[str, Path]:
    """Main table (local / global blocks) and one table per attribute, each as CSV and LaTeX.

    Also ``tables.tex``, a standalone document that inputs them all (what the
    compile test builds, and a quick PDF of every table).
    """
    written: dict[str, Path] = {}
    if summary.empty:
        return written
    s = default_strength(summary)
    seeds = int(summary["seeds"].max())
    spread = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    note = (f"strength {s:g}; {spread}; mean of both edit directions; best editor per column in bold "
            f"({', '.join(ANCHORS)} are anchors, not competing)")
    groups = [g for g in ("local", "global") if (summary["attribute"] == g).any()]
    tex_names = []
    if groups:
        text, mean = block_tables(summary, groups, s)
        rundir.atomic_write_text(out / "table.csv", text.to_csv())
        ltext, lmean = block_tables(summary, groups, s, for_latex=True)
        display, judges = short_names(ltext.columns)
        attrs = {g: ", ".join(sorted(summary.loc[(summary["group"] == g) & (summary["attribute"] != g),
                                                 "attribute"].unique())) for g in groups}
        which = "; ".join(f"{GROUP_LABELS[g].lower()}: {a}" for g, a in attrs.items())
        rundir.atomic_write_text(out / "table.tex", latex_table(
            ltext, f"{title}: local and global attributes ({which}); {note}{'; ' + judges if judges else ''}.", lmean,
            label="tab:faceedit-groups", environment="table*", display=display))
        written["table"] = out / "table.tex"
        tex_names.append("table.tex")
    attributes = [a for a in dict.fromkeys(summary["attribute"]) if a not in ("local", "global")]
    for attr in attributes:
        text, _ = block_tables(summary, [attr], s)
        ltext, lmean = block_tables(summary, [attr], s, for_latex=True)
        display, judges = short_names(ltext.columns)
        stem = f"table_{_file_safe(attr)}"
        rundir.atomic_write_text(out / f"{stem}.csv", text.droplevel(0).to_csv())
        rundir.atomic_write_text(out / f"{stem}.tex", latex_table(
            ltext, f"{title}: {attr}; {note}{'; ' + judges if judges else ''}.", lmean, label=f"tab:faceedit-{_file_safe(attr)}",
            environment="table*", display=display))
        tex_names.append(f"{stem}.tex")
    body = "\n".join(rf"\input{{{n}}}" + "\n\\clearpage" for n in tex_names)
    rundir.atomic_write_text(out / "tables.tex", STANDALONE % body)
    written["tables"] = out / "tables.tex"
    return written


def _file_safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def default_report_dir(run_dirs: list[Path]) -> Path:
    """``RUN/report`` for one run; ``<parent of the first>/merged-<run numbers>/report`` for several."""
    if len(run_dirs) == 1:
        return run_dirs[0] / "report"
    tags = "+".join(d.name.split("-", 1)[0] for d in run_dirs)
    return run_dirs[0].parent / f"merged-{tags}" / "report"


def generate(run_dirs: str | Path | list[str | Path], out: str | Path | None = None,
             figures: bool = True, html: bool = True) -> Path:
    """Write the report of one run (``RUN/report``) or of several merged; returns the report folder.

    Contents: summary.csv (long), table.csv/.tex (local and global blocks),
    table_<attr>.csv/.tex, tables.tex (standalone), problems.csv, figures/ (PNG and
    PDF) and index.html (self-contained).  Figures or HTML that cannot be made
    (no images, no matplotlib) are noted in problems.csv, never fatal.
    """
    dirs = [rundir.check_run_dir(d) for d in ([run_dirs] if isinstance(run_dirs, (str, Path)) else run_dirs)]
    if not dirs:
        raise rundir.RunDirError("--report needs at least one run directory")
    out = Path(out) if out is not None else default_report_dir(dirs)
    out.mkdir(parents=True, exist_ok=True)
    df, duplicates = merge_duplicates(load_results(dirs))
    summary = summarize(df)
    rundir.atomic_write_text(out / "summary.csv", summary.to_csv(index=False))
    title = "faceedit-bench" + (f" ({dirs[0].name})" if len(dirs) == 1 else f" ({len(dirs)} runs merged)")
    table_products(summary, out, title)
    notes: list[dict[str, str]] = []
    if not duplicates.empty:
        notes += [{"status": "merged", "error": f"cell {r.cell} is in {r.dropped_run} and {r.kept_run}; "
                   f"the report keeps {r.kept_run}"} for r in duplicates.itertuples()]
    produced: dict[str, list[Path]] = {}
    if figures:
        from benchmark import report_figures

        produced, fig_notes = report_figures.make_all(dirs, summary, out / "figures")
        notes += fig_notes
        legacy = produced.get("overview")
        if legacy:
            import shutil

            shutil.copyfile(legacy[0], out / "figure_grid.png")  # the name earlier reports used
    problems = df[df["status"] != "ok"] if not df.empty else df
    if notes:
        problems = pd.concat([problems, pd.DataFrame(notes)], ignore_index=True)
    rundir.atomic_write_text(out / "problems.csv", problems.to_csv(index=False))
    if html:
        from benchmark import html as html_report

        html_report.write(dirs, out, summary, problems, produced)
    return out
