"""Resume completeness: a cell is finished only when its whole set of rows is on disk (closing marker)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from benchmark import rundir
from benchmark.cli import main

BASE = ["data.name=toy-faces", "data.resolution=16", "data.batch_size=4", "evaluators=[mean-abs-change]",
        "device=cpu", "output.progress=false"]


def _cell(attribute: str, attempt: str, metrics=("a", "b", "c"), seed: int = 0) -> list[dict]:
    base = {"method": "m", "dataset": "d", "attribute": attribute, "group": "local", "direction": "mean",
            "strength": 1.0, "seed": seed, "n": 4, "status": "ok", "error": "", "seconds": 0.1, "attempt": attempt}
    return [base | {"metric": k, "value": float(i)} for i, k in enumerate(metrics)]


def _key(attribute: str, seed: int = 0) -> rundir.CellKey:
    return rundir.CellKey("m", "d", attribute, 1.0, seed)


def test_append_cell_writes_rows_then_marker_and_readers_never_see_it(tmp_path):
    f = tmp_path / "results.jsonl"
    rundir.append_cell(f, _cell("x", "1"))
    lines = [json.loads(x) for x in f.read_text().splitlines()]
    assert len(lines) == 4 and lines[-1]["marker"] == rundir.MARKER and lines[-1]["rows"] == 3
    rows = rundir.read_rows(f)
    assert [r["metric"] for r in rows] == ["a", "b", "c"]
    assert not any("marker" in r for r in rows)
    rundir.write_csv(f, tmp_path / "results.csv")
    df = pd.read_csv(tmp_path / "results.csv")
    assert list(df["metric"]) == ["a", "b", "c"]
    assert rundir.finished_cells(rows) == {_key("x")}


def test_append_cell_is_one_write(tmp_path, monkeypatch):
    writes = []
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, blob: writes.append(blob) or real(fd, blob))
    rundir.append_cell(tmp_path / "r.jsonl", _cell("x", "1"))
    assert len(writes) == 1 and writes[0].endswith(b'"rows": 3}\n')


def test_append_cell_refuses_rows_of_two_cells_or_attempts(tmp_path):
    with pytest.raises(ValueError, match="several cells"):
        rundir.append_cell(tmp_path / "r.jsonl", _cell("x", "1") + _cell("y", "1"))
    with pytest.raises(ValueError, match="several cells or attempts"):
        rundir.append_cell(tmp_path / "r.jsonl", _cell("x", "1") + _cell("x", "2"))
    assert not (tmp_path / "r.jsonl").exists()


def test_cell_with_part_of_its_rows_is_not_finished(tmp_path):
    f = tmp_path / "results.jsonl"
    rundir.append_cell(f, _cell("done", "1"))
    rundir.append_rows(f, _cell("partial", "2")[:2])  # what a write cut short leaves: rows, no marker
    assert rundir.finished_cells(rundir.read_rows(f)) == {_key("done")}


def test_marker_must_announce_the_rows_found(tmp_path):
    f = tmp_path / "results.jsonl"
    rows = _cell("x", "1")
    rundir.append_rows(f, rows[:2] + [rundir.marker_row(rows)])  # marker says 3, only 2 rows made it
    assert rundir.finished_cells(rundir.read_rows(f)) == set()


def test_torn_append_leaves_the_cell_unfinished(tmp_path):
    f = tmp_path / "results.jsonl"
    rundir.append_cell(f, _cell("x", "1"))
    blob = "".join(json.dumps(r) + "\n" for r in [*_cell("y", "2"), rundir.marker_row(_cell("y", "2"))])
    with open(f, "a") as fh:
        fh.write(blob[: len(blob) - 10])  # killed inside the write: the marker line is cut
    rows = rundir.read_rows(f)
    assert rundir.finished_cells(rows) == {_key("x")}
    rundir.append_cell(f, _cell("y", "3"))  # the retry cuts the torn line off and closes its own attempt
    assert rundir.finished_cells(rundir.read_rows(f)) == {_key("x"), _key("y")}


def test_latest_attempt_decides_and_a_cut_short_one_never_hides_a_complete_one(tmp_path):
    f = tmp_path / "results.jsonl"
    rundir.append_cell(f, _cell("x", "1"))
    rundir.append_rows(f, _cell("x", "2")[:1])  # a newer attempt, cut short
    rows = rundir.read_rows(f)
    assert rundir.finished_cells(rows) == set()  # the latest attempt is incomplete: run it again
    kept = rundir.latest_attempts(rows)
    assert {r["attempt"] for r in kept} == {"1"} and len(kept) == 3  # the report shows the complete one
    # a cell-level error as the latest complete attempt is retried too
    err = [_cell("x", "3")[0] | {"metric": "*", "status": "error", "error": "boom"}]
    rundir.append_cell(f, err)
    assert rundir.finished_cells(rundir.read_rows(f)) == set()


def test_old_runs_without_markers_are_readable_and_count_as_unfinished(tmp_path):
    f = tmp_path / "results.jsonl"
    rundir.append_rows(f, _cell("x", "1") + _cell("y", "2"))  # the format before markers
    rows = rundir.read_rows(f)
    assert len(rows) == 6 and len(rundir.latest_attempts(rows)) == 6
    assert rundir.finished_cells(rows) == set()


def _strip(jsonl: Path, keep) -> None:
    """Rewrite results.jsonl keeping the raw lines for which ``keep(row)`` is true."""
    lines = jsonl.read_text().splitlines(keepends=True)
    jsonl.write_text("".join(line for line in lines if keep(json.loads(line))))


def _attempts(jsonl: Path) -> dict[rundir.CellKey, set[str]]:
    out: dict[rundir.CellKey, set[str]] = {}
    for r in rundir.read_rows(jsonl):
        out.setdefault(rundir.CellKey.of(r), set()).add(r["attempt"])
    return out


def test_resume_recomputes_a_cell_whose_rows_are_partly_on_disk(tmp_path, cache_dir, capsys):
    out = tmp_path / "runs"
    assert main(["--out", str(out), *BASE, "methods=[toy-flip]", "attributes=[Smiling,Male]", "seeds=[0,1]"]) == 0
    run = next(out.iterdir())
    jsonl = run / "results.jsonl"
    before = _attempts(jsonl)
    victim = rundir.CellKey("toy-flip", "toy-faces", "Male", 1.0, 1)
    # what a kill mid-cell used to leave: one of the cell's rows, and no marker
    dropped = {"n": 0}

    def keep(row: dict) -> bool:
        if rundir.CellKey.of(row) != victim:
            return True
        if row.get("marker") or row.get("direction") == "mean":
            dropped["n"] += 1
            return False
        return True

    _strip(jsonl, keep)
    assert dropped["n"] >= 2
    capsys.readouterr()
    assert main(["--resume", str(run), "output.progress=false"]) == 0
    assert "4 total, 3 already done, 1 ok" in capsys.readouterr().out
    after = _attempts(jsonl)
    assert len(after[victim]) == 2 and before[victim] < after[victim]  # recomputed, as a new attempt
    assert all(after[k] == v for k, v in before.items() if k != victim)  # the others untouched
    df = pd.read_csv(run / "results.csv")
    cell = df[(df.attribute == "Male") & (df.seed == 1)]
    assert set(cell["direction"]) == {"0to1", "1to0", "mean"}  # the whole cell is back in the CSV


def test_resume_of_a_run_written_before_markers_reruns_every_cell(tmp_path, cache_dir, capsys):
    out = tmp_path / "runs"
    assert main(["--out", str(out), *BASE, "methods=[identity]", "attributes=[Smiling,Male]"]) == 0
    run = next(out.iterdir())
    jsonl = run / "results.jsonl"
    _strip(jsonl, lambda row: "marker" not in row)
    old = _attempts(jsonl)
    capsys.readouterr()
    assert main(["--resume", str(run), "output.progress=false"]) == 0
    assert "2 total, 0 already done, 2 ok" in capsys.readouterr().out
    new = _attempts(jsonl)
    assert all(len(new[k]) == 2 and old[k] < new[k] for k in old)
    df = pd.read_csv(run / "results.csv")  # the CSV and report keep only the new, complete attempts
    latest = {a for k in new for a in new[k] - old[k]}
    raw = [r for r in rundir.read_rows(jsonl) if r["attempt"] in latest]
    assert len(df) == len(raw)
    assert main(["--resume", str(run), "output.progress=false"]) == 0
    assert "2 already done" in capsys.readouterr().out
