"""Evaluation speed (issue 9) without a changed number: the render cache, shared judge forwards, editor extras.

* the on-disk render cache of SynthFaces (``benchmark/data/synthfaces/store.py``) gives the very
  images, counterfactuals and region masks rendering gives, across chunk boundaries, and repairs a
  corrupt entry;
* a cell's rows are identical with the caches (render cache + ``JudgeMemo``) and without them, for
  an 8-bit exact editor (oracle), the no-op editor and an editor with a float output;
* editors' ``context.extras`` (``attention``, ``inversion``) reach the evaluators that ask for them,
  sliced per direction, and the attention masks are saved beside the pair images.

Small on purpose (32 px, a few dozen faces, one-epoch judges): the components are the real ones.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import benchmark.data.synthfaces.store as store
from benchmark.config import Config, apply_overrides
from benchmark.data.synthfaces import SynthFaces
from benchmark.data.synthfaces.params import sample_split
from benchmark.data.synthfaces.render import render
from benchmark.registry import METHODS
from benchmark.runner import Cell, GridRunner
from evaluators import judging
from evaluators.base import EXTRAS
from methods.base import Editor, EditorMeta

RES = 32
DATA = {"n_train_ids": 12, "n_test_ids": 8, "images_per_id": 3, "seed": 0}


@METHODS.register("toy-tint-attend")
class TintAttendEditor(Editor):
    """Tints towards the target (float output, not 8-bit exact) and reports attention and an inversion.

    Options: ``bad_attention`` puts a malformed attention tensor into the extras.
    """

    meta = EditorMeta(paper="test fixture", trainable=False)

    def edit(self, images, attribute, target, strength=1.0, context=None):
        b, _, h, w = images.shape
        shift = (0.1 * strength * (target * 2 - 1)).view(-1, 1, 1, 1)
        attention = torch.zeros(b, 1, h, w)
        attention[:, :, h // 2:, w // 4: 3 * w // 4] = 0.75  # the lower middle of the face
        out = (images + shift * attention).clamp(-1, 1)
        if context is not None:
            context.extras["attention"] = attention[:2] if self.options.get("bad_attention") else attention
            context.extras["inversion"] = (images * 0.97).clamp(-1, 1)
        return out


def _ds(**kw) -> SynthFaces:
    return SynthFaces(resolution=RES, **{**DATA, **kw})


# -- the render cache ---------------------------------------------------------------------------------

def test_renderer_is_batch_invariant():
    """What makes a cached chunk equal to any other batch's render: each image is rendered on its own."""
    params = sample_split(0, "test", 5, 3, 0)
    idx = torch.arange(15)
    whole, sup = render(params.gather(idx), RES, track=True)
    for part in (idx[:1], idx[3:10], idx[10:]):
        img, s = render(params.gather(part), RES, track=True)
        assert torch.equal(img, whole[part])
        assert set(s) == set(sup) and all(torch.equal(s[k], sup[k][part]) for k in s)


def test_disk_cache_gives_the_rendered_pixels(cache_dir, monkeypatch):
    monkeypatch.setattr(store, "CHUNK", 10)  # several chunks, and a partial one at the end
    cached, plain = _ds().split("test"), _ds(disk_cache=False).split("test")
    n = len(plain)
    idx = torch.tensor([23, 0, 5, 5, 19, 11, 9, 10])  # out of order, repeated, across chunk boundaries
    assert torch.equal(cached.images(idx), plain.images(idx))
    labels = plain.labels_matrix()
    g = torch.Generator().manual_seed(0)
    for attribute in cached.dataset.attribute_names:
        col = cached.dataset.attribute_index(attribute)
        flip = 1 - labels[idx, col]
        mixed = (torch.rand(len(idx), generator=g) < 0.5).float()  # some targets equal the label
        for target in (flip, mixed):
            assert torch.equal(cached.counterfactuals(idx, attribute, target),
                               plain.counterfactuals(idx, attribute, target)), attribute
        masks = cached.region_masks(idx, attribute)
        assert masks.dtype == torch.float32 and torch.equal(masks, plain.region_masks(idx, attribute)), attribute
    # every image of the split, through the item interface, equals the render
    assert torch.equal(torch.stack([cached[i]["image"] for i in range(n)]), plain.images(torch.arange(n)))
    entries = sorted(p.parent.relative_to(cache_dir) for p in cache_dir.rglob("MANIFEST.json"))
    kinds = {p.parts[3] for p in entries}
    assert {"images", "mask_Smiling", "flipped_Smiling"} <= kinds


def test_batched_item_fetch_equals_items(cache_dir):
    """``DataLoader`` fetches a batch through ``__getitems__`` (one cache read): the same items as one by one."""
    from torch.utils.data import DataLoader, Subset

    from benchmark.data.base import collate_faces

    split = _ds().split("test")
    sub = Subset(split, list(range(3, 20)))
    batches = list(DataLoader(sub, batch_size=7, collate_fn=collate_faces))
    one_by_one = collate_faces([split[i] for i in range(3, 20)])
    for key, value in one_by_one.items():
        assert torch.equal(torch.cat([b[key] for b in batches]), value), key
    assert split.__getitems__([-1])[0]["index"] == len(split) - 1


