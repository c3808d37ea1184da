"""The registered ``l2mgan`` editor (Yang et al., "L2M-GAN: Learning to Manipulate Latent Space
Semantics for Facial Attribute Editing", CVPR 2021).

One model per attribute: its two domains are the attribute's two values (the official setting,
``--num_domains 2``), so a grid over five attributes trains five models.  Editing uses the EMA
generator and style encoder: E reads the code s of the image with the head of its domain,
factorises it into s_un + s_re, the transformer of the target domain gives s̃_re, and
G(x, s_un + s_re + degree · (s̃_re − s_re)) is the edit (``strength`` = degree).
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmark.assets import fetch
from benchmark.registry import register_method
from methods.base import EditContext, Editor, EditorError, EditorMeta
from methods.l2mgan import assets
from methods.l2mgan.checkpoint import NetConfig, load_official, load_strict, load_wing
from methods.l2mgan.networks import FAN, Generator, StyleEncoder
from methods.l2mgan.networks.generator import check_img_size
from methods.l2mgan.train import L2MGANOptions, train_gan
from methods.training import FitContext, load_safetensors, save_safetensors

STAGE = "gan"

# Presets (docs/training.md).  Speeds measured on this 2-core CPU, one thread (CPU time, so not
# slowed by other jobs), batch 8: 32 px dim_in 16: 5.5 it/s; 32 px dim_in 32: 2.1 it/s; 64 px
# dim_in 16: 1.35 it/s; 64 px dim_in 32: 0.47 it/s.  See the package README for the reference fits.
PRESETS: dict[str, dict] = {
    # tiny nets, a few steps: the contract tests train it in seconds
    "test": {"resolution": 32, "dim_in": 8, "max_conv_dim": 32, "style_dim": 16, "steps": 4, "batch_size": 4},
    # the offline default: slim nets at 32 px, minutes per attribute
    "cpu": {"resolution": 32, "dim_in": 16, "max_conv_dim": 128, "steps": 2000, "batch_size": 8},
    # the shipped reference fits on SynthFaces 64 px: trained and edited at 32 px, results up-sampled
    "reference": {"resolution": 32, "dim_in": 16, "max_conv_dim": 128, "steps": 30000, "batch_size": 8,
                  "target": "flip"},
    # the published protocol (official main.py defaults, CelebA-HQ 256 px, GPU)
    "paper": {"resolution": 256, "dim_in": None, "max_conv_dim": 512, "w_hpf": 1.0, "steps": 100000,
              "batch_size": 8},
}


def _float(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp32 copies (shipped reference fits are fp16; integer buffers stay as they are)."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


@register_method("l2mgan")
class L2MGANEditor(Editor):
    """L2M-GAN: end-to-end latent factorisation with orthogonality, edited by degree."""

    meta = EditorMeta(
        paper="L2M-GAN: Learning to Manipulate Latent Space Semantics for Facial Attribute Editing "
              "(Yang, Fei, Ding, Liu, Lu, Xiang)",
        venue="CVPR 2021", url="https://github.com/rucmlcv/L2M-GAN",
        native_resolution=None,
        strength="degree: G(x, s_un + s_re + degree·(s̃_re − s_re)); 1 = the official edit, 0 = reconstruction "
                 "G(x, s), > 1 extrapolates",
        assets=assets.ALL,
        notes="one model per attribute (domains = the attribute's two values, the official setting); the "
              "source domain is taken as 1 − target (the protocol always flips); native resolution is the "
              "preset's (32 px for cpu/reference, 256 px for paper): other sizes are resized in and the edit "
              "resized back; the official checkpoint (checkpoint: l2mgan_celebahq_smiling) edits Smiling only",
    )
    Options = L2MGANOptions
    presets = PRESETS
    default_preset = "cpu"
    version = 1

    def __init__(self, **options):
        super().__init__(**options)
        self.generator: Generator | None = None
        self.style_encoder: StyleEncoder | None = None
        self.fan: FAN | None = None
        self.cfg: NetConfig | None = None
        self.img_size: int | None = None
        self.source = ""

    # -- fitting ---------------------------------------------------------------------------------
    def prepare(self, fit: FitContext) -> None:
        """Train (or reuse) the attribute's stage, or load the official checkpoint when one is given."""
        self.attribute = fit.attribute
        self.device = torch.device(fit.device)
        if self.opts.checkpoint:
            self._load_official(self.opts.checkpoint, fit.attribute, fit.device)
            return
        img_size = self.opts.resolution or fit.dataset.resolution
        try:
            check_img_size(img_size)
        except ValueError as exc:
            raise EditorError(f"l2mgan: {exc} (dataset {fit.dataset.name!r} is {fit.dataset.resolution} px; set "
                              f"method_options.l2mgan.resolution to a power of two)") from None
        fit.check_trainable()
        path = fit.stage(STAGE, lambda tc: train_gan(self.opts, tc), per_attribute=True, steps=self.opts.steps)
        self.load(path, fit.device)
        self.attribute = fit.attribute

    def load(self, directory: str | Path, device: torch.device | str = "cpu") -> None:
        """Load a finished stage directory (fresh, cached or shipped: fp16 weights cast to fp32)."""
        directory = Path(directory)
        meta = json.loads((directory / "l2mgan.json").read_text())
        cfg = NetConfig(**meta["net_config"])
        G, E = cfg.generator(), cfg.style_encoder()
        load_strict(G, _float(load_safetensors(directory / "generator.safetensors")), f"generator ({directory})")
        load_strict(E, _float(load_safetensors(directory / "style_encoder.safetensors")), f"style_encoder ({directory})")
        self.fan = None
        if cfg.w_hpf > 0:
            if (directory / "fan.safetensors").exists():
                self.fan = FAN()
                load_strict(self.fan, _float(load_safetensors(directory / "fan.safetensors")), f"fan ({directory})")
            else:
                self.fan = load_wing(fetch(assets.WING))
            self.fan = self.fan.to(device).eval()
        self._set(cfg, G, E, device, str(directory))

    def save(self, directory: str | Path) -> None:
        """Write what ``load`` reads: the EMA nets, FAN where used, and the architecture."""
        if self.generator is None or self.style_encoder is None or self.cfg is None:
            raise EditorError("l2mgan: nothing to save before prepare/load")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_safetensors(directory / "generator.safetensors", self.generator.state_dict())
        save_safetensors(directory / "style_encoder.safetensors", self.style_encoder.state_dict())
        if self.fan is not None:
            save_safetensors(directory / "fan.safetensors", self.fan.state_dict())
        (directory / "l2mgan.json").write_text(json.dumps({"net_config": asdict(self.cfg), "source": self.source},
                                                          indent=1) + "\n")

    def _load_official(self, checkpoint: str, attribute: str, device) -> None:
        if attribute != "Smiling":
            raise EditorError(f"l2mgan: the official checkpoint edits Smiling only, not {attribute!r}; "
                              "train a model for it instead (drop the checkpoint option)")
        path = Path(checkpoint)
        if not path.exists():
            if checkpoint != assets.OFFICIAL_SMILING.name:
                raise EditorError(f"l2mgan: checkpoint {checkpoint!r} is neither a file nor the asset name "
                                  f"{assets.OFFICIAL_SMILING.name!r}")
            path = fetch(assets.OFFICIAL_SMILING, allow_download=False)  # Baidu needs a browser
        nets = load_official(path, device)
        self.fan = nets.fan
        self._set(nets.config, nets.generator, nets.style_encoder, device, str(path))

    def _set(self, cfg: NetConfig, G: Generator, E: StyleEncoder, device, source: str) -> None:
        self.generator, self.style_encoder = G.to(device).eval(), E.to(device).eval()
        self.cfg, self.img_size, self.device, self.source = cfg, cfg.img_size, torch.device(device), source

    # -- editing ---------------------------------------------------------------------------------
    def _domains(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y_trg = target.round().long()
        if self.opts.checkpoint and self.opts.swap_domains:
            y_trg = 1 - y_trg
        return 1 - y_trg, y_trg

    @torch.no_grad()
    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        if self.generator is None or self.style_encoder is None:
            raise EditorError("l2mgan: edit called before prepare/load")
        if attribute != self.attribute:
            raise EditorError(f"l2mgan: this model was trained for {self.attribute!r}, not {attribute!r} "
                              "(one model per attribute)")
        if images.dim() != 4 or images.shape[1] != 3:
            raise EditorError(f"l2mgan: images must be B×3×H×W, got {tuple(images.shape)}")
        target = torch.as_tensor(target, device=images.device).reshape(-1).float()
        if target.numel() != images.shape[0] or not bool(((target == 0) | (target == 1)).all()):
            raise EditorError(f"l2mgan: target must be {images.shape[0]} values of 0/1")
        size = images.shape[-2:]
        x = images.to(self.device, torch.float32)
        if tuple(size) != (self.img_size, self.img_size):
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False,
                              antialias=True)
        y_src, y_trg = self._domains(target.to(self.device))
        codes = self.style_encoder(x, y_src, y_trg)
        masks = self.fan.get_heatmap(x) if self.fan is not None else None
        out = self.generator(x, codes.edited(float(strength)), masks=masks)
        if tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=tuple(size), mode="bilinear", align_corners=False)
        return out.clamp(-1, 1).to(images.device, images.dtype)
