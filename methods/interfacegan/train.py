"""InterFaceGAN's training stages, each run by the platform (``FitContext.stage``, docs/training.md).

Shared stages (trained once per dataset, options and seed; every attribute reuses them):

* ``gan``      our StyleGAN2-like GAN (``networks.py``) on the training split: non-saturating logistic
               loss, lazy R1 on reals, style-mixing regularisation, EMA generator, minibatch stddev
               (Karras et al., CVPR 2020; NVlabs/stylegan2-ada-pytorch ``training/loss.py``
               ``StyleGAN2Loss`` and ``training_loop.py``). Path-length regularisation is left out
               (it is a quality refinement for long runs; on CPU budgets it would cost a third of
               every G step).
* ``labeller`` the attribute scorer that labels the GAN's samples (``labeller.py``: not the judge).
* ``encoder``  the inversion encoder, trained on the GAN's own samples (``encoder.py``).
* ``samples``  N codes drawn from a seeded generator, synthesised and scored by the labeller for
               every attribute (genforce's ``generate_data.py`` + scoring, run once for all
               attributes); also the GAN's FID on the *labeller's* features against the real
               training images, which is the GAN's own quality report (the labeller is not a judge;
               the judge's ``fid_classifier`` is reported by the evaluators, not here).

Per-attribute stage:

* ``boundary`` genforce's ``train_boundary.py`` on those samples: the top and bottom 2 % of the
               attribute's scores, 70/30 split, linear SVM (``boundary.train_boundary``); plus the
               boundaries of the ``conditions`` and the conditional direction (``project_boundary``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from methods.gan import ema_update, make_ema, r1_penalty, set_requires_grad
from methods.interfacegan.encoder import Encoder, EncoderConfig, feature_distance
from methods.interfacegan.networks import (Discriminator, DiscriminatorConfig, Generator, GeneratorConfig)
from methods.training import TrainContext, dataset_identity, load_safetensors, save_safetensors

SAMPLE_CHUNK = 256  # codes per synthesis batch in the samples stage
GAN_FILES = ("G_ema.safetensors", "D.safetensors", "gan.json")


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize to size x size (a no-op at the right size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


# -- the GAN ----------------------------------------------------------------------------------

def gan_configs(opts: Any, resolution: int) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    g = GeneratorConfig(resolution=resolution, z_dim=opts.z_dim, w_dim=opts.w_dim, mapping_layers=opts.mapping_layers,
                        channel_base=opts.channel_base, channel_max=opts.channel_max, use_noise=opts.noise)
    d = DiscriminatorConfig(resolution=resolution, channel_base=opts.channel_base, channel_max=opts.channel_max,
                            mbstd_group_size=opts.mbstd_group, mbstd_num_channels=opts.mbstd_channels)
    return g, d


def r1_gamma(opts: Any, resolution: int) -> float:
    """``opts.r1_gamma``, or stylegan2-ada's 'auto' heuristic 0.0002 * res^2 / batch (train.py cfg_specs)."""
    return float(opts.r1_gamma) if opts.r1_gamma is not None else 0.0002 * resolution ** 2 / opts.batch_size


def ema_beta(opts: Any, step: int) -> float:
    """stylegan2-ada's EMA: half-life ``ema_kimg`` (auto: batch * 10 / 32), ramped up over ``ema_rampup``."""
    bs = opts.batch_size
    ema_nimg = (opts.ema_kimg if opts.ema_kimg is not None else bs * 10 / 32) * 1000
    if opts.ema_rampup is not None:
        ema_nimg = min(ema_nimg, (step + 1) * bs * opts.ema_rampup)
    return 0.5 ** (bs / max(ema_nimg, 1e-8))


