"""Figures of a report (PNG and PDF), sized for a two-column paper: 3.3 in (one column) or 7 in (both).

* ``grid_<attr>``: rows are saved test faces (identity and edit direction in the row label),
  columns the input, each editor at the strength nearest 1.0, the oracle (the SynthFaces
  ground truth) and SaGAN's attention mask when the run saved ``images/<slug>_attention.png``.
* ``tradeoff_identity`` / ``tradeoff_distance``: attribute success against identity similarity
  and against a perceptual / counterfactual distance, across strengths, one curve per editor,
  panels for local and global attributes, seed std as error bars.
* ``groups_bar``: local vs global per editor for the headline metrics, seed std as error bars.
* ``overview``: every attribute in one grid (the ``figure_grid.png`` of earlier reports).

Tiles are cropped from the strips the runner saves (first K sources over their K edits, no
padding), so a figure never needs a model.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ONE_COLUMN, TWO_COLUMNS = 3.3, 7.0  # inches
FONT = {"font.size": 7, "axes.titlesize": 7, "axes.labelsize": 7, "legend.fontsize": 6,
        "xtick.labelsize": 6, "ytick.labelsize": 6, "pdf.fonttype": 42, "ps.fonttype": 42}
ANCHORS = ("identity", "oracle")
MAX_ROWS = 6
_SLUG = re.compile(r"^(?P<method>.+)__(?P<attr>.+)__s(?P<strength>[-0-9.e+]+)__seed(?P<seed>-?\d+)$")


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(FONT)
    return plt


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=200, bbox_inches="tight", pad_inches=0.02)
    fig.savefig(paths[1], bbox_inches="tight", pad_inches=0.02)
    _plt().close(fig)
    return paths


# -- image grids --------------------------------------------------------------------------------------

def saved_strips(run_dirs: list[Path]) -> dict[tuple[str, str], tuple[Path, Path | None]]:
    """Per (method, attribute): the strip at the strength nearest 1.0 (lowest seed), and its attention strip."""
    best: dict[tuple[str, str], tuple[tuple[float, int], Path]] = {}
    for d in run_dirs:
        for p in sorted((d / "images").glob("*.png")):
            m = _SLUG.match(p.stem)
            if not m:
                continue
            rank = (abs(float(m["strength"]) - 1.0), int(m["seed"]))
            key = (m["method"], m["attr"])
            if key not in best or rank <= best[key][0]:
                best[key] = (rank, p)
    out = {}
    for key, (_, p) in best.items():
        att = p.with_name(p.stem + "_attention.png")
        out[key] = (p, att if att.is_file() else None)
    return out


def _tiles(path: Path, half: str) -> list[np.ndarray]:
    """The square tiles of the top (sources) or bottom (edits) half of a saved strip."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    h = img.shape[0] // 2
    row = img[:h] if half == "top" else img[h:2 * h]
    return [row[:, i * h:(i + 1) * h] for i in range(row.shape[1] // h)]


def _mask_tiles(path: Path, size: int) -> list[np.ndarray]:
    """Attention tiles: a strip of masks one tile high, or the bottom row of a taller strip."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("L"))
    if img.shape[0] != size:
        img = np.asarray(Image.open(path).convert("L").resize(
            (img.shape[1] * size // img.shape[0], size))) if img.shape[0] < size else img[-size:]
    return [img[:, i * size:(i + 1) * size] for i in range(img.shape[1] // size)]


def saved_faces(strip: Path, k: int) -> list[dict[str, Any]] | None:
    """Identity and source label of each saved tile, from the runner's ``<slug>.json`` beside the strip."""
    path = strip.with_suffix(".json")
    try:
        faces = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(faces, list) or len(faces) < k or not all({"identity", "label"} <= set(f) for f in faces[:k]):
        return None
    return [{"identity": int(f["identity"]), "label": int(f["label"])} for f in faces[:k]]


def face_info(run_dir: Path, attribute: str, k: int) -> list[dict[str, Any]] | None:
    """Fallback for runs saved before ``<slug>.json`` existed: assumes the strips show the first k faces.

    None when the dataset cannot be rebuilt here (data absent): rows are then labelled by position.
    """
    try:
        import yaml

        from benchmark.config import config_from_dict
        from benchmark.runner import build_dataset

        cfg = config_from_dict(yaml.safe_load((run_dir / "config.yaml").read_text()), [])
        ds = build_dataset(cfg)
        split = ds.split("test")
        ai = ds.attribute_index(attribute)
        labels = split.labels_matrix()[:k, ai]
        k = min(k, len(split))
        if callable(getattr(split, "identities", None)):  # without rendering (nor caching) an image
            ids = [int(v) for v in split.identities()[:k]]
        else:
            ids = [int(split[i]["identity"]) for i in range(k)]
        return [{"identity": ids[i], "label": int(labels[i])} for i in range(len(ids))]
    except Exception as exc:  # noqa: BLE001 - labels are a nicety; the grid stands without them
        log.info("face labels unavailable for %s: %s", run_dir, exc)
        return None


def pick_rows(info: list[dict[str, Any]] | None, k: int, n: int = MAX_ROWS) -> list[int]:
    """Up to ``n`` of the ``k`` saved faces: alternating edit directions, an unseen identity preferred."""
    if info is None:
        return list(range(min(k, n)))
    return pick_rows_alternating(info[:k], n)


def pick_rows_alternating(info: list[dict[str, Any]], n: int) -> list[int]:
    """Alternate directions, preferring an unseen identity, until ``n`` rows or none left."""
    chosen: list[int] = []
    seen: set[int] = set()
    want = 0
    while len(chosen) < min(n, len(info)):
        pool = [i for i, f in enumerate(info) if i not in chosen]
        for prefer in (lambda f: f["label"] == want and f["identity"] not in seen,
                       lambda f: f["identity"] not in seen, lambda f: f["label"] == want, lambda f: True):
            hit = [i for i in pool if prefer(info[i])]
            if hit:
                break
        chosen.append(hit[0])
        seen.add(info[hit[0]]["identity"])
        want = 1 - want
    return chosen


def attribute_grid(run_dirs: list[Path], attribute: str, strips: dict, out: Path) -> list[Path]:
    """One attribute: rows test faces, columns input / editors / oracle / SaGAN attention.

    The tiles are composed into one canvas drawn by one ``imshow`` (titles and row labels as text
    around it): one axes per tile made this figure cost 2.6 s of a report, the canvas 0.3 s, and the
    PDF holds one image instead of dozens."""
    plt = _plt()
    methods = [m for (m, a) in strips if a == attribute]
    if not methods:
        return []
    editors = [m for m in methods if m not in ANCHORS] + [m for m in ANCHORS if m in methods]
    first, _ = strips[(editors[0], attribute)]
    sources = _tiles(first, "top")
    size = sources[0].shape[0]
    info = saved_faces(first, len(sources)) or face_info(first.parents[1], attribute, len(sources))
    rows = pick_rows(info, len(sources))
    columns = grid_columns(strips, attribute, editors, sources, size)
    cmap = plt.get_cmap("magma")
    cells = [[None if i >= len(tiles) else _colour(tiles[i], cmap) if is_mask else tiles[i]
              for _, tiles, is_mask in columns] for i in rows]
    canvas, (step, _) = compose_canvas(cells, size, size)
    width = TWO_COLUMNS if len(columns) > 4 else ONE_COLUMN
    head = 0.1 + 0.1 * max(label.count("\n") + 1 for label, _, _ in columns)  # inches for the column titles
    fig, ax = _canvas_figure(plt, canvas, width, 0.55, head)  # 0.55 in for the row labels
    for c, (label, _, _) in enumerate(columns):
        ax.text(c * step + size / 2, -size * 0.04, label, fontsize=7, ha="center", va="bottom")
    for r, i in enumerate(rows):
        ax.text(-size * 0.04, r * step + size / 2, _row_label(info, i, attribute), fontsize=6, ha="right",
                va="center")
    return _save(fig, out, f"grid_{_safe(attribute)}")


def _colour(mask: np.ndarray, cmap: Any) -> np.ndarray:
    """A uint8 attention mask as the RGB of ``cmap`` (0 and 255 at its ends, as imshow's vmin/vmax)."""
    return (np.asarray(cmap(mask.astype(np.float64) / 255.0))[..., :3] * 255).round().astype(np.uint8)


def compose_canvas(cells: list[list[np.ndarray | None]], height: int, width: int,
                   gap_fraction: float = 0.03) -> tuple[np.ndarray, tuple[int, int]]:
    """Cells (rows of h×w×3 uint8 arrays; None stays blank) on one white canvas with small gaps, and the
    (vertical, horizontal) pitch of a cell: the figures draw it with one ``imshow``."""
    gap = max(1, round(gap_fraction * height))
    pitch = (height + gap, width + gap)
    ncol = max(len(r) for r in cells)
    canvas = np.full((len(cells) * pitch[0] - gap, ncol * pitch[1] - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            if cell is not None:  # None, or a narrower strip (fewer saved faces): blank
                h, w = min(height, cell.shape[0]), min(width, cell.shape[1])
                canvas[r * pitch[0]:r * pitch[0] + h, c * pitch[1]:c * pitch[1] + w] = cell[:h, :w]
    return canvas, pitch


def _canvas_figure(plt: Any, canvas: np.ndarray, width: float, label_in: float, head_in: float) -> tuple[Any, Any]:
    """A figure ``width`` inches wide holding ``canvas`` at its aspect, ``label_in`` inches left of it for
    row labels and ``head_in`` above it for titles; returns (figure, axes in the canvas' pixel coordinates)."""
    left, right, bottom_in = label_in / width, 0.995, 0.005 * width
    axes_h = width * (right - left) * canvas.shape[0] / canvas.shape[1]
    height = axes_h + head_in + bottom_in
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((left, bottom_in / height, right - left, axes_h / height))
    ax.imshow(canvas, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    return fig, ax


def grid_columns(strips: dict, attribute: str, editors: list[str], sources: list[np.ndarray],
                 size: int) -> list[tuple[str, list[np.ndarray], bool]]:
    """(title, tiles, is_mask) per column: input, each editor, an attention column after an editor that saved one."""
    columns: list[tuple[str, list[np.ndarray], bool]] = [("input", sources, False)]
    for m in editors:
        # two-line titles: at a tile's width (one column of a two-column paper) "oracle (ground truth)"
        # ran into its neighbour's title
        label = "oracle\n(ground truth)" if m == "oracle" else m
        columns.append((label, _tiles(strips[(m, attribute)][0], "bottom"), False))
        att = strips[(m, attribute)][1]
        if att is not None:
            columns.append((f"{m}\nattention", _mask_tiles(att, size), True))
    return columns


def _row_label(info: list[dict[str, Any]] | None, i: int, attribute: str) -> str:
    if info is None or i >= len(info):
        return f"face {i}"
    sign = "−" if info[i]["label"] == 1 else "+"  # the edit flips the label: 1 -> remove, 0 -> add
    return f"id {info[i]['identity']}\n{sign}{attribute}"


def overview_grid(strips: dict, out: Path, k: int = 4) -> list[Path]:
    """Every attribute in one figure: rows attributes, columns k inputs then each editor's k edits
    (one canvas, as ``attribute_grid``)."""
    plt = _plt()
    attrs = list(dict.fromkeys(a for _, a in strips))
    methods = list(dict.fromkeys(m for m, _ in strips))
    methods = [m for m in methods if m not in ANCHORS] + [m for m in ANCHORS if m in methods]
    if not attrs:
        return []
    cells: list[list[np.ndarray | None]] = []
    for attr in attrs:
        row: list[np.ndarray | None] = []
        for col in ["input"] + methods:
            key = (methods[0] if col == "input" else col, attr)
            if key not in strips:
                key = next(((m, attr) for m in methods if (m, attr) in strips), None)
                if key is None or col != "input":
                    row.append(None)
                    continue
            row.append(np.concatenate(_tiles(strips[key][0], "top" if col == "input" else "bottom")[:k], axis=1))
        cells.append(row)
    first = next(c for row in cells for c in row if c is not None)
    size = first.shape[0]
    # the cell width is k tiles (a strip with fewer saved faces is padded blank by compose_canvas)
    canvas, (vstep, hstep) = compose_canvas(cells, size, size * k, gap_fraction=0.08)
    fig, ax = _canvas_figure(plt, canvas, TWO_COLUMNS, 0.6, 0.2)
    for c, col in enumerate(["input"] + methods):
        ax.text(c * hstep + size * k / 2, -size * 0.04, col, fontsize=7, ha="center", va="bottom")
    for r, attr in enumerate(attrs):
        ax.text(-size * 0.04, r * vstep + size / 2, attr, fontsize=7, ha="right", va="center")
    return _save(fig, out, "overview")


# -- plots --------------------------------------------------------------------------------------------

def _first(metrics: list[str], prefixes: tuple[str, ...]) -> str | None:
    for p in prefixes:
        hit = [m for m in metrics if m.startswith(p)]
        if hit:
            return sorted(hit)[0]
    return None


def _short(metric: str) -> str:
    """``attr_success_resnet18_synthfaces32_33cc29`` -> ``attr_success``: the axis says the family."""
    for p in ("attr_success", "attr_preserve", "id_cos", "id_param_err", "cf_lpips", "lpips", "cf_l1", "cf_psnr"):
        if metric.startswith(p):
            return p
    return metric


def _arrow(metric: str) -> str:
    from benchmark.report import UNICODE_ARROWS, metric_direction

    return UNICODE_ARROWS[metric_direction(metric)]


def tradeoff(summary: pd.DataFrame, x: str, y: str, out: Path, stem: str) -> list[Path]:
    """``y`` against ``x`` across strengths, one curve per editor, a panel per attribute group."""
    plt = _plt()
    groups = [g for g in ("local", "global") if (summary["attribute"] == g).any()]
    if not groups:
        return []
    fig, axes = plt.subplots(1, len(groups), figsize=(TWO_COLUMNS if len(groups) > 1 else ONE_COLUMN, 2.3),
                             squeeze=False)
    methods = list(dict.fromkeys(summary["method"]))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    for ax, group in zip(axes[0], groups):
        g = summary[summary["attribute"] == group]
        for method in methods:
            gm = g[g["method"] == method]
            xs = gm[gm["metric"] == x].set_index("strength")
            ys = gm[gm["metric"] == y].set_index("strength")
            common = xs.index.intersection(ys.index).sort_values()
            if not len(common):
                continue
            style = dict(marker="o", ms=3, lw=1.0, capsize=1.5, elinewidth=0.6, color=colours[method])
            if method in ANCHORS:
                style.update(ls="--", marker="s")
            ax.errorbar(xs.loc[common, "mean"], ys.loc[common, "mean"], xerr=xs.loc[common, "std"],
                        yerr=ys.loc[common, "std"], label=method, **style)
            points = {(round(float(xs.loc[s, "mean"]), 4), round(float(ys.loc[s, "mean"]), 4)) for s in common}
            if len(points) > 1:  # an editor that ignores the strength is one point: no labels piled on it
                for s in common:
                    ax.annotate(f"{s:g}", (xs.loc[s, "mean"], ys.loc[s, "mean"]), fontsize=5, xytext=(2, 2),
                                textcoords="offset points", color=colours[method])
        ax.set_title(f"{group} attributes (numbers: strength)")
        ax.set_xlabel(_short(x) + _arrow(x))
        ax.set_ylabel(_short(y) + _arrow(y))
        ax.grid(alpha=0.3, lw=0.5)
    axes[0][-1].legend(loc="best", frameon=False)
    fig.tight_layout(pad=0.3)
    return _save(fig, out, stem)


def groups_bar(summary: pd.DataFrame, metrics: list[str], out: Path) -> list[Path]:
    """Local vs global per editor for each metric at the table strength; seed std as error bars."""
    from benchmark.report import default_strength

    plt = _plt()
    s = default_strength(summary)
    sub = summary[(summary["strength"] == s) & summary["attribute"].isin(["local", "global"])]
    metrics = [m for m in metrics if (sub["metric"] == m).any()]
    if not metrics:
        return []
    methods = list(dict.fromkeys(sub["method"]))
    methods = [m for m in methods if m not in ANCHORS] + [m for m in ANCHORS if m in methods]
    fig, axes = plt.subplots(1, len(metrics), figsize=(TWO_COLUMNS if len(metrics) > 1 else ONE_COLUMN, 1.9),
                             squeeze=False)
    xpos = np.arange(len(methods))
    for ax, metric in zip(axes[0], metrics):
        for j, (group, colour) in enumerate((("local", "C0"), ("global", "C1"))):
            rows = sub[(sub["metric"] == metric) & (sub["attribute"] == group)].set_index("method").reindex(methods)
            ax.bar(xpos + (j - 0.5) * 0.38, rows["mean"], 0.38, yerr=rows["std"], label=group, color=colour,
                   capsize=1.5, error_kw={"elinewidth": 0.6})
        ax.set_xticks(xpos, methods, rotation=30, ha="right")
        ax.set_title(_short(metric) + _arrow(metric))
        ax.grid(axis="y", alpha=0.3, lw=0.5)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.suptitle(f"local vs global attributes, strength {s:g} (error bars: std over seeds)", fontsize=7, x=0.4)
    fig.tight_layout(pad=0.3)
    fig.legend(handles, labels, loc="upper right", ncol=2, frameon=False, bbox_to_anchor=(1.0, 1.02))
    return _save(fig, out, "groups_bar")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def make_all(run_dirs: list[Path], summary: pd.DataFrame, out: Path) -> tuple[dict[str, list[Path]], list[dict]]:
    """Every figure this data allows; returns {name: [png, pdf]} and notes on what could not be drawn."""
    out.mkdir(parents=True, exist_ok=True)
    produced: dict[str, list[Path]] = {}
    notes: list[dict] = []

    def attempt(name: str, fn: Any, *args: Any) -> None:
        try:
            paths = fn(*args)
        except Exception as exc:  # noqa: BLE001 - a figure must not sink the tables
            log.warning("figure %s failed: %s", name, exc, exc_info=True)
            notes.append({"status": "figure", "metric": name, "error": f"{type(exc).__name__}: {exc}"})
            return
        if paths:
            produced[name] = paths

    strips = saved_strips(run_dirs)
    for attr in dict.fromkeys(a for _, a in strips):
        attempt(f"grid_{attr}", attribute_grid, run_dirs, attr, strips, out)
    if strips:
        attempt("overview", overview_grid, strips, out)
    else:
        notes.append({"status": "figure", "metric": "grids", "error": "no images/ saved (output.save_images: 0?)"})
    if summary.empty:
        return produced, notes
    metrics = list(summary["metric"].unique())
    success = _first(metrics, ("attr_success",))
    identity = _first(metrics, ("id_cos_synth", "id_cos_facenet", "id_cos"))
    distance = _first(metrics, ("lpips", "cf_lpips", "cf_l1"))
    if success and identity:
        attempt("tradeoff_identity", tradeoff, summary, success, identity, out, "tradeoff_identity")
    if success and distance:
        attempt("tradeoff_distance", tradeoff, summary, success, distance, out, "tradeoff_distance")
    if not success:
        notes.append({"status": "figure", "metric": "tradeoff", "error": "no attr_success metric in the run "
                      "(add the `attributes` evaluator) for the trade-off plots"})
    heads = [m for m in (success, identity, distance) if m] or metrics[:3]
    attempt("groups_bar", groups_bar, summary, heads, out)
    return produced, notes
