"""SynthFaces identity embedder, trained by our code on ground-truth identities.

Why train one: FaceNet and dlib were trained on photographs and say little
about SynthFaces' rendered people; SynthFaces, however, knows who everyone is
(``identity`` per item) and what makes them who they are (continuous identity
factors, ``split.identity_params``).  So we learn an embedding from the TRAIN
split's identities and check it on TEST identities, which SynthFaces keeps
disjoint from train (each split samples its own people).

Two outputs, two fits:

* **Embedding** (``id_cos``): a small CNN (conv blocks -> global average pool ->
  linear -> BN -> 128-d, L2-normalised) trained with CosFace, the large-margin
  cosine loss (H. Wang et al., "CosFace: Large Margin Cosine Loss for Deep Face
  Recognition", CVPR 2018): softmax over the train identities on
  s·(cos θ_j − m·[j = y]).  Chosen over a triplet loss because SynthFaces gives
  many images per labelled identity, which a classification loss uses in every
  batch without pair mining.  The paper uses s = 64, m = 0.35; with ~10^3
  identities and a short schedule we keep m = 0.35 and lower s to 30 (the
  paper's lower bound on s grows with the number of classes).
* **Factor readout** (``id_param_err``): ridge regression, solved in closed
  form, from [the image at 32 px ; the trunk's last feature map average-pooled
  to 4×4] to the standardised identity factors; the ridge strength is chosen per
  factor on a held-out fifth of the TRAIN identities, then refit on all of them.

Why not the former jointly trained MLP head on the pooled features (code
version 1): measured on the default SynthFaces it barely beat predicting the
mean (test MAE 0.82 vs 0.85; mean held-out R² 0.11 at 32 px).  Three causes:
the CosFace loss (~15 at the start, s = 30) swamps the factor MSE (≤ 1); the
global average pool throws away *where* things are, and most visible factors
are geometry (face width, eye spacing, nose length); and a few hundred SGD steps
are far too few for 27 subtle regressions (an MSE-only CNN with a spatial head
still reached only R² 0.18 in 10 epochs, below a closed-form ridge on 32-px
pixels, 0.22).  The closed-form readout is exact for its features, costs
seconds, and needs no schedule.

Which factors are scored (``SCORED_FACTORS``): only those the readout measures
well on held-out identities AND that no attribute hides; per attribute,
``EDIT_HIDDEN`` drops the factors its edit legitimately overrides.  See the
comments there; ``metrics.json`` stores every factor's held-out R² and the list.

Cache: ``cache_root()/id_embedders/<key>/`` (a ``benchmark.cache`` entry: ``MANIFEST.json``
with every file's sha256, verified before use) with ``model.safetensors``,
``config.json`` and ``metrics.json`` (held-out verification ROC-AUC and
accuracy on TEST identities, per-factor R² / MAE, the scored list); ``key``
hashes the dataset fingerprint, the config and ``CODE_VERSION``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from benchmark import cache as entries
from benchmark.assets import cache_root
from benchmark.data.base import DataError, FaceDataset, FaceSplit, collate_faces, content_fingerprint
from benchmark.data.synthfaces.params import IDENTITY_PARAM_NAMES as SYNTHFACES_FACTORS
from evaluators.base import resize_square

log = logging.getLogger(__name__)

CODE_VERSION = "2"  # bump when training, the readout or the scored factors change: a new cache key
CACHE_SUBDIR = "id_embedders"

# SynthFaces identity factors that ``id_param_err`` scores.  Kept: held-out R² >= 0.35 on TEST identities with
# the default config (measured with code version 2: face_width 0.74, face_length 0.52, skin_tone 0.86,
# skin_warmth 0.56, eye_size 0.42, eye_spacing 0.67, eye_height 0.46, nose_length 0.36; every run's own
# figures are in metrics.json "param_r2_test") and not hidden by any attribute for much of the population.
# Left out, with the reason:
#  * too small to read at 64 px (held-out R² <= 0.24): jaw_width, chin_length, eye_slant, iris_hue,
#    iris_darkness, nose_width, lip_*, brow_*, ear_size, hair_part (a few pixels, under pose/light jitter);
#  * hidden by attributes for much of the population: hair_length / hair_volume (cut to ~8 % for Male),
#    hair_hue / hair_darkness (replaced by Blond_Hair, greyed when not Young), grey_amount (only seen when
#    not Young).  Scoring them would charge a correct Male / Blond / Young edit for hiding them; they are
#    also the reason their R² is low (0.07 to 0.43).
SCORED_FACTORS: tuple[str, ...] = (
    "face_width", "face_length", "skin_tone", "skin_warmth", "eye_size", "eye_spacing", "eye_height",
    "nose_length",
)
# Factors an attribute edit legitimately overrides or covers in the image: not scored in that attribute's
# cells, so a faithful edit is not charged for them.  Checked with the ground-truth counterfactuals (the
# oracle edit) on 500 default test images with the default embedder: per scored factor, the oracle's error
# minus the unedited image's error.  Pale_Skin: skin_tone +0.49, skin_warmth +0.48 (skin blended 72 %
# towards one pale colour); Mustache: nose_length +0.17 (it covers the band under the nose); No_Beard
# (growing a beard): face_length +0.11 (the beard covers the chin line).  Every other attribute x scored
# factor moved by < 0.09 (mean over the scored factors: +0.00 for Smiling / Mouth_Slightly_Open, +0.02 to
# +0.05 for the rest): the readout's residual sensitivity, the same for every editor.  The remaining
# entries (factors that are not scored anyway) record what render.py hides, should the list grow.
EDIT_HIDDEN: dict[str, frozenset[str]] = {
    "Pale_Skin": frozenset({"skin_tone", "skin_warmth"}),
    "Mustache": frozenset({"nose_length", "lip_fullness"}),
    "No_Beard": frozenset({"face_length", "jaw_width", "chin_length"}),
    "Male": frozenset({"hair_length", "hair_volume"}),
    "Young": frozenset({"hair_hue", "hair_darkness", "grey_amount"}),  # greying
    "Blond_Hair": frozenset({"hair_hue", "hair_darkness"}),
    "Bangs": frozenset({"brow_thickness", "brow_height", "brow_arch", "hair_part"}),  # fringe over the brows
    "Smiling": frozenset({"lip_width", "lip_fullness"}),
    "Mouth_Slightly_Open": frozenset({"lip_fullness"}),
}


def scored_factor_indices(names: Sequence[str], attribute: str | None = None) -> list[int]:
    """Columns of ``identity_params`` that ``id_param_err`` scores (for an edit of ``attribute``).

    SynthFaces' factors: ``SCORED_FACTORS`` minus ``EDIT_HIDDEN[attribute]``.  Any other
    dataset's factors (no observability analysis exists for them): all of them.
    """
    if tuple(names) != SYNTHFACES_FACTORS:
        return list(range(len(names)))
    hidden = EDIT_HIDDEN.get(attribute or "", frozenset())
    return [i for i, n in enumerate(names) if n in SCORED_FACTORS and n not in hidden]


def factor_names(dataset: FaceDataset, n_params: int) -> list[str]:
    """The dataset's identity-factor names, or ``factor_<i>`` where it names none."""
    names = getattr(dataset, "identity_param_names", None)
    if names is None:
        return [f"factor_{i}" for i in range(n_params)]
    if len(names) != n_params:
        raise DataError(f"dataset {dataset.name!r} names {len(names)} identity factors but identity_params "
                        f"returns {n_params}")
    return list(names)


