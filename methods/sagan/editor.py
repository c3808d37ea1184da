"""The registered ``sagan`` editor: SaGAN (Zhang, Kan, Shan, Chen, ECCV 2018).

One generator per attribute edits both directions: ``x' = x + strength · m · (AMN(x, c) − x)`` with
``m = SAN(x)`` the spatial attention mask (the paper's ``m · AMN + (1 − m) · x`` at strength 1).

Resolution: the nets run at their native resolution (``resolution``; None = the dataset's).  When it
differs from the input's, the input is resized to it, and only the *change* ``m · (AMN − x)`` and the
mask are resized back (bilinear, non-negative weights) and added to the full-resolution input: a pixel
whose mask is 0 stays bit-exact, whatever the two resolutions.

Weights: trained here through the platform (stage ``gan``, per attribute) or, with ``checkpoint``,
the public re-implementation's released CelebA 128 px generators (see ``checkpoint.py``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmark.registry import register_method
from methods.base import EditContext, Editor, EditorError, EditorMeta
from methods.sagan.checkpoint import (
    ASSET_BY_NAME, RELEASE_RESOLUTION, RELEASED_ASSETS, experiment_setting, load_official_generator, resolve_checkpoint,
)
from methods.sagan.losses import ADV_LOSSES
from methods.sagan.networks import Generator, ResolutionError, check_resolution
from methods.sagan.train import CONFIG, WEIGHTS, train_gan, write_fit
from methods.training import EditorOptions, load_safetensors, option

# 1000 kimg (train.py --total-kimg 1000) at 16 images × 3 D steps per G iteration
PAPER_G_ITERATIONS = -(-1_000_000 // 48)


@dataclass(frozen=True)
class SaGANOptions(EditorOptions):
    """Defaults are the published protocol (train.py's arguments); presets set the CPU schedules."""

    resolution: int | None = option(None, doc="native resolution of the nets (None: the dataset's); multiple of 8")
    width: int = option(32, doc="channels of AMN/SAN's first conv (32 published), doubled per downsampling")
    d_width: int = option(32, doc="channels of D's first conv (32 published), doubled per conv")
    n_res: int = option(4, doc="residual blocks in AMN and SAN (4 published)")
    adv_loss: str = option("wgan-gp", doc="real/fake loss: wgan-gp (the public implementation, default) | "
                                          "bce (the paper's cross-entropy)")
    lambda_gp: float = option(10.0, doc="gradient penalty weight (train.py --lgp)")
    lambda_dual: float = option(20.0, doc="λ1, dual reconstruction L1(G(G(x,c̄),c), x) (paper; train.py --l1)")
    lambda_identity: float = option(100.0, doc="λ2, identity reconstruction L1(G(x,c), x) (paper; train.py --l2)")
    lr: float = option(2e-4, doc="Adam learning rate of G and D")
    beta1: float = option(0.5, doc="Adam β1")
    beta2: float = option(0.999, doc="Adam β2")
    n_critic: int = option(3, doc="D steps per G step (train.py --d-iters)")
    balanced: bool = option(False, doc="draw both classes of the attribute equally often (published: dataset "
                                       "frequencies)")

    def __post_init__(self) -> None:
        if self.resolution is not None:
            check_resolution(self.resolution)
        if self.adv_loss not in ADV_LOSSES:
            raise ValueError(f"adv_loss must be one of {ADV_LOSSES}, got {self.adv_loss!r}")
        for name in ("width", "d_width", "n_critic", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_res < 0:
            raise ValueError(f"n_res must be >= 0, got {self.n_res}")


@register_method("sagan")
class SaGANEditor(Editor):
    meta = EditorMeta(
        paper="Zhang, Kan, Shan, Chen: Generative Adversarial Network with Spatial Attention for Face "
              "Attribute Editing",
        venue="ECCV 2018",
        url="https://openaccess.thecvf.com/content_ECCV_2018/papers/Gang_Zhang_Generative_Adversarial_Network_ECCV_2018_paper.pdf",
        native_resolution=RELEASE_RESOLUTION,
        strength="scales the attention-weighted change: x + s·m·(AMN(x,c) − x); 1.0 is the paper, 0 the identity",
        assets=tuple(RELEASED_ASSETS.values()),
        notes="no official code; architecture, losses and released models follow the public PyTorch "
              "re-implementation github.com/elvisyjlin/SpatialAttentionGAN (MIT). edit() puts the attention "
              "mask (B×1×H×W in [0,1]) into context.extras['attention']",
    )
    Options = SaGANOptions
    presets: dict[str, dict[str, Any]] = {
        # tiny nets, a few G iterations: the contract tests train it in seconds
        "test": {"width": 4, "d_width": 4, "n_res": 1, "steps": 3, "batch_size": 4, "balanced": True},
        # What the shipped reference fits use: SynthFaces 64 px data, nets at 32 px (edit at 32 px, the change
        # resized back), slim G (width 8), D at the published width 32, balanced classes, 2,500 G iterations
        # (7,500 D steps; 2.1-2.8 it/s on one thread of the shared 2-core development CPU, ~20 min a fit).
        # d_width 32: at width 8 the mask collapsed (mean 0.36 -> 0.017 by step 500) while D's attribute
        # head was still at chance; at 32 the head learns within ~300 G iterations.
        # lambda_identity 10 (published 100; README "Measured"): on Smiling it doubled attr_success
        # 0->1 (0.27 -> 0.61) with attr_preserve 0.98 and id_cos 0.99. At lambda_identity 100 a 10,000-
        # iteration run shrank the mask as the 2,500 one did (mean 0.0063 at step 1,500, where it was
        # stopped), and so did 400 iterations of D alone before G's first step (0.0135 at step 900).
        "reference": {"resolution": 32, "width": 8, "d_width": 32, "n_res": 4, "steps": 2500, "batch_size": 16,
                      "balanced": True, "lambda_identity": 10.0},
        # the published GPU protocol: 128 px, widths 32, 1000 kimg ≈ 20.8k G iterations, batch 16
        "paper": {"resolution": 128, "width": 32, "d_width": 32, "n_res": 4, "steps": PAPER_G_ITERATIONS,
                  "batch_size": 16, "adv_loss": "wgan-gp", "balanced": False},
    }
    presets["cpu"] = presets["reference"]  # the default on a CPU: a default run finds the shipped fits
    default_preset = "cpu"
    version = 1

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.G: Generator | None = None

    # -- preparing ----------------------------------------------------------------------------
    def native_resolution(self, dataset_resolution: int) -> int:
        """The nets' resolution for a dataset; a resolution they cannot take fails here, before training."""
        res = self.opts.resolution if self.opts.resolution is not None else int(dataset_resolution)
        try:
            return check_resolution(res)
        except ResolutionError as exc:
            raise EditorError(f"{exc} (set method_options.sagan.resolution to a multiple of 8)") from None

    def prepare(self, fit: Any) -> None:
        """Load released weights (``checkpoint``) or train/load the per-attribute ``gan`` stage."""
        self.device = torch.device(fit.device)
        self.attribute = fit.attribute
        if self.opts.checkpoint:
            self.load_checkpoint(self.opts.checkpoint, fit.attribute, fit.device)
            return
        self.native_resolution(fit.dataset.resolution)
        fit.check_trainable()
        path = fit.stage("gan", lambda tc: train_gan(self.opts, tc), per_attribute=True, steps=self.opts.steps)
        self.load(path, fit.device)

    def load_checkpoint(self, spec: str, attribute: str, device: torch.device | str = "cpu") -> None:
        """The public implementation's ``G.pth`` (path or asset name); its attribute must be ``attribute``."""
        g_file = resolve_checkpoint(spec)
        trained_for = experiment_setting(g_file).get("target_attr")
        if spec in ASSET_BY_NAME:
            trained_for = next(a for a, asset in RELEASED_ASSETS.items() if asset.name == spec)
        if trained_for is not None and trained_for != attribute:
            raise EditorError(f"sagan: checkpoint {spec!r} edits {trained_for}, not {attribute}")
        self.G = load_official_generator(g_file, device)
        self.attribute, self.device = attribute, torch.device(device)

    def save(self, directory: str | Path) -> None:
        if self.G is None:
            raise EditorError("sagan: nothing to save (not prepared)")
        write_fit(directory, self.G, self.attribute or "")

    def load(self, directory: str | Path, device: torch.device | str = "cpu") -> None:
        """Rebuild G from ``sagan.json`` and load ``G.safetensors`` (fp16 reference weights cast to fp32)."""
        directory = Path(directory)
        cfg = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        G = Generator(int(cfg["resolution"]), int(cfg["width"]), int(cfg["n_res"]))
        G.load_state_dict(load_safetensors(directory / WEIGHTS), strict=True)
        self.G = G.float().to(device).eval()
        self.device = torch.device(device)
        self.attribute = cfg.get("attribute") or self.attribute

    # -- editing ------------------------------------------------------------------------------
    def _check(self, images: torch.Tensor, attribute: str, target: torch.Tensor) -> torch.Tensor:
        if self.G is None:
            raise EditorError("sagan: edit() before prepare()/load()")
        if self.attribute is not None and attribute != self.attribute:
            raise EditorError(f"sagan: this model edits {self.attribute!r}, not {attribute!r} (one model per attribute)")
        if images.dim() != 4 or images.shape[1] != 3:
            raise EditorError(f"sagan: images must be B×3×H×W, got {tuple(images.shape)}")
        target = torch.as_tensor(target, dtype=images.dtype, device=images.device).reshape(-1)
        if target.numel() != images.shape[0]:
            raise EditorError(f"sagan: {target.numel()} targets for {images.shape[0]} images")
        return target

    def _native(self, images: torch.Tensor) -> torch.Tensor:
        r = self.G.resolution
        if images.shape[-2:] == (r, r):
            return images
        return F.interpolate(images, size=(r, r), mode="bilinear", align_corners=False, antialias=True)

    @staticmethod
    def _back(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Resize a change or a mask to the input size; bilinear (antialiased when shrinking) has
        non-negative weights, so it is exactly 0 wherever every source pixel it reads is 0."""
        if tuple(t.shape[-2:]) == tuple(size):
            return t
        return F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)

    @torch.no_grad()
    def attention(self, images: torch.Tensor, attribute: str, target: torch.Tensor) -> torch.Tensor:
        """SAN's mask at the input resolution, B×1×H×W in [0, 1]; SAN does not see ``target``."""
        self._check(images, attribute, target)
        self.G.eval()
        m = self.G.SAN(self._native(images.to(self.device)))
        return self._back(m, tuple(images.shape[-2:])).clamp(0, 1).to(images.device)

    @torch.no_grad()
    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        c = self._check(images, attribute, target)
        self.G.eval()
        x = images.to(self.device)
        xn = self._native(x)
        y = self.G.AMN(xn, c.to(self.device))
        m = self.G.SAN(xn)
        size = tuple(x.shape[-2:])
        change = self._back(m * (y - xn), size)
        mask = self._back(m, size).clamp(0, 1)
        if context is not None and isinstance(getattr(context, "extras", None), dict):
            context.extras["attention"] = mask.to(images.device)
        return (x + float(strength) * change).clamp(-1, 1).to(images.device)
