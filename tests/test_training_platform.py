"""The editor training platform (methods/training.py): cache, lock, resume, divergence, shared stages."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmark import cache as cachelib
from benchmark.config import ConfigError, load_config
from benchmark.runner import validate_names
from methods.training import (
    DivergenceError, OptionsError, TrainingPaused, load_safetensors, source_hash,
)
from tests.toy_editor import ToyEditor, fit_once

ROOT = Path(__file__).resolve().parents[1]
CHILD = [sys.executable, "-m", "tests.toy_editor"]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "FACEEDIT_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def test_second_prepare_comes_from_the_cache(tmp_path):
    first = fit_once(tmp_path)
    assert [r.source for r in first.fit_context.records] == ["trained", "trained"]
    second = fit_once(tmp_path)
    assert [r.source for r in second.fit_context.records] == ["cache", "cache"]
    for k, v in first.weights().items():
        assert torch.equal(v, second.weights()[k]), k
    entry = Path(second.fit_context.records[1].path)
    manifest = cachelib.verify_entry(entry)
    assert {"shift.safetensors", "head.json", "provenance.json", "stats.jsonl"} <= set(manifest["files"])
    prov = json.loads((entry / "provenance.json").read_text())
    assert prov["steps"] == 10 and prov["attribute"] == "Smiling" and "loss" in prov["final_losses"]


def test_shared_stage_is_trained_once_for_two_attributes(tmp_path):
    count = tmp_path / "count.txt"
    a = fit_once(tmp_path, attribute="Smiling", count_file=str(count))
    b = fit_once(tmp_path, attribute="Eyeglasses", count_file=str(count))
    assert [r.source for r in a.fit_context.records] == ["trained", "trained"]
    assert [r.source for r in b.fit_context.records] == ["cache", "trained"]
    assert a.fit_context.records[0].key == b.fit_context.records[0].key
    assert a.fit_context.records[1].key != b.fit_context.records[1].key
    assert [ln.split()[0] for ln in count.read_text().splitlines()] == ["shared", "head", "head"]


def test_runtime_options_do_not_change_keys_but_real_ones_do(tmp_path):
    a = fit_once(tmp_path, step_delay=0.0)
    b = fit_once(tmp_path, step_delay=0.001)
    assert [r.source for r in b.fit_context.records] == ["cache", "cache"]
    c = fit_once(tmp_path, lr=0.01)
    assert c.fit_context.records[0].key != a.fit_context.records[0].key


def test_corrupt_cache_entry_is_rebuilt_not_used(tmp_path):
    first = fit_once(tmp_path)
    weights = Path(first.fit_context.records[1].path) / "shift.safetensors"
    data = bytearray(weights.read_bytes())
    data[-4:] = b"\0\0\0\0"  # still parses, different content
    weights.write_bytes(bytes(data))
    again = fit_once(tmp_path)
    assert [r.source for r in again.fit_context.records] == ["cache", "trained"]
    cachelib.verify_entry(Path(again.fit_context.records[1].path))


def test_divergence_stops_with_step_and_loss(tmp_path):
    with pytest.raises(DivergenceError, match=r"diverged at step 2: loss = nan"):
        fit_once(tmp_path, poison_step=2)
    # nothing half-made was published into the cache
    assert not list((tmp_path / "editors" / "toy_trainable").glob("shared-*[!k]"))


def test_time_slice_pauses_then_continues(tmp_path):
    from methods.training import FitContext
    from benchmark.registry import DATASETS

    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=8, n_test_ids=4, images_per_id=4)
    ed = ToyEditor(step_delay=0.05, shared_steps=40)
    fit = FitContext(editor=ed, dataset=ds, attribute="Smiling", seed=0, device="cpu",
                     fits={"checkpoint_every": 100, "log_every": 5}, budget_minutes=0.2 / 60, show_progress=False,
                     cache=tmp_path)
    with pytest.raises(TrainingPaused, match=r"step \d+/40"):
        ed.prepare(fit)
    ckpts = list((tmp_path / "editors" / "toy_trainable").glob("shared-*.work/checkpoints/ckpt-*.pt"))
    assert ckpts, "a paused fit must leave a checkpoint"
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if threads > 1 else 2)  # the rest runs on another thread count
    try:
        done = fit_once(tmp_path, step_delay=0.05, shared_steps=40)
    finally:
        torch.set_num_threads(threads)
    assert [r.source for r in done.fit_context.records] == ["trained", "trained"]
    # provenance says which steps ran where: the two runs, contiguous, each with its thread count
    shared = next(r for r in done.fit_context.records if r.stage == "shared")
    segments = json.loads((Path(shared.path) / "provenance.json").read_text())["segments"]
    assert len(segments) == 2 and segments[0]["steps"][0] == 0 and segments[-1]["steps"][1] == 40
    assert segments[0]["steps"][1] == segments[1]["steps"][0] > 0
    assert segments[0]["torch_threads"] == threads and segments[1]["torch_threads"] == (1 if threads > 1 else 2)


def test_no_training_context_uses_the_cache_and_names_a_missing_stage(tmp_path):
    from benchmark.registry import DATASETS
    from methods.training import FitContext, FitMissingError

    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=8, n_test_ids=4, images_per_id=4)
    count = tmp_path / "count.txt"

    def context(attribute: str) -> FitContext:
        ed = ToyEditor(count_file=str(count))
        return FitContext(editor=ed, dataset=ds, attribute=attribute, seed=0, device="cpu", show_progress=False,
                          cache=tmp_path, allow_training=False)

    fit = context("Smiling")
    with pytest.raises(FitMissingError, match=r"(?s)toy_trainable/shared \(shared by all attributes\).*--no-train"):
        fit.editor.prepare(fit)
    assert not count.exists()  # nothing was trained
    fit_once(tmp_path, attribute="Smiling", count_file=str(count))  # a fit job trains both stages
    cached = context("Smiling")
    cached.editor.prepare(cached)
    assert [r.source for r in cached.records] == ["cache", "cache"]
    other = context("Eyeglasses")  # its shared stage is cached, its own head is not
    with pytest.raises(FitMissingError, match="toy_trainable/head for Eyeglasses"):
        other.editor.prepare(other)
    assert [ln.split()[0] for ln in count.read_text().splitlines()] == ["shared", "head"]


def _child(cache: Path, out: Path, opts: dict) -> subprocess.Popen:
    return subprocess.Popen([*CHILD, str(cache), str(out), json.dumps(opts)], cwd=ROOT, env=_env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_kill_gives_the_same_weights(tmp_path):
    opts = {"shared_steps": 30, "step_delay": 0.1}
    ref = _child(tmp_path / "uninterrupted", tmp_path / "ref.safetensors", opts)
    killed = _child(tmp_path / "killed", tmp_path / "never.safetensors", opts)
    ckpt_glob = "editors/toy_trainable/shared-*.work/checkpoints/ckpt-*.pt"
    deadline = time.time() + 120
    while time.time() < deadline and not any(
            int(p.stem.split("-")[1]) >= 6 for p in (tmp_path / "killed").glob(ckpt_glob)):
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    steps = [int(p.stem.split("-")[1]) for p in (tmp_path / "killed").glob(ckpt_glob)]
    assert steps and max(steps) < 30, f"kill came too late or never (checkpoints {steps})"
    resumed = _child(tmp_path / "killed", tmp_path / "resumed.safetensors", opts)
    out, err = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, err
    assert "resuming from step" in err
    assert ref.wait(timeout=180) == 0, ref.stderr.read()
    a, b = load_safetensors(tmp_path / "ref.safetensors"), load_safetensors(tmp_path / "resumed.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"


def test_two_processes_train_a_stage_once(tmp_path):
    count = tmp_path / "count.txt"
    opts = {"shared_steps": 12, "step_delay": 0.1, "count_file": str(count)}
    p1 = _child(tmp_path / "cache", tmp_path / "a.safetensors", opts)
    time.sleep(0.5)
    p2 = _child(tmp_path / "cache", tmp_path / "b.safetensors", opts)
    out1, err1 = p1.communicate(timeout=180)
    out2, err2 = p2.communicate(timeout=180)
    assert p1.returncode == 0 and p2.returncode == 0, err1 + err2
    lines = count.read_text().splitlines()
    assert sorted(ln.split()[0] for ln in lines) == ["head", "shared"], lines
    s1, s2 = json.loads(out1.strip().splitlines()[-1]), json.loads(out2.strip().splitlines()[-1])
    for stage in (0, 1):  # each stage: one process trained it, the other waited and reused it
        assert sorted([s1[stage], s2[stage]]) == ["cache", "trained"], (s1, s2)


def test_sigterm_checkpoints_and_stops(tmp_path):
    p = _child(tmp_path, tmp_path / "x.safetensors", {"shared_steps": 200, "step_delay": 0.05})
    work = tmp_path / "editors" / "toy_trainable"
    deadline = time.time() + 60
    while time.time() < deadline and not list(work.glob("shared-*.work/stats.jsonl")):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert "SIGTERM at step" in err
    ckpt = max(work.glob("shared-*.work/checkpoints/ckpt-*.pt"), key=lambda q: q.stat().st_mtime)
    state = torch.load(ckpt, weights_only=True)
    assert 0 < state["step"] < 200


def test_reference_fit_is_used_when_its_key_matches(tmp_path, monkeypatch):
    trained = fit_once(tmp_path / "maker")
    refs = tmp_path / "refs"
    for rec in trained.fit_context.records:
        import shutil
        shutil.copytree(rec.path, refs / Path(rec.path).name)
    from methods.training import FitContext
    monkeypatch.setattr(FitContext, "reference_dir", lambda self, name, key: refs / f"{name}-{key}")
    used = fit_once(tmp_path / "fresh")
    assert [r.source for r in used.fit_context.records] == ["reference", "reference"]
    retrained = fit_once(tmp_path / "fresh2", fits={"reference": False})
    assert [r.source for r in retrained.fit_context.records] == ["trained", "trained"]
    # the machine that trained it holds the same keys in its cache: the shipped copy still wins there
    # (every machine scores the same files), and fits.reference=false reads the local entry
    on_maker = fit_once(tmp_path / "maker")
    assert [r.source for r in on_maker.fit_context.records] == ["reference", "reference"]
    assert [r.path for r in on_maker.fit_context.records] == [str(refs / Path(r.path).name)
                                                             for r in trained.fit_context.records]
    local = fit_once(tmp_path / "maker", fits={"reference": False})
    assert [r.source for r in local.fit_context.records] == ["cache", "cache"]


def test_fit_made_by_other_source_says_so(tmp_path, caplog):
    first = fit_once(tmp_path)
    entry = Path(first.fit_context.records[1].path)
    prov = json.loads((entry / "provenance.json").read_text())
    prov["source_hash"] = "0" * 16
    (entry / "provenance.json").write_text(json.dumps(prov))
    cachelib.write_manifest(entry)
    again = fit_once(tmp_path)
    assert again.fit_context.records[1].source_matches is False
    assert "made by different source" in caplog.text and "--retrain" in caplog.text
    assert source_hash(ToyEditor) != "0" * 16


def test_options_are_validated_with_presets_and_budget():
    with pytest.raises(OptionsError, match="unknown option.*wdith.*valid:.*width"):
        ToyEditor(wdith=3)
    with pytest.raises(OptionsError, match="expects"):
        ToyEditor(width="wide")
    with pytest.raises(OptionsError, match="unknown preset 'gpu'"):
        ToyEditor(preset="gpu")
    assert ToyEditor().opts.steps == 10
    assert ToyEditor(preset="test").opts.steps == 6
    ed = ToyEditor(preset="test", batch_size=2)
    ed.apply_budget({"steps": 99, "batch_size": 7})
    assert ed.opts.steps == 99 and ed.opts.batch_size == 2  # method_options beat the global budget
    assert any(line.startswith("preset test:") for line in ToyEditor.describe_options())


def test_bad_method_options_fail_before_any_model_loads():
    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["methods=[toy_trainable]", "method_options.toy_trainable.wdith=3"])
    with pytest.raises(ConfigError, match="method_options.toy_trainable.*wdith"):
        validate_names(cfg)
    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["methods=[identity]", "method_options.identity.x=1"])
    with pytest.raises(ConfigError, match="method_options.identity.*unknown option.*x"):
        validate_names(cfg)


def test_oracle_on_a_dataset_without_counterfactuals_fails_validation():
    cfg = load_config(ROOT / "configs" / "celebahq64.yaml", ["methods=[oracle]"])
    with pytest.raises(ConfigError, match="oracle.*counterfactuals"):
        validate_names(cfg)


def test_grid_trains_the_shared_stage_once_and_records_provenance(tmp_path, monkeypatch):
    from benchmark.cli import main

    monkeypatch.setenv("FACEEDIT_CACHE", str(tmp_path / "cache"))
    rc = main(["--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path / "runs"),
               "methods=[toy_trainable,identity]", "attributes=[Smiling,Male]", "output.progress=false"])
    assert rc == 0
    run = next((tmp_path / "runs").iterdir())
    fits = [json.loads(x) for x in (run / "fits.jsonl").read_text().splitlines()]
    shared = [f for f in fits if f["stage"] == "shared"]
    assert [f["source"] for f in shared] == ["trained", "cache"]
    heads = [f for f in fits if f["stage"] == "head"]
    assert sorted(f["attribute"] for f in heads) == ["Male", "Smiling"] and all(f["source"] == "trained" for f in heads)
    from benchmark import rundir

    rows = rundir.read_rows(run / "results.jsonl")
    toy_rows = [r for r in rows if r.get("method") == "toy_trainable"]
    assert toy_rows and all(r["fit_key"].startswith("shared-") and "+head-" in r["fit_key"] for r in toy_rows)


def test_editors_that_ignore_strength_get_one_cell_per_fit():
    from benchmark.runner import expand_cells

    cfg = load_config(ROOT / "configs" / "smoke.yaml", ["methods=[toy_trainable,identity]", "strengths=[0.5,1.0,2.0]"])
    cells = expand_cells(cfg, ["Smiling"])
    assert sorted(c.strength for c in cells if c.method == "toy_trainable") == [0.5, 1.0, 2.0]
    assert [c.strength for c in cells if c.method == "identity"] == [1.0]


def test_reference_export_writes_fp16_weights_with_provenance(tmp_path, monkeypatch):
    import methods.reference as reference
    from methods.training import FitContext

    trained = fit_once(tmp_path / "cache")
    pkg = tmp_path / "pkg"
    monkeypatch.setattr(reference, "editor_package_dir", lambda cls: pkg)
    run = tmp_path / "run"
    run.mkdir()
    (run / "env.json").write_text(json.dumps({"argv": ["faceedit-bench", "--fit-only"]}))
    (run / "fits.jsonl").write_text("".join(json.dumps({"method": "toy_trainable", "source": r.source,
                                                        "path": r.path}) + "\n"
                                            for r in trained.fit_context.records))
    assert reference.main(["export", str(run), "--note", "continued from another fit"]) == 0
    entries = sorted((pkg / "reference_fits").iterdir())
    assert [e.name.split("-")[0] for e in entries] == ["head", "shared"]
    for e in entries:
        cachelib.verify_entry(e)
        prov = json.loads((e / "provenance.json").read_text())
        assert prov["reference"]["weights_dtype"] == "float16" and "--fit-only" in prov["reference"]["command"]
        assert prov["reference"]["note"] == "continued from another fit"
        for f in e.glob("*.safetensors"):
            assert all(t.dtype == torch.float16 for t in load_safetensors(f).values())
    monkeypatch.setattr(FitContext, "reference_dir", lambda self, name, key: pkg / "reference_fits" / f"{name}-{key}")
    used = fit_once(tmp_path / "fresh")
    assert [r.source for r in used.fit_context.records] == ["reference", "reference"]
    for k, v in trained.weights().items():  # fp16 weights edit within fp16 rounding of the fp32 fit
        assert torch.allclose(v, used.weights()[k], atol=1e-2, rtol=1e-2), k


def test_figure_faces_are_distinct_people_in_both_directions():
    from benchmark.runner import showcase

    ids = torch.tensor([5, 5, 5, 6, 6, 7, 7, 8, 9])
    target = torch.tensor([1.0, 0, 1, 0, 0, 1, 1, 0, 1])
    pick = showcase(ids, target, 4).tolist()
    assert len(set(ids[pick].tolist())) == 4
    assert [float(target[i]) for i in pick] == [1.0, 0.0, 1.0, 0.0]
    assert showcase(ids, target, 20).numel() == len(ids)  # fewer people than asked: repeats fill in


def _default_grid_editors() -> list[str]:
    cfg = load_config(ROOT / "configs" / "default.yaml")
    return [m for m in cfg.methods if m not in ("identity", "oracle")]


@pytest.mark.parametrize("method", _default_grid_editors())
def test_the_default_grid_finds_every_editor_fit_among_the_shipped_reference_fits(method, cache_dir):
    """`make bench` on a fresh clone must not train an editor: a changed option, preset or key layout
    that moves a stage's key off its shipped directory would start hours of CPU training silently."""
    import dataclasses

    from benchmark.registry import METHODS
    from benchmark.runner import build_dataset
    from methods.training import FitContext

    cfg = load_config(ROOT / "configs" / "default.yaml")
    dataset = build_dataset(cfg)
    for attribute in cfg.attributes:
        editor = METHODS.create(method, **cfg.method_options.get(method, {}))
        fit = FitContext(editor=editor, dataset=dataset, attribute=attribute, seed=cfg.seeds[0], device="cpu",
                         fits=dataclasses.asdict(cfg.fits), show_progress=False, allow_training=False)
        editor.prepare(fit)  # FitMissingError names the stage that is not shipped
        assert fit.records and {r.source for r in fit.records} == {"reference"}, (attribute, fit.records)


