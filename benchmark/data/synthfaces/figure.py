"""Figure: one row per attribute, source | counterfactual pairs, with the region mask's outline.

    python -m benchmark.data.synthfaces.figure --out docs/synthfaces_grid.png [--resolution 128]

Each row shows ``--pairs`` test faces, half with the attribute off and half on where the test set
has both, next to the ground-truth counterfactual with the attribute flipped; the flipped image
carries the attribute's region mask as a thin outline so a reader sees what "local" means.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from benchmark.data.synthfaces.dataset import SynthFaces, SynthFacesSplit


def pick_indices(split: SynthFacesSplit, column: int, pairs: int) -> list[int]:
    """First images of distinct identities, alternating label 0 and label 1 where both exist."""
    labels, ids = split.labels_matrix()[:, column], split.identities()
    pools: dict[int, list[int]] = {0: [], 1: []}
    seen: set[int] = set()
    for i in range(len(split)):
        if int(ids[i]) in seen:
            continue
        seen.add(int(ids[i]))
        pools[int(labels[i])].append(i)
    out: list[int] = []
    while len(out) < pairs and (pools[0] or pools[1]):
        for v in (0, 1):
            if pools[v] and len(out) < pairs:
                out.append(pools[v].pop(0))
    return out


def outline(mask: torch.Tensor) -> torch.Tensor:
    """1-pixel boundary of a B×1×H×W {0,1} mask."""
    eroded = -F.max_pool2d(-mask, 3, stride=1, padding=1)
    return (mask - eroded).clamp(0, 1)


def to_pil(img: torch.Tensor) -> Image.Image:
    arr = ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr)


def make_grid(ds: SynthFaces, pairs: int = 4, split: str = "test") -> Image.Image:
    sp = ds.split(split)
    res, gap, label_w, head_h = ds.resolution, 4, 170, 22
    font = ImageFont.load_default(size=13)
    rows = ds.attribute_names
    width = label_w + pairs * (2 * res + gap) + gap
    canvas = Image.new("RGB", (width, head_h + len(rows) * (res + gap + 14)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 4), f"SynthFaces seed={ds.seed} {res}px: source | ground-truth counterfactual "
                      "(red: region mask)", fill="black", font=font)
    for r, attr in enumerate(rows):
        col = ds.attribute_index(attr)
        idx = torch.tensor(pick_indices(sp, col, pairs))
        cur = sp.labels_matrix()[idx, col]
        src, cf = sp.images(idx), sp.counterfactuals(idx, attr, 1 - cur)
        edge = outline(sp.region_masks(idx, attr))
        cf_marked = cf * (1 - edge) + edge * torch.tensor([1.0, -1.0, -1.0]).view(1, 3, 1, 1)
        y = head_h + r * (res + gap + 14)
        draw.text((6, y + res // 2 - 8), f"{attr}\n({ds.group(attr)})", fill="black", font=font)
        for k in range(len(idx)):
            x = label_w + k * (2 * res + gap)
            canvas.paste(to_pil(src[k]), (x, y))
            canvas.paste(to_pil(cf_marked[k]), (x + res, y))
            draw.text((x + 2, y + res), f"{int(cur[k])} -> {1 - int(cur[k])}", fill="black", font=font)
    return canvas


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    ds = SynthFaces(resolution=args.resolution, n_train_ids=1, n_test_ids=60, images_per_id=1, seed=args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(ds, args.pairs).save(args.out)
    print(f"wrote {args.out.resolve()}")


if __name__ == "__main__":
    main()
