"""The SaGAN training stage on the platform (methods/training.py).

One G iteration = ``n_critic`` D steps on fresh batches, then one G step (elvisyjlin/
SpatialAttentionGAN train.py: ``--d-iters 3``; G and D are Adam(2e-4, β = (0.5, 0.999)), batch 16,
N(0, 0.02) init).  ``steps`` counts G iterations: the public 1000 kimg schedule (``--total-kimg
1000`` with 16 × 3 images per G iteration) is 20,834 of them.  The only sampling difference is the
``balanced`` option (each class of the attribute drawn with probability 1/2 instead of the
dataset's frequencies; off in the ``paper`` preset).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from methods.gan import set_requires_grad
from methods.sagan.losses import LossWeights, discriminator_loss, generator_loss
from methods.sagan.networks import Discriminator, Generator, init_weights
from methods.training import TrainContext, save_safetensors

WEIGHTS = "G.safetensors"
CONFIG = "sagan.json"


def build_networks(resolution: int, opts: Any, device: torch.device) -> tuple[Generator, Discriminator]:
    """Freshly initialised G and D for ``resolution`` with the options' widths."""
    G = Generator(resolution, opts.width, opts.n_res)
    D = Discriminator(resolution, opts.d_width)
    G.apply(init_weights)
    D.apply(init_weights)
    return G.to(device), D.to(device)


def loss_weights(opts: Any) -> LossWeights:
    return LossWeights(opts.adv_loss, opts.lambda_gp, opts.lambda_dual, opts.lambda_identity)


def make_optimizers(G: Generator, D: Discriminator, opts: Any) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    betas = (opts.beta1, opts.beta2)
    return (torch.optim.Adam(G.parameters(), opts.lr, betas=betas),
            torch.optim.Adam(D.parameters(), opts.lr, betas=betas))


def d_step(G: Generator, D: Discriminator, opt_d: torch.optim.Optimizer, x: torch.Tensor, c: torch.Tensor,
           w: LossWeights) -> tuple[dict[str, float], torch.Tensor]:
    """One critic update (G frozen); returns its stats and the loss before the update."""
    set_requires_grad(G, False)
    set_requires_grad(D, True)
    loss, stats = discriminator_loss(G, D, x, c, w)
    opt_d.zero_grad(set_to_none=True)
    loss.backward()
    return stats, loss


def g_step(G: Generator, D: Discriminator, opt_g: torch.optim.Optimizer, x: torch.Tensor, c: torch.Tensor,
           w: LossWeights) -> tuple[dict[str, float], torch.Tensor]:
    """One generator update's loss and gradients (D frozen); the caller checks them and steps."""
    set_requires_grad(G, True)
    set_requires_grad(D, False)
    loss, stats = generator_loss(G, D, x, c, w)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    return stats, loss


def sample_rows(G: Generator, faces: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """Rows of the sample grid: sources, their edits to the opposite value, the attention masks."""
    was_training = G.training
    G.eval()
    edited, mask = G(faces, 1.0 - labels)
    G.train(was_training)
    return [faces, edited, mask.expand(-1, 3, -1, -1) * 2 - 1]


def train_gan(opts: Any, tc: TrainContext) -> None:
    """Train G and D for ``opts.steps`` G iterations; write G's weights and its config to ``tc.out_dir``."""
    data = tc.fit.train_data(resolution=opts.resolution)
    res, ai, dev = data.resolution, tc.fit.attr_index, tc.device
    G, D = build_networks(res, opts, dev)
    opt_g, opt_d = make_optimizers(G, D, opts)
    tc.register(G=G, D=D, opt_g=opt_g, opt_d=opt_d)
    w = loss_weights(opts)
    faces, labels = tc.fit.sample_faces(8)
    faces = F.interpolate(faces, size=(res, res), mode="bilinear", antialias=True, align_corners=False) \
        if faces.shape[-1] != res else faces
    faces, fixed_c = faces.to(dev), labels[:, ai].to(dev)
    bs = opts.batch_size
    for step in tc.loop():
        G.train()
        D.train()
        stats: dict[str, float] = {}
        for k in range(opts.n_critic):
            x, y = data.batch(bs, tc.generator(step, k), balanced=opts.balanced, device=dev)
            stats, _ = d_step(G, D, opt_d, x, y[:, ai], w)
            tc.check_gradients(step, D)
            opt_d.step()
        x, y = data.batch(bs, tc.generator(step, opts.n_critic), balanced=opts.balanced, device=dev)
        g_stats, _ = g_step(G, D, opt_g, x, y[:, ai], w)
        tc.check_gradients(step, G)
        opt_g.step()
        tc.log(step, **stats, **g_stats)
        tc.sample(step, lambda: sample_rows(G, faces, fixed_c))
    write_fit(tc.out_dir, G, tc.fit.attribute)


def write_fit(directory: str | Path, G: Generator, attribute: str) -> None:
    """``G.safetensors`` (public key names) and ``sagan.json`` (what ``load`` needs to rebuild G)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(directory / WEIGHTS, G.state_dict())
    cfg = {"resolution": G.resolution, "width": int(G.AMN.conv[0].out_channels), "n_res": len(G.AMN.resblk),
           "attribute": attribute}
    (directory / CONFIG).write_text(json.dumps(cfg, indent=1) + "\n")
