"""L2M-GAN training on the editor platform (docs/training.md): one stage per attribute.

The official repository released no training code; the loop below is StarGAN v2's
(clovaai/stargan-v2 core/solver.py ``Solver.train``) with L2M-GAN's networks and losses
(losses.py): per iteration one discriminator step and one generator + style-encoder step on the
same class-balanced batch, then the EMA update.  Hyperparameters are the official main.py defaults:
Adam lr 1e-4, β = (0, 0.99), weight decay 1e-4, batch 8, EMA β 0.999, He init, 100k iterations,
random-resized-crop probability 0.5 (StarGAN v2 core/data_loader.py: scale [0.8, 1], ratio
[0.9, 1.1]) and horizontal flips.

Differences from the official setting, each an option:
* ``target``: ``random`` draws the target domain uniformly as StarGAN v2 does (it may equal the
  source, which then trains the same-domain transformer); ``flip`` always edits to the other value.
* the EMA copies start from the He-initialised weights; in the official code they are copied before
  ``he_init`` and so start from PyTorch's default init (irrelevant after 100k steps, a 5% residue
  after 3k steps at β 0.999).
* offline, the perceptual (ResNet-18) and identity (ArcFace) terms cannot run: their λ must be 0 or
  their asset present; the stage's ``l2mgan.json`` records which terms ran and why others did not.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from benchmark.assets import AssetError, fetch
from methods.gan import ema_update, he_init, make_ema, set_requires_grad
from methods.l2mgan import assets
from methods.l2mgan.checkpoint import NetConfig, load_wing
from methods.l2mgan.losses import ORT_FORMS, LossWeights, d_loss, g_loss
from methods.l2mgan.networks import IRSE50, FAN, Discriminator, ResNet18Features
from methods.training import EditorOptions, TrainContext, option, save_safetensors

TARGET_SAMPLING = ("random", "flip")


@dataclass(frozen=True)
class L2MGANOptions(EditorOptions):
    """Everything that determines an L2M-GAN fit (all but the runtime fields enter the cache key)."""

    resolution: int | None = option(None, doc="native training/editing resolution (None: the dataset's); "
                                              "edits at other sizes are resized in and out")
    dim_in: int | None = option(None, doc="first network width (None: official 2^14 / resolution)")
    max_conv_dim: int = option(512, doc="width cap of G, E and D (official 512)")
    style_dim: int = option(64, doc="style code size (official 64)")
    w_hpf: float = option(0.0, doc="high-pass skip weight; > 0 needs the FAN asset (official 1)")
    lr: float = option(1e-4, doc="Adam learning rate of G, E and D (official 1e-4)")
    beta1: float = option(0.0, doc="Adam beta1 (official 0)")
    beta2: float = option(0.99, doc="Adam beta2 (official 0.99)")
    weight_decay: float = option(1e-4, doc="Adam weight decay (official 1e-4)")
    ema_beta: float = option(0.999, doc="EMA decay of G and E (official 0.999)")
    lambda_reg: float = option(1.0, doc="R1 weight (official 1)")
    lambda_cyc: float = option(1.0, doc="cycle-consistency weight (official 1)")
    lambda_sty: float = option(1.0, doc="style reconstruction weight (official 1; songquanpeng/L2M-GAN 2)")
    lambda_ort: float = option(1.0, doc="orthogonality weight (official 1)")
    ort_form: str = option("cosine", doc="orthogonality form: cosine (default) | dot | elementwise")
    lambda_per: float = option(0.0, doc="ResNet-18 perceptual weight (needs the ImageNet asset; "
                                        "songquanpeng/L2M-GAN 2)")
    lambda_id: float = option(0.0, doc="ArcFace identity weight (needs the IR-SE-50 asset; official option 1)")
    randcrop_prob: float = option(0.5, doc="probability of a random resized crop (official 0.5)")
    hflip: bool = option(True, doc="random horizontal flips (StarGAN v2 loader)")
    target: str = option("random", doc="target domain per step: random (StarGAN v2) | flip")
    swap_domains: bool = option(False, doc="official checkpoint only: its domain 0 is attribute value 1")

    def __post_init__(self) -> None:
        if self.ort_form not in ORT_FORMS:
            raise ValueError(f"ort_form must be one of {', '.join(ORT_FORMS)}, got {self.ort_form!r}")
        if self.target not in TARGET_SAMPLING:
            raise ValueError(f"target must be one of {', '.join(TARGET_SAMPLING)}, got {self.target!r}")
        if self.resolution is not None and (self.resolution < 16 or self.resolution & (self.resolution - 1)):
            raise ValueError(f"resolution must be a power of two >= 16, got {self.resolution}")
        for name in ("steps", "batch_size", "max_conv_dim", "style_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 <= self.ema_beta < 1 or not 0 <= self.randcrop_prob <= 1:
            raise ValueError("ema_beta must lie in [0, 1) and randcrop_prob in [0, 1]")

    def net_config(self, img_size: int) -> NetConfig:
        return NetConfig(img_size, self.style_dim, 2, self.dim_in, self.max_conv_dim, self.w_hpf)

    def loss_weights(self) -> LossWeights:
        return LossWeights(self.lambda_reg, self.lambda_cyc, self.lambda_sty, self.lambda_ort, self.lambda_per,
                           self.lambda_id, self.ort_form)


# -- augmentation (StarGAN v2 core/data_loader.py get_train_loader) -------------------------------

def _crop_box(h: int, w: int, g: torch.Generator, scale=(0.8, 1.0), ratio=(0.9, 1.1)) -> tuple[int, int, int, int]:
    """torchvision ``RandomResizedCrop.get_params``: 10 tries at an area/aspect draw, else the whole image."""
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        r = torch.rand(2, generator=g)
        target = area * (scale[0] + (scale[1] - scale[0]) * float(r[0]))
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * float(r[1]))
        cw, ch = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            i = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            j = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return i, j, ch, cw
    return 0, 0, h, w


def augment(x: torch.Tensor, g: torch.Generator, crop_prob: float = 0.5, hflip: bool = True) -> torch.Tensor:
    """Per image: with probability ``crop_prob`` a random resized crop (scale [0.8, 1], ratio [0.9, 1.1],
    bilinear back to full size), then a horizontal flip with probability 0.5."""
    out = x.clone()
    h, w = x.shape[-2:]
    draws = torch.rand(x.shape[0], 2, generator=g)
    for k in range(x.shape[0]):
        if float(draws[k, 0]) < crop_prob:
            i, j, ch, cw = _crop_box(h, w, g)
            crop = x[k:k + 1, :, i:i + ch, j:j + cw]
            out[k] = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
        if hflip and float(draws[k, 1]) < 0.5:
            out[k] = out[k].flip(-1)
    return out


# -- networks and auxiliary weights ---------------------------------------------------------------

@dataclass
class Aux:
    """Fixed networks some options need, and why each one is or is not there."""

    fan: FAN | None
    features: ResNet18Features | None
    arcface: IRSE50 | None
    notes: dict[str, str]


def _fetch(asset, why: str):
    try:
        return fetch(asset)
    except AssetError as exc:
        raise AssetError(f"l2mgan: {why} needs an asset that is not available.\n{exc}") from None


def build_aux(opts: L2MGANOptions, device: torch.device) -> Aux:
    """FAN (w_hpf > 0), ResNet-18 (λ_per > 0) and ArcFace (λ_id > 0); missing assets fail here, before training."""
    notes: dict[str, str] = {}
    fan = features = arcface = None
    if opts.w_hpf > 0:
        fan = load_wing(_fetch(assets.WING, "w_hpf > 0 (high-pass skips)")).to(device).eval()
        notes["high_pass"] = f"w_hpf = {opts.w_hpf:g} with FAN masks from {assets.WING.filename}"
    else:
        notes["high_pass"] = "off (w_hpf = 0): no FAN; decoder blocks keep their shortcut"
    if opts.lambda_per > 0:
        path = _fetch(assets.RESNET18_IMAGENET, "lambda_per > 0 (perceptual term)")
        from benchmark.assets import sha256_file

        digest = sha256_file(path)
        if not digest.startswith(assets.RESNET18_SHA256_PREFIX):
            raise AssetError(f"{path}: sha256 {digest} does not start with torchvision's published prefix "
                             f"{assets.RESNET18_SHA256_PREFIX}; delete it and download again")
        features = ResNet18Features()
        features.load_torchvision(torch.load(path, map_location="cpu", weights_only=True))
        features.to(device)
        notes["perceptual"] = f"lambda_per = {opts.lambda_per:g} on ImageNet ResNet-18 pooled features"
    else:
        notes["perceptual"] = ("off (lambda_per = 0): the official 'vgg' (torchvision ImageNet ResNet-18) "
                               "is not available offline and no weight for it is published; nothing replaces it")
    if opts.lambda_id > 0:
        path = _fetch(assets.ARCFACE_IR_SE50, "lambda_id > 0 (identity loss)")
        arcface = IRSE50()
        from methods.l2mgan.checkpoint import load_strict

        load_strict(arcface, torch.load(path, map_location="cpu", weights_only=True), "arcface (model_ir_se50.pth)")
        arcface.to(device)
        notes["identity"] = f"lambda_id = {opts.lambda_id:g} with ArcFace IR-SE-50 (an editor-side network, not a judge)"
    else:
        notes["identity"] = "off (lambda_id = 0): ArcFace IR-SE-50 is an optional asset"
    for m in (fan, features, arcface):
        if m is not None:
            m.requires_grad_(False)
    return Aux(fan, features, arcface, notes)


def build_nets(opts: L2MGANOptions, img_size: int, device: torch.device):
    """G, E, D with He init (core/solver.py applies utils.he_init to every trained net)."""
    cfg = opts.net_config(img_size)
    G, E = cfg.generator(), cfg.style_encoder()
    D = Discriminator(img_size, 2, opts.max_conv_dim, opts.dim_in)
    for m in (G, E, D):
        m.apply(he_init)
    return cfg, G.to(device), E.to(device), D.to(device)


class Trainer:
    """The nets, optimisers and one training iteration (StarGAN v2 ``Solver.train``, one branch).

    One Adam over G and E equals the official two optimisers (same hyperparameters; Adam is
    per-parameter).  D is frozen during the generator step, which changes no value, only cost.
    """

    def __init__(self, opts: L2MGANOptions, img_size: int, device: torch.device, aux: Aux | None = None):
        self.opts, self.device = opts, torch.device(device)
        self.aux = aux if aux is not None else Aux(None, None, None, {})
        self.cfg, self.G, self.E, self.D = build_nets(opts, img_size, self.device)
        self.G_ema, self.E_ema = make_ema(self.G), make_ema(self.E)
        adam = dict(lr=opts.lr, betas=(float(opts.beta1), float(opts.beta2)), weight_decay=opts.weight_decay)
        self.opt_g = torch.optim.Adam(list(self.G.parameters()) + list(self.E.parameters()), **adam)
        self.opt_d = torch.optim.Adam(self.D.parameters(), **adam)
        self.weights = opts.loss_weights()

    def objects(self) -> dict[str, Any]:
        """What a checkpoint must hold to resume exactly (TrainContext.register)."""
        return dict(G=self.G, E=self.E, D=self.D, G_ema=self.G_ema, E_ema=self.E_ema,
                    opt_g=self.opt_g, opt_d=self.opt_d)

    def targets(self, y_org: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if self.opts.target == "flip":
            return 1 - y_org
        return torch.randint(0, 2, y_org.shape, generator=g).to(y_org.device)

    def step(self, x: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor,
             check: Callable[..., Any] | None = None) -> dict[str, float]:
        """One D step, one G+E step, the EMA update; returns the scalars to log.

        ``check(*modules)`` runs after each backward (the platform's gradient check).
        """
        aux, w = self.aux, self.weights
        masks = aux.fan.get_heatmap(x) if aux.fan is not None else None
        set_requires_grad(self.D, True)
        loss_d, stats_d = d_loss(self.D, self.G, self.E, x, y_org, y_trg, w, masks)
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        if check is not None:
            check(self.D)
        self.opt_d.step()
        set_requires_grad(self.D, False)
        loss_g, stats_g = g_loss(self.D, self.G, self.E, x, y_org, y_trg, w, masks, aux.fan, aux.features,
                                 aux.arcface)
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        if check is not None:
            check(self.G, self.E)
        self.opt_g.step()
        ema_update(self.G_ema, self.G, self.opts.ema_beta)
        ema_update(self.E_ema, self.E, self.opts.ema_beta)
        return {"loss_d": loss_d.item(), "loss_g": loss_g.item(), **stats_d, **stats_g}


@torch.no_grad()
def sample_rows(G: nn.Module, E: nn.Module, x: torch.Tensor, y: torch.Tensor, fan: FAN | None) -> list[torch.Tensor]:
    """Rows of the sample grid: sources, edits to the other value (degree 1), reconstructions (degree 0)."""
    masks = fan.get_heatmap(x) if fan is not None else None
    codes = E(x, y, 1 - y)
    return [x, G(x, codes.edited(1.0), masks=masks).clamp(-1, 1), G(x, codes.s, masks=masks).clamp(-1, 1)]


def train_gan(opts: L2MGANOptions, tc: TrainContext) -> None:
    """The training stage: writes generator/style_encoder EMA weights and ``l2mgan.json`` into ``tc.out_dir``."""
    device = tc.device
    img_size = opts.resolution or tc.fit.dataset.resolution
    aux = build_aux(opts, device)
    data = tc.fit.train_data(resolution=img_size)
    trainer = Trainer(opts, img_size, device, aux)
    tc.register(**trainer.objects())
    fixed, fixed_labels = tc.fit.sample_faces(8)
    if fixed.shape[-1] != img_size:
        fixed = F.interpolate(fixed, size=img_size, mode="bilinear", align_corners=False, antialias=True)
    fixed, fixed_y = fixed.to(device), fixed_labels[:, tc.fit.attr_index].long().to(device)
    for step in tc.loop():
        g = tc.generator(step)
        x, labels = data.batch(opts.batch_size, g, balanced=True, device=device)
        x = augment(x, g, opts.randcrop_prob, opts.hflip)
        y_org = labels[:, tc.fit.attr_index].long()
        stats = trainer.step(x, y_org, trainer.targets(y_org, g), check=lambda *m: tc.check_gradients(step, *m))
        tc.log(step, **stats)
        tc.sample(step, lambda: sample_rows(trainer.G_ema, trainer.E_ema, fixed, fixed_y, aux.fan))
    save_safetensors(tc.out_dir / "generator.safetensors", trainer.G_ema.state_dict())
    save_safetensors(tc.out_dir / "style_encoder.safetensors", trainer.E_ema.state_dict())
    meta = {"net_config": asdict(trainer.cfg), "loss_weights": asdict(trainer.weights), "terms": aux.notes,
            "domains": {"0": f"{tc.fit.attribute} = 0", "1": f"{tc.fit.attribute} = 1"},
            "target_sampling": opts.target, "augmentation": {"randcrop_prob": opts.randcrop_prob, "hflip": opts.hflip},
            "ema_beta": opts.ema_beta, "batch_size": opts.batch_size, "steps": tc.total_steps,
            "judges_used": "none (no classifier or identity judge is used in training)"}
    (tc.out_dir / "l2mgan.json").write_text(json.dumps(meta, indent=1) + "\n")
