"""Training and checking renders for the evaluators' own networks (the "judges"), SynthFaces only.

Why not the editors' train split: it follows CelebA's correlations, so a judge trained on it
learns "bearded => male" and "grey => not this person", and misjudges the exact counterfactual
of a correct edit (issue 15: the oracle scored 0.42 attr_success on growing a beard).  These renders
(``params.sample_judge_split``) have every attribute of every image an independent fair coin, on
identities disjoint from the editors' splits, and carry the artefacts GAN edits make, labelled by
what is really rendered:

* **partial renders**: a share of the images has one attribute rendered at an intermediate value
  v (most attributes enter the renderer as a layer opacity or a geometry blend), labelled
  ``v > 0.5``; values in (0.4, 0.6) are never drawn, so no label is a coin toss.  A faint, tinted
  band over the eyes is therefore a negative for Eyeglasses;
* **counterfactual pairs**: for another share, the same image with one attribute flipped is also
  rendered; training blends the two pixel-wise (``blend_pairs``), labelled by the larger weight;
* **blur, noise, colour casts** (``degrade``): applied at training time, label-preserving, mild;
* **recolours** (``recolour_fraction``, the attribute judge only): a share of the images has one
  attribute it carries among ``render.RECOLOUR_ATTRIBUTES`` (glasses frame, fringe, moustache, beard)
  drawn in a random colour the renderer's palettes never pick, labelled present: an edit that paints
  the frames gold has not removed the glasses (docs/metrics.md, "A measured blind spot").

Renders are cached (a ``benchmark.cache`` entry, ``judge_renders/<key>/``) because the renderer is
the slow part on a CPU (~50 images/s on one busy thread at 64 px) and a set is shared by
every judge that asks for the same people (the identity judge asks for 8x more than the attribute judge).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark import cache as entries
from benchmark.assets import cache_root
from benchmark.data.base import DataError, FaceDataset, content_fingerprint
from benchmark.data.synthfaces.params import ATTRIBUTE_NAMES, IDENTITY_PARAM_NAMES, sample_judge_split
from benchmark.data.synthfaces.render import RECOLOUR_ATTRIBUTES, RECOLOUR_RGB, render

log = logging.getLogger(__name__)

JUDGE_DATA_VERSION = 1  # bump when what a judge render or its label is changes
CACHE_SUBDIR = "judge_renders"
GAP = (0.4, 0.6)  # intermediate attribute values never drawn: labels stay unambiguous
RECOLOUR_MIX = (0.3, 1.0)  # how far a recoloured layer goes from its own colour towards the random one


# Judge-set sizes relative to the editors' train identities (SynthFaces' default 1,000 -> 1,600 judge
# and 200 judge_val people): the judges see more people than the editors, and a small test dataset gets
# a small judge set instead of the full one.
JUDGE_IDS_PER_TRAIN_ID = {"judge": 1.6, "judge_val": 0.2}


def default_judge_ids(dataset: FaceDataset, split: str = "judge", per_train_id: float | None = None) -> int:
    """People in the judge set ``split`` of ``dataset`` when a config leaves the number open (None);
    ``per_train_id`` overrides the split's ``JUDGE_IDS_PER_TRAIN_ID`` (the identity judge sees more people)."""
    n_train = int(getattr(dataset, "n_train_ids", 1000))
    scale = JUDGE_IDS_PER_TRAIN_ID[split] if per_train_id is None else per_train_id
    return max(8, round(scale * n_train))


def supports_judge_data(dataset: FaceDataset) -> bool:
    """Only SynthFaces can render arbitrary attribute combinations of a person."""
    from benchmark.data.synthfaces.dataset import SynthFaces

    return isinstance(dataset, SynthFaces)


@dataclass
class JudgeData:
    images: torch.Tensor       # N×3×H×W uint8
    labels: torch.Tensor       # N×A float {0,1}: what is rendered (partial values thresholded at 0.5)
    identity: torch.Tensor     # (N,) int64, disjoint from the editors' identities
    params: torch.Tensor       # N×P standardised identity factors (as ``identity_params``)
    pair_index: torch.Tensor   # (M,) rows of ``images`` that have a flipped counterfactual
    pair_attr: torch.Tensor    # (M,) the flipped attribute's column
    pair_images: torch.Tensor  # M×3×H×W uint8: images[pair_index] with pair_attr flipped

    def __len__(self) -> int:
        return int(self.images.shape[0])


def _u8(img: torch.Tensor) -> torch.Tensor:
    return ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def _partial_values(gen: torch.Generator, n: int) -> torch.Tensor:
    """Values in [0, 0.4) ∪ (0.6, 1] (uniform), i.e. never within ``GAP``."""
    u = torch.rand(n, generator=gen) * (1 - (GAP[1] - GAP[0]))
    return torch.where(u < GAP[0], u, u + (GAP[1] - GAP[0]))


