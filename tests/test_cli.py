"""The entry point: --list, --dry-run, the smoke config end to end, and the README's promises."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

from benchmark.cli import main
from benchmark.registry import DATASETS, EVALUATORS, METHODS

ROOT = Path(__file__).resolve().parents[1]


def test_list_shows_every_registered_name(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in METHODS.names() + EVALUATORS.names() + DATASETS.names():
        assert re.search(rf"^\s+{re.escape(name)}\s", out, re.M), name


def test_dry_run_prints_resolved_config_and_grid(capsys):
    assert main(["--config", str(ROOT / "configs/smoke.yaml"), "--dry-run", "seeds=[0,1]"]) == 0
    out = capsys.readouterr().out
    body = yaml.safe_load("\n".join(line for line in out.splitlines() if not line.startswith("#")))
    assert body["name"] == "smoke" and body["seeds"] == [0, 1] and body["data"]["resolution"] == 32
    assert "# grid: 2 methods × 2 attributes × 1 strengths × 2 seeds = 8 cells" in out


def test_smoke_config_end_to_end(tmp_path, cache_dir):
    assert main(["--config", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path), "output.progress=false"]) == 0
    run = next(tmp_path.iterdir())
    df = pd.read_csv(run / "results.csv")
    assert (df["status"] == "ok").all(), df[df.status != "ok"].to_string()
    mean = df[df.direction == "mean"].pivot_table(index="method", columns="metric", values="value", aggfunc="mean")
    # sanity anchors (DESIGN §4): the oracle matches the counterfactual exactly, the no-op changes nothing
    assert mean.loc["oracle", "cf_l1"] == 0.0
    assert mean.loc["identity", "cf_l1"] > 0.0
    assert (run / "report" / "figure_grid.png").is_file()


def test_user_errors_print_one_line_not_a_traceback(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), "--dry-run", "data.resolutoin=3"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.startswith("error: unknown config key 'data.resolutoin'") and "Traceback" not in res.stderr


def test_readme_commands_and_ci_agree():
    readme = (ROOT / "README.md").read_text().splitlines()
    commands = [line.strip().split("#")[0].strip() for line in readme[:6] if line.startswith("    ")]
    assert commands == ["make bench", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^bench:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    ci = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci[-1] == "make test"


def test_assets_listing_names_path_and_source(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path))
    assert main(["--assets"]) == 0
    out = capsys.readouterr().out
    for name in ("inception_v3_fid_torchscript", "facenet_vggface2", "alexnet_imagenet_torchvision",
                 "CelebAMask-HQ"):
        assert any(line.startswith(name) for line in out.splitlines()), name
    facenet = out[out.index("facenet_vggface2"):].splitlines()
    assert "[MISSING]" in facenet[0] and str(tmp_path) in facenet[1] and "https://" in facenet[2]