def test_corrupt_cache_entry_is_rebuilt_and_keys_follow_the_renderer(cache_dir, monkeypatch):
    split = _ds().split("test")
    first = split.images(torch.arange(6))
    data = next(cache_dir.rglob("images/*/data.npy"))
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # one pixel of one image: the size is unchanged, the digest is not
    data.write_bytes(bytes(raw))
    again = _ds().split("test")  # a new process would see the same files
    assert torch.equal(again.images(torch.arange(6)), first)
    assert np.load(data)[-1].flatten()[-1] == np.uint8(raw[-1] ^ 0xFF)  # rebuilt in place
    # the key covers the renderer's source: another renderer never reads these pixels
    fp = split.dataset.fingerprint()
    key = store.dataset_key(fp, torch.device("cpu"))
    monkeypatch.setattr(store, "_renderer_digest", "0" * 64)
    assert store.dataset_key(fp, torch.device("cpu")) != key
    assert store.dataset_key(_ds(seed=1).fingerprint(), torch.device("cpu")) != key


def test_unwritable_cache_falls_back_to_rendering(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    monkeypatch.setenv("FACEEDIT_CACHE", str(blocker))  # cache_root() is a file: mkdir fails
    split = _ds().split("test")
    assert torch.equal(split.images(torch.arange(4)), _ds(disk_cache=False).split("test").images(torch.arange(4)))
    assert split.store() is None


# -- a cell with and without the caches ---------------------------------------------------------------

def _runner(tmp_path, name: str, methods: list[str], evaluators: list[str], *, caches: bool,
            extra: list[str] = ()) -> GridRunner:
    judge = "{epochs: 1, batch_size: 16, eval_batch_size: 16}"
    overrides = [
        "data.name=synthfaces", f"data.resolution={RES}", "data.batch_size=10",
        f"data.options={{n_train_ids: 12, n_test_ids: 8, images_per_id: 3, disk_cache: {str(caches).lower()}}}",
        f"methods=[{','.join(methods)}]", "attributes=[Smiling]", "device=cpu", "output.progress=false",
        f"evaluators=[{','.join(evaluators)}]",
        f"evaluator_options.attributes.classifier={judge}", f"evaluator_options.fid_classifier.classifier={judge}",
        "evaluator_options.id_synth={epochs: 1, batch_size: 16, max_eval_items: 12}", *extra,
    ]
    cfg = apply_overrides(Config(), overrides)
    runner = GridRunner(cfg, tmp_path / name, torch.device("cpu"))
    runner.share_judges = caches
    (tmp_path / name).mkdir()
    return runner


def _values(rows: list[dict]) -> dict:
    return {(r["direction"], r["metric"]): (r["value"], r["n"], r["status"]) for r in rows}


def _same(a: dict, b: dict) -> bool:
    def eq(x, y):
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))
    return a.keys() == b.keys() and all(all(eq(x, y) for x, y in zip(a[k], b[k])) for k in a)


def _compare(tmp_path, methods: list[str], evaluators: list[str], warm: bool) -> set[str]:
    """Each method's cell scored without caches, with cold caches and (``warm``) again; the metrics seen."""
    judging.clear()
    seen: set[str] = set()
    with_caches = _runner(tmp_path, "cached", methods, evaluators, caches=True)
    without = _runner(tmp_path, "plain", methods, evaluators, caches=False)
    for method in methods:
        cell = Cell(method, "Smiling", 1.0, 0)
        plain = _values(without.run_cell(cell))
        runs = [_values(with_caches.run_cell(cell)) for _ in range(2 if warm else 1)]
        assert {s for _, _, s in plain.values()} == {"ok"}, plain
        seen |= {m for _, m in plain}
        for cached in runs:
            assert _same(cached, plain), (method, cached, plain)
    return seen


FULL = ["attributes", "id_synth", "fid_classifier", "leak", "counterfactual"]


def test_cell_rows_identical_with_and_without_caches(tmp_path, cache_dir):
    """8-bit exact edits (the oracle: FID reuses the classifier pass of ``attributes``) and float edits."""
    metrics = _compare(tmp_path, ["oracle", "toy-tint-attend"], FULL, warm=False)
    assert judging.stats["edited_hits"] > 0  # the oracle's FID features: the classifier pass of attributes
    assert judging.stats["source_hits"] > 0  # the second cell of the split: its sources were scored already
    assert {"leak", "cf_l1"} <= metrics and any(m.startswith("fid_clean_") for m in metrics)
    assert any(m.startswith("attr_success_") for m in metrics) and any(m.startswith("id_cos_synth") for m in metrics)


