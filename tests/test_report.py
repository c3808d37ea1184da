"""Report tables, figures and merging, from results files the test writes (known numbers, no models)."""
from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchmark import report, report_figures, rundir
from benchmark.cli import main

SUCCESS, IDENT, DIST = "attr_success_resnet18_toy", "id_cos_synth_toy", "cf_l1"
ATTRS = {"Smiling": "local", "Eyeglasses": "local", "Male": "global"}
# value = base[method][metric] + per-attribute offset + per-seed offset + strength slope
BASE = {"good": {SUCCESS: 0.9, IDENT: 0.80, DIST: 0.10},
        "weak": {SUCCESS: 0.5, IDENT: 0.85, DIST: 0.20},
        "identity": {SUCCESS: 0.0, IDENT: 1.00, DIST: 0.05}}  # the anchor wins cf_l1 and id_cos: not bold


def value(method: str, metric: str, attr: str, seed: int, strength: float) -> float:
    return BASE[method][metric] + 0.01 * list(ATTRS).index(attr) + 0.02 * seed + 0.05 * (strength - 1.0)


def write_run(root: Path, name: str, seeds=(0, 1), methods=tuple(BASE), strengths=(0.5, 1.0, 1.5),
              images: bool = True, attention: bool = False) -> Path:
    run = root / name
    (run / "images").mkdir(parents=True)
    (run / "config.yaml").write_text(f"name: {name}\ndata: {{name: toy-faces, resolution: 8}}\n")
    for m in methods:
        for attr, group in ATTRS.items():
            for seed in seeds:
                for s in strengths:
                    attempt = uuid.uuid4().hex[:12]
                    base = {"method": m, "dataset": "toy", "attribute": attr, "group": group, "strength": s,
                            "seed": seed, "n": 8, "status": "ok", "error": "", "seconds": 0.1, "attempt": attempt}
                    rows = []
                    for metric in BASE[m]:
                        v = value(m, metric, attr, seed, s)
                        rows += [{**base, "direction": d, "metric": metric, "value": v} for d in ("0to1", "1to0",
                                                                                               "mean")]
                    rundir.append_cell(run / "results.jsonl", rows)
                    if images:
                        strip(run / "images" / f"{rundir.CellKey(m, 'toy', attr, s, seed).slug()}.png", k=4)
                        if attention and m == "good":
                            mask = np.tile(np.linspace(0, 255, 8, dtype=np.uint8), (8, 4))
                            Image.fromarray(mask).save(run / "images" /
                                                       f"{rundir.CellKey(m, 'toy', attr, s, seed).slug()}_attention.png")
    rundir.append_rows(run / "fits.jsonl", [{"method": "good", "stage": "gan", "key": "abc123", "attribute": None,
                                             "source": "trained", "path": "/x", "steps": 10, "seconds": 1.5,
                                             "device": "cpu", "final_losses": {"loss_g": 0.5}, "seed": 0}])
    return run


