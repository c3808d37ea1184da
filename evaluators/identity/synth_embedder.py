"""SynthFaces identity embedder, trained by our code on ground-truth identities.

Why train one: FaceNet and dlib were trained on photographs and say little
about SynthFaces' rendered people; SynthFaces, however, knows who everyone is
(``identity`` per item) and what makes them who they are (continuous identity
factors, ``split.identity_params``).  So we learn an embedding from the TRAIN
split's identities and check it on TEST identities, which SynthFaces keeps
disjoint from train (each split samples its own people).

Model: a small CNN (conv blocks -> global average pool -> linear -> BN ->
128-d, L2-normalised) plus an MLP head that regresses the identity factors
from the pooled trunk features.

Loss: CosFace, the large-margin cosine loss (H. Wang et al., "CosFace: Large
Margin Cosine Loss for Deep Face Recognition", CVPR 2018): softmax over the
train identities on s·(cos θ_j − m·[j = y]).  Chosen over a triplet loss
because SynthFaces gives many images per labelled identity, which a
classification loss uses in every batch without pair mining, and it trains
stably with small CPU batches; the margin makes the cosine geometry the
evaluator reads (same person -> high cosine) explicit.  The paper uses
s = 64, m = 0.35; with a few hundred identities and a short schedule we keep
m = 0.35 and lower s to 30 (the paper's lower bound on s grows with the
number of classes; 30 is ample for < 10^4 classes).  The factor head adds a
mean-squared error on factors standardised with the train split's mean / std.

Cache: ``cache_root()/id_embedders/<key>/`` with ``model.safetensors``,
``config.json`` and ``metrics.json`` (held-out verification ROC-AUC and
accuracy on TEST identities, factor regression error); ``key`` hashes the
dataset fingerprint, the config and ``CODE_VERSION``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from benchmark.assets import cache_root
from benchmark.data.base import DataError, FaceDataset, FaceSplit, collate_faces

log = logging.getLogger(__name__)

CODE_VERSION = "1"  # bump when training or the architecture changes: a new cache key
CACHE_SUBDIR = "id_embedders"


@dataclass(frozen=True)
class SynthEmbedderConfig:
    """Everything that determines the trained embedder (part of the cache key)."""

    label: str = "cnn4_cosface"  # the metric-name tag of this config (see ``tag``)
    image_size: int = 64
    # (16, 32, 64, 128): ~10 ms per 64-px image per training step on one shared CPU thread here,
    # i.e. ~8 min for the default 5,000 images x 10 epochs; 2x the widths cost 3x the time.
    widths: tuple[int, ...] = (16, 32, 64, 128)
    embedding_dim: int = 128
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    cosface_scale: float = 30.0   # s (see module docstring)
    cosface_margin: float = 0.35  # m, the CosFace paper's value
    param_weight: float = 1.0
    max_train_items: int | None = 20000
    max_eval_items: int = 1500
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
        return cls(**options)

    @property
    def tag(self) -> str:
        """The metric-name tag: the config's label, plus a hash when it is not the default protocol.

        A different protocol is a different metric name (DESIGN §3), so a changed
        config never reports under the default name.
        """
        if self == SynthEmbedderConfig():
            return self.label
        digest = hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:6]
        return f"{self.label}_{digest}"


DEFAULT_TAG = SynthEmbedderConfig().tag


class SynthIdentityNet(nn.Module):
    """Small CNN -> 128-d embedding, plus an identity-factor regression head."""

    def __init__(self, config: SynthEmbedderConfig, n_params: int):
        super().__init__()
        self.image_size = config.image_size
        layers: list[nn.Module] = []
        c_in = 3
        for w in config.widths:
            layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(c_in, config.embedding_dim), nn.BatchNorm1d(config.embedding_dim))
        # the factor head reads the pooled trunk features, not the embedding: the CosFace margin
        # squeezes the embedding towards one point per training identity, which loses the
        # continuous detail a regression needs
        self.param_head = nn.Sequential(nn.Linear(c_in, 128), nn.ReLU(inplace=True), nn.Linear(128, n_params))
        # train-split statistics of the factors: the head predicts standardised factors
        self.register_buffer("param_mean", torch.zeros(n_params))
        self.register_buffer("param_std", torch.ones(n_params))

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] images of any size -> the training resolution."""
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(images.float(), size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return images.float()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(unnormalised embedding, standardised factor prediction)."""
        trunk = self.features(self.prepare(images))
        return self.embed(trunk), self.param_head(trunk)

    @torch.no_grad()
    def embed_and_params(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L2-normalised embeddings, identity factors in their own units); eval mode."""
        self.eval()
        feat, p = self(images)
        return F.normalize(feat, dim=1), p * self.param_std + self.param_mean


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
        x = batch["image"].float()
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        imgs.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8))
        ids.append(batch["identity"].long().reshape(-1))
        params.append(torch.as_tensor(split.identity_params(batch["index"])).float())
    identity = torch.cat(ids)
    if (identity < 0).any():
        raise DataError("id_synth needs an identity for every item; the split has items with identity -1")
    return _Loaded(torch.cat(imgs), identity, torch.cat(params))