@dataclass(frozen=True)
class SynthEmbedderConfig:
    """Everything that determines the trained embedder (part of the cache key)."""

    # the metric-name tag of this config (see ``tag``).  "cnn4s2": the 4-block trunk behind a stride-2 stem;
    # the former default (stride 1, 1,600 judge people, 20 epochs) was "cnn4_cosface_ridge" (docs/metrics.md)
    label: str = "cnn4s2_cosface_ridge"
    image_size: int = 64
    # (16, 32, 64, 128): ~10 ms per 64-px image per training step on one shared CPU thread here
    widths: tuple[int, ...] = (16, 32, 64, 128)
    # stride of the first conv: 2 runs every block at half the resolution (~4x fewer multiply-adds); the
    # default since the judge set grew to 12,800 people (below), where it beat stride 1 at 1,600 people
    stem_stride: int = 2
    embedding_dim: int = 128
    # 6 on 12,800 judge people (3,342 steps of 128; 4 left Blond_Hair's oracle at 0.77).  With 1,600 people,
    # 20 epochs (loss 8.6) left the oracle's Male / Young counterfactuals at id_cos 0.66; many more people,
    # each seen a few times, teach invariance to the attributes instead of who has which hair (docs/metrics.md)
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    cosface_scale: float = 30.0   # s (see module docstring)
    cosface_margin: float = 0.35  # m, the CosFace paper's value
    readout_pixels: int = 32      # the image enters the readout at this size
    readout_grid: int = 4         # the trunk's last map enters average-pooled to grid × grid
    # ridge strengths tried per factor (features standardised, so comparable across datasets)
    readout_lambdas: tuple[float, ...] = (30.0, 100.0, 300.0, 1000.0, 3000.0, 10000.0)
    readout_val_fraction: float = 0.2
    # the readout is fitted on at most this many training images (a seeded sample; None: all): its Gram
    # matrix over ~5k features costs ~3 ms per image on one thread, and 10k images already give it
    # 2 images per feature
    readout_max_items: int | None = 10000
    max_train_items: int | None = 20000
    max_eval_items: int = 1500
    # "auto" (default, issue 15): "judge" where the dataset can render judge data (SynthFaces), else
    # "train".  "judge": SynthFaces' judge
    # renders (evaluators/judge_data.py) - the same person with every attribute an independent coin per
    # image, under varied pose and light, so CosFace must learn the identity factors, not hair colour,
    # age or skin.  ``judge_ids`` people x ``judge_images_per_id`` images (None: ``judge_ids_per_train_id``
    # x the dataset's train identities, 12,800 by default; the attribute judge keeps its 1,600, so the two
    # render their own sets).  "train": the editors' train split, the default before issue 15 (it learns
    # hair colour, age and skin as identity).
    train_data: str = "auto"
    judge_ids: int | None = None
    judge_ids_per_train_id: float = 12.8
    judge_images_per_id: int = 5
    # judge path only (issue 15): the judge set's one-attribute-flipped counterfactual pairs join training
    # as more images of their person (exactly the invariance id_cos must have), and each training image
    # is blurred / noised / colour-cast with probability ``degrade_prob`` each (judge_data.degrade; blur
    # σ up to ``degrade_max_sigma`` px, noise std up to ``degrade_max_noise``, cast ±0.05 kept mild since
    # skin tone is identity): without it a 0.6-px blur cost as much id_cos (0.76) as a gender swap.
    use_pairs: bool = True
    degrade_prob: float = 0.4
    degrade_max_sigma: float = 1.5
    degrade_max_noise: float = 0.1
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict[str, Any] | None) -> "SynthEmbedderConfig":
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown id_synth options {unknown}; valid: {sorted(known)}")
        if "widths" in options:
            options["widths"] = tuple(int(w) for w in options["widths"])
        if "readout_lambdas" in options:
            options["readout_lambdas"] = tuple(float(v) for v in options["readout_lambdas"])
        return cls(**options)

    @property
    def tag(self) -> str:
        """The metric-name tag: the config's label, plus a hash when it is not the default protocol.

        A different protocol is a different metric name (DESIGN §3), so a changed
        config never reports under the default name.
        ``_judge`` marks an embedder trained on judge renders (SynthFaces' default since issue 15), so
        its rows never share a name with the former train-split default (``train_data: train,
        epochs: 5``, now ``<label>_<hash>``).  Call on a ``resolved`` config; an
        unresolved ``auto`` is named as on SynthFaces.
        """
        source = "train" if self.train_data == "train" else "judge"
        base = self.label + ("_judge" if source == "judge" else "")
        if replace(self, train_data="auto") == SynthEmbedderConfig():
            return base
        digest = hashlib.sha256(json.dumps(_hashed_fields(self), sort_keys=True).encode()).hexdigest()[:6]
        return f"{base}_{digest}"

    def resolved(self, dataset: FaceDataset) -> "SynthEmbedderConfig":
        """``train_data: auto`` made concrete: judge renders where ``dataset`` can render them, else train."""
        if self.train_data != "auto":
            return self
        from evaluators.judge_data import supports_judge_data

        return replace(self, train_data="judge" if supports_judge_data(dataset) else "train")


