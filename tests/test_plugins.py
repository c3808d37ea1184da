"""Third-party plugins discovered through entry points, in a fresh interpreter.

The first tests write a tiny package plus a ``*.dist-info`` with ``entry_points.txt``
into a temporary directory on ``PYTHONPATH`` - exactly what ``pip install``
leaves behind - and drive the real CLI.  The README test copies the plugin
guide's code blocks out of README.md, ``pip install``s them and runs a grid.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A third-party plugin: one editor (class entry point), one dataset and one evaluator (module entry point)."""
import torch
from benchmark.data.base import AttributeSpec, FaceDataset, FaceSplit
from benchmark.registry import register_dataset, register_evaluator
from evaluators.base import Evaluator, RunningMean
from methods.base import Editor, EditorMeta


class Darken(Editor):
    meta = EditorMeta(paper="plugin test editor", trainable=False)

    def edit(self, images, attribute, target, strength=1.0, context=None):
        return (images - 0.5 * strength).clamp(-1, 1)


class _Split(FaceSplit):
    def __init__(self, ds, n):
        self.dataset, self.split_name, self.n = ds, "test", n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"image": torch.zeros(3, self.dataset.resolution, self.dataset.resolution),
                "labels": torch.tensor([float(i % 2)]), "identity": torch.tensor(i), "index": torch.tensor(i)}


@register_dataset("plug-data")
class PlugData(FaceDataset):
    """Grey squares (plugin)."""
    attributes = (AttributeSpec("Smiling", "local"),)

    def split(self, name):
        self._check_split(name)
        return _Split(self, 6)


@register_evaluator("plug-brightness")
class Brightness(Evaluator):
    """Mean brightness of edited images (plugin)."""
    metrics = ("plug_brightness",)

    def reset(self):
        self.m = RunningMean()

    def update(self, source, edited, labels, target, **extras):
        self.m.add(edited.mean(dim=(1, 2, 3)))

    def finalize(self):
        return {"plug_brightness": self.m.value}
