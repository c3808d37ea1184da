"""The entry point: --list, --dry-run, the smoke config end to end, exit statuses, and the README's promises."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from benchmark import rundir
from benchmark.cli import main
from benchmark.registry import DATASETS, EVALUATORS, METHODS
from evaluators.base import Evaluator, MetricUnavailable

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
    assert main(["--config", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "runs"),
                 "output.progress=false"]) == 0
    run = next((tmp_path / "runs").iterdir())
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


# -- exit status: 0 clean, 1 when a cell or metric errored, 2 for user errors --------------------

TOY = ["data.name=toy-faces", "data.resolution=16", "data.batch_size=4", "device=cpu", "output.progress=false"]


@EVALUATORS.register("test-broken-metric")
class BrokenMetric(Evaluator):
    """Fails on every batch (test fixture): a metric-level error."""

    metrics = ("broken",)

    def reset(self) -> None:
        pass

    def update(self, source, edited, labels, target, **extras) -> None:
        raise RuntimeError("broken on purpose")

    def finalize(self) -> dict[str, float]:
        return {}


@EVALUATORS.register("test-unavailable-metric")
class UnavailableMetric(BrokenMetric):
    """Cannot run here (test fixture), like Inception weights offline."""

    def __init__(self, ctx, **options):
        raise MetricUnavailable("weights for test-unavailable-metric are not on this machine")


@EVALUATORS.register("test-skipped-metric")
class SkippedMetric(BrokenMetric):
    """Declines every dataset (test fixture)."""

    @classmethod
    def supports(cls, dataset):
        return "not for this dataset"


def test_clean_run_exits_0_and_prints_no_error_count(tmp_path, cache_dir, capsys):
    assert main(["--out", str(tmp_path / "runs"), *TOY, "methods=[identity]", "attributes=[Male]",
                 "evaluators=[mean-abs-change,test-unavailable-metric,test-skipped-metric]"]) == 0
    err = capsys.readouterr().err
    assert "errors:" not in err
    df = pd.read_csv(next((tmp_path / "runs").iterdir()) / "results.csv")
    assert set(df["status"]) == {"ok", "unavailable", "skipped"}  # neither is an error


def test_failed_cell_exits_1_with_the_count(tmp_path, cache_dir, capsys):
    code = main(["--out", str(tmp_path / "runs"), *TOY, "methods=[toy-flip,identity]", "attributes=[Smiling,Male]",
                 "evaluators=[mean-abs-change]", "method_options.toy-flip.fail_on=Smiling"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "errors: 1 (1 failed cells, 0 failed metrics)" in err and "problems.csv" in err
    assert "report:" in out  # the grid went on and the report was written


def test_failed_metric_exits_1(tmp_path, cache_dir, capsys):
    code = main(["--out", str(tmp_path / "runs"), *TOY, "methods=[identity]", "attributes=[Smiling,Male]",
                 "evaluators=[mean-abs-change,test-broken-metric]"])
    assert code == 1
    assert "errors: 2 (0 failed cells, 2 failed metrics)" in capsys.readouterr().err


def test_a_shard_exits_on_its_own_cells_only(tmp_path, cache_dir, capsys):
    assert main(["--init", "--out", str(tmp_path / "runs"), *TOY, "methods=[identity,toy-flip]",
                 "attributes=[Smiling]", "evaluators=[mean-abs-change]", "method_options.toy-flip.fail_on=Smiling"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["--resume", str(run), "--shard", "1/2", "output.progress=false"]) == 1  # toy-flip's fit group
    assert main(["--resume", str(run), "--shard", "0/2", "output.progress=false"]) == 0  # identity's
    assert rundir.count_errors(rundir.latest_attempts(rundir.read_rows(run / "results.jsonl")))["cells"] == 1


CUDA_MISSING = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.mark.parametrize("overrides, message", [
    (["strengths=[.nan]"], "strengths: [nan] are not finite"),
    (["strengths=[.inf]"], "strengths: [inf] are not finite"),
    (["data.max_test=0"], "data.max_test: 0"),
    (["data.max_test=-3"], "data.max_test: -3"),
    (["data.num_workers=-1"], "data.num_workers: -1"),
    (["attributes=[]"], "attributes: at least one attribute"),
    (["attributes=[Smilling]"], "unknown attribute"),
    (["data.name=synthfaces", "data.resolution=1000"], "resolution must be"),
    (["evaluators=[lpips]", "evaluator_options.lpips.net=vgg"],
     "evaluator_options.lpips: unknown option 'net'; lpips accepts: (no options)"),
    (["evaluators=[attributes]", "evaluator_options.attributes.train_if_mising=false"],
     "unknown option 'train_if_mising'; attributes accepts: classifier, train_if_missing"),
    (["evaluator_options.lpip.x=1"], "evaluator_options.lpip: unknown evaluator 'lpip'"),
    pytest.param(["device=cuda"], "CUDA is not available", marks=CUDA_MISSING),
])
def test_config_errors_exit_2_with_one_line_and_leave_no_run_dir(tmp_path, cache_dir, capsys, overrides, message):
    out = tmp_path / "runs"
    code = main(["--out", str(out), *TOY, "methods=[identity]", "attributes=[Male]", "evaluators=[mean-abs-change]",
                 *overrides])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir()), "a config that fails validation leaves no run directory"


def test_empty_config_file_exits_2(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["--config", str(empty), "--dry-run"]) == 2
    assert "is empty" in capsys.readouterr().err


def test_cuda_without_cuda_is_one_line_in_a_subprocess(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), "--config", str(ROOT / "configs/smoke.yaml"),
                          "--out", str(tmp_path / "runs"), "device=cuda"], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "FACEEDIT_CACHE": str(tmp_path / "cache")})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: device 'cuda' was asked for but CUDA is not available; use device=cpu"]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# -- dry run fails like the run ----------------------------------------------------------------

@pytest.mark.parametrize("override, message", [("attributes=[Smilng]", "unknown attribute"),
                                               ("data.resolution=16", "resolution must be")])
def test_dry_run_fails_like_the_real_run(override, message, capsys):
    assert main(["--config", str(ROOT / "configs/smoke.yaml"), "--dry-run", override]) == 2
    out, err = capsys.readouterr()
    assert message in err and "# grid" not in out


def test_dry_run_notes_a_missing_device_without_failing(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["--config", str(ROOT / "configs/smoke.yaml"), "--dry-run", "device=cuda"]) == 0
    assert "# note: device 'cuda' was asked for but CUDA is not available" in capsys.readouterr().out


# -- --report, --list, --assets ---------------------------------------------------------------

def test_report_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["--report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is not a run directory" in err and "Traceback" not in err
    assert main(["--report", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_report_on_an_initialised_run_without_results(tmp_path, capsys):
    assert main(["--init", "--out", str(tmp_path), *TOY, "evaluators=[mean-abs-change]"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["--report", str(run)]) == 2
    assert "has no results yet" in capsys.readouterr().err


def test_init_writes_env_json(tmp_path, capsys):
    assert main(["--init", "--out", str(tmp_path), *TOY, "evaluators=[mean-abs-change]"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    env = json.loads((run / "env.json").read_text())
    assert env["role"].startswith("init") and env["device"].startswith("cpu") and "torch" in env["packages"]


def test_list_into_a_closed_pipe_ends_quietly():
    """`--list | head`: the reader goes away; no BrokenPipeError traceback."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "run_benchmark.py"), "--list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # no reader at all: the first write (or the final flush) hits EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_list_describes_datasets_in_one_line_with_their_options(capsys):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert "docstring" not in out
    synth = next(line for line in out.splitlines() if line.strip().startswith("synthfaces "))
    assert "10 attributes; with masks, identities, counterfactuals" in synth
    lines = out.splitlines()
    celeb = next(i for i, line in enumerate(lines) if line.strip().startswith("celebahq "))
    assert lines[celeb + 1].startswith("      options: `root`")


