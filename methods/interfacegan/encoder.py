"""Real-image inversion into the GAN: an encoder for the first guess, per-image optimisation to refine it.

InterFaceGAN edits latent codes, so a real test image must first be given a code. The official code
has no inversion; we follow the two-step scheme of In-Domain GAN Inversion (Zhu, Shen, Zhao, Zhou,
ECCV 2020, §3): a feed-forward encoder predicts the code, then the code is optimised for the image
with the generator fixed, starting from the encoder's guess.

* ``Encoder``: a residual CNN (the discriminator's blocks, ``networks.DiscriminatorBlock``) from the
  working resolution down to 4 px, then a linear head to W+ (``num_ws`` x ``w_dim``) or W; it
  predicts the offset from ``w_avg`` and its head starts at zero, so an untrained encoder answers
  with the average face. It is trained on the GAN's own samples, whose codes are known
  (``train.train_encoder``).
* ``optimise_codes``: Adam on the code for ``steps`` steps. Loss = pixel MSE + ``feature_weight`` x
  the MSE between *discriminator* features of the reconstruction and of the image + ``latent_weight``
  x the squared distance to the encoder's guess. Offline there are no LPIPS / VGG weights, so the
  perceptual term is a feature loss on our own GAN's discriminator (trained on the same data, not a
  judge); with an official generator there is no discriminator and the loss is pixel-only.
* ``lr`` follows a cosine ramp-down over the last quarter of the steps and a linear ramp-up over
  the first 5 % (the StyleGAN2 projector, Karras et al. CVPR 2020, Appendix D, ``projector.py``).

What it costs identity: the edited image is *regenerated* from the code, so everything the GAN
cannot reproduce of the test face is lost even at strength 0. The inversion rows
(``evaluators/inversion.py``) measure that loss separately from the edit's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal, Sequence

import torch
import torch.nn as nn

from methods.interfacegan.networks import FullyConnectedLayer, add_discriminator_blocks, run_discriminator_blocks

CodeKind = Literal["wp", "w"]


@dataclass(frozen=True)
class EncoderConfig:
    resolution: int = 32
    num_ws: int = 8
    w_dim: int = 128
    kind: CodeKind = "wp"
    channel_base: int = 2048
    channel_max: int = 128

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Encoder(nn.Module):
    """Image (B x 3 x R x R in [-1, 1]) -> W+ code (B x num_ws x w_dim), or W (B x w_dim) for ``kind="w"``."""

    def __init__(self, config: EncoderConfig):
        super().__init__()
        if config.kind not in ("wp", "w"):
            raise ValueError(f"encoder kind must be 'wp' or 'w', got {config.kind!r}")
        self.config = config
        self.block_resolutions, ch = add_discriminator_blocks(self, config.resolution, config.channel_base,
                                                              config.channel_max)
        out = config.num_ws * config.w_dim if config.kind == "wp" else config.w_dim
        self.fc = FullyConnectedLayer(ch(4) * 16, ch(4) * 2, activation="lrelu")
        self.head = FullyConnectedLayer(ch(4) * 2, out)
        nn.init.zeros_(self.head.weight)  # start at w_avg: the average face is the safest first guess
        self.register_buffer("w_avg", torch.zeros(config.w_dim))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if img.dim() != 4 or img.shape[1:] != (3, r, r):
            raise ValueError(f"encoder: images must be B x 3 x {r} x {r}, got {tuple(img.shape)}")
        x = run_discriminator_blocks(self, self.block_resolutions, img)[-1]
        delta = self.head(self.fc(x.flatten(1)))
        if self.config.kind == "wp":
            return self.w_avg + delta.view(-1, self.config.num_ws, self.config.w_dim)
        return self.w_avg + delta


def feature_distance(features: Callable[[torch.Tensor], Sequence[torch.Tensor]] | None, a: torch.Tensor,
                     b_feats: Sequence[torch.Tensor] | None) -> torch.Tensor:
    """Per-image mean over layers of the feature MSE (0 when there is no feature network)."""
    if features is None or b_feats is None:
        return torch.zeros(a.shape[0], device=a.device)
    fa = features(a)
    return torch.stack([(x - y).square().flatten(1).mean(1) for x, y in zip(fa, b_feats)]).mean(0)


def _lr_at(t: float, base: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """StyleGAN2 projector's schedule: cosine ramp-down over the last 25 %, linear ramp-up over 5 %."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, t / rampup)


@dataclass(frozen=True)
class InversionSettings:
    steps: int = 100
    lr: float = 0.02
    feature_weight: float = 1.0
    latent_weight: float = 0.0


def optimise_codes(render: Callable[[torch.Tensor], torch.Tensor], target: torch.Tensor, init: torch.Tensor,
                   settings: InversionSettings,
                   features: Callable[[torch.Tensor], Sequence[torch.Tensor]] | None = None) -> torch.Tensor:
    """Refine ``init`` (codes of any shape, one per image) so that ``render(codes)`` reproduces ``target``.

    ``render`` maps codes to images at ``target``'s resolution; gradients flow to the codes only.
    Each image is optimised on its own loss (the sum over the batch), so results do not depend on
    the batch. Returns the codes with the lowest loss seen per image (detached).
    """
    codes = init.detach().clone().requires_grad_(True)
    if settings.steps <= 0:
        return codes.detach()
    opt = torch.optim.Adam([codes], lr=settings.lr, betas=(0.9, 0.999))
    anchor = init.detach()
    with torch.no_grad():
        target_feats = [f.detach() for f in features(target)] if features is not None else None
    best = codes.detach().clone()
    best_loss = torch.full((target.shape[0],), float("inf"), device=target.device)
    for step in range(settings.steps + 1):
        img = render(codes)
        loss = (img - target).square().flatten(1).mean(1)
        if settings.feature_weight:
            loss = loss + settings.feature_weight * feature_distance(features, img, target_feats)
        if settings.latent_weight:
            loss = loss + settings.latent_weight * (codes - anchor).square().flatten(1).mean(1)
        with torch.no_grad():  # keep the best code per image (the loss of the code *before* this update)
            better = loss.detach() < best_loss
            best_loss = torch.where(better, loss.detach(), best_loss)
            best[better] = codes.detach()[better]
        if step == settings.steps:
            break
        for group in opt.param_groups:
            group["lr"] = _lr_at((step + 1) / settings.steps, settings.lr)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    return best