def _tar(archive: Path, members: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(archive, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


def test_packed_reference_fits_travel_verified_and_path_checked(tmp_path, monkeypatch):
    """The GPU box's fits come back as one archive (the device tool returns 8 files, 2 folders deep):
    unpacked only into methods/<pkg>/reference_fits/, only if every entry verifies, never over a
    shipped entry unless asked."""
    import tarfile

    import methods.reference as reference
    from benchmark.assets import UnsafeArchiveError

    trained = fit_once(tmp_path / "cache")
    there = tmp_path / "gpu" / "methods" / "toy"
    monkeypatch.setattr(reference, "editor_package_dir", lambda cls: there)
    run = tmp_path / "run"
    run.mkdir()
    (run / "fits.jsonl").write_text("".join(json.dumps({"method": "toy_trainable", "source": r.source,
                                                        "path": r.path}) + "\n"
                                            for r in trained.fit_context.records))
    archive = tmp_path / "fits.tar.gz"
    assert reference.main(["export", str(run), "--pack", str(archive)]) == 0
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.setattr(reference, "editor_package_dir", lambda cls: here / "methods" / "toy")
    written = reference.unpack(archive, root=here)
    assert sorted(p.name for p in written) == sorted(p.name for p in (there / "reference_fits").iterdir())
    for p in written:
        cachelib.verify_entry(p)
        assert (p / "provenance.json").read_text() == (there / "reference_fits" / p.name / "provenance.json").read_text()
    assert reference.unpack(archive, root=here) == []  # already shipped: kept
    assert len(reference.unpack(archive, root=here, replace=True)) == len(written)

    # a damaged entry: nothing of the archive is written
    with tarfile.open(archive) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}
    victim = next(n for n in members if n.endswith(".safetensors"))
    damaged = dict(members, **{victim: members[victim][:-8] + b"\0" * 8})
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    with pytest.raises(cachelib.CacheCorruptError, match="damaged fit"):
        reference.unpack(_tar(tmp_path / "damaged.tar.gz", damaged), root=fresh)
    assert not (fresh / "methods").exists()
    # anything outside methods/<editor package>/reference_fits/<entry>/
    with pytest.raises(reference.PackError, match="not inside"):
        reference.unpack(_tar(tmp_path / "foreign.tar.gz", {**members, "README.md": b"x"}), root=fresh)
    with pytest.raises(reference.PackError, match="not inside"):
        reference.unpack(_tar(tmp_path / "other.tar.gz", {"methods/other/reference_fits/e/a.json": b"{}"}),
                         root=fresh)
    with pytest.raises(UnsafeArchiveError):
        reference.unpack(_tar(tmp_path / "escape.tar.gz", {"methods/toy/reference_fits/e/../../../../../x": b"x"}),
                         root=fresh)
    assert not (fresh / "methods").exists() and not (tmp_path / "x").exists()
    assert reference.main(["unpack", str(tmp_path / "foreign.tar.gz")]) == 2


def test_an_option_added_later_keys_fits_only_when_set():
    """Fits made before an option existed behaved as its default: at the default it enters no key."""
    from dataclasses import dataclass

    from methods.training import EditorOptions, option

    @dataclass(frozen=True)
    class Old(EditorOptions):
        width: int = option(8)

    @dataclass(frozen=True)
    class New(Old):
        warmup: int = option(0, added_later=True)
        tau: float = option(1.0)  # a plain new option does enter every key

    assert Old().hashed() == {k: v for k, v in New().hashed().items() if k != "tau"}
    assert "warmup" not in New().hashed() and New(warmup=3).hashed()["warmup"] == 3
    assert New().hashed()["tau"] == 1.0


def test_keep_state_keeps_the_last_checkpoint_beside_the_entry(tmp_path):
    """``fits.keep_state``: the final checkpoint (all registered objects, the last step) survives next to
    the entry, loadable with weights_only; the entry's weights are the same as without it; off by default."""
    plain = fit_once(tmp_path / "a")
    kept = fit_once(tmp_path / "b", fits={"keep_state": True})
    for rec_plain, rec_kept in zip(plain.fit_context.records, kept.fit_context.records):
        entry, entry_kept = Path(rec_plain.path), Path(rec_kept.path)
        assert not entry.with_name(entry.name + ".state.pt").exists()
        state = torch.load(entry_kept.with_name(entry_kept.name + ".state.pt"), map_location="cpu", weights_only=True)
        assert state["step"] == rec_kept.steps and state["objects"]
        assert not entry_kept.with_name(entry_kept.name + ".work").exists()
        a, b = cachelib.verify_entry(entry)["files"], cachelib.verify_entry(entry_kept)["files"]
        timed = {"provenance.json", "stats.jsonl"}  # wall-clock seconds in both
        assert {k: v["sha256"] for k, v in a.items() if k not in timed} == \
            {k: v["sha256"] for k, v in b.items() if k not in timed}