def strip(path: Path, k: int, size: int = 8) -> None:
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    Image.fromarray(rng.integers(0, 255, (2 * size, k * size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def run(tmp_path):
    return write_run(tmp_path, "00000-toy")


def test_summary_is_mean_and_sample_std_over_seeds(run):
    s = report.summarize(report.load_results(run))
    row = s[(s.method == "good") & (s.attribute == "Eyeglasses") & (s.strength == 1.0) & (s.metric == SUCCESS)].iloc[0]
    vals = [value("good", SUCCESS, "Eyeglasses", seed, 1.0) for seed in (0, 1)]
    assert row["mean"] == pytest.approx(np.mean(vals)) and row["std"] == pytest.approx(np.std(vals, ddof=1))
    assert row["seeds"] == 2 and row["direction"] == "higher"
    local = s[(s.method == "good") & (s.attribute == "local") & (s.strength == 1.0) & (s.metric == SUCCESS)].iloc[0]
    per_seed = [np.mean([value("good", SUCCESS, a, seed, 1.0) for a in ("Smiling", "Eyeglasses")]) for seed in (0, 1)]
    assert local["mean"] == pytest.approx(np.mean(per_seed)) and local["std"] == pytest.approx(np.std(per_seed, ddof=1))


def _rows(tex: str) -> dict[str, str]:
    out = {}
    block = ""
    for line in tex.splitlines():
        if line.rstrip().endswith(r"\\") and " & " in line and not line.startswith("Attributes"):
            cells = [c.strip() for c in line.rstrip(" \\").split(" & ")]
            block = cells[0] or block
            out[f"{block}|{cells[1]}"] = line
    return out


def test_latex_table_bolds_the_best_competitor_by_direction(run):
    out = report.generate(run, figures=False, html=False)
    tex = (out / "table.tex").read_text()
    head = next(line for line in tex.splitlines() if line.startswith("Attributes & Method"))
    assert r"attr\_success $\uparrow$" in head and r"cf\_l1 $\downarrow$" in head and r"id\_cos $\uparrow$" in head
    assert r"\toprule" in tex and r"\bottomrule" in tex and tex.count(r"\midrule") == 2  # header + block rule
    rows = _rows(tex)
    good, weak = rows[r"\textit{Local (mean)}|good"], rows[r"\textit{Local (mean)}|weak"]
    ident = rows[r"\textit{Local (mean)}|identity"]
    # success (higher) and cf_l1 (lower): good is best; id_cos (higher): weak beats good; identity never bold
    assert good.split(" & ")[2].startswith(r"\textbf{") and good.split(" & ")[4].startswith(r"\textbf{")
    assert weak.split(" & ")[3].startswith(r"\textbf{") and not good.split(" & ")[3].startswith(r"\textbf{")
    assert r"\textbf" not in ident
    assert "$\\pm$" in good and "judged by resnet18\\_toy" in tex
    assert "strength 1" in tex and "over 2 seeds" in tex
    for attr in ATTRS:
        assert (out / f"table_{attr}.tex").is_file() and (out / f"table_{attr}.csv").is_file()
    csv = pd.read_csv(out / "table.csv")
    assert list(csv.columns[:2]) == ["Attributes", "Method"] and SUCCESS in csv.columns


@pytest.mark.skipif(shutil.which("pdflatex") is None,
                    reason="pdflatex is absent (Debian: apt-get install texlive-latex-base texlive-latex-recommended)")
def test_tables_compile_with_pdflatex(run, tmp_path):
    out = report.generate(run, figures=False, html=False)
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "tables.tex"], cwd=out,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:]
    assert (out / "tables.pdf").stat().st_size > 1000
    assert "Overfull" not in res.stdout  # the tabular shrinks to the line width


def test_merging_runs_pools_seeds_and_reports_duplicates(tmp_path, capsys):
    a = write_run(tmp_path, "00001-a", seeds=(0,), images=False)
    b = write_run(tmp_path, "00002-b", seeds=(1, 2), images=False)
    c = write_run(tmp_path, "00003-c", seeds=(2,), methods=("good",), images=False)  # seed 2 of good again
    out = tmp_path / "merged"
    assert main(["--report", str(a), str(b), str(c), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"html:     {out / 'index.html'}" in printed
    s = pd.read_csv(out / "summary.csv")
    assert set(s.seeds) == {3}
    problems = pd.read_csv(out / "problems.csv")
    merged = problems[problems.status == "merged"]
    assert len(merged) == 3 * 3 and merged.error.str.contains("the report keeps 00003-c").all()
    assert "3 runs merged" in (out / "table.tex").read_text()
    assert report.default_report_dir([a, b]) == tmp_path / "merged-00001+00002" / "report"


def test_figures_png_and_pdf_sized_for_two_columns(tmp_path):
    run = write_run(tmp_path, "00000-fig", attention=True)
    out = report.generate(run, html=False)
    figs = out / "figures"
    for stem in ("grid_Smiling", "grid_Male", "tradeoff_identity", "tradeoff_distance", "groups_bar", "overview"):
        assert (figs / f"{stem}.png").is_file() and (figs / f"{stem}.pdf").stat().st_size > 1000, stem
    for stem, inches in (("tradeoff_identity", 7.0), ("groups_bar", 7.0), ("grid_Smiling", 7.0)):
        width = Image.open(figs / f"{stem}.png").size[0] / 200
        assert inches * 0.85 < width < inches * 1.08, (stem, width)
    assert (out / "figure_grid.png").is_file()
    strips = report_figures.saved_strips([run])
    sources = report_figures._tiles(strips[("good", "Smiling")][0], "top")
    cols = report_figures.grid_columns(strips, "Smiling", ["good", "weak", "identity"], sources, 8)
    assert [c[0] for c in cols] == ["input", "good", "good\nattention", "weak", "identity"]
    assert cols[2][2] and cols[2][1][0].shape == (8, 8)


def test_grid_canvas_places_every_tile_and_leaves_gaps_and_missing_cells_white():
    """The figure grids draw one composed canvas: each tile must land at its row and column, exactly."""
    a = np.full((8, 8, 3), 10, dtype=np.uint8)
    b = np.full((8, 8, 3), 200, dtype=np.uint8)
    narrow = np.full((8, 4, 3), 50, dtype=np.uint8)  # a strip with fewer saved faces
    canvas, (vstep, hstep) = report_figures.compose_canvas([[a, None], [narrow, b]], 8, 8)
    gap = vstep - 8
    assert gap >= 1 and (vstep, hstep) == (8 + gap, 8 + gap)
    assert canvas.shape == (2 * 8 + gap, 2 * 8 + gap, 3)
    assert (canvas[:8, :8] == 10).all() and (canvas[:8, hstep:] == 255).all()  # None stays blank
    assert (canvas[vstep:, :4] == 50).all() and (canvas[vstep:, 4:8] == 255).all()
    assert (canvas[vstep:, hstep:] == 200).all() and (canvas[8:vstep] == 255).all()  # the gap row
    mask = np.array([[0, 255]], dtype=np.uint8)
    import matplotlib

    rgb = report_figures._colour(mask, matplotlib.colormaps["magma"])
    assert rgb.shape == (1, 2, 3) and rgb[0, 0].sum() < 30 and rgb[0, 1].sum() > 500  # magma: black to pale


def test_grid_rows_alternate_directions_and_prefer_new_identities():
    info = [{"identity": 0, "label": 0}, {"identity": 0, "label": 1}, {"identity": 0, "label": 0},
            {"identity": 1, "label": 0}, {"identity": 1, "label": 1}, {"identity": 2, "label": 1}]
    rows = report_figures.pick_rows(info, 6, n=4)
    assert rows[:3] == [0, 4, 3] or rows[:2] == [0, 4]
    assert {info[i]["label"] for i in rows} == {0, 1} and len({info[i]["identity"] for i in rows}) == 3


def test_grid_rows_are_labelled_by_the_faces_really_saved(tmp_path):
    """The runner saves showcase-picked faces (distinct people), not the first k: the sidecar says which."""
    import json

    run = write_run(tmp_path, "00000-labels", methods=("good",), seeds=(0,), strengths=(1.0,))
    slug = rundir.CellKey("good", "toy", "Smiling", 1.0, 0).slug()
    faces = [{"index": 40 + i, "identity": 70 + i, "label": i % 2} for i in range(4)]
    (run / "images" / f"{slug}.json").write_text(json.dumps(faces))
    strip_path = run / "images" / f"{slug}.png"
    assert report_figures.saved_faces(strip_path, 4) == [{"identity": 70 + i, "label": i % 2} for i in range(4)]
    assert report_figures._row_label(report_figures.saved_faces(strip_path, 4), 1, "Smiling") == "id 71\n−Smiling"
    (run / "images" / f"{slug}.json").write_text("[{\"identity\": 1}]")  # malformed or short: fall back
    assert report_figures.saved_faces(strip_path, 4) is None


def test_runner_writes_the_sidecar_of_the_saved_faces(tmp_path, cache_dir):
    import json

    assert main(["--out", str(tmp_path / "runs"), "data.name=toy-faces", "data.resolution=8", "methods=[identity]",
                 "attributes=[Smiling]", "strengths=[1.0]", "evaluators=[mean-abs-change]", "device=cpu",
                 "output.progress=false", "output.save_images=3", "--no-report"]) == 0
    run = next((tmp_path / "runs").iterdir())
    sidecars = list((run / "images").glob("*.json"))
    assert len(sidecars) == 1
    faces = json.loads(sidecars[0].read_text())
    assert len(faces) == 3 and all({"index", "identity", "label"} <= set(f) for f in faces)