def test_list_shows_editor_options_when_the_class_describes_them(capsys):
    from methods.base import Editor, EditorMeta

    @METHODS.register("test-described-editor")
    class Described(Editor):
        meta = EditorMeta(paper="test fixture", trainable=False)

        @classmethod
        def describe_options(cls):
            return ["lr: float = 0.0001  learning rate", "steps: int = 100"]

        def edit(self, images, attribute, target, strength=1.0, context=None):
            return images

    try:
        assert main(["--list"]) == 0
        lines = capsys.readouterr().out.splitlines()
        i = next(i for i, line in enumerate(lines) if line.strip().startswith("test-described-editor "))
        assert lines[i + 1:i + 3] == ["      lr: float = 0.0001  learning rate", "      steps: int = 100"]
    finally:
        METHODS.unregister("test-described-editor")


def test_assets_listing_says_why_alexnet_is_in_the_torch_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["--assets"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"cache: {tmp_path / 'cache'} ($FACEEDIT_CACHE)"
    alex = out[out.index("alexnet_imagenet_torchvision"):].split("\n\n")[0].splitlines()
    note = next(line for line in alex[:7] if line.strip().startswith("note:"))
    assert str(tmp_path / "torch") in note and "torchvision" in note and "$TORCH_HOME" in note
    facenet = out[out.index("facenet_vggface2"):].splitlines()
    assert not any(line.strip().startswith("note:") for line in facenet[1:5])  # it is in the cache


CELEBAHQ = ROOT.parent / "shared" / "data" / "celebahq"


@pytest.mark.skipif(not (CELEBAHQ / "CelebA-HQ-img-64").is_dir(), reason="no CelebA-HQ mirror beside the checkout")
def test_readme_celebahq_command_runs_as_written(tmp_path, cache_dir, monkeypatch, capsys):
    """The README's CelebA-HQ line, verbatim, plus overrides that make it a few seconds long."""
    import shlex

    line = next(x.strip() for x in (ROOT / "README.md").read_text().splitlines()
                if "configs/celebahq64.yaml data.options.root=" in x)
    argv = shlex.split(line)
    assert argv[0] == ".venv/bin/faceedit-bench"
    monkeypatch.chdir(ROOT)  # the command's paths are relative to the checkout
    code = main([*argv[1:], "--out", str(tmp_path / "runs"), "data.max_test=4", "attributes=[Smiling]", "methods=[identity]",
                 "evaluators=[mean-abs-change]", "device=cpu", "output.progress=false"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_csv(next((tmp_path / "runs").iterdir()) / "results.csv")
    assert (df["status"] == "ok").all() and df[df.direction == "mean"]["n"].tolist() == [4]
