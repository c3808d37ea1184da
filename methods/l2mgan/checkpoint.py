"""Official L2M-GAN checkpoint layouts: ``100000_nets_ema.ckpt`` and StarGAN v2's ``wing.ckpt``.

``100000_nets_ema.ckpt`` (rucmlcv/L2M-GAN README, Baidu disk) is what core/checkpoint.py
``CheckpointIO.save`` writes for ``nets_ema``: ``torch.save({name: module.state_dict()})`` with
``generator``, ``style_encoder``, ``fan`` (when w_hpf > 0) and ``vgg`` (ResNet-18 features).  It
holds only tensors, so it loads with ``torch.load(weights_only=True)``.

Loading is strict: every key of our modules must be in the file and every key of the file must
land in a module.  The official dicts contain ``attention.layers.{0,2}`` in the generator and the
style encoder; those modules exist here (unused, as in the official forward), so strict loading
needs no ignore list.  The one documented exception is ``vgg`` when the caller does not want the
perceptual network: it is then checked for its layout and dropped (``IGNORED_WITHOUT_FEATURES``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from methods.l2mgan.networks import FAN, Generator, ResNet18Features, StyleEncoder

OFFICIAL_NETS = ("generator", "style_encoder", "fan", "vgg")
# entries of the official file that are not loaded unless asked for (see module docstring)
IGNORED_WITHOUT_FEATURES = ("vgg",)


class CheckpointLayoutError(ValueError):
    """A checkpoint does not match the official layout; the message lists what differs."""


@dataclass(frozen=True)
class NetConfig:
    """The architecture of a generator / style encoder pair, as stored in (or inferred from) weights."""

    img_size: int
    style_dim: int = 64
    num_domains: int = 2
    dim_in: int | None = None
    max_conv_dim: int = 512
    w_hpf: float = 0.0

    def generator(self) -> Generator:
        return Generator(self.img_size, self.style_dim, self.max_conv_dim, self.w_hpf, self.dim_in)

    def style_encoder(self) -> StyleEncoder:
        return StyleEncoder(self.img_size, self.style_dim, self.num_domains, self.max_conv_dim, self.dim_in)


@dataclass
class OfficialNets:
    """What an official checkpoint gives: the EMA generator and style encoder, and FAN / ResNet-18."""

    config: NetConfig
    generator: Generator
    style_encoder: StyleEncoder
    fan: FAN | None
    vgg: ResNet18Features | None


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict(strict=True)`` with a message that lists missing, unexpected and mis-shaped keys."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")
        parts = [f"{what}: state dict does not match the official layout"]
        if missing:
            parts.append(f"missing {len(missing)}: {head(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {head(unexpected)}")
        if shapes:
            parts.append("shape mismatch: " + head([f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                     for k in shapes]))
        raise CheckpointLayoutError("; ".join(parts))
    module.load_state_dict(state, strict=True)


def _count(state: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in state if (m := rx.match(k))})


def infer_config(generator: dict[str, torch.Tensor], style_encoder: dict[str, torch.Tensor],
                 w_hpf: float | None = None) -> NetConfig:
    """Architecture from the tensor shapes of official state dicts.

    The style encoder has log2(img_size) − 2 down-sampling blocks; the generator has
    log2(img_size) − 4 (+1 with w_hpf > 0) plus 2 bottleneck blocks, which tells w_hpf apart.
    ``w_hpf`` (the high-pass weight itself) is not stored; the official value is 1.
    """
    try:
        n_enc = _count(style_encoder, r"shared\.(\d+)\.conv1\.weight")
        img_size = 2 ** (n_enc + 2)
        n_down = _count(generator, r"encode\.(\d+)\.conv1\.weight") - 2
        dim_in = int(generator["from_rgb.weight"].shape[0])
        style_dim = int(style_encoder["unshared.0.weight"].shape[0])
        num_domains = _count(style_encoder, r"unshared\.(\d+)\.weight")
        widths = [int(v.shape[0]) for k, v in generator.items() if re.fullmatch(r"encode\.\d+\.conv2\.weight", k)]
        widths += [int(v.shape[0]) for k, v in style_encoder.items()
                   if re.fullmatch(r"shared\.\d+\.conv2\.weight", k)]  # one cap for both nets
    except (KeyError, IndexError) as exc:
        raise CheckpointLayoutError(f"not an official L2M-GAN generator / style encoder pair (no {exc})") from None
    extra = n_down - (int(math.log2(img_size)) - 4)
    if extra not in (0, 1):
        raise CheckpointLayoutError(f"generator has {n_down} down-sampling blocks, which fits no w_hpf at "
                                    f"{img_size} px (expected {int(math.log2(img_size)) - 4} or one more)")
    hpf = 0.0 if extra == 0 else (1.0 if w_hpf is None else float(w_hpf))
    if extra == 1 and hpf <= 0:
        raise CheckpointLayoutError("generator has the extra block of w_hpf > 0 but w_hpf <= 0 was asked for")
    return NetConfig(img_size, style_dim, num_domains, dim_in, max(widths + [dim_in]), hpf)


def read_checkpoint(path: str | Path) -> dict[str, dict[str, torch.Tensor]]:
    """The dict of state dicts of an official ``*_nets_ema.ckpt`` (tensors only: weights_only)."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickle errors name no remedy
        raise CheckpointLayoutError(f"{path}: cannot read as a weights-only torch checkpoint "
                                    f"({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict) or not {"generator", "style_encoder"} <= set(blob):
        keys = sorted(blob) if isinstance(blob, dict) else type(blob).__name__
        raise CheckpointLayoutError(f"{path}: expected a dict with generator and style_encoder "
                                    f"(official nets_ema layout), got {keys}")
    return blob


def load_official(source: str | Path | dict, device: torch.device | str = "cpu", w_hpf: float | None = None,
                  with_features: bool = False) -> OfficialNets:
    """Build and strictly load the nets of an official checkpoint (a path or its loaded dict)."""
    blob = read_checkpoint(source) if not isinstance(source, dict) else source
    unknown = sorted(set(blob) - set(OFFICIAL_NETS))
    if unknown:
        raise CheckpointLayoutError(f"unexpected entries {unknown} in the checkpoint; official: {list(OFFICIAL_NETS)}")
    cfg = infer_config(blob["generator"], blob["style_encoder"], w_hpf)
    G, E = cfg.generator(), cfg.style_encoder()
    load_strict(G, blob["generator"], "generator")
    load_strict(E, blob["style_encoder"], "style_encoder")
    fan = None
    if cfg.w_hpf > 0:
        if "fan" not in blob:
            raise CheckpointLayoutError("the generator was trained with w_hpf > 0 but the checkpoint has no 'fan'")
        fan = FAN()
        load_strict(fan, blob["fan"], "fan")
    elif "fan" in blob:
        raise CheckpointLayoutError("the checkpoint has 'fan' but its generator has the w_hpf = 0 layout")
    vgg = None
    if "vgg" in blob:
        features = ResNet18Features()
        load_strict(features.features, blob["vgg"], "vgg")  # checked in every case
        vgg = features if with_features else None
    nets = OfficialNets(cfg, G, E, fan, vgg)
    for m in (G, E, fan, vgg):
        if m is not None:
            m.to(device).eval()
    return nets


def load_wing(path: str | Path) -> FAN:
    """FAN from StarGAN v2's ``wing.ckpt`` (``{'state_dict': ...}``).

    The official ``FAN.load_pretrained_weights`` copies only the keys the model has, silently
    keeping the random init for any key the file lacks; here every model key must be present,
    and file keys the model does not have are reported in the error only if something is missing.
    """
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise CheckpointLayoutError(f"{path}: expected {{'state_dict': ...}} (StarGAN v2 wing.ckpt)")
    fan = FAN()
    own = fan.state_dict()
    load_strict(fan, {k: v for k, v in state.items() if k in own}, "fan (wing.ckpt)")
    return fan.eval()
