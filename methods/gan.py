"""What every GAN editor needs, written once (DESIGN §2): EMA, R1 and gradient penalties, init.

Each function cites where its form comes from; editors import them instead of re-writing them.
"""
from __future__ import annotations

import copy
from typing import Iterable

import torch
import torch.nn as nn


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``ema = beta * ema + (1 - beta) * model`` for parameters; buffers are copied.

    StarGAN v2 (clovaai/stargan-v2, core/solver.py ``moving_average``) averages parameters only and
    uses beta 0.999; buffers (BatchNorm running stats) are copied so the EMA net evaluates like the
    trained one.
    """
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen deep copy of ``model`` in eval mode, to be updated by ``ema_update``."""
    ema = copy.deepcopy(model)
    ema.eval()
    ema.requires_grad_(False)
    return ema


def r1_penalty(d_out: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """R1 = 0.5 * E[||∇_x D(x)||²] on real images (Mescheder et al. 2018, eq. 9).

    The 0.5 factor and the per-sample sum follow StarGAN v2's ``r1_reg`` (core/solver.py);
    ``x_real`` must have ``requires_grad=True`` before ``D`` is applied.
    """
    grad, = torch.autograd.grad(d_out.sum(), x_real, create_graph=True)
    return 0.5 * grad.pow(2).reshape(grad.shape[0], -1).sum(1).mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: E[(||∇ D(x̂)||₂ − 1)²] on random interpolates x̂ (Gulrajani et al. 2017, Alg. 1).

    ``critic(x)`` returns the real/fake output (any shape per sample); its sum is differentiated.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, generator=generator)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = critic(x_hat)
    grad, = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.reshape(grad.shape[0], -1).norm(2, dim=1) - 1).pow(2).mean()


def he_init(module: nn.Module) -> None:
    """Kaiming-normal weights (fan_in, ReLU gain) and zero biases for convs and linears.

    StarGAN v2 applies this to every network (core/utils.py ``he_init``); L2M-GAN inherits it.
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def set_requires_grad(modules: nn.Module | Iterable[nn.Module], flag: bool) -> None:
    """Freeze / unfreeze whole networks (D while G steps and vice versa)."""
    if isinstance(modules, nn.Module):
        modules = [modules]
    for m in modules:
        m.requires_grad_(flag)


def grad_norm(*modules: nn.Module) -> float:
    """Total L2 norm of the gradients of ``modules`` (NaN/inf propagate: used by divergence checks)."""
    total = torch.zeros(())
    for m in modules:
        for p in m.parameters():
            if p.grad is not None:
                total = total + p.grad.detach().float().pow(2).sum().cpu()
    return float(total.sqrt())
