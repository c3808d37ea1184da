"""Experiment (issues 11 and 15): does the SynthFaces attribute judge still see glasses whose frames have a
colour it never saw?

Why: SaGAN's 5,000-iteration Eyeglasses fit "removes" glasses by recolouring the frames yellow or gold (its
figure grid), and the judge reads 94 % of those edits as glasses-free.  SynthFaces draws frames from four
colours only (``render.GLASSES_STOPS``: black, brown, grey, navy), so the judge never saw a light frame.
This renders the first ``--n`` test faces with glasses on (every other parameter unchanged) under the shipped
frame palette and under other palettes, and reports the share the judge reads as wearing glasses.  Then, for
every local attribute, it tints the attribute's region of the faces that carry it half-way towards a flat
colour (the attribute still there, its colour changed) and reports the share the judge still reads.

    python scripts/judge_frame_colour_probe.py [--n 500] [--tint-weight 0.5] [--grid PNG] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

# frame palettes the renderer does not draw (its own, ``render.GLASSES_STOPS``, is read first); drawn through
# the renderer's ``recolour`` factors, as the judges' training renders draw their off-palette colours
OFF_PALETTES: dict[str, list[tuple[float, float, float]]] = {
    "gold": [(0.80, 0.62, 0.20), (0.88, 0.72, 0.30), (0.92, 0.80, 0.40), (0.85, 0.66, 0.25)],
    "pale yellow": [(0.90, 0.85, 0.55), (0.95, 0.90, 0.60), (0.92, 0.88, 0.65), (0.88, 0.82, 0.50)],
    "orange": [(0.85, 0.45, 0.15), (0.90, 0.55, 0.20), (0.80, 0.40, 0.10), (0.88, 0.50, 0.18)],
    "white": [(0.95, 0.95, 0.95), (0.90, 0.90, 0.92), (0.97, 0.97, 0.97), (0.92, 0.93, 0.95)],
}


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    from benchmark.config import load_config
    from benchmark.runner import GridRunner, resolve_device
    from benchmark.data.synthfaces.dataset import _from_u8, _to_u8
    from evaluators.attributes import grid_judge

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/default.yaml")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--tint-weight", type=float, default=0.5,
                   help="how far the region tint goes towards the flat colour (0.5: half-way; the judge renders "
                        "label a layer drawn at opacity below 0.4 absent, so a tint above 0.6 is not a fair test)")
    p.add_argument("--grid", default=None, help="save a picture: 4 faces per attribute, untinted then tinted orange")
    p.add_argument("overrides", nargs="*")
    a = p.parse_args(argv)
    cfg = load_config(a.config, ["attributes=[Eyeglasses]", *a.overrides])
    device = resolve_device(cfg.device)
    with tempfile.TemporaryDirectory() as run_dir:
        runner = GridRunner(cfg, Path(run_dir), device)
        judge = grid_judge(cfg, runner.dataset, "Eyeglasses", device)
        split = runner.test_split
    if not hasattr(split, "params"):
        raise SystemExit("this probe renders SynthFaces faces: the config's dataset is not SynthFaces")
    ja = judge.attribute_names.index("Eyeglasses")
    idx = torch.arange(min(a.n, len(split)))
    out = {}
    for name, stops in {"shipped (black, brown, grey, navy)": None, **OFF_PALETTES}.items():
        params = frames_in_palette(split.params.gather(idx), stops)
        hits = 0
        for s in range(0, len(idx), 100):
            sub = {k: v[s:s + 100] for k, v in params.items()}
            images = _from_u8(_to_u8(split._render(sub)[0]))  # 8-bit, as the dataset's images
            hits += int(judge.predict(images.to(device).clamp(-1, 1))[:, ja].sum())
        out[name] = round(hits / len(idx), 4)
        print(f"{name:<36} judge reads glasses on {out[name]:.3f} of {len(idx)} faces", flush=True)
    tints = recolour_probe(split, judge, idx, device, weight=a.tint_weight, grid=a.grid)
    print(json.dumps({"judge": judge.tag, "n": len(idx), "glasses_read": out, "tint_weight": a.tint_weight,
                      "recoloured_region_read": tints}))
    return 0


def frames_in_palette(params: dict[str, torch.Tensor],
                      stops: list[tuple[float, float, float]] | None) -> dict[str, torch.Tensor]:
    """``params`` with glasses on, their frames coloured from ``stops`` (None: the renderer's own palette).

    The frame colour goes through the renderer's ``recolour`` factors (``recolour_Eyeglasses`` = 1, the
    colour in ``recolour_r/g/b``), picked from ``stops`` by each face's own ``glasses_colour`` as the renderer
    picks from ``render.GLASSES_STOPS``, so the renderer module is never modified and nothing else changes.
    """
    from benchmark.data.synthfaces import render

    params = dict(params)
    params["Eyeglasses"] = torch.ones_like(params["Eyeglasses"])
    if stops is not None:
        col = render.palette(params["glasses_colour"].flatten().float(), stops).view(-1, 3)
        params["recolour_Eyeglasses"] = torch.ones_like(params["Eyeglasses"])
        params.update({k: col[:, i].to(params["Eyeglasses"].dtype) for i, k in enumerate(render.RECOLOUR_RGB)})
    return params


TINTS = {"orange": (0.90, 0.50, 0.10), "yellow": (0.95, 0.85, 0.30), "blue": (0.20, 0.35, 0.90)}


@torch.no_grad()
def recolour_probe(split, judge, idx: torch.Tensor, device, weight: float = 0.5,
                   grid: str | None = None) -> dict[str, dict[str, float]]:
    """The attribute kept, its colour changed: for the faces among ``idx`` that carry each local attribute,
    blend the attribute's region (``region_masks``: pixels it can change) ``weight`` of the way towards a
    flat tint, and report the share the judge still reads as carrying it (the shape and most of the contrast
    stay, as in SaGAN's recoloured removals).  The untinted images give the judge's own rate."""
    from benchmark.data.base import collate_faces

    out: dict[str, dict[str, float]] = {}
    rows: list[torch.Tensor] = []
    labels = split.params.labels[idx]
    for attr in ("Eyeglasses", "Bangs", "Smiling", "Mouth_Slightly_Open", "Mustache"):
        col = split.dataset.attribute_index(attr)
        ja = judge.attribute_names.index(attr)
        pos = idx[labels[:, col] > 0.5]
        if not len(pos):  # none of the first faces carries it (a small --n): nothing to tint
            out[attr] = {"n": 0}
            print(f"{attr:<20} n   0: no face among the first {len(idx)} carries it", flush=True)
            continue
        batch = collate_faces([split[int(i)] for i in pos])
        x = batch["image"]
        m = split.region_masks(pos, attr).float()
        rates = {"untinted": float(judge.predict(x.to(device))[:, ja].float().mean())}
        for name, rgb in TINTS.items():
            tint = torch.tensor(rgb).view(1, 3, 1, 1) * 2 - 1
            y = x + weight * m * (tint - x)
            rates[name] = float(judge.predict(y.to(device).clamp(-1, 1))[:, ja].float().mean())
            if name == "orange":
                rows += [x[:4], y[:4].clamp(-1, 1)]
        out[attr] = {k: round(v, 3) for k, v in rates.items()} | {"n": int(len(pos))}
        print(f"{attr:<20} n {len(pos):>3}: judge reads it on " + ", ".join(f"{k} {v:.3f}" for k, v in rates.items()),
              flush=True)
    if grid:
        from torchvision.utils import save_image

        save_image((torch.cat(rows) + 1) / 2, grid, nrow=8, padding=1)  # per attribute: 4 faces, then tinted
    return out


if __name__ == "__main__":
    sys.exit(main())