def test_noop_editor_rows_identical_with_the_source_outputs(tmp_path, cache_dir):
    """The no-op editor's edits are its sources: scored from the source outputs, to the same values
    (dlib's too, kept per source image: ``JudgeMemo.source_rows``)."""
    import importlib.util

    dlib = importlib.util.find_spec("dlib") is not None
    _compare(tmp_path, ["identity"], ["attributes", "id_synth"] + (["id_dlib"] if dlib else []), warm=True)
    assert judging.stats["edited_is_source"] > 0
    if dlib:  # the two cached runs of the cell: the second aligned and embedded no source face again
        assert judging.stats["row_misses"] == 24 and judging.stats["row_hits"] == 24


@pytest.mark.slow
def test_every_editor_kind_and_a_warm_rerun_give_identical_rows(tmp_path, cache_dir):
    _compare(tmp_path, ["oracle", "identity", "toy-tint-attend"], FULL, warm=True)


def test_memo_outputs_are_the_direct_calls():
    """``JudgeMemo.run`` returns what the call gives; the no-op editor's edits reuse the source outputs."""
    judging.clear()
    net = torch.nn.Conv2d(3, 4, 3)
    src = torch.rand(6, 3, 8, 8) * 2 - 1
    memo = judging.JudgeMemo(src, src.clone(), torch.arange(6), ("fp", "test")).select(torch.tensor([1, 0, 1, 1, 0, 1]) > 0)
    out = memo.run(net, "conv", "source", net)
    assert torch.equal(out, net(src[[0, 2, 3, 5]]).detach())
    assert memo.run(net, "conv", "edited", lambda x: pytest.fail("edited equals source: no second call")) is out
    q, exact = memo.quantised()
    assert not exact and torch.equal(q, ((src[[0, 2, 3, 5]].clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1)
    again = judging.JudgeMemo(src, src + 0.5, torch.arange(6), ("fp", "test"))
    assert again.select(torch.ones(6) > 0).run(net, "conv", "edited", lambda x: x.sum()) == (src + 0.5).sum()


# -- editor extras -------------------------------------------------------------------------------------

def test_editor_extras_reach_evaluators_and_attention_is_saved(tmp_path, cache_dir):
    assert {"attention", "inversion", "judge_memo"} <= set(EXTRAS)
    runner = _runner(tmp_path, "extras", ["toy-tint-attend"], ["attention", "inversion", "leak"], caches=True,
                     extra=["output.save_images=3"])
    rows = _values(runner.run_cell(Cell("toy-tint-attend", "Smiling", 1.0, 0)))
    assert {s for _, _, s in rows.values()} == {"ok"}, rows
    # the attention box against the ground-truth masks, recomputed from the split directly
    split = runner.test_split
    labels = split.labels_matrix()[:, split.dataset.attribute_index("Smiling")]
    for t, direction in ((1, "0to1"), (0, "1to0")):
        idx = (labels == 1 - t).nonzero().flatten()
        region = split.region_masks(idx, "Smiling") > 0.5
        att = torch.zeros(len(idx), 1, RES, RES)
        att[:, :, RES // 2:, RES // 4: 3 * RES // 4] = 0.75
        mass_in = float((att * region).sum() / att.sum())
        assert rows[(direction, "attn_mass_in_region")][0] == pytest.approx(mass_in, rel=1e-12)
        assert rows[(direction, "attn_mass_in_region")][1] == len(idx)
        src = split.images(idx)
        inv = (src * 0.97).clamp(-1, 1)
        assert rows[(direction, "inv_l1")][0] == pytest.approx(float(((inv - src).double() / 2).abs().mean()), rel=1e-9)
    images = tmp_path / "extras" / "images"
    pair, attention = sorted(images.glob("*.png"), key=lambda p: len(p.name))
    assert attention.name == pair.stem + "_attention.png"
    assert Image.open(attention).size == Image.open(pair).size == (3 * RES, 2 * RES)
    mask_row = np.asarray(Image.open(attention))[RES:, :, 0]
    assert mask_row[:RES // 2].max() == 0 and mask_row[RES // 2:, RES // 4: 3 * RES // 4].min() == 191  # 0.75


def test_malformed_editor_extra_fails_only_the_evaluators_that_need_it(tmp_path, cache_dir):
    runner = _runner(tmp_path, "bad", ["toy-tint-attend"], ["attention", "leak"], caches=True,
                     extra=["method_options.toy-tint-attend={bad_attention: true}"])
    rows = runner.run_cell(Cell("toy-tint-attend", "Smiling", 1.0, 0))
    errors = [r for r in rows if r["status"] == "error"]
    assert [r["metric"] for r in errors] == ["attention"]
    assert "toy-tint-attend.edit put 'attention'" in errors[0]["error"] and "batch size" in errors[0]["error"]
    assert {r["status"] for r in rows if r["metric"] == "leak"} == {"ok"}