def _to_float(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1


# -- training ---------------------------------------------------------------------------------------------

def _train(model: SynthIdentityNet, data: _Loaded, config: SynthEmbedderConfig, device: torch.device) -> dict:
    classes, target = torch.unique(data.identity, return_inverse=True)
    head = CosFaceLoss(config.embedding_dim, len(classes), config.cosface_scale, config.cosface_margin).to(device)
    model.param_mean.copy_(data.params.mean(0))
    model.param_std.copy_(data.params.std(0).clamp_min(1e-6))
    z = (data.params - model.param_mean.cpu()) / model.param_std.cpu()
    opt = torch.optim.AdamW(list(model.parameters()) + list(head.parameters()), lr=config.lr,
                            weight_decay=config.weight_decay)
    n = len(target)
    steps = config.epochs * math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(steps, 1), pct_start=0.15)
    gen = torch.Generator().manual_seed(config.seed)
    model.train()
    last = {}
    for epoch in range(config.epochs):
        perm = torch.randperm(n, generator=gen)
        tot_id = tot_p = 0.0
        for start in range(0, n, config.batch_size):
            idx = perm[start:start + config.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            x = _to_float(data.images[idx]).to(device)
            feat, pred = model(x)
            loss_id = head(feat, target[idx].to(device))
            loss_p = F.mse_loss(pred, z[idx].to(device))
            loss = loss_id + config.param_weight * loss_p
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_id += float(loss_id.detach()) * len(idx)
            tot_p += float(loss_p.detach()) * len(idx)
        last = {"epoch": epoch + 1, "cosface_loss": tot_id / n, "param_mse_std": tot_p / n}
        log.info("id_synth epoch %d/%d: %s", epoch + 1, config.epochs, last)
    model.eval()
    return {"n_train_items": n, "n_train_identities": len(classes), "final_epoch": last}


@torch.no_grad()
def _embed_all(model: SynthIdentityNet, images: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    embs, params = [], []
    for start in range(0, len(images), 256):
        e, p = model.embed_and_params(_to_float(images[start:start + 256]).to(device))
        embs.append(e.cpu())
        params.append(p.cpu())
    return torch.cat(embs), torch.cat(params)


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


def verification_metrics(model: SynthIdentityNet, train: _Loaded, test: _Loaded, device: torch.device,
                         max_items: int, seed: int) -> dict:
    """Held-out verification on TEST identities: ROC-AUC, and balanced accuracy at a threshold picked on TRAIN pairs.

    Pairs are all unordered pairs of (at most ``max_items``) images; the threshold
    is chosen on train-identity pairs so the test figure is not tuned on test data.
    Test images of any identity also seen in training are left out (SynthFaces has none).
    """
    from sklearn.metrics import roc_auc_score

    seen = torch.isin(test.identity, train.identity)
    keep = torch.nonzero(~seen).flatten()
    keep = keep[_pick(len(keep), max_items, seed)]
    if len(keep) < 2:
        raise DataError("no test images of identities unseen in training: cannot measure held-out verification")
    t_idx = torch.tensor(_pick(len(train.identity), max_items, seed + 1))
    emb_tr, _ = _embed_all(model, train.images[t_idx], device)
    s_tr, same_tr = _pair_scores(emb_tr, train.identity[t_idx])
    threshold = _best_threshold(s_tr, same_tr)
    emb_te, params_te = _embed_all(model, test.images[keep], device)
    s_te, same_te = _pair_scores(emb_te, test.identity[keep])
    true = test.params[keep]
    out = {
        "test_identities_seen_in_train": int(torch.unique(test.identity[seen]).numel()),
        "n_test_items": int(len(keep)),
        "n_test_identities": int(torch.unique(test.identity[keep]).numel()),
        "n_test_pairs_same": int(same_te.sum()),
        "n_test_pairs_different": int((~same_te).sum()),
        "threshold_from_train": threshold,
        "test_mean_cos_same": float(s_te[same_te].mean()) if same_te.any() else float("nan"),
        "test_mean_cos_different": float(s_te[~same_te].mean()),
        "param_mae_test": float((params_te - true).abs().mean()),
        # what predicting the train mean would score: the head must beat it
        "param_mae_test_mean_predictor": float((model.param_mean.cpu() - true).abs().mean()),
    }
    if same_te.any():
        out["verification_roc_auc_test"] = float(roc_auc_score(same_te.numpy(), s_te.numpy()))
        out["verification_balanced_accuracy_test"] = _balanced_accuracy(s_te, same_te, threshold)
    return out


# -- cache ------------------------------------------------------------------------------------------------

def cache_key(dataset: FaceDataset, config: SynthEmbedderConfig) -> str:
    payload = {"dataset": dataset.fingerprint(), "config": asdict(config), "code_version": CODE_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


def cache_dir(dataset: FaceDataset, config: SynthEmbedderConfig) -> Path:
    return cache_root() / CACHE_SUBDIR / cache_key(dataset, config)


def train_embedder(dataset: FaceDataset, config: SynthEmbedderConfig, device: torch.device | str,
                   out_dir: Path) -> dict:
    """Train on the train split, evaluate on the test split, write model + metrics to ``out_dir``."""
    from safetensors.torch import save_file

    device = torch.device(device)
    torch.manual_seed(config.seed)
    t0 = time.time()
    train = load_split(dataset.split("train"), config.image_size, config.max_train_items, config.seed)
    test = load_split(dataset.split("test"), config.image_size, config.max_eval_items, config.seed)
    model = SynthIdentityNet(config, train.params.shape[1]).to(device)
    summary = _train(model, train, config, device)
    summary.update(verification_metrics(model, train, test, device, config.max_eval_items, config.seed))
    summary.update({"seconds": round(time.time() - t0, 1), "device": str(device), "code_version": CODE_VERSION,
                    "tag": config.tag})
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
              str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(
        {"config": asdict(config), "n_params": int(train.params.shape[1]), "dataset": dataset.fingerprint()},
        indent=2, default=str))
    (out_dir / "metrics.json").write_text(json.dumps(summary, indent=2))
    return summary


def load_embedder(path: Path, config: SynthEmbedderConfig, device: torch.device | str) -> SynthIdentityNet:
    from safetensors.torch import load_file

    meta = json.loads((path / "config.json").read_text())
    model = SynthIdentityNet(config, int(meta["n_params"]))
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval().to(torch.device(device))


def get_embedder(dataset: FaceDataset, config: SynthEmbedderConfig, device: torch.device | str) -> SynthIdentityNet:
    """The cached embedder for (dataset, config), training it first if absent.

    Training writes to a private temporary directory that is renamed into place,
    so concurrent cells never see a half-written model; if two train at once the
    first rename wins and the other's copy is discarded.
    """
    final = cache_dir(dataset, config)
    if not (final / "model.safetensors").is_file():
        tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        summary = train_embedder(dataset, config, device, tmp)
        log.info("id_synth embedder trained: %s", summary)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    return load_embedder(final, config, device)


def read_metrics(dataset: FaceDataset, config: SynthEmbedderConfig) -> dict:
    """The metrics.json of the cached embedder (train it first with ``get_embedder``)."""
    return json.loads((cache_dir(dataset, config) / "metrics.json").read_text())
