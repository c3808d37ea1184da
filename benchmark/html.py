"""One self-contained HTML page per report: tables, figures (PNG data URIs), config, environment,
problems (result rows that are not ``ok``, dataset problems, report notes) and fit provenance
(``fits.jsonl``).  No external file, script or font: the page opens from a mail attachment.
"""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from benchmark import rundir

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;
color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.82em;margin:.5em 0 1em}
th,td{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td:first-child,th:first-child,td:nth-child(2){text-align:left}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em;max-height:30em}
.err{color:#a00}.note{color:#555;font-size:.9em}
"""


def _table_html(df: pd.DataFrame, bold: pd.DataFrame | None = None, table_id: str = "") -> str:
    """A DataFrame as an HTML table (index as leading columns), the bold mask rendered as <b>."""
    if df.empty:
        return "<p class='note'>(none)</p>"
    text = df.astype(object).map(_cell)
    if bold is not None:
        text = text.where(~bold.reindex_like(text).fillna(False).astype(bool), "<b>" + text + "</b>")
    flat = text.reset_index() if not isinstance(df.index, pd.RangeIndex) else text
    return flat.to_html(index=False, escape=False, border=0, table_id=table_id or None)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return ""
    return html.escape(str(v))


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"data:image/png;base64,{data}"


def _css_width(path: Path, dpi: float = 200.0) -> int:
    """The figure's printed width in CSS pixels (96 per inch), so a 3.3 in figure is not blown up."""
    from PIL import Image

    with Image.open(path) as im:
        return round(im.size[0] * 96 / dpi * 1.4)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def fits_table(run_dirs: list[Path]) -> pd.DataFrame:
    """Fit provenance: one row per stage resolution (method, stage, key, source, steps, seconds, device, losses)."""
    rows = []
    for d in run_dirs:
        for r in _read_jsonl(d / "fits.jsonl"):
            losses = r.get("final_losses") or {}
            rows.append({"run": d.name, "method": r.get("method"), "stage": r.get("stage"),
                         "attribute": r.get("attribute") or "(shared)", "seed": r.get("seed"), "key": r.get("key"),
                         "source": r.get("source"), "steps": r.get("steps"), "seconds": r.get("seconds"),
                         "device": r.get("device"),
                         "final losses": ", ".join(f"{k}={v:.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
                                                   for k, v in losses.items())})
    return pd.DataFrame(rows)


def dataset_problems(run_dirs: list[Path]) -> pd.DataFrame:
    """``dataset.problems`` as recorded by a run: ``dataset_problems.jsonl``, or ``dataset_problems`` in env*.json."""
    rows: list[dict[str, Any]] = []
    for d in run_dirs:
        rows += [{"run": d.name, **r} for r in _read_jsonl(d / "dataset_problems.jsonl")]
        for env in sorted(d.glob("env*.json")):
            try:
                rows += [{"run": d.name, **r} for r in json.loads(env.read_text()).get("dataset_problems", [])]
            except (json.JSONDecodeError, AttributeError, TypeError):
                continue
    return pd.DataFrame(rows).drop_duplicates() if rows else pd.DataFrame()


def _env_block(d: Path) -> str:
    parts = []
    for env in sorted(d.glob("env*.json")):
        parts.append(f"<h3>{html.escape(d.name)}/{html.escape(env.name)}</h3><pre>"
                     f"{html.escape(env.read_text(encoding='utf-8'))}</pre>")
    return "".join(parts) or "<p class='note'>(no env.json)</p>"


def _figure_captions() -> dict[str, str]:
    return {
        "grid": "Rows: saved test faces (identity; + adds, − removes the attribute); columns: input, each editor "
                "at the strength nearest 1, the oracle (SynthFaces ground truth), attention masks where saved.",
        "tradeoff_identity": "Attribute success against identity similarity across strengths (numbers), one curve "
                             "per editor; error bars: std over seeds.",
        "tradeoff_distance": "Attribute success against a perceptual / counterfactual distance across strengths.",
        "groups_bar": "Local vs global attributes per editor; error bars: std over seeds.",
        "overview": "Every attribute: inputs, then each editor's edits.",
    }


def write(run_dirs: list[Path], out: Path, summary: pd.DataFrame, problems: pd.DataFrame,
          figures: dict[str, list[Path]]) -> Path:
    """Write ``out/index.html`` and return its path."""
    from benchmark.report import block_tables, best_mask, default_strength, short_names

    title = run_dirs[0].name if len(run_dirs) == 1 else f"{len(run_dirs)} runs merged"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>faceedit-bench: "
             f"{html.escape(title)}</title><style>{CSS}</style></head><body>",
             f"<h1>faceedit-bench report: {html.escape(title)}</h1>",
             "<p class='note'>Runs: " + ", ".join(html.escape(str(d)) for d in run_dirs) + "</p>"]
    parts.append("<h2 id='tables'>Tables</h2>")
    if summary.empty:
        parts.append("<p class='err'>No finished results.</p>")
    else:
        s = default_strength(summary)
        parts.append(f"<p class='note'>Strength {s:g}; mean ± std over seeds; mean of both edit directions; "
                     "↑/↓ say which way is better; bold: best editor per column and block (identity and "
                     "oracle are anchors, not competing). Every strength is in summary.csv.</p>")
        blocks = [g for g in ("local", "global") if (summary["attribute"] == g).any()]
        attrs = [a for a in dict.fromkeys(summary["attribute"]) if a not in ("local", "global")]
        for name, rows in ([("Local and global attributes", blocks)] if blocks else []) + \
                [(f"Attribute: {a}", [a]) for a in attrs]:
            text, mean = block_tables(summary, rows, s)
            bold = best_mask(mean)
            display, judges = short_names(text.columns)
            text = _with_arrows(text, display)
            bold.columns = mean.columns = text.columns
            parts.append(f"<h3>{html.escape(name)}</h3>" + _table_html(text, bold, "results")
                         + (f"<p class='note'>{html.escape(judges)}.</p>" if judges else ""))
    parts.append("<h2 id='figures'>Figures</h2>")
    captions = _figure_captions()
    for name, paths in figures.items():
        png = next((p for p in paths if p.suffix == ".png"), None)
        if png is None:
            continue
        cap = captions.get(name, captions["grid"] if name.startswith("grid_") else "")
        label = name.replace("grid_", "grid: ")
        parts.append(f"<figure><img alt='{html.escape(name)}' style='width:{_css_width(png)}px' src='{_image(png)}'><figcaption><b>"
                     f"{html.escape(label)}</b>. {html.escape(cap)} (PDF: figures/{html.escape(png.stem)}.pdf)"
                     "</figcaption></figure>")
    if not figures:
        parts.append("<p class='note'>(no figures)</p>")
    parts.append("<h2 id='problems'>Problems</h2>")
    shown = problems.drop(columns=[c for c in ("value", "n", "direction") if c in problems.columns]) \
        if not problems.empty else problems
    parts.append(_table_html(shown.reset_index(drop=True), table_id="problems"))
    dp = dataset_problems(run_dirs)
    parts.append("<h3>Dataset problems (files skipped by the data policy)</h3>" + _table_html(dp))
    parts.append("<h2 id='fits'>Fit provenance (fits.jsonl)</h2>")
    parts.append(_table_html(fits_table(run_dirs), table_id="fits"))
    parts.append("<h2 id='config'>Config</h2>")
    for d in run_dirs:
        cfg = d / "config.yaml"
        text = cfg.read_text(encoding="utf-8") if cfg.is_file() else "(no config.yaml)"
        parts.append(f"<h3>{html.escape(d.name)}/config.yaml</h3><pre>{html.escape(text)}</pre>")
    parts.append("<h2 id='environment'>Environment</h2>")
    parts += [_env_block(d) for d in run_dirs]
    parts.append("</body></html>")
    path = out / "index.html"
    rundir.atomic_write_text(path, "\n".join(parts))
    return path


def _with_arrows(table: pd.DataFrame, display: dict[str, str]) -> pd.DataFrame:
    from benchmark.report import UNICODE_ARROWS, metric_direction

    table = table.copy()
    table.columns = [display.get(c, c) + UNICODE_ARROWS[metric_direction(c)] for c in table.columns]
    return table