DEFAULT_TAG = SynthEmbedderConfig().tag


class SynthIdentityNet(nn.Module):
    """Small CNN -> 128-d embedding, plus a linear (ridge) readout of the identity factors."""

    def __init__(self, config: SynthEmbedderConfig, param_names: Sequence[str]):
        super().__init__()
        self.image_size = config.image_size
        self.readout_pixels, self.readout_grid = config.readout_pixels, config.readout_grid
        self.param_names = list(param_names)
        layers: list[nn.Module] = []
        c_in = 3
        for i, w in enumerate(config.widths):
            stride = config.stem_stride if i == 0 else 1
            layers += [nn.Conv2d(c_in, w, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(w),
                       nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = w
        self.trunk = nn.Sequential(*layers)
        self.embed = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, config.embedding_dim),
                                   nn.BatchNorm1d(config.embedding_dim))
        n_feat = 3 * config.readout_pixels ** 2 + c_in * config.readout_grid ** 2
        n_params = len(self.param_names)
        # the readout (filled by ``fit_readout``): standardise features, then a linear map to the factors
        self.register_buffer("feat_mean", torch.zeros(n_feat))
        self.register_buffer("feat_std", torch.ones(n_feat))
        self.register_buffer("readout", torch.zeros(n_feat, n_params))
        self.register_buffer("param_mean", torch.zeros(n_params))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> the training resolution."""
        return resize_square(images.float(), self.image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Unnormalised embedding (what CosFace trains)."""
        return self.embed(self.trunk(self.prepare(images)))

    def embed_and_features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unnormalised embedding, raw readout features) from one trunk pass."""
        x = self.prepare(images)
        fmap = self.trunk(x)
        feats = torch.cat([resize_square(x, self.readout_pixels).flatten(1),
                           F.adaptive_avg_pool2d(fmap, self.readout_grid).flatten(1)], dim=1)
        return self.embed(fmap), feats

    def read_params(self, feats: torch.Tensor) -> torch.Tensor:
        """Identity factors (dataset units) from raw readout features."""
        z = (feats.double() - self.feat_mean.double()) / self.feat_std.double()
        return (z @ self.readout.double() + self.param_mean.double()).to(feats.dtype)

    @torch.no_grad()
    def embed_and_params(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised embeddings, identity factors in their own units); eval mode."""
        self.eval()
        emb, feats = self.embed_and_features(images)
        return F.normalize(emb, dim=1), self.read_params(feats)

    def scored_columns(self, attribute: str | None = None) -> list[int]:
        return scored_factor_indices(self.param_names, attribute)

    def param_error(self, predicted: torch.Tensor, true: torch.Tensor, attribute: str | None = None) -> torch.Tensor:
        """(B,) mean absolute error over the factors scored for an edit of ``attribute`` (``id_param_err``)."""
        cols = self.scored_columns(attribute)
        if predicted.shape != true.shape or predicted.shape[-1] != len(self.param_names):
            raise DataError(f"id_synth: predicted {tuple(predicted.shape)} and true {tuple(true.shape)} factors "
                            f"must both be B×{len(self.param_names)}")
        return (predicted.double()[:, cols] - true.double()[:, cols]).abs().mean(dim=1)


