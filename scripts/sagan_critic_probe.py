"""Experiment (issue 11): does SaGAN's generator satisfy its own critic where the judge disagrees?

Why: the shipped SaGAN fits add attributes far better than they remove them (SynthFaces Eyeglasses
0.98 / 0.58 at strength 1), and the removed frames are tinted, not painted over.  G is trained
against D's attribute head (``cls``), which learns from real images only; if D reads the tinted frames
as "no glasses" while the benchmark's judge does not, the removal failure is G exploiting a weak
critic, not a missing ability of the AMN.  This script reads, per direction, on the same test images:

* D's attribute head on the real sources (its accuracy: how well D knows the attribute);
* D's attribute head on G's edits ("D success": the share G fools D into reading as the target);
* the judge on the same edits (attr_success of the grid), and the 2×2 table of the two readings;
* D's attribute head and its real/fake map on the exact counterfactuals (SynthFaces' ground truth):
  what D makes of a real removal;
* the attention mask's mean and its value on the attribute's region, for scale.

It needs a training checkpoint (D is not part of a fit: only G is shipped): the ``<entry>.state.pt``
that ``fits.keep_state=true`` keeps, or a ``ckpt-*.pt`` of a stage's work directory. The judge only
reads here; nothing is trained. The overrides must select the fit the checkpoint belongs to (its G is
compared with the fit's and the difference printed):

    run_benchmark.py --config configs/default.yaml --retrain --fit-only "methods=[sagan]" \\
        "attributes=[Eyeglasses]" fits.keep_state=true        # FACEEDIT_CACHE=<empty dir>
    python scripts/sagan_critic_probe.py --ckpt <cache>/editors/sagan/gan-<key>.state.pt \\
        --config configs/default.yaml "attributes=[Eyeglasses]"
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import torch


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True, help="a SaGAN training checkpoint (objects G and D)")
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("overrides", nargs="*", help="config overrides, key=value, as for run_benchmark.py")
    return p.parse_args(argv)


class Tally:
    """Running sums of one direction (counts, and sums of per-image scores), so the rates do not depend on batching."""

    def __init__(self) -> None:
        self.n = 0
        self.c: dict[str, float] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        self.c[name] = self.c.get(name, 0.0) + float(value.sum())

    def rates(self) -> dict[str, float]:
        return {k: round(v / self.n, 4) for k, v in self.c.items()} | {"n": self.n}


@torch.no_grad()
def probe(G: Any, D: Any, judge_predict: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[dict],
          split: Any, attr: str, attr_index: int, strength: float = 1.0) -> dict[int, Tally]:
    """Per target value, the counts above over ``batches`` (the grid's test batches: ``image``, ``labels``,
    ``index``).  Every image is edited to the opposite of its label, as in the grid; ``judge_predict``
    maps images to 0/1 readings of ``attr``.  G must run at the images' resolution, so that the judge
    reads exactly the image the grid scores (``SaGANEditor.edit`` at equal resolutions)."""
    tallies = {t: Tally() for t in (0, 1)}
    for batch in batches:
        x = batch["image"].to(next(G.parameters()).device)
        if x.shape[-1] != G.resolution:
            raise ValueError(f"G runs at {G.resolution} px, the images are {x.shape[-1]} px: probe at the data's "
                             "resolution (the grid up-samples a lower-resolution change; D never sees that image)")
        y = batch["labels"][:, attr_index].to(x.device).float()
        target = 1.0 - y
        edited, mask = G(x, target, strength)
        src_real, cls_src = D(x)
        src_edit, cls_edit = D(edited)
        j_edit = judge_predict(edited.clamp(-1, 1)).to(x.device).float()
        cf = split.counterfactuals(batch["index"], attr, target.cpu().long())
        region = split.region_masks(batch["index"], attr)
        cf_out = D(cf.to(x.device)) if cf is not None else None  # same resolution as x (checked above)
        for t in (0, 1):
            sel = target == t
            if not bool(sel.any()):
                continue
            tl = tallies[t]
            tl.n += int(sel.sum())
            d_hit = ((cls_edit > 0).float() == t)[sel]
            j_hit = (j_edit == t)[sel]
            tl.add("D_acc_on_sources", ((cls_src > 0).float() == y)[sel])
            tl.add("D_success_on_edits", d_hit)
            tl.add("judge_success_on_edits", j_hit)
            tl.add("D_yes_judge_no", d_hit & ~j_hit)
            tl.add("D_no_judge_yes", ~d_hit & j_hit)
            tl.add("D_src_real_mean", src_real.flatten(1).mean(1)[sel])
            tl.add("D_src_edit_mean", src_edit.flatten(1).mean(1)[sel])
            tl.add("mask_mean", mask.flatten(1).mean(1)[sel])
            if cf_out is not None:
                tl.add("D_success_on_counterfactual", ((cf_out[1] > 0).float() == t)[sel])
                tl.add("D_src_counterfactual_mean", cf_out[0].flatten(1).mean(1)[sel])
            if region is not None:
                r = region.to(x.device).float()
                tl.add("mask_mean_in_region", ((mask * r).flatten(1).sum(1) / r.flatten(1).sum(1).clamp_min(1e-6))[sel])
    return tallies


def main(argv: list[str] | None = None) -> int:
    from benchmark.config import load_config
    from benchmark.data.base import collate_faces
    from benchmark.runner import GridRunner, resolve_device
    from evaluators.attributes import grid_judge
    from methods.sagan.train import build_networks

    a = _args(argv)
    cfg = load_config(a.config, a.overrides)
    device = resolve_device(cfg.device)
    with tempfile.TemporaryDirectory() as run_dir:
        runner = GridRunner(cfg, Path(run_dir), device)
        runner.progress = False
        attr = runner.attributes[0]
        judge = grid_judge(cfg, runner.dataset, attr, device)
        editor = runner.editor_for("sagan", attr, cfg.seeds[0])
        split = runner.test_split
    state = torch.load(a.ckpt, map_location="cpu", weights_only=True)
    G, D = build_networks(editor.G.resolution, editor.opts, device)
    G.load_state_dict(state["objects"]["G"])
    D.load_state_dict(state["objects"]["D"])
    G.eval()
    D.eval()
    # the checkpoint must be the fit the grid scores (the shipped G is its fp16 copy)
    shipped = editor.G.state_dict()
    g_diff = max(float((v.float() - shipped[k].float()).abs().max()) for k, v in G.state_dict().items()
                 if v.is_floating_point())
    jai = judge.attribute_names.index(attr)
    n_test = len(split) if cfg.data.max_test is None else min(len(split), cfg.data.max_test)  # the grid's images
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(split, range(n_test)), batch_size=100,
                                         shuffle=False, collate_fn=collate_faces)
    tallies = probe(G, D, lambda im: judge.predict(im)[:, jai], loader, split, attr,
                    runner.dataset.attribute_index(attr), a.strength)
    out = {"attribute": attr, "strength": a.strength, "ckpt": a.ckpt, "step": int(state["step"]),
           "max_abs_diff_to_scored_G": g_diff, "judge": judge.tag,
           "directions": {f"{1 - t}->{t}": tallies[t].rates() for t in (1, 0)}}
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