def _mixed_ws(G: Generator, z: torch.Tensor, gen: torch.Generator, prob: float, update_w_avg: bool) -> torch.Tensor:
    """W+ codes with style mixing: with probability ``prob`` the layers from a random cutoff on take a
    second code's w (StyleGAN2Loss.run_G; Karras et al. CVPR 2019, §3.1 'mixing regularization')."""
    ws = G.broadcast(G.mapping(z, update_w_avg=update_w_avg))
    if prob <= 0:
        return ws
    z2 = torch.randn(z.shape[0], z.shape[1], generator=gen).to(z.device)
    cutoff = int(torch.randint(1, G.num_ws, (), generator=gen))
    if float(torch.rand((), generator=gen)) >= prob:
        return ws
    ws2 = G.broadcast(G.mapping(z2, update_w_avg=False))
    return torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)


def _mirror(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(x.shape[0], generator=gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


def train_gan(tc: TrainContext, opts: Any, resolution: int) -> None:
    """The ``gan`` stage: G, D, G_ema trained with StyleGAN2's recipe; writes ``GAN_FILES``."""
    dev = tc.device
    data = tc.fit.train_data(resolution=resolution)
    torch.manual_seed(tc.seed)
    g_cfg, d_cfg = gan_configs(opts, resolution)
    G, D = Generator(g_cfg).to(dev), Discriminator(d_cfg).to(dev)
    G_ema = make_ema(G)
    gamma, interval = r1_gamma(opts, resolution), int(opts.r1_interval)
    # lazy regularisation: lr and betas of D scaled by interval / (interval + 1) (training_loop.py)
    ratio = interval / (interval + 1) if interval > 0 else 1.0
    opt_g = torch.optim.Adam(G.parameters(), lr=opts.lr, betas=(0.0, 0.99), eps=1e-8)
    opt_d = torch.optim.Adam(D.parameters(), lr=opts.lr * ratio, betas=(0.0, 0.99 ** ratio), eps=1e-8)
    tc.register(G=G, D=D, G_ema=G_ema, opt_g=opt_g, opt_d=opt_d)
    fixed_z = G.sample(16, "cpu", torch.Generator().manual_seed(tc.seed)).to(dev)
    bs = opts.batch_size
    for step in tc.loop():
        gen = tc.generator(step)
        real, _ = data.batch(bs, gen, device=dev)
        if opts.mirror:
            real = _mirror(real, gen)
        z_d = G.sample(bs, dev, gen)
        z_g = G.sample(bs, dev, gen)
        G.train(), D.train()
        # D: softplus(D(fake)) + softplus(-D(real)); every `interval` steps R1 * gamma/2 * interval
        set_requires_grad(G, False), set_requires_grad(D, True)
        with torch.no_grad():
            fake = G.synthesis(_mixed_ws(G, z_d, gen, opts.style_mixing, True), noise_mode="random")
        logit_fake, logit_real = D(fake), D(real)
        loss_d = F.softplus(logit_fake).mean() + F.softplus(-logit_real).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        tc.check_gradients(step, D)
        opt_d.step()
        r1 = float("nan")
        if interval > 0 and gamma > 0 and step % interval == 0:
            x = real.detach().requires_grad_(True)
            pen = r1_penalty(D(x), x)  # 0.5 * E ||grad||^2, so gamma * pen = gamma/2 * ||grad||^2
            opt_d.zero_grad(set_to_none=True)
            (pen * gamma * interval).backward()
            tc.check_gradients(step, D)
            opt_d.step()
            r1 = float(pen.detach())
        # G: softplus(-D(G(z)))
        set_requires_grad(G, True), set_requires_grad(D, False)
        fake = G.synthesis(_mixed_ws(G, z_g, gen, opts.style_mixing, True), noise_mode="random")
        loss_g = F.softplus(-D(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        tc.check_gradients(step, G)
        opt_g.step()
        ema_update(G_ema, G, ema_beta(opts, step))
        scalars = {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
                   "d_real": float(logit_real.detach().mean()), "d_fake": float(logit_fake.detach().mean())}
        if not math.isnan(r1):
            scalars["r1"] = r1
        tc.log(step, **scalars)
        tc.sample(step, lambda: [G_ema.synthesize(fixed_z[:8], "z"), G_ema.synthesize(fixed_z[8:], "z"), real[:8]])
    save_safetensors(tc.out_dir / "G_ema.safetensors", G_ema.state_dict())
    save_safetensors(tc.out_dir / "D.safetensors", D.state_dict())
    info = {"generator": g_cfg.to_dict(), "discriminator": d_cfg.to_dict(), "r1_gamma": gamma, "r1_interval": interval,
            "lr": opts.lr, "batch_size": bs, "steps": tc.total_steps, "images_seen": tc.total_steps * bs,
            "style_mixing": opts.style_mixing, "mirror": opts.mirror, "train_images": len(data),
            "dataset_resolution": tc.fit.dataset.resolution,
            "recipe": "StyleGAN2 (non-saturating logistic, lazy R1, style mixing, EMA; no path-length reg)"}
    (tc.out_dir / "gan.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def load_gan(stage_dir: Path, device: torch.device | str) -> tuple[Generator, Discriminator]:
    """G_ema and D of a finished ``gan`` stage, frozen, eval mode, on ``device`` (fp16 files cast to fp32)."""
    info = json.loads((Path(stage_dir) / "gan.json").read_text())
    G = Generator(GeneratorConfig(**info["generator"]))
    D = Discriminator(DiscriminatorConfig(**info["discriminator"]))
    G.load_state_dict(load_safetensors(Path(stage_dir) / "G_ema.safetensors"), strict=True)
    D.load_state_dict(load_safetensors(Path(stage_dir) / "D.safetensors"), strict=True)
    for net in (G, D):
        net.requires_grad_(False)
        net.eval().to(device)
    return G, D


# -- the labeller -------------------------------------------------------------------------------

def train_labeller_stage(tc: TrainContext, spec: Any, resolution: int) -> None:
    """The ``labeller`` stage: ``labeller.train_labeller`` on a half of the training split at ``resolution``."""
    from methods.interfacegan.labeller import train_labeller

    data = tc.fit.train_data(resolution=resolution)
    for step in tc.loop():
        record = train_labeller(tc.out_dir, tc.fit.dataset, dataset_identity(tc.fit.dataset), data.images,
                                data.labels, spec, tc.device)
        tc.log(step, heldout_mean_accuracy=float(record["heldout_mean_accuracy"]))


# -- the encoder --------------------------------------------------------------------------------

def code_scale(gan: Any, device: torch.device, n: int = 2048, seed: int = 0) -> torch.Tensor:
    """Per-dimension std of W around ``w_avg`` (normalises the encoder's latent loss)."""
    with torch.no_grad():
        z = gan.sample(n, device, torch.Generator().manual_seed(seed))
        w = gan.to_space(z, "w")
        return (w - gan.w_avg).std(0).clamp_min(1e-3)


def train_encoder(tc: TrainContext, opts: Any, gan: Any, disc: Any | None, resolution: int) -> None:
    """The ``encoder`` stage: image -> W+ (or W) code, on the GAN's own samples (codes known).

    Loss per step: MSE of the code (in units of W's per-dimension std) + ``encoder_pixel_weight`` x
    pixel MSE of the re-synthesised image + ``encoder_feature_weight`` x discriminator-feature MSE;
    with ``encoder_real_fraction`` > 0 part of each batch is real training images, which have no
    code and contribute the image terms only (the in-domain encoder of Zhu et al. 2020 is trained
    on reals with image losses).
    """
    dev = tc.device
    kind = "w" if opts.invert_space == "w" else "wp"
    num_ws = getattr(gan, "num_layers", 1)
    cfg = EncoderConfig(resolution=resolution, num_ws=num_ws, w_dim=gan.w_dim, kind=kind,
                        channel_base=opts.encoder_channel_base, channel_max=opts.encoder_channel_max)
    torch.manual_seed(tc.seed)
    E = Encoder(cfg).to(dev)
    E.w_avg.copy_(gan.w_avg)
    scale = code_scale(gan, dev, seed=tc.seed)
    opt = torch.optim.Adam(E.parameters(), lr=opts.encoder_lr, betas=(0.9, 0.99))
    tc.register(E=E, opt=opt)
    n_real = int(round(opts.encoder_batch * opts.encoder_real_fraction))
    n_fake = opts.encoder_batch - n_real
    data = tc.fit.train_data(resolution=resolution) if n_real > 0 else None
    feats = disc.features if disc is not None and opts.encoder_feature_weight > 0 else None

    def render(code: torch.Tensor) -> torch.Tensor:
        return resize(gan.synthesize(code, "w" if kind == "w" else "wp"), resolution)

    fixed = None
    for step in tc.loop():
        gen = tc.generator(step)
        E.train()
        with torch.no_grad():
            z = gan.sample(n_fake, dev, gen)
            target = gan.to_space(z, "w") if kind == "w" else _mixed_codes(gan, z, gen, opts.style_mixing)
            x = render(target)
        if data is not None:
            real, _ = data.batch(n_real, gen, device=dev)
            x_all = torch.cat([x, real])
        else:
            x_all = x
        pred = E(x_all)
        latent = (((pred[:n_fake] - target) / scale).square()).mean()
        rec = render(pred)
        pix = (rec - x_all).square().flatten(1).mean(1)
        with torch.no_grad():
            x_feats = [f.detach() for f in feats(x_all)] if feats is not None else None
        feat = feature_distance(feats, rec, x_feats)
        loss = latent + opts.encoder_pixel_weight * pix.mean() + opts.encoder_feature_weight * feat.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        tc.check_gradients(step, E)
        opt.step()
        tc.log(step, loss=float(loss.detach()), latent=float(latent.detach()), pixel=float(pix.detach().mean()),
               feature=float(feat.detach().mean()))
        if fixed is None:
            fixed = x_all[:8].detach()
        tc.sample(step, lambda: [fixed, render(E.eval()(fixed))])
    quality = encoder_quality(E, gan, render, resolution, dev, tc.fit, kind)
    save_safetensors(tc.out_dir / "encoder.safetensors", E.state_dict())
    info = {"encoder": cfg.to_dict(), "steps": tc.total_steps, "batch": opts.encoder_batch,
            "real_fraction": opts.encoder_real_fraction, "pixel_weight": opts.encoder_pixel_weight,
            "feature_weight": opts.encoder_feature_weight, "feature_net": "our GAN's discriminator" if feats else None,
            "quality": quality}
    (tc.out_dir / "encoder.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")


def _mixed_codes(gan: Any, z: torch.Tensor, gen: torch.Generator, prob: float) -> torch.Tensor:
    """W+ training targets: broadcast w, style-mixed with probability ``prob`` (so W+ codes vary by layer)."""
    ws = gan.to_space(z, "wp")
    if prob <= 0 or float(torch.rand((), generator=gen)) >= prob:
        return ws
    cutoff = int(torch.randint(1, ws.shape[1], (), generator=gen))
    ws2 = gan.to_space(gan.sample(z.shape[0], z.device, gen), "wp")
    return torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)


@torch.no_grad()
def encoder_quality(E: Encoder, gan: Any, render: Any, resolution: int, device: torch.device, fit: Any,
                    kind: str, n: int = 64) -> dict[str, float]:
    """Reconstruction PSNR of the encoder alone on held-out GAN samples and on test images (recorded)."""
    E.eval()
    z = gan.sample(n, device, torch.Generator().manual_seed(12345))
    x = render(gan.to_space(z, "w" if kind == "w" else "wp"))
    out = {"psnr_gan_samples": _psnr(render(E(x)), x)}
    try:
        faces, _ = fit.sample_faces(min(n, 16))
        faces = resize(faces.to(device), resolution)
        out["psnr_test_faces"] = _psnr(render(E(faces)), faces)
    except Exception:  # noqa: BLE001 - a report, not a requirement
        pass
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of the pooled MSE in [0, 1] units (as ``evaluators/counterfactual``'s cf_psnr)."""
    mse = float(((a.clamp(-1, 1) - b) / 2).square().mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def load_encoder(stage_dir: Path, device: torch.device | str) -> Encoder:
    info = json.loads((Path(stage_dir) / "encoder.json").read_text())
    E = Encoder(EncoderConfig(**info["encoder"]))
    E.load_state_dict(load_safetensors(Path(stage_dir) / "encoder.safetensors"), strict=True)
    E.requires_grad_(False)
    return E.eval().to(device)


# -- samples: codes, labeller scores, FID on labeller features ------------------------------------

def sample_z(gan: Any, n: int, seed: int, device: torch.device | str, chunk: int = SAMPLE_CHUNK) -> torch.Tensor:
    """The N codes of the samples stage, regenerated bit-identically from ``seed`` (CPU generator)."""
    gen = torch.Generator().manual_seed(int(seed))
    return torch.cat([gan.sample(min(chunk, n - i), "cpu", gen) for i in range(0, n, chunk)]).to(device)


def train_samples(tc: TrainContext, opts: Any, gan: Any, labeller: Any, resolution: int, seed: int) -> None:
    """The ``samples`` stage: labeller scores (logits, N x A) of N synthesised codes, and the GAN's FID.

    FID is computed on the labeller's penultimate features between the N samples and the real training
    images at the working resolution: ``fid_labeller``, the GAN's own quality report (not a judge).
    """
    from evaluators.fid import GaussianMoments, frechet_from_moments

    dev = tc.device
    n = int(opts.n_samples)
    z_all = sample_z(gan, n, seed, "cpu")
    chunks = [(i, min(i + SAMPLE_CHUNK, n)) for i in range(0, n, SAMPLE_CHUNK)]
    if tc.total_steps != len(chunks):
        raise RuntimeError(f"samples stage: {tc.total_steps} steps for {len(chunks)} chunks")
    holder = _Accumulator(n, len(labeller.attribute_names))
    tc.register(acc=holder)
    first: list[torch.Tensor] = []
    for step in tc.loop():
        a, b = chunks[step]
        with torch.no_grad():
            img = resize(gan.synthesize(z_all[a:b].to(dev), "z"), resolution).clamp(-1, 1)
            feats = labeller.features(img)
            holder.scores[a:b] = labeller.net.fc(feats).float().cpu()
            holder.moments.update(feats.cpu())
        if not first:
            first.append(img[:16])
        tc.sample(step, lambda: [first[0][:8], first[0][8:16]] if first[0].shape[0] >= 16 else first[0])
    fake = holder.moments
    real = GaussianMoments()
    data = tc.fit.train_data(resolution=resolution)
    real_pred = []
    with torch.no_grad():
        for i in range(0, len(data), SAMPLE_CHUNK):
            x = data.images[i:i + SAMPLE_CHUNK].to(dev).float() / 127.5 - 1
            f = labeller.features(x)
            real.update(f.cpu())
            real_pred.append((labeller.net.fc(f) > 0).float().cpu())
    fid = frechet_from_moments(fake, real)
    names = list(labeller.attribute_names)
    fake_rate = (holder.scores > 0).float().mean(0).tolist()
    real_rate = torch.cat(real_pred).mean(0).tolist()
    true_rate = data.labels.float().mean(0).tolist()
    save_safetensors(tc.out_dir / "scores.safetensors", {"scores": holder.scores})
    info = {"n_samples": n, "seed": int(seed), "z_dim": gan.z_dim, "chunk": SAMPLE_CHUNK,
            "codes": "regenerate with train.sample_z(gan, n_samples, seed); scores are labeller logits",
            "attribute_names": names, "labeller_tag": labeller.tag, "resolution": resolution,
            f"fid_labeller_{labeller.tag}": fid, "fid_n_fake": fake.n, "fid_n_real": len(data),
            "positive_rate_samples_labeller": dict(zip(names, fake_rate)),
            "positive_rate_train_labeller": dict(zip(names, real_rate)),
            "positive_rate_train_true": dict(zip(names, true_rate)),
            "truncation_psi": getattr(gan, "truncation_psi", None)}
    (tc.out_dir / "samples.json").write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    if math.isfinite(fid):
        tc.log(tc.total_steps - 1, fid_labeller=fid)


class _Accumulator:
    """Running state of the samples stage, checkpointed by the platform (tensors only: weights_only loads)."""

    def __init__(self, n: int, a: int):
        from evaluators.fid import GaussianMoments

        self.scores = torch.zeros(n, a)
        self.moments = GaussianMoments()

    def state_dict(self) -> dict[str, Any]:
        m = self.moments
        arrays = {k: torch.from_numpy(np.asarray(getattr(m, k))) for k in ("shift", "s1", "s2")
                  if getattr(m, k) is not None}
        return {"scores": self.scores, "n": int(m.n), **arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scores = state["scores"]
        self.moments.n = int(state["n"])
        for k in ("shift", "s1", "s2"):
            setattr(self.moments, k, state[k].numpy().astype(np.float64) if k in state else None)


# -- boundaries ---------------------------------------------------------------------------------

def sample_codes(gan: Any, z: torch.Tensor, space: str, device: torch.device, chunk: int = 4096) -> np.ndarray:
    """The codes of the samples in ``space`` (``z`` or ``w``) as float64 numpy, N x D."""
    out = []
    with torch.no_grad():
        for i in range(0, z.shape[0], chunk):
            out.append(gan.to_space(z[i:i + chunk].to(device), space).double().cpu())
    return torch.cat(out).numpy()


def train_boundaries(tc: TrainContext, opts: Any, gan: Any, samples_dir: Path, attribute: str,
                     conditions: Sequence[str]) -> None:
    """The ``boundary`` stage: the attribute's (and the conditions') SVM normals and the edit's units."""
    from methods.interfacegan.boundary import save_boundary, train_boundary
    from methods.interfacegan.manipulate import project_boundary

    info = json.loads((Path(samples_dir) / "samples.json").read_text())
    scores = load_safetensors(Path(samples_dir) / "scores.safetensors")["scores"].double().numpy()
    names = info["attribute_names"]
    for step in tc.loop():
        z = sample_z(gan, int(info["n_samples"]), int(info["seed"]), "cpu")
        codes = sample_codes(gan, z, opts.space, tc.device)
        fitted: dict[str, dict[str, Any]] = {}
        normals: dict[str, np.ndarray] = {}
        for attr in [attribute, *conditions]:
            normal, stats = train_boundary(codes, scores[:, names.index(attr)], opts.chosen_ratio, opts.split_ratio,
                                           seed=tc.seed)
            proj = codes @ normal.reshape(-1).astype(np.float64)
            stats["projection_mean"], stats["projection_std"] = float(proj.mean()), float(proj.std())
            normals[attr], fitted[attr] = normal, stats
            save_boundary(tc.out_dir / f"boundary_{attr}.npy", normal / np.linalg.norm(normal))
        primal = normals[attribute].astype(np.float64)
        record: dict[str, Any] = {
            "attribute": attribute, "space": opts.space, "dim": int(codes.shape[1]), "n_samples": int(codes.shape[0]),
            "labeller_tag": info["labeller_tag"], "primal": fitted[attribute],
            "conditions": {c: fitted[c] for c in conditions},
            "offset": fitted[attribute]["offset"], "sigma": fitted[attribute]["projection_std"],
        }
        if conditions:
            direction = project_boundary(primal, *[normals[c].astype(np.float64) for c in conditions])
            save_boundary(tc.out_dir / "direction.npy", direction)
            record["cos_primal_conditions"] = {c: float(primal.reshape(-1) @ normals[c].reshape(-1)) for c in conditions}
            record["cos_direction_conditions"] = {c: float(direction.reshape(-1) @ normals[c].reshape(-1) /
                                                         np.linalg.norm(normals[c])) for c in conditions}
        (tc.out_dir / "boundary.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
        accs = {k: fitted[attribute][k] for k in ("val_accuracy", "remaining_accuracy")}
        tc.log(step, **{k: float(v) for k, v in accs.items() if v is not None})