class CosFaceLoss(nn.Module):
    """Large-margin cosine loss (Wang et al., CVPR 2018): CE on s·(cos θ_j − m·[j = y])."""

    def __init__(self, dim: int, n_classes: int, scale: float, margin: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale, self.margin = scale, margin

    def forward(self, feat: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(feat, dim=1) @ F.normalize(self.weight, dim=1).T
        cos = cos - self.margin * F.one_hot(target, cos.shape[1]).to(cos)
        return F.cross_entropy(self.scale * cos, target)


# -- data -------------------------------------------------------------------------------------------------

@dataclass
class _Loaded:
    images: torch.Tensor   # N×3×S×S uint8 (memory: 12 KB per 64-px image)
    identity: torch.Tensor  # (N,) int64, the dataset's ids
    params: torch.Tensor   # N×P float
    index: torch.Tensor    # (N,) the split indices these items came from


def _pick(n: int, limit: int | None, seed: int) -> list[int]:
    if limit is None or limit >= n:
        return list(range(n))
    gen = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=gen)[:limit].tolist())


def load_split(split: FaceSplit, size: int, limit: int | None, seed: int, batch_size: int = 256) -> _Loaded:
    """Images (resized to ``size``, kept as uint8), identities and true factors of (a sample of) a split."""
    if not callable(getattr(split, "identity_params", None)):
        raise DataError(f"split {getattr(split, 'split_name', '?')!r} offers no identity_params")
    chosen = _pick(len(split), limit, seed)
    loader = DataLoader(Subset(split, chosen), batch_size=batch_size, shuffle=False, collate_fn=collate_faces)
    imgs, ids, params = [], [], []
    for batch in loader:
        x = resize_square(batch["image"].float(), size)
        imgs.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        ids.append(batch["identity"].long().reshape(-1))
        params.append(torch.as_tensor(split.identity_params(batch["index"])).float())
    identity = torch.cat(ids)
    if (identity < 0).any():
        raise DataError("id_synth needs an identity for every item; the split has items with identity -1")
    return _Loaded(torch.cat(imgs), identity, torch.cat(params), torch.tensor(chosen, dtype=torch.long))


