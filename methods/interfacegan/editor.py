"""The registered ``interfacegan`` editor (Shen, Gu, Tang, Zhou, "Interpreting the Latent Space of GANs for
Semantic Face Editing", CVPR 2020; TPAMI 2020 "InterFaceGAN: Interpreting the Disentangled Face
Representation Learned by GANs").

Pipeline (stages in ``train.py``, run and cached by the training platform):

1. ``gan`` (shared): our StyleGAN2-like GAN trained on the dataset, unless ``checkpoint`` names an
   official generator (``paper`` preset: StyleGAN CelebA-HQ via ``official/``);
2. ``labeller`` (shared): an attribute scorer that is *not* the judge (``labeller.py``);
3. ``encoder`` (shared): the inversion encoder, trained on the GAN's samples (``encoder.py``);
4. ``samples`` (shared): N codes, synthesised, scored by the labeller for every attribute; the GAN's
   FID on the labeller's features;
5. ``boundary`` (per attribute): linear SVM on the top/bottom 2 % (``boundary.train_boundary``), in
   ``space`` Z or W, plus the boundaries of ``conditions`` and the conditional direction.

Editing a real image: resize to the working resolution (the smaller of the GAN's and the
dataset's), invert (encoder, then ``invert_steps`` of optimisation), move the code, regenerate,
resize back to the dataset's resolution. The output is a *regenerated* image: what the GAN cannot
reproduce of the face is lost even at strength 0; the inversion's own error is reported apart
(``inversion_metrics()``, ``context.extras["inversion"]`` and ``evaluators/inversion.py``).

**What ``strength`` means.** With n the unit normal of the attribute's boundary, the code's signed
distance is p(c) = cᵀn − b (b: the SVM's fitted offset; 0 for official boundaries) and the target
distance is d_t = +D for target 1, −D for target 0, with D = ``distance`` x σ (σ: the standard
deviation of p over the sampled codes; 1 for official boundaries, where ``distance`` = 3 is the end
of genforce's ``edit.py`` range −3..3, and p is N(0, 1) in Z). The edit is

    c' = c + s · (d_t − p(c)) · n          (genforce's z' = z + (d − zᵀn) n with d = p + s (d_t − p))

so strength s = 0 leaves the code unchanged (the output is the inversion), s = 1 puts the code at
the target distance d_t, 0 < s < 1 goes part of the way, s > 1 overshoots. W+ codes (inverted real
images) move every layer by the same step, computed from the mean over layers of p(c_l)
(``wp_mode="absolute"``), or by s · d_t · n like genforce's W+ ``linear_interpolate``
(``wp_mode="relative"``). With ``conditions`` the code moves along the conditional direction m
(``project_boundary``: n with the condition normals projected out) by the step that brings p to
the same value: c' = c + s (d_t − p(c)) / (mᵀn) · m, so the conditions' distances stay put.

``residual=True`` (not in the paper, off by default) returns source + (G(c') − G(c)) instead of
G(c'): only the GAN's change is carried onto the source, so what the inversion loses of the face is
kept; at strength 0 it returns the source itself.

**Why W is the default space.** StyleGAN's W is less entangled than Z (Karras et al. CVPR 2019 §4:
better linear separability and perceptual path length; InterFaceGAN TPAMI §5: W boundaries give
more disentangled StyleGAN edits), and inversion yields W / W+ codes directly, while a Z code for
a real image needs the mapping inverted too. Real images are inverted into W+ (``invert_space``),
which reconstructs far better than W (Abdal et al., Image2StyleGAN, ICCV 2019), and every layer
is edited along the W normal, as genforce edits W+.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.assets import sha256_file
from benchmark.data.base import DataError
from benchmark.registry import register_method
from methods.base import EditContext, Editor, EditorError, EditorMeta
from methods.interfacegan import train as T
from methods.interfacegan.encoder import InversionSettings, optimise_codes
from methods.training import EditorOptions, OptionsError, option

log = logging.getLogger(__name__)

SPACES = ("z", "w")
INVERT_SPACES = ("w", "wp")
WP_MODES = ("absolute", "relative")

# genforce boundary stems of the attributes that have an official boundary (boundaries/*.npy)
OFFICIAL_ATTRIBUTE_STEMS = {"Young": "age", "Male": "gender", "Smiling": "smile", "Eyeglasses": "eyeglasses"}


@dataclass(frozen=True)
class InterFaceGANOptions(EditorOptions):
    """InterFaceGAN's options. ``steps`` / ``batch_size`` are the GAN's.

    Keys: the GAN's options (not marked runtime) key every stage. Options of one later stage are
    marked ``runtime`` so that they do not re-key the GAN, and are hashed into *their* stage's key
    instead (``extra``, see ``InterFaceGANEditor.prepare``); options of the edit alone key nothing.
    """

    # -- the GAN (keys every stage) --------------------------------------------------------------
    resolution: int | None = option(32, doc="the GAN's native resolution (power of two; None: the dataset's)")
    z_dim: int = option(128, doc="Z dimension (StyleGAN: 512)")
    w_dim: int = option(128, doc="W dimension (StyleGAN: 512)")
    mapping_layers: int = option(2, doc="mapping depth (stylegan2-ada 'auto': 2; StyleGAN: 8)")
    channel_base: int = option(512, doc="channels min(channel_base // res, channel_max) (stylegan2-ada: 16384-32768)")
    channel_max: int = option(128, doc="channel cap (StyleGAN: 512)")
    noise: bool = option(True, doc="per-pixel noise inputs (fixed buffers when editing)")
    lr: float = option(0.0025, doc="Adam lr of G and D, betas (0, 0.99) (stylegan2-ada 'auto')")
    r1_gamma: float | None = option(None, doc="R1 weight; None: stylegan2-ada heuristic 0.0002 res^2 / batch")
    r1_interval: int = option(16, doc="lazy R1 every N D steps (StyleGAN2: 16)")
    style_mixing: float = option(0.9, doc="style-mixing probability (StyleGAN2: 0.9)")
    mbstd_group: int = option(4, doc="minibatch-stddev group size")
    mbstd_channels: int = option(1, doc="minibatch-stddev features (0: off)")
    ema_kimg: float | None = option(None, doc="G_ema half-life in kimg; None: batch * 10 / 32 (stylegan2-ada)")
    ema_rampup: float | None = option(0.05, doc="EMA ramp-up (stylegan2-ada 'auto': 0.05)")
    mirror: bool = option(True, doc="random horizontal flips of the reals")
    # -- labeller stage (keyed there) ---------------------------------------------------------------
    labeller_arch: str = option("resnet18", runtime=True, doc="[labeller stage] judge-code architecture")
    labeller_epochs: int = option(15, runtime=True, doc="[labeller stage] epochs on half the training split")
    labeller_seed: int = option(1, runtime=True, doc="[labeller stage] training seed (the judge uses 0)")
    labeller_split_seed: int = option(1, runtime=True, doc="[labeller stage] seed of the half split")
    labeller_degrade_prob: float = option(0.0, runtime=True, doc="[labeller stage] chance of each of blur / noise / "
                                          "colour cast per training image (it labels blurred GAN samples)")
    # -- encoder stage (keyed there) --------------------------------------------------------------
    encoder_steps: int = option(2000, runtime=True, doc="[encoder stage] steps")
    encoder_batch: int = option(16, runtime=True, doc="[encoder stage] images per step")
    encoder_lr: float = option(1e-3, runtime=True, doc="[encoder stage] Adam lr")
    encoder_channel_base: int = option(512, runtime=True, doc="[encoder stage] widths as the GAN's")
    encoder_channel_max: int = option(128, runtime=True, doc="[encoder stage] channel cap")
    encoder_pixel_weight: float = option(1.0, runtime=True, doc="[encoder stage] pixel MSE weight")
    encoder_feature_weight: float = option(0.1, runtime=True, doc="[encoder stage] D-feature MSE weight")
    encoder_real_fraction: float = option(0.25, runtime=True, doc="[encoder stage] share of real images per batch")
    # -- samples stage (keyed there) ---------------------------------------------------------------
    n_samples: int = option(20000, runtime=True, doc="[samples stage] codes sampled and scored (genforce: 500k on GPU)")
    truncation_psi: float = option(1.0, runtime=True, doc="[samples/edit] truncation of our GAN's Z/W codes")
    # -- boundary stage (keyed there) ------------------------------------------------------------
    space: str = option("w", runtime=True, doc="[boundary stage] z | w: where the boundary is fitted and codes move")
    chosen_ratio: float = option(0.02, runtime=True, doc="[boundary stage] top/bottom share (genforce 0.02)")
    split_ratio: float = option(0.7, runtime=True, doc="[boundary stage] train share of the chosen (genforce 0.7)")
    conditions: tuple[str, ...] = option((), runtime=True, doc="[boundary stage] conditional manipulation, e.g. [Male, Young]")
    official_boundaries: bool = option(True, runtime=True, doc="[boundary] with an official checkpoint, use genforce's files")
    invert_space: str = option("wp", runtime=True, doc="[encoder stage, edit] w | wp: the code of an inverted image")
    # -- edit only (keys nothing) -----------------------------------------------------------------
    distance: float = option(3.0, runtime=True, doc="[edit] target distance in sigmas at strength 1 (genforce: 3)")
    wp_mode: str = option("absolute", runtime=True, doc="[edit] W+ step: absolute (to the target) | relative (genforce)")
    invert_steps: int = option(50, runtime=True, doc="[edit] optimisation steps per image after the encoder")
    invert_lr: float = option(0.02, runtime=True, doc="[edit] Adam lr of the code optimisation")
    invert_feature_weight: float = option(1.0, runtime=True, doc="[edit] D-feature loss weight (0: pixel only)")
    invert_latent_weight: float = option(0.0, runtime=True, doc="[edit] pull towards the encoder's code")
    cache_inversions: int = option(20000, runtime=True, doc="[edit] inverted codes kept in memory (per process)")
    disk_inversions: bool = option(True, runtime=True, doc="[edit] also keep inverted codes in the cache on disk "
                                   "(a re-run or another process skips the per-image optimisation)")
    residual: bool = option(False, runtime=True, doc="[edit] not in the paper: source + (G(c') - G(c)) instead of G(c')")

    def __post_init__(self) -> None:
        checks = [
            (self.space in SPACES, f"space must be one of {SPACES}, got {self.space!r}"),
            (self.invert_space in INVERT_SPACES, f"invert_space must be one of {INVERT_SPACES}, got {self.invert_space!r}"),
            (self.wp_mode in WP_MODES, f"wp_mode must be one of {WP_MODES}, got {self.wp_mode!r}"),
            (0 < self.chosen_ratio, f"chosen_ratio must be > 0, got {self.chosen_ratio}"),
            (0 < self.split_ratio <= 1, f"split_ratio must be in (0, 1], got {self.split_ratio}"),
            (self.distance > 0, f"distance must be > 0, got {self.distance}"),
            (self.steps >= 1 and self.batch_size >= 1, "steps and batch_size must be >= 1"),
            (self.n_samples >= 100, f"n_samples must be >= 100 (2 % per side must leave codes), got {self.n_samples}"),
            (0 <= self.encoder_real_fraction < 1, "encoder_real_fraction must be in [0, 1)"),
            (0 <= self.labeller_degrade_prob <= 1, "labeller_degrade_prob must be in [0, 1]"),
            (self.invert_steps >= 0 and self.encoder_steps >= 1, "invert_steps >= 0 and encoder_steps >= 1"),
            (0 < self.truncation_psi <= 1, "truncation_psi must be in (0, 1]"),
            (len(set(self.conditions)) == len(self.conditions), f"conditions repeat: {self.conditions}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        if self.resolution is not None and (self.resolution < 8 or self.resolution & (self.resolution - 1)):
            raise ValueError(f"resolution must be a power of two >= 8 (or null), got {self.resolution}")


# Presets. `reference` is what the shipped reference fits use (its values enter the stage keys):
# SynthFaces 64 px data, the GAN at 32 px, sized for ONE CPU core and about an hour for GAN +
# encoder + labeller. Measured on this 2-core machine, one thread: the GAN ~4 steps/s of CPU time
# (batch 16; 1.4-2.4 steps/s wall in the background under load: 6000 steps ~50 min), the encoder
# ~7 steps/s, the labeller ~25 s per epoch on 2,500 images at 32 px, the samples stage ~140
# codes/s, editing ~0.2 s per image with 50 inversion steps (then cached for every attribute).
# At 6000 steps the GAN draws the global attributes (Male, Young) but rarely the small local
# ones (its samples smile 1 % of the time against 46 % in the data): train longer where you can.
PRESETS: dict[str, dict[str, Any]] = {
    "test": dict(resolution=16, z_dim=16, w_dim=16, mapping_layers=1, channel_base=128, channel_max=16,
                 steps=4, batch_size=4, labeller_epochs=1, encoder_steps=3, encoder_batch=4,
                 encoder_channel_base=128, encoder_channel_max=16, n_samples=512, invert_steps=3),
    "cpu": dict(resolution=32, steps=4000, batch_size=16, labeller_epochs=8, encoder_steps=800,
                n_samples=20000, invert_steps=30),
    "reference": dict(resolution=32, steps=6000, batch_size=16, labeller_epochs=10, encoder_steps=1500,
                      n_samples=50000, invert_steps=50),
    "paper": dict(checkpoint="stylegan_celebahq", space="w", n_samples=500000, official_boundaries=True,
                  truncation_psi=0.7, encoder_steps=50000, encoder_batch=16, encoder_channel_base=16384,
                  encoder_channel_max=512, encoder_feature_weight=0.0, invert_steps=1000, invert_lr=0.01,
                  invert_feature_weight=0.0, labeller_epochs=15),
}
for _name, _values in PRESETS.items():  # a preset naming an unknown option is a bug: fail at import
    _unknown = set(_values) - {f.name for f in dataclasses.fields(InterFaceGANOptions)}
    assert not _unknown, f"interfacegan preset {_name}: unknown options {_unknown}"


def _stage_key(path: Path) -> str:
    """The key of a finished stage directory ``<stage>-<key>``."""
    return Path(path).name.split("-", 1)[1]




class _OfficialGAN:
    """An official generator (``official/``) behind our Generator's editing interface."""

    def __init__(self, model: Any):
        self.model = model
        self.spaces = tuple(getattr(model, "spaces", ("z",)))
        self.z_dim = model.z_dim
        self.w_dim = getattr(model, "w_dim", None) or model.z_dim
        self.num_layers = getattr(model, "num_layers", 1)
        self.resolution = model.resolution
        trunc = getattr(model, "truncation", None)
        self.truncation_psi = getattr(trunc, "psi", None)
        self.w_avg = trunc.w_avg if trunc is not None and hasattr(trunc, "w_avg") else torch.zeros(self.w_dim)

    def sample(self, n: int, device: Any, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.model.sample(n, device, generator)

    def to_space(self, z: torch.Tensor, space: str) -> torch.Tensor:
        if hasattr(self.model, "to_space"):
            return self.model.to_space(z, space)
        if space != "z":
            raise EditorError(f"interfacegan: this official generator has only the Z space, not {space!r}")
        return z

    def synthesize(self, codes: torch.Tensor, space: str) -> torch.Tensor:
        if hasattr(self.model, "synthesize"):
            return self.model.synthesize(codes, space)
        if space != "z":
            raise EditorError(f"interfacegan: this official generator has only the Z space, not {space!r}")
        return self.model(codes)


# codes of inverted images, shared by the editors of one process (attributes and strengths reuse them)
_INVERSIONS: "OrderedDict[tuple[str, str], torch.Tensor]" = OrderedDict()


def _read_code(entry: Path) -> torch.Tensor | None:
    """An inverted code from its cache entry, or None when absent or damaged (it is then recomputed)."""
    from benchmark import cache as cachelib
    from safetensors.torch import load_file

    if not cachelib.is_valid(entry):
        return None
    return load_file(str(entry / "code.safetensors"))["code"]


def _write_code(entry: Path, code: torch.Tensor) -> None:
    """One image's code as a ``benchmark.cache`` entry (atomic, with a manifest): concurrent cells that
    invert the same image write it once and never read half a file."""
    from benchmark import cache as cachelib
    from safetensors.torch import save_file

    if cachelib.is_valid(entry):
        return
    with cachelib.atomic_directory(entry) as tmp:
        save_file({"code": code.detach().cpu().contiguous()}, str(tmp / "code.safetensors"))


@register_method("interfacegan")
class InterFaceGANEditor(Editor):
    meta = EditorMeta(
        paper="Shen, Gu, Tang, Zhou. Interpreting the Latent Space of GANs for Semantic Face Editing",
        venue="CVPR 2020 (TPAMI 2020: InterFaceGAN)",
        url="https://github.com/genforce/interfacegan",
        native_resolution=None,
        strength=("fraction of the way from the code's signed distance to the target distance "
                  "±distance·σ (3σ by default, genforce's range end): 0 = no edit, 1 = at the target"),
        trainable=True,
        notes=("trains its own StyleGAN2-like GAN, labeller (not the judge), inversion encoder and SVM "
               "boundaries per dataset; real images are inverted and regenerated"),
    )
    Options = InterFaceGANOptions
    presets = PRESETS
    default_preset = "cpu"
    version = 1
    shared_stages = ("gan", "labeller", "encoder", "samples")

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.gan: Any = None
        self.disc: Any = None
        self.encoder: Any = None
        self.normal: torch.Tensor | None = None     # the primal unit normal (D,)
        self.direction: torch.Tensor | None = None  # the direction codes move along (D,), = normal w/o conditions
        self.offset = 0.0
        self.sigma = 1.0
        self.work_res: int | None = None
        self.identity_key = ""
        self.info: dict[str, Any] = {}
        self._inv = {"n": 0, "sq": 0.0, "abs": 0.0, "pixels": 0, "psnr_sum": 0.0}

    # -- options ------------------------------------------------------------------------------------
    @property
    def o(self) -> InterFaceGANOptions:
        return self.opts

    def _validate(self, fit: Any) -> None:
        """Bad input fails here, before any training: attribute, conditions, resolutions, checkpoint."""
        ds, attr, o = fit.dataset, fit.attribute, self.o
        ds.attribute_index(attr)  # unknown attribute: UnknownNameError listing the valid ones
        for c in o.conditions:
            ds.attribute_index(c)
            if c == attr:
                raise OptionsError(f"interfacegan: conditions {list(o.conditions)} include the edited attribute {attr!r}")
        fit.check_trainable()
        if o.checkpoint is None:
            res = o.resolution or ds.resolution
            if res < 8 or res & (res - 1):
                raise DataError(f"interfacegan: the GAN trains at the dataset's resolution {ds.resolution}, which is "
                                "not a power of two >= 8; set method_options.interfacegan.resolution (e.g. 32)")

    @staticmethod
    def _pow2_floor(n: int) -> int:
        return 1 << (int(n).bit_length() - 1)

    # -- stages -------------------------------------------------------------------------------------
    def prepare(self, fit: Any) -> None:
        o = self.o
        self._validate(fit)
        self.attribute = fit.attribute
        self.device = torch.device(fit.device)
        dev = self.device
        stage_dirs: dict[str, Path] = {}
        if o.checkpoint is None:
            gan_res = o.resolution or fit.dataset.resolution
            stage_dirs["gan"] = fit.stage("gan", lambda tc: T.train_gan(tc, o, gan_res), per_attribute=False,
                                          steps=o.steps)
            gan, disc = T.load_gan(stage_dirs["gan"], dev)
            gan_id = {"gan": _stage_key(stage_dirs["gan"])}
        else:
            gan, gan_id = self._load_official(o.checkpoint, dev), {"checkpoint": self._checkpoint_id(o.checkpoint)}
            disc = None
            gan_res = gan.resolution
        if hasattr(gan, "truncation_psi") and o.checkpoint is None:
            gan.truncation_psi = o.truncation_psi
        if o.space not in gan.spaces:
            raise OptionsError(f"interfacegan: space {o.space!r} does not exist in this generator (has {gan.spaces})")
        work = self._pow2_floor(min(gan_res, fit.dataset.resolution))
        self.work_res = work

        enc_extra = {**gan_id, "work_res": work, **{k: getattr(o, k) for k in (
            "encoder_steps", "encoder_batch", "encoder_lr", "encoder_channel_base", "encoder_channel_max",
            "encoder_pixel_weight", "encoder_feature_weight", "encoder_real_fraction", "invert_space",
            "style_mixing")}, "truncation_psi": o.truncation_psi}
        stage_dirs["encoder"] = fit.stage("encoder", lambda tc: T.train_encoder(tc, o, gan, disc, work),
                                          per_attribute=False, steps=o.encoder_steps, extra=enc_extra)
        self.encoder = T.load_encoder(stage_dirs["encoder"], dev)

        official = self._official_stems(fit) if o.checkpoint is not None and o.official_boundaries else None
        if official is not None:
            self._use_official_boundaries(official, dev)
            boundary_id = {"official": official}
        else:
            stage_dirs.update(self._fit_boundary(fit, o, gan, gan_id, work))
            boundary_id = {"boundary": _stage_key(stage_dirs["boundary"])}
        self.gan, self.disc = gan, disc
        self.stage_dirs = stage_dirs
        self.identity_key = json.dumps({**gan_id, "encoder": _stage_key(stage_dirs["encoder"]),
                                        "invert": [o.invert_space if o.space == "w" else "z", o.invert_steps,
                                                   o.invert_lr, o.invert_feature_weight, o.invert_latent_weight],
                                        "work": work}, sort_keys=True)
        self.info = {"stages": {k: str(v) for k, v in stage_dirs.items()}, **boundary_id}

    def _fit_boundary(self, fit: Any, o: InterFaceGANOptions, gan: Any, gan_id: dict, work: int) -> dict[str, Path]:
        """labeller -> samples -> boundary; loads the boundary into the editor."""
        from methods.interfacegan.labeller import LabellerSpec, load_labeller

        dev = self.device
        spec = LabellerSpec(arch=o.labeller_arch, epochs=o.labeller_epochs, seed=o.labeller_seed,
                            split_seed=o.labeller_split_seed, degrade_prob=o.labeller_degrade_prob)
        dirs: dict[str, Path] = {}
        # Keys are computed up front and the labeller and sample stages resolved only when a stage that
        # needs them trains: with the boundary cached or shipped, editing needs neither (the labeller is
        # a 43 MB network that the shipped reference fits therefore do not carry).
        lab_extra = {"labeller": spec.keyed(), "work_res": work}
        lab_key = fit.stage_key("labeller", per_attribute=False, extra=lab_extra)

        def labeller_dir() -> Path:
            if "labeller" not in dirs:
                dirs["labeller"] = fit.stage("labeller", lambda tc: T.train_labeller_stage(tc, spec, work),
                                             per_attribute=False, steps=1, extra=lab_extra)
            return dirs["labeller"]

        n_chunks = math.ceil(o.n_samples / T.SAMPLE_CHUNK)
        smp_extra = {**gan_id, "labeller": lab_key, "n_samples": o.n_samples,
                     "truncation_psi": o.truncation_psi, "work_res": work}
        smp_key = fit.stage_key("samples", per_attribute=False, extra=smp_extra)

        def samples_dir() -> Path:
            if "samples" not in dirs:
                dirs["samples"] = fit.stage(
                    "samples", lambda tc: T.train_samples(tc, o, gan, load_labeller(labeller_dir(), dev), work,
                                                          fit.seed),
                    per_attribute=False, steps=n_chunks, extra=smp_extra)
            return dirs["samples"]

        bnd_extra = {"samples": smp_key, "space": o.space, "chosen_ratio": o.chosen_ratio,
                     "split_ratio": o.split_ratio, "conditions": list(o.conditions)}
        dirs["boundary"] = fit.stage(
            "boundary", lambda tc: T.train_boundaries(tc, o, gan, samples_dir(), fit.attribute, o.conditions),
            per_attribute=True, steps=1, extra=bnd_extra)
        self._load_boundary(dirs["boundary"], dev)
        return dirs

    def _load_boundary(self, directory: Path, device: torch.device) -> None:
        from methods.interfacegan.boundary import load_boundary

        rec = json.loads((Path(directory) / "boundary.json").read_text())
        dim = int(rec["dim"])
        normal = load_boundary(Path(directory) / f"boundary_{rec['attribute']}.npy", dim=dim)
        direction = (load_boundary(Path(directory) / "direction.npy", dim=dim)
                     if (Path(directory) / "direction.npy").exists() else normal)
        self.normal = torch.as_tensor(normal.reshape(-1), dtype=torch.float32, device=device)
        self.direction = torch.as_tensor(direction.reshape(-1), dtype=torch.float32, device=device)
        self.offset, self.sigma = float(rec["offset"]), float(rec["sigma"])
        self.boundary_record = rec

    # -- official weights (paper preset) ----------------------------------------------------------
    @staticmethod
    def _checkpoint_id(checkpoint: str) -> str:
        from methods.interfacegan.official import OFFICIAL_MODELS

        if checkpoint in OFFICIAL_MODELS:
            return f"asset:{checkpoint}"
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise OptionsError(f"interfacegan: checkpoint {checkpoint!r} is neither an official model "
                               f"({', '.join(sorted(OFFICIAL_MODELS))}) nor a file")
        return f"file:{sha256_file(path)}"

    @staticmethod
    def _load_official(checkpoint: str, device: torch.device) -> _OfficialGAN:
        from benchmark.assets import fetch
        from methods.interfacegan.official import OFFICIAL_MODELS, load_official

        if checkpoint in OFFICIAL_MODELS:
            model = OFFICIAL_MODELS[checkpoint]
            return _OfficialGAN(load_official(fetch(model.asset), checkpoint, device))
        path = Path(checkpoint).expanduser()
        state = torch.load(path, map_location="cpu", weights_only=True)
        kind = "stylegan" if any(k.startswith("mapping.") for k in state) else "pggan"
        return _OfficialGAN(load_official(path, kind, device))

    def _official_stems(self, fit: Any) -> dict[str, str] | None:
        """genforce boundary stems for the attribute (and conditions), or None when one is missing."""
        from methods.interfacegan.assets import OFFICIAL_BOUNDARY_SHA256
        from methods.interfacegan.official import OFFICIAL_MODELS

        o = self.o
        if o.checkpoint not in OFFICIAL_MODELS:
            return None
        suffix = "_w" if o.space == "w" else ""
        stems = {}
        for attr in (fit.attribute, *o.conditions):
            stem = OFFICIAL_ATTRIBUTE_STEMS.get(attr)
            full = f"{o.checkpoint}_{stem}{suffix}" if stem else None
            if full not in OFFICIAL_BOUNDARY_SHA256:
                log.info("interfacegan: no official boundary for %s in %s space; fitting our own", attr, o.space)
                return None
            stems[attr] = full
        return stems

    def _use_official_boundaries(self, stems: dict[str, str], device: torch.device) -> None:
        from methods.interfacegan.assets import fetch_boundary
        from methods.interfacegan.manipulate import project_boundary

        normals = {a: fetch_boundary(s) for a, s in stems.items()}
        primal = normals[self.attribute]
        conds = [normals[c] for c in self.o.conditions]
        direction = project_boundary(primal, *conds) if conds else primal
        self.normal = torch.as_tensor(primal.reshape(-1), dtype=torch.float32, device=device)
        self.direction = torch.as_tensor(np.asarray(direction).reshape(-1), dtype=torch.float32, device=device)
        self.offset, self.sigma = 0.0, 1.0  # the official edit: distance to the plane through 0, range ±3
        self.boundary_record = {"official": stems, "offset": 0.0, "sigma": 1.0}

    # -- latent edits -------------------------------------------------------------------------------
    def edit_codes(self, codes: torch.Tensor, target: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """Move codes (B x D in Z/W, or B x L x D in W+) towards ``target`` (see the module docstring)."""
        if self.normal is None or self.direction is None:
            raise EditorError("interfacegan: edit before prepare/load")
        n = self.normal.to(codes)
        m = self.direction.to(codes)
        t = torch.as_tensor(target, dtype=codes.dtype, device=codes.device).reshape(-1)
        if not bool(((t == 0) | (t == 1)).all()):
            raise EditorError(f"interfacegan: targets must be 0 or 1, got {t.unique().tolist()}")
        if t.numel() == 1 and codes.shape[0] != 1:
            t = t.expand(codes.shape[0])
        d_t = (2 * t - 1) * self.o.distance * self.sigma
        p = codes @ n - self.offset                       # (B,) or (B, L)
        if codes.dim() == 3:
            p = p.mean(1)
            if self.o.wp_mode == "relative":              # genforce's W+: shift by d, whatever p
                p = torch.zeros_like(p)
        gain = float(m @ n)
        if gain < 1e-3:
            raise EditorError(f"interfacegan: the conditional direction is orthogonal to the attribute's normal "
                              f"(cos {gain:.2e}); drop a condition")
        step = strength * (d_t - p) / gain
        shape = (-1,) + (1,) * (codes.dim() - 1)
        return codes + step.view(shape) * m

    def synthesize(self, codes: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """Images of codes in the editor's code space, resized to ``size`` (default: the working resolution)."""
        space = self._code_space(codes)
        img = self.gan.synthesize(codes, space)
        size = size or self.work_res
        if img.shape[-1] > size:
            img = T.resize(img, size)
        elif img.shape[-1] < size:
            img = F.interpolate(img, size=(size, size), mode="bilinear", align_corners=False)
        return img

    def _code_space(self, codes: torch.Tensor) -> str:
        if codes.dim() == 3:
            return "wp"
        return "z" if self.o.space == "z" else "w"

    def sample_codes(self, n: int, seed: int = 0) -> torch.Tensor:
        """n codes of the GAN's own samples, in the editor's space (W: w = mapping(z))."""
        z = self.gan.sample(n, self.device, torch.Generator().manual_seed(int(seed)))
        with torch.no_grad():
            return z if self.o.space == "z" else self.gan.to_space(z, "w")

    @torch.no_grad()
    def sample_edits(self, n: int, target: torch.Tensor | float, strength: float = 1.0, seed: int = 0,
                     size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, edited) images of n of the GAN's own samples: InterFaceGAN without inversion.

        For benchmark scripts that score edits of GAN samples (the paper's setting) apart from the
        real-image protocol; ``size`` defaults to the working resolution.
        """
        codes = self.sample_codes(n, seed)
        t = torch.as_tensor(target, dtype=codes.dtype, device=codes.device).reshape(-1).expand(n)
        src = self.synthesize(codes, size).clamp(-1, 1)
        return src, self.synthesize(self.edit_codes(codes, t, strength), size).clamp(-1, 1)

    # -- inversion ----------------------------------------------------------------------------------
    def _settings(self) -> InversionSettings:
        o = self.o
        fw = o.invert_feature_weight if self.disc is not None else 0.0
        return InversionSettings(steps=o.invert_steps, lr=o.invert_lr, feature_weight=fw,
                                 latent_weight=o.invert_latent_weight)

    def _render_fn(self, space: str):
        def render(codes: torch.Tensor) -> torch.Tensor:
            return T.resize(self.gan.synthesize(codes, space), self.work_res)
        return render

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's first guess, in the editor's code space (Z: found by matching the mapping's output)."""
        with torch.no_grad():
            code = self.encoder(x)
        if self.o.space == "w" and self.o.invert_space == "w" and code.dim() == 3:
            code = code.mean(1)
        if self.o.space == "z":
            w = code.mean(1) if code.dim() == 3 else code
            code = self._z_for_w(w)
        return code

    def _z_for_w(self, w: torch.Tensor, steps: int = 100) -> torch.Tensor:
        """A Z code whose mapping is close to ``w`` (Adam from z = 0)."""
        z = torch.zeros(w.shape[0], self.gan.z_dim, device=w.device).normal_(0, 0.01).requires_grad_(True)
        opt = torch.optim.Adam([z], lr=0.1)
        for _ in range(steps):
            loss = (self.gan.to_space(z, "w") - w).square().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return z.detach()

    def invert(self, images: torch.Tensor) -> torch.Tensor:
        """Codes of ``images`` (B x 3 x H x W in [-1, 1]); cached per process by image content."""
        x = T.resize(images.to(self.device, torch.float32), self.work_res)
        keys = [hashlib.sha1(img.detach().cpu().numpy().tobytes()).hexdigest() for img in images.float()]
        cached = [_INVERSIONS.get((self.identity_key, k)) for k in keys]
        disk = self._inversion_dir()
        for i, c in enumerate(cached):
            if c is None and disk is not None:
                cached[i] = _read_code(disk / keys[i])
                if cached[i] is not None and self.o.cache_inversions > 0:
                    _INVERSIONS[(self.identity_key, keys[i])] = cached[i]
        todo = [i for i, c in enumerate(cached) if c is None]
        if todo:
            with torch.enable_grad():
                xs = x[todo]
                init = self._encode(xs)
                space = self._code_space(init)
                feats = self.disc.features if self.disc is not None else None
                codes = optimise_codes(self._render_fn(space), xs, init, self._settings(), feats)
            for j, i in enumerate(todo):
                cached[i] = codes[j].detach()
                if self.o.cache_inversions > 0:
                    _INVERSIONS[(self.identity_key, keys[i])] = cached[i]
                if disk is not None:
                    _write_code(disk / keys[i], cached[i])
            while len(_INVERSIONS) > max(0, self.o.cache_inversions):
                _INVERSIONS.popitem(last=False)
        return torch.stack([c.to(self.device) for c in cached])

    def _inversion_dir(self) -> Path | None:
        """Where this editor's inverted codes live on disk: keyed by everything that makes an inversion
        (GAN, encoder, settings: ``identity_key``) and by the editor's source, so changed code never
        reads old codes."""
        if not self.o.disk_inversions or not self.identity_key:
            return None
        from benchmark.assets import cache_root
        from methods.training import source_hash

        blob = json.dumps({"id": self.identity_key, "source": source_hash(type(self))}, sort_keys=True)
        return cache_root() / "inversions" / "interfacegan" / hashlib.sha256(blob.encode()).hexdigest()[:20]

    def encode_only(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's codes without optimisation (for measuring what the optimisation adds)."""
        return self._encode(T.resize(images.to(self.device, torch.float32), self.work_res))

    # -- the Editor contract ------------------------------------------------------------------------
    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        if self.gan is None:
            raise EditorError("interfacegan: edit called before prepare/load")
        if attribute != self.attribute:
            raise EditorError(f"interfacegan: this editor was fitted for {self.attribute!r}, not {attribute!r}")
        if images.dim() != 4 or images.shape[1] != 3:
            raise EditorError(f"interfacegan: images must be B x 3 x H x W, got {tuple(images.shape)}")
        size = images.shape[-1]
        codes = self.invert(images)
        with torch.no_grad():
            recon = self.synthesize(codes, size).clamp(-1, 1)
            self._record_inversion(images.to(recon), recon)
            if context is not None and isinstance(getattr(context, "extras", None), dict):
                context.extras["inversion"] = recon.to(images.device, images.dtype)
            if strength == 0:
                out = images.to(recon) if self.o.residual else recon
            else:
                edited = self.synthesize(self.edit_codes(codes, target.to(codes.device), float(strength)), size)
                if self.o.residual:  # carry only the GAN's change onto the source (keeps what the GAN cannot draw)
                    base = self.synthesize(codes, size)
                    out = (images.to(recon) + edited - base).clamp(-1, 1)
                else:
                    out = edited.clamp(-1, 1)
        return out.to(images.device, images.dtype)

    def _record_inversion(self, src: torch.Tensor, recon: torch.Tensor) -> None:
        diff = (recon.double() - src.double()) / 2  # [0, 1] units
        per_img = diff.square().flatten(1).mean(1)
        s = self._inv
        s["n"] += int(src.shape[0])
        s["sq"] += float(diff.square().sum())
        s["abs"] += float(diff.abs().sum())
        s["pixels"] += diff.numel()
        s["psnr_sum"] += float((10 * torch.log10(1.0 / per_img.clamp_min(1e-12))).sum())

    def inversion_metrics(self) -> dict[str, float]:
        """Inversion quality of every image edited so far, at the dataset's resolution, [0, 1] units:
        ``inv_psnr`` (pooled MSE), ``inv_psnr_mean`` (mean per image), ``inv_l1``, ``n``."""
        s = self._inv
        if not s["n"]:
            return {"n": 0}
        mse = s["sq"] / s["pixels"]
        return {"inv_psnr": float("inf") if mse == 0 else 10 * math.log10(1 / mse),
                "inv_psnr_mean": s["psnr_sum"] / s["n"], "inv_l1": s["abs"] / s["pixels"], "n": s["n"]}

    # -- save / load --------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        """Copy what editing needs (GAN, encoder, boundary) into ``directory`` (reload with ``load``)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for name in ("gan", "encoder", "boundary"):
            src = getattr(self, "stage_dirs", {}).get(name)
            if src is not None:
                shutil.copytree(src, d / name, dirs_exist_ok=True)
        meta = {"attribute": self.attribute, "options": dict(self.options), "work_res": self.work_res,
                "identity_key": self.identity_key, "boundary": self.boundary_record,
                "checkpoint": self.o.checkpoint, "version": self.version}
        (d / "editor.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str) + "\n")

    def load(self, directory: str | Path, device: torch.device | str = "cpu") -> None:
        d = Path(directory)
        meta = json.loads((d / "editor.json").read_text())
        self.device = torch.device(device)
        self.attribute, self.work_res, self.identity_key = meta["attribute"], meta["work_res"], meta["identity_key"]
        if (d / "gan").is_dir():
            self.gan, self.disc = T.load_gan(d / "gan", self.device)
            self.gan.truncation_psi = self.o.truncation_psi
        else:
            self.gan, self.disc = self._load_official(meta["checkpoint"], self.device), None
        self.encoder = T.load_encoder(d / "encoder", self.device)
        if (d / "boundary").is_dir():
            self._load_boundary(d / "boundary", self.device)
        else:
            self.attribute = meta["attribute"]
            self._use_official_boundaries(meta["boundary"]["official"], self.device)
        self.stage_dirs = {k: d / k for k in ("gan", "encoder", "boundary") if (d / k).is_dir()}
