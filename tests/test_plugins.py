"""Third-party plugins discovered through entry points, in a fresh interpreter.

The test writes a tiny package plus a ``*.dist-info`` with ``entry_points.txt``
into a temporary directory on ``PYTHONPATH`` - exactly what ``pip install``
leaves behind - and drives the real CLI.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd

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