def resolved_judge_ids(dataset: FaceDataset, config: SynthEmbedderConfig) -> int:
    """People in the embedder's judge set: ``judge_ids``, or the dataset-scaled default when None."""
    from evaluators.judge_data import default_judge_ids

    if config.judge_ids is not None:
        return config.judge_ids
    return default_judge_ids(dataset, "judge", config.judge_ids_per_train_id)


def load_judge_renders(dataset: FaceDataset, config: SynthEmbedderConfig) -> _Loaded:
    """The judge renders (identities disjoint from train and test) as training data; see ``train_data``."""
    from evaluators.judge_data import judge_data, supports_judge_data

    if not supports_judge_data(dataset):
        raise DataError(f"id_synth train_data: judge needs SynthFaces, not {dataset.name!r}")
    d = judge_data(dataset, "judge", resolved_judge_ids(dataset, config), config.judge_images_per_id)
    images, identity, params = d.images, d.identity.clone(), d.params.float()
    index = torch.arange(len(d))
    if config.use_pairs and len(d.pair_index):
        images = torch.cat([images, d.pair_images])
        identity = torch.cat([identity, d.identity[d.pair_index]])
        params = torch.cat([params, d.params[d.pair_index].float()])
        index = torch.cat([index, d.pair_index])
    if images.shape[-2:] != (config.image_size, config.image_size):  # at the render size the uint8s are kept
        # (a float copy of the default 71,000 renders would be 3.5 GB, and the round trip gives the same bytes)
        x = resize_square(_to_float(images), config.image_size)
        images = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return _Loaded(images, identity, params, index)


