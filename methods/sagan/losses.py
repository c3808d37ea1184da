"""SaGAN objectives, each with its source.

Paper: Zhang, Kan, Shan, Chen, ECCV 2018, §3.1 (discriminator) and §3.2 (generator).
Implementation: github.com/elvisyjlin/SpatialAttentionGAN ``train.py`` (the code researchers run and
whose released models they compare with).  The two differ in the real/fake term only:

* the paper writes it as a cross-entropy (``L_src^D = -E log D_src(I) - E log(1 - D_src(Î))``,
  ``L_src^G = -E log D_src(Î)``) -> ``adv_loss="bce"``;
* the implementation trains a WGAN-GP critic (``df_loss = d_fake.mean() - d_real.mean()`` plus
  ``lgp = 10`` times the gradient penalty, ``gf_loss = -d_fake.mean()``) -> ``adv_loss="wgan-gp"``,
  the default here because the released models were trained with it.

Everything else agrees: BCE attribute loss on real images for D (``dc_loss``) and on edits for G
(``gc_loss``); dual reconstruction ``λ1 · L1(G(G(x, c̄), c), x)`` with λ1 = 20 and identity
reconstruction ``λ2 · L1(G(x, c), x)`` with λ2 = 100 (``--l1 20 --l2 100``; the paper's λ1, λ2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.gan import gradient_penalty
from methods.sagan.networks import Discriminator, Generator

ADV_LOSSES = ("wgan-gp", "bce")


@dataclass(frozen=True)
class LossWeights:
    """λ's of the objective; defaults are train.py's ``--lgp 10 --l1 20 --l2 100``."""

    adv_loss: str = "wgan-gp"
    lambda_gp: float = 10.0
    lambda_dual: float = 20.0      # λ1: G(G(x, c̄), c) ≈ x
    lambda_identity: float = 100.0  # λ2: G(x, c) ≈ x

    def __post_init__(self) -> None:
        if self.adv_loss not in ADV_LOSSES:
            raise ValueError(f"sagan: adv_loss must be one of {ADV_LOSSES}, got {self.adv_loss!r}")


def d_adversarial(d_real: torch.Tensor, d_fake: torch.Tensor, kind: str) -> torch.Tensor:
    """D's real/fake term: WGAN critic loss (train.py ``df_loss``) or the paper's cross-entropy."""
    if kind == "wgan-gp":
        return d_fake.mean() - d_real.mean()
    return (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
            + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))


def g_adversarial(d_fake: torch.Tensor, kind: str) -> torch.Tensor:
    """G's real/fake term: ``-E D(Î)`` (train.py ``gf_loss``) or the paper's ``-E log D_src(Î)``."""
    if kind == "wgan-gp":
        return -d_fake.mean()
    return F.binary_cross_entropy_with_logits(d_fake, torch.ones_like(d_fake))


def attribute_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BCE of D's attribute head (paper L_cls; train.py ``BCELoss`` after a sigmoid, here on logits)."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def discriminator_loss(G: Generator, D: Discriminator, x: torch.Tensor, labels: torch.Tensor,
                       w: LossWeights, generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """One D objective on a batch: edits to the opposite label are the fakes (train.py, "Train D")."""
    with torch.no_grad():
        fake, _ = G(x, 1.0 - labels)
    d_real, c_real = D(x)
    d_fake, _ = D(fake)
    adv = d_adversarial(d_real, d_fake, w.adv_loss)
    cls = attribute_loss(c_real, labels)
    loss = adv + cls
    stats = {"d_adv": float(adv.detach()), "d_cls": float(cls.detach())}
    if w.adv_loss == "wgan-gp":
        gp = gradient_penalty(lambda z: D(z)[0], x, fake, generator=generator)
        loss = loss + w.lambda_gp * gp
        stats["d_gp"] = float(gp.detach())
    stats["loss_d"] = float(loss.detach())
    return loss, stats


def generator_loss(G: Generator, D: Discriminator, x: torch.Tensor, labels: torch.Tensor,
                   w: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """One G objective: adversarial + attribute on the edit, dual and identity reconstruction (train.py, "Train G")."""
    target = 1.0 - labels
    fake, mask = G(x, target)
    dual, _ = G(fake, labels)      # G(G(x, c̄), c)
    ident, _ = G(x, labels)        # G(x, c)
    d_fake, c_fake = D(fake)
    adv = g_adversarial(d_fake, w.adv_loss)
    cls = attribute_loss(c_fake, target)
    rec_dual = F.l1_loss(dual, x)
    rec_id = F.l1_loss(ident, x)
    loss = adv + cls + w.lambda_dual * rec_dual + w.lambda_identity * rec_id
    stats = {"loss_g": loss, "g_adv": adv, "g_cls": cls, "g_rec_dual": rec_dual, "g_rec_id": rec_id,
             "mask_mean": mask.mean()}
    return loss, {k: float(v.detach()) for k, v in stats.items()}
