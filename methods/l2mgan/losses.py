"""L2M-GAN objectives (Yang et al., CVPR 2021, §3.3) as the code around the paper fixes them.

Sources: the official repository (rucmlcv/L2M-GAN) released no training code, only the weights'
options in main.py (``--lambda_reg 1 --lambda_cyc 1 --lambda_sty 1 --lambda_ort 1 --lambda_id 1``);
the adversarial, R1, style and cycle terms are StarGAN v2's (clovaai/stargan-v2 core/solver.py
``compute_d_loss`` / ``compute_g_loss``), on which the official code is built; the public
re-implementation songquanpeng/L2M-GAN (solver/loss.py) supplies the element-wise orthogonality
form and the perceptual term's placement (between x and the edited image).

* D: BCE(D(x, y), 1) + BCE(D(G(x, s̃), y'), 0) + λ_reg · R1(x)              (non-saturating, R1 on reals)
* G: BCE(D(x̃, y'), 1) + λ_sty |E(x̃, y') − s̃|₁ + λ_cyc |G(x̃, s) − x|₁ + λ_ort L_ort
     [+ λ_per |F(x) − F(x̃)|₁ with ResNet-18 features F] [+ λ_id (1 − cos(A(x̃), A(x)))]
  with s̃ = s_un + s̃_re and L_ort = ort(s_un, s_re) + ort(s_un, s̃_re).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from methods.gan import r1_penalty

ORT_FORMS = ("cosine", "dot", "elementwise")


def adv_loss(logits: torch.Tensor, target: int) -> torch.Tensor:
    """Non-saturating GAN loss: BCE-with-logits against an all-``target`` label (StarGAN v2 ``adv_loss``)."""
    if target not in (0, 1):
        raise ValueError(f"adv_loss target must be 0 or 1, got {target!r}")
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(target)))


def orthogonality(a: torch.Tensor, b: torch.Tensor, form: str = "cosine") -> torch.Tensor:
    """How far codes ``a`` and ``b`` (B×D) are from orthogonal, averaged over the batch.

    * ``cosine``: mean |cos(a_i, b_i)|: the paper's constraint (s_un ⟂ s_re) measured scale-free,
      so it cannot be met by shrinking the codes; 0 exactly when every pair is orthogonal; ≤ 1.
    * ``dot``: mean |a_i · b_i|: the raw inner product; 0 exactly when orthogonal, but scales with
      the codes' norms.
    * ``elementwise``: mean |a ⊙ b| (songquanpeng/L2M-GAN ``l1_norm(s_related * s_unrelated)``):
      0 only when the codes have disjoint supports, a stronger condition than orthogonality, so it
      stays positive for orthogonal codes that share dimensions.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"orthogonality needs two B×D codes of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if form == "cosine":
        return F.cosine_similarity(a, b, dim=1, eps=1e-8).abs().mean()
    if form == "dot":
        return (a * b).sum(dim=1).abs().mean()
    if form == "elementwise":
        return (a * b).abs().mean()
    raise ValueError(f"unknown orthogonality form {form!r}; valid: {', '.join(ORT_FORMS)}")


def orthogonality_loss(s_un: torch.Tensor, s_re: torch.Tensor, s_re_tilde: torch.Tensor,
                       form: str = "cosine") -> torch.Tensor:
    """L_ort = ort(s_un, s_re) + ort(s_un, s̃_re): both the original and the edited relevant code
    must be disentangled from the irrelevant one (paper, abstract and §3.3)."""
    return orthogonality(s_un, s_re, form) + orthogonality(s_un, s_re_tilde, form)


@dataclass(frozen=True)
class LossWeights:
    """λ of every term; defaults are the official main.py values (λ_per and λ_id off: see train.py)."""

    reg: float = 1.0
    cyc: float = 1.0
    sty: float = 1.0
    ort: float = 1.0
    per: float = 0.0
    id: float = 0.0
    ort_form: str = "cosine"


def d_loss(D, G, E, x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor, w: LossWeights,
           masks=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Discriminator loss on a real batch and its edits towards ``y_trg`` (no gradient into G/E)."""
    x_real = x_real.detach().requires_grad_(True)
    out = D(x_real, y_org)
    loss_real = adv_loss(out, 1)
    loss_reg = r1_penalty(out, x_real)
    with torch.no_grad():
        x_fake = G(x_real.detach(), E(x_real.detach(), y_org, y_trg).edited(1.0), masks=masks)
    loss_fake = adv_loss(D(x_fake, y_trg), 0)
    loss = loss_real + loss_fake + w.reg * loss_reg
    return loss, {"d_real": loss_real.item(), "d_fake": loss_fake.item(), "d_reg": loss_reg.item()}


def g_loss(D, G, E, x_real: torch.Tensor, y_org: torch.Tensor, y_trg: torch.Tensor, w: LossWeights,
           masks=None, fan=None, features=None, arcface=None) -> tuple[torch.Tensor, dict[str, float]]:
    """Generator + style encoder loss (D's parameters should be frozen by the caller).

    ``fan`` recomputes the masks of the edited image for the cycle pass, as StarGAN v2 does;
    ``features`` (ResNet-18) and ``arcface`` are used only when their λ is positive.
    """
    codes = E(x_real, y_org, y_trg)
    s_tilde = codes.edited(1.0)
    x_fake = G(x_real, s_tilde, masks=masks)
    loss_adv = adv_loss(D(x_fake, y_trg), 1)
    loss_sty = (E.style(x_fake, y_trg) - s_tilde).abs().mean()
    masks_fake = fan.get_heatmap(x_fake) if (fan is not None and masks is not None) else None
    x_rec = G(x_fake, codes.s, masks=masks_fake)
    loss_cyc = (x_rec - x_real).abs().mean()
    loss_ort = orthogonality_loss(codes.s_un, codes.s_re, codes.s_re_tilde, w.ort_form)
    loss = loss_adv + w.sty * loss_sty + w.cyc * loss_cyc + w.ort * loss_ort
    stats = {"g_adv": loss_adv.item(), "g_sty": loss_sty.item(), "g_cyc": loss_cyc.item(), "g_ort": loss_ort.item()}
    if w.per > 0:
        if features is None:
            raise ValueError("lambda_per > 0 needs the ResNet-18 feature network")
        loss_per = (features(x_real) - features(x_fake)).abs().mean()
        loss = loss + w.per * loss_per
        stats["g_per"] = loss_per.item()
    if w.id > 0:
        if arcface is None:
            raise ValueError("lambda_id > 0 needs the ArcFace network")
        loss_id = (1 - F.cosine_similarity(arcface.embed(x_fake), arcface.embed(x_real), dim=1)).mean()
        loss = loss + w.id * loss_id
        stats["g_id"] = loss_id.item()
    return loss, stats