def _to_float(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1


# -- training ---------------------------------------------------------------------------------------------

def _train_embedding(model: SynthIdentityNet, data: _Loaded, config: SynthEmbedderConfig,
                     device: torch.device) -> dict:
    """CosFace on the train identities (the embedding only; the readout is fitted afterwards)."""
    from evaluators.judge_data import degrade  # lazy: judge_data imports the renderer

    classes, target = torch.unique(data.identity, return_inverse=True)
    head = CosFaceLoss(config.embedding_dim, len(classes), config.cosface_scale, config.cosface_margin).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=config.lr,
                            weight_decay=config.weight_decay)
    n = len(target)
    steps = config.epochs * math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.15)
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    last = {}
    from benchmark.progress import progress

    bar = progress(total=steps, desc="judge: identity embedder", unit="step", leave=True)
    for epoch in range(config.epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = perm[start:start + config.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            x = _to_float(data.images[idx])
            if config.train_data == "judge" and config.degrade_prob > 0:
                x = degrade(x, gen, config.degrade_prob, config.degrade_max_sigma, config.degrade_max_noise)
            loss = head(model(x.to(device)), target[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{config.epochs}", loss=f"{float(loss.detach()):.3f}")
        last = {"epoch": epoch + 1, "cosface_loss": total / n}
        log.info("id_synth epoch %d/%d: %s", epoch + 1, config.epochs, last)
    bar.close()
    model.eval()
    return {"n_train_items": n, "n_train_identities": len(classes), "final_epoch": last}


@torch.no_grad()
def _infer_all(model: SynthIdentityNet, images: torch.Tensor, device: torch.device,
               batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(unnormalised embeddings, raw readout features) of uint8 images, in eval mode, on the CPU."""
    model.eval()
    embs, feats = [], []
    for start in range(0, len(images), batch):
        e, f = model.embed_and_features(_to_float(images[start:start + batch]).to(device))
        embs.append(e.cpu())
        feats.append(f.cpu())
    return torch.cat(embs), torch.cat(feats)


def _ridge_path(x: torch.Tensor, y: torch.Tensor, lambdas: Sequence[float]) -> list[torch.Tensor]:
    """Ridge weights (F×P) of centred ``x`` (N×F) -> centred ``y``, one per λ, by Cholesky solves.

    Uses the smaller Gram matrix: X^T X (primal) when F <= N, else X X^T (dual,
    W = X^T (K + λI)^-1 Y).  One Cholesky per λ costs a third of n³, cheaper than one
    eigendecomposition for the handful of λ tried.
    """
    primal = x.shape[1] <= x.shape[0]
    x32 = x.float()  # the Gram product dominates the cost; float32 is ample at these λ (features standardised)
    gram = (x32.T @ x32 if primal else x32 @ x32.T).double()
    rhs = x.T @ y if primal else y
    eye = torch.eye(len(gram), dtype=gram.dtype)
    out = []
    for lam in lambdas:
        sol = torch.cholesky_solve(rhs, torch.linalg.cholesky(gram + lam * eye))
        out.append(sol if primal else x.T @ sol)
    return out


def fit_readout(model: SynthIdentityNet, feats: torch.Tensor, params: torch.Tensor, identity: torch.Tensor,
                config: SynthEmbedderConfig) -> dict:
    """Fit the ridge readout in float64; choose λ per factor on held-out TRAIN identities, then refit on all.

    The validation fifth is split by identity (not by image), so the choice rewards
    reading a person's factors, not recognising a person seen in the fit.
    """
    x, y = feats.double(), params.double()
    mean, std = x.mean(0), x.std(0).clamp_min(1e-3)  # constant pixels (a fixed corner) stay finite
    z = (x - mean) / std
    people = torch.unique(identity)
    gen = torch.Generator().manual_seed(config.seed + 2)
    n_val = max(1, round(config.readout_val_fraction * len(people)))
    if len(people) - n_val < 2:
        raise DataError(f"id_synth readout needs >= 3 train identities, got {len(people)}")
    val = torch.isin(identity, people[torch.randperm(len(people), generator=gen)[:n_val]])
    zf, yf = z[~val], y[~val]
    zm, ym = zf.mean(0), yf.mean(0)
    path = _ridge_path(zf - zm, yf - ym, config.readout_lambdas)
    val_mse = torch.stack([(((z[val] - zm) @ w + ym - y[val]) ** 2).mean(0) for w in path])  # L×P
    best = val_mse.argmin(0)
    chosen = sorted({int(b) for b in best})  # refit on all train identities, only at the λ some factor chose
    full = dict(zip(chosen, _ridge_path(z, y - y.mean(0), [config.readout_lambdas[i] for i in chosen])))
    weights = torch.stack([full[int(best[j])][:, j] for j in range(y.shape[1])], dim=1)
    model.feat_mean.copy_(mean.to(model.feat_mean))  # z is centred on all of train: the full fit needs no shift
    model.feat_std.copy_(std.to(model.feat_std))
    model.readout.copy_(weights.to(model.readout))
    model.param_mean.copy_(y.mean(0).to(model.param_mean))
    val_r2 = 1 - val_mse[best, torch.arange(y.shape[1])] / y[val].var(0, unbiased=False).clamp_min(1e-12)
    names = model.param_names
    return {"readout_lambda": {n: config.readout_lambdas[int(b)] for n, b in zip(names, best)},
            "readout_val_r2_train_ids": {n: round(float(r), 4) for n, r in zip(names, val_r2)}}


def _pair_scores(emb: torch.Tensor, identity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarity and same-person flag of every unordered pair."""
    sim = emb @ emb.T
    iu = torch.triu_indices(len(emb), len(emb), offset=1)
    return sim[iu[0], iu[1]], (identity[iu[0]] == identity[iu[1]])


def _balanced_accuracy(scores: torch.Tensor, same: torch.Tensor, threshold: float) -> float:
    pred = scores >= threshold
    return 0.5 * (float(pred[same].float().mean()) + float((~pred[~same]).float().mean()))


def _best_threshold(scores: torch.Tensor, same: torch.Tensor) -> float:
    candidates = torch.quantile(scores.float(), torch.linspace(0.01, 0.99, 197))
    accs = [_balanced_accuracy(scores, same, float(t)) for t in candidates]
    return float(candidates[int(torch.tensor(accs).argmax())])


def factor_metrics(model: SynthIdentityNet, predicted: torch.Tensor, true: torch.Tensor) -> dict:
    """Per-factor held-out R² and MAE, and the MAE over the scored factors (what a no-op edit scores)."""
    pred, true = predicted.double(), true.double()
    names = model.param_names
    mae = (pred - true).abs().mean(0)
    base = (model.param_mean.double().cpu() - true).abs().mean(0)  # always predicting the train mean
    r2 = 1 - ((pred - true) ** 2).mean(0) / true.var(0, unbiased=False).clamp_min(1e-12)
    cols = model.scored_columns()
    return {
        "scored_factors": [names[i] for i in cols],
        "edit_hidden_factors": {a: sorted(h & {names[i] for i in cols}) for a, h in EDIT_HIDDEN.items()
                                if h & {names[i] for i in cols}},
        # id_param_err of a no-op edit on these images (any attribute that hides none of the scored factors)
        "param_mae_test": float(mae[cols].mean()),
        "param_mae_test_mean_predictor": float(base[cols].mean()),
        "param_r2_test_scored_mean": float(r2[cols].mean()),
        "param_mae_test_all_factors": float(mae.mean()),
        "param_r2_test": {n: round(float(v), 4) for n, v in zip(names, r2)},
        "param_mae_test_per_factor": {n: float(v) for n, v in zip(names, mae)},
    }


def verification_metrics(model: SynthIdentityNet, train: _Loaded, test: _Loaded, device: torch.device,
                         max_items: int, seed: int) -> dict:
    """Held-out figures on TEST identities: verification ROC-AUC, balanced accuracy, factor R² / MAE.

    Verification pairs are all unordered pairs of (at most ``max_items``) images; the
    threshold is chosen on train-identity pairs so the test figure is not tuned on test
    data.  The factor figures use every kept test image.  Test images of any identity
    also seen in training are left out (SynthFaces has none).
    """
    from sklearn.metrics import roc_auc_score

    seen = torch.isin(test.identity, train.identity)
    keep = torch.nonzero(~seen).flatten()
    keep = keep[_pick(len(keep), max_items, seed)]
    if len(keep) < 2:
        raise DataError("no test images of identities unseen in training: cannot measure held-out verification")
    t_idx = torch.tensor(_pick(len(train.identity), max_items, seed + 1))
    emb_tr, _ = _infer_all(model, train.images[t_idx], device)
    s_tr, same_tr = _pair_scores(F.normalize(emb_tr, dim=1), train.identity[t_idx])
    threshold = _best_threshold(s_tr, same_tr)
    emb_te, feats_te = _infer_all(model, test.images[keep], device)
    s_te, same_te = _pair_scores(F.normalize(emb_te, dim=1), test.identity[keep])
    out = {
        "test_identities_seen_in_train": int(torch.unique(test.identity[seen]).numel()),
        "n_test_items": int(len(keep)),
        "n_test_identities": int(torch.unique(test.identity[keep]).numel()),
        "n_test_pairs_same": int(same_te.sum()),
        "n_test_pairs_different": int((~same_te).sum()),
        "threshold_from_train": threshold,
        "test_mean_cos_same": float(s_te[same_te].mean()) if same_te.any() else float("nan"),
        "test_mean_cos_different": float(s_te[~same_te].mean()),
    }
    if same_te.any():
        out["verification_roc_auc_test"] = float(roc_auc_score(same_te.numpy(), s_te.numpy()))
        out["verification_balanced_accuracy_test"] = _balanced_accuracy(s_te, same_te, threshold)
    out.update(factor_metrics(model, model.read_params(feats_te.to(model.readout.device)).cpu(), test.params[keep]))
    out["test_indices"] = test.index[keep].tolist()  # the test-split items these figures cover
    return out


# -- cache ------------------------------------------------------------------------------------------------

# fields that change nothing on the train path (left out of its keys, which stay as before issue 15)
JUDGE_ONLY_FIELDS = ("train_data", "judge_ids", "judge_ids_per_train_id", "judge_images_per_id", "use_pairs",
                     "degrade_prob", "degrade_max_sigma", "degrade_max_noise")


# fields added after checkpoints were cached: hashed only when they differ from the value that was
# implicit before, so existing cache keys and tags stay valid
LATER_FIELDS = {"stem_stride": 1, "readout_max_items": None, "judge_ids_per_train_id": 1.6}


def _hashed_fields(config: SynthEmbedderConfig) -> dict[str, Any]:
    return entries.without_later_defaults(asdict(config), LATER_FIELDS)


def cache_key(dataset: FaceDataset, config: SynthEmbedderConfig) -> str:
    config = config.resolved(dataset)
    cfg = _hashed_fields(config)
    if config.train_data == "train":  # the judge fields change nothing then: keep the existing cache keys
        cfg = {k: v for k, v in cfg.items() if k not in JUDGE_ONLY_FIELDS}
    else:  # the label names the metric, it does not change the weights; judge_ids made concrete (so its
        # per-train-id default is in it)
        cfg = {k: v for k, v in cfg.items() if k not in ("label", "judge_ids_per_train_id")}
        cfg["judge_ids"] = resolved_judge_ids(dataset, config)
    payload = {"dataset": content_fingerprint(dataset), "config": cfg, "code_version": CODE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_dir(dataset: FaceDataset, config: SynthEmbedderConfig) -> Path:
    return cache_root() / CACHE_SUBDIR / cache_key(dataset, config)


def train_embedder(dataset: FaceDataset, config: SynthEmbedderConfig, device: torch.device | str,
                   out_dir: Path) -> dict:
    """Train on the train split, evaluate on the test split, write model + metrics to ``out_dir``."""
    config = config.resolved(dataset)
    from safetensors.torch import save_file

    device = torch.device(device)
    torch.manual_seed(config.seed)
    t0 = time.time()
    train = (load_judge_renders(dataset, config) if config.train_data == "judge" else
             load_split(dataset.split("train"), config.image_size, config.max_train_items, config.seed))
    test = load_split(dataset.split("test"), config.image_size, config.max_eval_items, config.seed)
    names = factor_names(dataset, int(train.params.shape[1]))
    model = SynthIdentityNet(config, names).to(device)
    summary = _train_embedding(model, train, config, device)
    t1 = time.time()
    rows = torch.tensor(_pick(len(train.identity), config.readout_max_items, config.seed + 3), dtype=torch.long)
    _, feats = _infer_all(model, train.images[rows], device)
    summary.update(fit_readout(model, feats, train.params[rows], train.identity[rows], config))
    summary["n_readout_items"] = len(rows)
    t2 = time.time()
    summary.update(verification_metrics(model, train, test, device, config.max_eval_items, config.seed))
    summary.update({"seconds": round(time.time() - t0, 1), "seconds_embedding": round(t1 - t0, 1),
                    "seconds_readout": round(t2 - t1, 1), "device": str(device), "code_version": CODE_VERSION,
                    "torch_threads": torch.get_num_threads(),  # the weights depend on it; recorded, not hashed
                    "tag": config.tag})
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(
        {"config": asdict(config), "param_names": names, "dataset": dataset.fingerprint()}, indent=2, default=str))
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def _rebuild_hint(path: Path) -> str:
    return f"delete {path} and run again: id_synth retrains the embedder (minutes on a CPU)"


def load_embedder(path: Path, config: SynthEmbedderConfig, device: torch.device | str) -> SynthIdentityNet:
    """The embedder of a cache entry; the entry is verified against its manifest first (sha256 per file)."""
    from safetensors.torch import load_file

    remedy = _rebuild_hint(path)
    entries.verify_entry(path, remedy)
    meta = entries.read_json_file(path / "config.json", remedy)
    model = SynthIdentityNet(config, meta["param_names"])
    state = entries.read_entry_file(path / "model.safetensors", lambda p: load_file(str(p)), "embedder weights",
                                    remedy)
    model.load_state_dict(state)
    return model.eval().to(torch.device(device))


def get_embedder(dataset: FaceDataset, config: SynthEmbedderConfig, device: torch.device | str) -> SynthIdentityNet:
    """The cached embedder for (dataset, config), training it first if absent, incomplete or corrupt.

    A ``benchmark.cache`` entry: trained into a private temporary directory under the entry's lock,
    given a manifest (sha256 + size per file) and renamed into place, so concurrent cells train it
    once and never see a half-written model; a folder that fails its manifest (zeroed weights still
    parse) is retrained once, under the lock, and replaced.
    """
    from evaluators.reference_judges import use_shipped

    final = cache_dir(dataset, config)
    if use_shipped(CACHE_SUBDIR, final):  # the protocol's shipped weights for this key: nothing to train
        return load_embedder(final, config, device)

    def build(tmp: Path) -> None:
        summary = train_embedder(dataset, config, device, tmp)
        log.info("id_synth embedder trained: %s", {k: v for k, v in summary.items() if k != "test_indices"})

    entries.ensure_entry(final, build, remedy=_rebuild_hint(final))
    return load_embedder(final, config, device)


def read_metrics(dataset: FaceDataset, config: SynthEmbedderConfig) -> dict:
    """The metrics.json of the cached embedder (train it first with ``get_embedder``)."""
    path = cache_dir(dataset, config)
    return entries.read_json_file(path / "metrics.json", _rebuild_hint(path))
