"""The grid runner end to end on the fixture dataset: rows, failures, resume after a kill."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from benchmark import rundir
from benchmark.cli import main

HERE = Path(__file__).resolve().parent
BASE = ["data.name=toy-faces", "data.resolution=16", "data.batch_size=4", "evaluators=[mean-abs-change]",
        "device=cpu", "output.progress=false"]


def run_cli(tmp_path: Path, *overrides: str, code: int = 0) -> Path:
    assert main(["--out", str(tmp_path / "runs"), *BASE, *overrides]) == code
    runs = sorted((tmp_path / "runs").iterdir())
    return runs[-1]


def test_grid_rows_follow_the_long_format(tmp_path, cache_dir):
    run = run_cli(tmp_path, "methods=[identity,toy-flip]", "attributes=[Smiling,Male]", "strengths=[0.5,1.0]",
                  "seeds=[0,1]")
    assert run.name == "00000-default"
    for f in ("config.yaml", "env.json", "results.jsonl", "results.csv", "report/table.tex", "report/summary.csv"):
        assert (run / f).is_file(), f
    df = pd.read_csv(run / "results.csv")
    assert tuple(df.columns) == rundir.ROW_FIELDS
    assert set(df["direction"]) == {"0to1", "1to0", "mean"}
    cells = df.groupby(["method", "attribute", "strength", "seed"]).ngroups
    assert cells == 2 * 2 * 2 + 2 * 2  # toy-flip over both strengths; identity ignores strength: one each
    ident = df[(df.method == "identity") & (df.metric == "mean_abs_change")]
    assert (ident["value"] == 0).all()
    flip = df[(df.method == "toy-flip") & (df.attribute == "Male") & (df.direction != "mean")]
    assert (flip["value"] > 0).all()
    # the mean row is the unweighted mean of the two directions
    one = df[(df.method == "toy-flip") & (df.attribute == "Smiling") & (df.seed == 0) & (df.strength == 1.0)]
    by_dir = one.set_index("direction")["value"]
    assert by_dir["mean"] == pytest.approx((by_dir["0to1"] + by_dir["1to0"]) / 2)
    # n of the directions adds up to the test split
    assert one.set_index("direction")["n"]["mean"] == 20
    env = json.loads((run / "env.json").read_text())
    assert env["device"] == "cpu" and "torch" in env["packages"]


def test_run_dirs_are_numbered_never_overwritten(tmp_path, cache_dir):
    a = run_cli(tmp_path, "methods=[identity]", "attributes=[Male]")
    b = run_cli(tmp_path, "methods=[identity]", "attributes=[Male]")
    assert (a.name, b.name) == ("00000-default", "00001-default")
    assert (a / "results.jsonl").read_text() and (b / "results.jsonl").read_text()


def test_failing_cell_is_recorded_and_grid_goes_on(tmp_path, cache_dir):
    run = run_cli(tmp_path, "methods=[toy-flip,identity]", "attributes=[Smiling,Male]",
                  "method_options.toy-flip.fail_on=Smiling", code=1)
    df = pd.read_csv(run / "results.csv")
    err = df[df.status == "error"]
    assert len(err) == 1
    assert err.iloc[0]["attribute"] == "Smiling" and "told to fail" in err.iloc[0]["error"]
    ok_cells = df[df.status == "ok"].groupby(["method", "attribute"]).ngroups
    assert ok_cells == 3  # toy-flip/Male, identity/Smiling, identity/Male


def test_editor_output_is_validated(tmp_path, cache_dir):
    from benchmark.runner import check_edited
    import torch

    src = torch.zeros(2, 3, 8, 8)
    with pytest.raises(Exception, match="shape"):
        check_edited(torch.zeros(2, 3, 4, 4), src, "m")
    with pytest.raises(Exception, match="non-finite"):
        check_edited(torch.full((2, 3, 8, 8), float("nan")), src, "m")
    with pytest.raises(Exception, match=r"outside \[-1, 1\]"):  # [0, 255]-style output is a bug, never clamped
        check_edited(torch.full((2, 3, 8, 8), 3.0), src, "m")
    assert check_edited(torch.full((2, 3, 8, 8), 1.004), src, "m").max() == 1.0  # rounding is clamped


def test_unknown_names_fail_before_anything_runs(tmp_path, capsys):
    code = main(["--out", str(tmp_path / "runs"), *BASE, "methods=[identity,nope]"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown method 'nope'" in err and "identity" in err
    assert not (tmp_path / "runs").exists()
    assert main(["--out", str(tmp_path / "runs"), *BASE, "attributes=[Smilling]"]) == 2
    assert "Smilling" in capsys.readouterr().err


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    f = tmp_path / "results.jsonl"
    row = {k: 0 for k in rundir.ROW_FIELDS} | {"method": "m", "dataset": "d", "attribute": "a", "metric": "x",
                                                 "status": "ok", "attempt": "1"}
    rundir.append_rows(f, [row])
    with open(f, "a") as fh:
        fh.write('{"method": "m", "dataset"')  # a kill in the middle of a write
    assert len(rundir.read_rows(f)) == 1
    rundir.append_rows(f, [row | {"attempt": "2", "attribute": "b"}])
    lines = f.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(x) for x in lines)


def test_resume_after_kill_loses_and_duplicates_nothing(tmp_path, cache_dir):
    out = tmp_path / "runs"
    args = [sys.executable, str(HERE / "grid_child.py"), "--out", str(out), *BASE,
            "methods=[toy-flip]", "attributes=[Smiling,Male]", "strengths=[0.5,1.0,2.0]", "seeds=[0,1]",
            "method_options.toy-flip.sleep=0.15"]
    env = {**os.environ, "FACEEDIT_CACHE": str(cache_dir)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    jsonl = None
    while time.time() < deadline:
        runs = list(out.glob("*/results.jsonl")) if out.exists() else []
        if runs and len({rundir.CellKey.of(r) for r in rundir.read_rows(runs[0])}) >= 3:
            jsonl = runs[0]
            break
        time.sleep(0.05)
    assert jsonl is not None, proc.communicate()[0].decode()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {rundir.CellKey.of(r): r["attempt"] for r in rundir.read_rows(jsonl)}
    assert 3 <= len(before) < 12, "the kill should land mid-grid"

    code = subprocess.run([sys.executable, str(HERE / "grid_child.py"), "--resume", str(jsonl.parent),
                           "output.progress=false"], env=env, capture_output=True, text=True, timeout=300)
    assert code.returncode == 0, code.stdout + code.stderr
    assert f"{len(before)} already done" in code.stdout
    rows = rundir.read_rows(jsonl)
    attempts: dict = {}
    for r in rows:
        attempts.setdefault(rundir.CellKey.of(r), set()).add(r["attempt"])
    assert len(attempts) == 12  # nothing lost
    assert all(len(a) == 1 for a in attempts.values())  # nothing computed twice
    assert all(attempts[k] == {v} for k, v in before.items())  # finished cells untouched
    df = pd.read_csv(jsonl.parent / "results.csv")
    assert df.groupby(["attribute", "strength", "seed"]).ngroups == 12
    assert len(list(jsonl.parent.glob("env*.json"))) == 2  # the first run and the resume


def test_resume_refuses_overrides_that_change_numbers(tmp_path, cache_dir, capsys):
    run = run_cli(tmp_path, "methods=[identity]", "attributes=[Male]")
    assert main(["--resume", str(run), "data.resolution=32"]) == 2
    assert "would change the run's results" in capsys.readouterr().err


def test_errored_cell_is_retried_on_resume(tmp_path, cache_dir):
    run = run_cli(tmp_path, "methods=[toy-flip]", "attributes=[Smiling,Male]", "method_options.toy-flip.fail_on=Smiling",
                  code=1)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace("fail_on: Smiling", "fail_on: none"))
    assert main(["--resume", str(run), "output.progress=false"]) == 0
    df = pd.read_csv(run / "results.csv")
    assert (df.status == "ok").all() and df.groupby("attribute").ngroups == 2
    raw = rundir.read_rows(run / "results.jsonl")
    assert any(r["status"] == "error" for r in raw), "the failed attempt stays in the append-only log"
    assert not math.isnan(df["value"].iloc[0])


def test_shards_partition_the_grid_and_share_one_run(tmp_path, cache_dir, capsys):
    from benchmark.runner import Cell, shard_cells

    cells = [Cell(m, a, s, seed) for m in "ab" for a in ("x", "y", "z") for seed in (0, 1) for s in (0.5, 1.0)]
    shards = [shard_cells(cells, k, 3) for k in range(3)]
    assert sorted(map(str, sum(shards, []))) == sorted(map(str, cells))  # a partition
    for sh in shards:  # a fit group never spans two shards
        for c in sh:
            assert all(d in sh for d in cells if (d.method, d.attribute, d.seed) == (c.method, c.attribute, c.seed))

    assert main(["--init", "--out", str(tmp_path / "runs"), *BASE, "methods=[identity,toy-flip]",
                 "attributes=[Smiling,Male]"]) == 0
    run = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert (run / "config.yaml").is_file() and not (run / "results.jsonl").exists()
    for k in range(2):
        assert main(["--resume", str(run), "--shard", f"{k}/2", "output.progress=false"]) == 0
    df = pd.read_csv(run / "results.csv")
    assert df.groupby(["method", "attribute"]).ngroups == 4
    assert len(list(run.glob("env*.json"))) == 3  # --init, then one per shard


def test_slurm_launcher_writes_an_array_script(tmp_path, cache_dir, capsys):
    from benchmark.launch import main as launch

    assert launch(["slurm", "--out", str(tmp_path / "runs"), "--shards", "4", *BASE, "methods=[identity]"]) == 0
    script = next((tmp_path / "runs").glob("*/launch/slurm.sh")).read_text()
    assert "#SBATCH --array=0-3" in script and '--shard "${SLURM_ARRAY_TASK_ID}/4"' in script
    assert "--resume" in script and "--gres=gpu:1" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_non_finite_values_round_trip(tmp_path):
    f = tmp_path / "r.jsonl"
    base = {k: 0 for k in rundir.ROW_FIELDS} | {"method": "m", "dataset": "d", "attribute": "a", "status": "ok"}
    rows = [base | {"metric": name, "value": v, "attempt": "1"} for name, v in
            [("psnr", float("inf")), ("leak", float("nan")), ("x", -float("inf")), ("y", 0.25)]]
    rundir.append_rows(f, rows)
    for line in f.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    back = {r["metric"]: r["value"] for r in rundir.read_rows(f)}
    assert back["psnr"] == float("inf") and math.isnan(back["leak"]) and back["x"] == -float("inf")
    assert back["y"] == 0.25


def test_showcase_collector_finds_a_direction_that_the_first_batch_lacks():
    """Bangs is absent from SynthFaces' first test batch: the grid showed '+Bangs' rows only."""
    import torch

    from benchmark.runner import ShowcaseCollector

    k = 4
    col = ShowcaseCollector(k)
    for b in range(6):  # batch 0: every face lacks the attribute (target 1); later ones mix
        n = 8
        ids = torch.arange(b * n, (b + 1) * n) // 2  # two images per person
        target = torch.ones(n) if b == 0 else (torch.arange(n) % 2).float()
        batch = {"identity": ids, "index": torch.arange(b * n, (b + 1) * n)}
        img = torch.full((n, 3, 4, 4), float(b))
        col.offer(batch, target, img, -img, torch.rand(n, 1, 4, 4))
        assert len(col.tiles) <= 3 * k  # O(k), whatever the stream
        if col.full:
            break
    src, edited, att, faces = col.result()
    assert src.shape == (k, 3, 4, 4) and att.shape == (k, 1, 4, 4) and torch.equal(edited, -src)
    assert sorted({f["label"] for f in faces}) == [0, 1]  # both directions
    assert len({f["identity"] for f in faces}) == k  # distinct people
    assert faces[0]["index"] == 0  # the stream's first face still leads