def _render_rows(p: dict[str, torch.Tensor], resolution: int, device: torch.device, batch: int) -> torch.Tensor:
    n = next(iter(p.values())).numel()
    out = []
    for s in range(0, n, batch):
        out.append(_u8(render({k: v[s:s + batch] for k, v in p.items()}, resolution, device=device)[0].cpu()))
    return torch.cat(out) if out else torch.zeros(0, 3, resolution, resolution, dtype=torch.uint8)


def _add_recolours(p: dict[str, torch.Tensor], labels: torch.Tensor, gen: torch.Generator, fraction: float) -> int:
    """Give a ``fraction`` of the rows one carried recolourable attribute in a random colour (``render.recolour``);
    the labels stay (the attribute is still drawn whole).  Drawn after every other artefact from the same
    generator, so a set without recolours is the set rendered before they existed.  Returns the rows changed."""
    n = labels.shape[0]
    cols = [ATTRIBUTE_NAMES.index(a) for a in RECOLOUR_ATTRIBUTES]
    # carried: 1 for Bangs / Eyeglasses / Mustache, 0 for No_Beard (the beard is drawn when No_Beard is 0)
    carried = torch.stack([labels[:, c] < 0.5 if a == "No_Beard" else labels[:, c] > 0.5
                           for a, c in zip(RECOLOUR_ATTRIBUTES, cols)], dim=1)
    pick = torch.rand(n, len(cols), generator=gen).masked_fill(~carried, -1.0).argmax(dim=1)
    chosen = (torch.rand(n, generator=gen) < fraction) & carried.any(dim=1)
    mix = RECOLOUR_MIX[0] + (RECOLOUR_MIX[1] - RECOLOUR_MIX[0]) * torch.rand(n, generator=gen)
    colour = torch.rand(n, 3, generator=gen)
    for j, a in enumerate(RECOLOUR_ATTRIBUTES):
        p[f"recolour_{a}"] = torch.where(chosen & (pick == j), mix, torch.zeros(n))
    for j, k in enumerate(RECOLOUR_RGB):
        p[k] = colour[:, j].clone()
    return int(chosen.sum())


def render_judge_set(dataset: FaceDataset, split: str, n_ids: int, images_per_id: int,
                     partial_fraction: float, pair_fraction: float, batch: int = 64,
                     recolour_fraction: float = 0.0) -> JudgeData:
    """Render a judge set (no cache; see ``judge_data``).

    ``batch`` 64: the renders are bit-identical at any batch size (checked at 32-256), and 64 renders
    faster than 128 on two idle cores: the attribute judge's 9,200 renders took 22.0 / 16.9 s at 64
    against 28.1 / 24.5 s at 128 (two runs each, 2026-12-02; ``python -m benchmark.bench_synthfaces
    --batch 64`` vs ``--batch 128`` shows the same order), which matters for the identity judge's 71,000."""
    if not supports_judge_data(dataset):
        raise DataError(f"judge renders need SynthFaces, not dataset {dataset.name!r}")
    sp = sample_judge_split(dataset.seed, split, n_ids, images_per_id)
    n, n_attr = len(sp), len(ATTRIBUTE_NAMES)
    gen = torch.Generator().manual_seed(int(hashlib.sha256(f"judge-artefacts/{split}".encode()).hexdigest()[:12], 16))
    p = sp.gather(torch.arange(n))
    labels = sp.labels.clone()
    partial = torch.nonzero(torch.rand(n, generator=gen) < partial_fraction).flatten()
    p_attr = torch.randint(0, n_attr, (len(partial),), generator=gen)
    p_val = _partial_values(gen, len(partial))
    for i, a, v in zip(partial.tolist(), p_attr.tolist(), p_val.tolist()):
        p[ATTRIBUTE_NAMES[a]][i] = v
        labels[i, a] = float(v > 0.5)
    rest = torch.nonzero(~torch.isin(torch.arange(n), partial)).flatten()
    pair_index = rest[torch.rand(len(rest), generator=gen) < pair_fraction]
    pair_attr = torch.randint(0, n_attr, (len(pair_index),), generator=gen)
    n_recoloured = _add_recolours(p, labels, gen, recolour_fraction) if recolour_fraction > 0 else 0
    t0 = time.time()
    images = _render_rows(p, dataset.resolution, dataset.device, batch)
    q = {k: v[pair_index].clone() for k, v in p.items()}
    for j, a in enumerate(pair_attr.tolist()):
        q[ATTRIBUTE_NAMES[a]][j] = 1.0 - q[ATTRIBUTE_NAMES[a]][j]
    pair_images = _render_rows(q, dataset.resolution, dataset.device, batch)
    log.info("rendered %d judge images (+%d counterfactual pairs, %d recoloured) for %s in %.0f s", n,
             len(pair_index), n_recoloured, split, time.time() - t0)
    params = (sp.latent[sp.person] - 0.5) * math.sqrt(12.0)
    return JudgeData(images, labels, sp.identity.clone(), params, pair_index, pair_attr, pair_images)