'''

ENTRY_POINTS = """
[faceedit_bench.methods]
darken = faceedit_plugin_demo:Darken
broken = faceedit_plugin_missing_module:Nothing

[faceedit_bench.datasets]
demo = faceedit_plugin_demo

[faceedit_bench.evaluators]
demo = faceedit_plugin_demo
"""


def _install_plugin(site: Path) -> None:
    (site / "faceedit_plugin_demo.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "faceedit_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: faceedit-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(ENTRY_POINTS)


def _cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
           "FACEEDIT_CACHE": str(site / "cache")}
    return subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), *args], env=env, capture_output=True,
                          text=True, timeout=180, cwd=site)


def test_plugin_discovered_listed_and_run(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    _install_plugin(site)
    listed = _cli(site, "--list")
    assert listed.returncode == 0, listed.stderr
    assert "darken" in listed.stdout and "plug-data" in listed.stdout and "plug-brightness" in listed.stdout
    assert "entry point faceedit_plugin_demo:Darken" in listed.stdout
    # a broken plugin is reported, not fatal
    assert "broken" in listed.stdout and "plugin failed to load" in listed.stdout

    run = _cli(site, "--out", str(tmp_path / "runs"), "data.name=plug-data", "data.resolution=8",
               "methods=[identity,darken]", "attributes=[Smiling]", "evaluators=[plug-brightness]",
               "strengths=[1.0]", "device=cpu", "output.progress=false")
    assert run.returncode == 0, run.stdout + run.stderr
    df = pd.read_csv(next((tmp_path / "runs").glob("*/results.csv")))
    means = df[df.direction == "mean"].set_index("method")["value"]
    assert means["identity"] == 0.0
    assert means["darken"] == -0.5


def test_without_plugin_names_are_unknown(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    res = _cli(site, "--dry-run", "methods=[darken]")
    assert res.returncode == 2
    assert "unknown method 'darken'" in res.stderr and "Traceback" not in res.stderr


# -- the README's plugin guide, as written --------------------------------------------------------

README_SECTION = "## Adding your editor or metric (plugin)"


def readme_files() -> dict[str, str]:
    """The guide's code blocks whose first line names a file (``# path``), keyed by that path."""
    text = (ROOT / "README.md").read_text()
    start = text.index(README_SECTION)
    section = text[start:text.index("\n## ", start + 1)]
    blocks = re.findall(r"^```(?:python|toml)\n# (\S+)\n(.*?)^```", section, re.M | re.S)
    return {path: f"# {path}\n{body}" for path, body in blocks}


def install_readme_package(tmp_path: Path) -> Path:
    """Write the README's package and ``pip install`` it into a target folder (what a user does)."""
    pkg, site = tmp_path / "pkg", tmp_path / "site"
    files = readme_files()
    assert {"pyproject.toml", "faceedit_meanshift/__init__.py", "faceedit_meanshift/editor.py",
            "faceedit_meanshift/evaluator.py"} <= set(files), sorted(files)
    for rel, body in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(body)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", "--target", str(site), str(pkg)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    shutil.rmtree(pkg)  # only the installed copy remains importable
    assert list(site.glob("faceedit_meanshift-*.dist-info/entry_points.txt"))
    return site


def _fit_dirs(site: Path) -> list[Path]:
    """The cached fits of the example editor (lock files and work folders are hidden)."""
    return sorted(p for p in (site / "cache" / "editors" / "mean-shift").iterdir() if not p.name.startswith("."))


def test_readme_plugin_guide_builds_installs_and_runs(tmp_path):
    site = install_readme_package(tmp_path)
    listed = _cli(site, "--list")
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^\s+mean-shift\s+mean-shift baseline", listed.stdout, re.M)
    assert re.search(r"^\s+pixel-change\s+pixel_change_l1, pixel_change_outside_l1", listed.stdout, re.M)

    grid = ["--config", str(ROOT / "configs/smoke.yaml"), "methods=[identity,mean-shift]",
            "evaluators=[pixel-change]", "attributes=[Smiling,Male]", "seeds=[0]", "strengths=[0.5,1.0]",
            "method_options.mean-shift.max_images=64", "evaluator_options.pixel-change.scale=1.0",
            "output.progress=false"]
    first = _cli(site, "--out", str(tmp_path / "runs"), *grid)
    assert first.returncode == 0, first.stdout + first.stderr
    fits = _fit_dirs(site)
    assert len(fits) == 2, fits  # one fit per attribute, shared by both strengths
    second = _cli(site, "--out", str(tmp_path / "runs"), *grid)  # loads the cached fits
    assert second.returncode == 0, second.stdout + second.stderr
    assert _fit_dirs(site) == fits

    runs = sorted((tmp_path / "runs").iterdir())
    a, b = (pd.read_csv(r / "results.csv") for r in runs)
    assert (a["status"] == "ok").all(), a[a.status != "ok"].to_string()
    mean = a[a.direction == "mean"].pivot_table(index=["method", "strength"], columns="metric", values="value",
                                                aggfunc="mean")
    assert (mean.loc["identity", "pixel_change_l1"] == 0).all()
    shift = mean.loc["mean-shift", "pixel_change_l1"]
    assert 0 < shift[0.5] < shift[1.0]
    assert (mean.loc["mean-shift", "pixel_change_outside_l1"] < shift).all()
    cols = ["method", "attribute", "strength", "direction", "metric"]
    pd.testing.assert_frame_equal(a.sort_values(cols)[cols + ["value"]].reset_index(drop=True),
                                  b.sort_values(cols)[cols + ["value"]].reset_index(drop=True))  # same from cache
    tex = (runs[0] / "report" / "table.tex").read_text()
    assert r"pixel\_change\_l1 $\downarrow$" in tex

    bad = _cli(site, "--dry-run", "--config", str(ROOT / "configs/smoke.yaml"), "evaluators=[pixel-change]",
               "evaluator_options.pixel-change.scael=2")
    assert bad.returncode == 2
    assert "unknown option 'scael'; pixel-change accepts: scale" in bad.stderr


@pytest.mark.parametrize("path", ["faceedit_meanshift/editor.py", "faceedit_meanshift/evaluator.py"])
def test_readme_plugin_code_compiles(path):
    compile(readme_files()[path], path, "exec")
