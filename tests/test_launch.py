"""The cluster launcher: the jobs' device follows --gpus, and --init leaves env.json beside config.yaml."""
from __future__ import annotations

import json
import subprocess

import yaml

from benchmark.launch import main as launch

TOY = ["data.name=toy-faces", "data.resolution=16", "evaluators=[mean-abs-change]", "methods=[identity]",
       "attributes=[Male]", "output.progress=false"]


def _run_dir(root):
    (run,) = list(root.iterdir())
    return run


def test_gpus_with_a_cpu_config_runs_the_jobs_on_cuda_and_says_so(tmp_path, capsys):
    assert launch(["slurm", "--out", str(tmp_path), "--shards", "2", "--gpus", "1", *TOY, "device=cpu"]) == 0
    err = capsys.readouterr().err
    assert "config says device=cpu, but --gpus 1" in err and "device=cuda" in err
    run = _run_dir(tmp_path)
    assert yaml.safe_load((run / "config.yaml").read_text())["device"] == "cuda"
    script = (run / "launch" / "slurm.sh").read_text()
    assert "--gres=gpu:1" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_auto_device_is_left_alone(tmp_path, capsys):
    assert launch(["slurm", "--out", str(tmp_path), "--shards", "2", "--gpus", "1", *TOY, "device=auto"]) == 0
    assert "note:" not in capsys.readouterr().err
    assert yaml.safe_load((_run_dir(tmp_path) / "config.yaml").read_text())["device"] == "auto"


def test_cuda_without_gpus_is_refused_before_any_run_dir(tmp_path, capsys):
    assert launch(["slurm", "--out", str(tmp_path / "runs"), "--shards", "2", "--gpus", "0", *TOY,
                   "device=cuda"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: device=cuda needs GPUs but --gpus 0") and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_cpu_jobs_without_gpus(tmp_path):
    assert launch(["slurm", "--out", str(tmp_path), "--shards", "3", "--gpus", "0", *TOY, "device=cpu"]) == 0
    run = _run_dir(tmp_path)
    assert "--gres" not in (run / "launch" / "slurm.sh").read_text()
    assert yaml.safe_load((run / "config.yaml").read_text())["device"] == "cpu"


def test_launcher_init_writes_env_json(tmp_path):
    assert launch(["slurm", "--out", str(tmp_path), "--shards", "2", "--gpus", "0", *TOY, "device=cpu"]) == 0
    env = json.loads((_run_dir(tmp_path) / "env.json").read_text())
    assert env["role"].startswith("init") and env["device"] == "cpu (as configured)"
    assert "torch" in env["packages"] and env["argv"]


def test_config_errors_are_one_line(tmp_path, capsys):
    assert launch(["slurm", "--out", str(tmp_path / "runs"), "--shards", "2", *TOY, "attributes=[Smilling]"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown attribute") and not (tmp_path / "runs").exists()