_FIELDS = ("images", "labels", "identity", "params", "pair_index", "pair_attr", "pair_images")


def judge_data(dataset: FaceDataset, split: str, n_ids: int, images_per_id: int,
               partial_fraction: float = 0.25, pair_fraction: float = 0.15, recolour_fraction: float = 0.0) -> JudgeData:
    """The cached judge set of ``dataset`` (rendered once per content key, shared by the judges that ask for it)."""
    from safetensors.torch import load_file, save_file

    payload = {"dataset": content_fingerprint(dataset), "split": split, "n_ids": n_ids, "images_per_id": images_per_id,
               "partial": partial_fraction, "pair": pair_fraction, "version": JUDGE_DATA_VERSION}
    if recolour_fraction > 0:  # keyed only when on: the sets rendered before recolours keep their keys
        payload["recolour"] = recolour_fraction
    key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
    final = cache_root() / CACHE_SUBDIR / key

    def build(tmp: Path) -> None:
        d = render_judge_set(dataset, split, n_ids, images_per_id, partial_fraction, pair_fraction,
                             recolour_fraction=recolour_fraction)
        save_file({f: getattr(d, f).contiguous() for f in _FIELDS}, str(tmp / "data.safetensors"))
        (tmp / "info.json").write_text(json.dumps(payload, indent=2, default=str))

    remedy = f"delete {final}; it is re-rendered on the next run"
    entries.ensure_entry(final, build, remedy=remedy)
    state = entries.read_entry_file(final / "data.safetensors", lambda f: load_file(str(f)), "judge renders", remedy)
    return JudgeData(**{f: state[f] for f in _FIELDS})


# -- training-time artefacts ------------------------------------------------------------------------------

def blend_pairs(x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, data: JudgeData, gen: torch.Generator,
                prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Blend, with probability ``prob``, each batch image that has a counterfactual pair with it.

    ``x`` float [-1, 1] images of ``data.images[rows]``, ``y`` their labels; the weight α of the
    counterfactual is drawn outside ``GAP`` and the flipped attribute's label is that of the larger side.
    """
    lookup = torch.full((len(data),), -1, dtype=torch.long)
    lookup[data.pair_index] = torch.arange(len(data.pair_index))
    pr = lookup[rows]
    use = torch.nonzero((pr >= 0) & (torch.rand(len(rows), generator=gen) < prob)).flatten()
    if not len(use):
        return x, y
    alpha = _partial_values(gen, len(use)).view(-1, 1, 1, 1)
    other = data.pair_images[pr[use]].float() / 127.5 - 1
    x, y = x.clone(), y.clone()
    x[use] = x[use] * (1 - alpha) + other * alpha
    cols = data.pair_attr[pr[use]]
    flip = alpha.flatten() > 0.5
    y[use, cols] = torch.where(flip, 1 - y[use, cols], y[use, cols])
    return x, y


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = max(1, math.ceil(2.5 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def degrade(x: torch.Tensor, gen: torch.Generator, prob: float = 0.3, max_sigma: float = 1.0,
            max_noise: float = 0.06, max_cast: float = 0.05) -> torch.Tensor:
    """Label-preserving GAN-like artefacts, each with probability ``prob`` per image: Gaussian blur
    (σ up to ``max_sigma`` px), Gaussian noise (std up to ``max_noise``, [-1, 1] units) and a colour cast
    (per-channel offset up to ±``max_cast`` and gain 1 ± ``max_cast``).  Kept mild: a strong cast can
    itself change what Pale_Skin or Blond_Hair look like, and its label would then be wrong."""
    b = x.shape[0]
    out = x.clone()
    blur = torch.nonzero(torch.rand(b, generator=gen) < prob).flatten()
    if len(blur):
        sig = 0.3 + (max_sigma - 0.3) * float(torch.rand(1, generator=gen))
        out[blur] = _blur(out[blur], sig)
    pick = lambda: (torch.rand(b, generator=gen) < prob).float().view(b, 1, 1, 1)  # noqa: E731
    noise_std = pick() * torch.rand(b, 1, 1, 1, generator=gen) * max_noise
    out = out + noise_std * torch.randn(out.shape, generator=gen)
    cast = pick()
    gain = 1 + cast * (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1) * max_cast
    offset = cast * (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1) * max_cast * 2
    return (out * gain + offset).clamp(-1, 1)
