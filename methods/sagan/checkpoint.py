"""The released SaGAN models and their checkpoint layout.

No official code exists; the public re-implementation (github.com/elvisyjlin/SpatialAttentionGAN,
MIT) released CelebA 128 px models for four attributes (its README: "Pretrained models (download
from http://bit.ly/sagan-results and decompress the zips to ./results)": ``celeba_128_eyeglasses``,
``celeba_128_mouth_slightly_open``, ``celeba_128_no_beard``, ``celeba_128_smiling``).  An experiment
directory holds ``setting.json`` (train.py's arguments, e.g. ``target_attr``, ``image_size``) and
``checkpoint/<nimg:07d>.G.pth`` = ``torch.save(G.state_dict())`` every ``save_ticks`` ticks
(train.py); generate.py loads the largest ``nimg``.  We do the same, with ``weights_only=True``.

Preprocessing of those models (data.py): CelebA "Align&Cropped" 178×218 JPEGs, ``CenterCrop(170)``,
``Resize(128)``, ``Normalize(0.5, 0.5)`` -> [-1, 1].  Our CelebA-HQ faces are aligned differently,
so numbers from these weights on CelebA-HQ are a transfer, not the published protocol.

The publisher gives a shared-folder link, no per-file URL and no checksums: the assets are declared
with ``sha256=None`` and are never downloaded automatically (a redirect page would pass a
size-less check); the message says where to put the zip.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from benchmark.assets import Asset, MissingAssetError, cache_root, declare, fetch, missing_message, safe_extract
from methods.sagan.networks import Discriminator, Generator

RELEASE_URL = "http://bit.ly/sagan-results"
RELEASE_RESOLUTION = 128  # data.py / train.py --image-size 128
RELEASE_WIDTH = 32        # sagan.py: first conv 32 channels
RELEASED_ATTRIBUTES = ("Eyeglasses", "Mouth_Slightly_Open", "No_Beard", "Smiling")
LICENCE = ("code MIT (elvisyjlin/SpatialAttentionGAN); weights trained on CelebA, whose images are for "
           "non-commercial research only")


def _release_asset(attribute: str) -> Asset:
    exp = f"celeba_128_{attribute.lower()}"
    return declare(Asset(
        name=f"sagan-{exp.replace('_', '-')}",
        url=RELEASE_URL,
        filename=f"{exp}.zip",
        sha256=None,  # not published
        licence=LICENCE,
        subdir="checkpoints/sagan",
        description=f"SaGAN generator for {attribute}, CelebA 128 px (elvisyjlin/SpatialAttentionGAN release)",
        how_to_get=f"open {RELEASE_URL} (the link in the elvisyjlin/SpatialAttentionGAN README), download "
                   f"{exp}.zip and put it at the path above; or pass method_options.sagan.checkpoint=<the "
                   f"extracted {exp} directory or one of its checkpoint/NNNNNNN.G.pth files>",
    ))


RELEASED_ASSETS: dict[str, Asset] = {a: _release_asset(a) for a in RELEASED_ATTRIBUTES}
ASSET_BY_NAME: dict[str, Asset] = {a.name: a for a in RELEASED_ASSETS.values()}


def official_generator_keys(resolution: int = RELEASE_RESOLUTION, width: int = RELEASE_WIDTH) -> dict[str, tuple]:
    """{key: shape} of the public implementation's ``G.state_dict()`` (what our Generator must match)."""
    return {k: tuple(v.shape) for k, v in Generator(resolution, width).state_dict().items()}


def official_discriminator_keys(resolution: int = RELEASE_RESOLUTION, width: int = RELEASE_WIDTH) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in Discriminator(resolution, width).state_dict().items()}


_NIMG = re.compile(r"^(\d+)\.G\.pth$")


def latest_generator_file(path: Path) -> Path:
    """The ``NNNNNNN.G.pth`` to load: ``path`` itself, or the largest nimg under ``path`` (as generate.py)."""
    path = Path(path)
    if path.is_file():
        return path
    found = [(int(m.group(1)), p) for p in path.rglob("*.G.pth") if (m := _NIMG.match(p.name))]
    if not found:
        raise FileNotFoundError(f"sagan: no checkpoint/NNNNNNN.G.pth under {path}")
    return max(found)[1]


def experiment_setting(g_file: Path) -> dict:
    """train.py's ``setting.json`` of the experiment that wrote ``g_file`` ({} if absent)."""
    for d in (g_file.parent, g_file.parent.parent):
        s = d / "setting.json"
        if s.is_file():
            return json.loads(s.read_text(encoding="utf-8"))
    return {}


def resolve_checkpoint(spec: str) -> Path:
    """A path (file or directory) or a declared asset name -> the ``.G.pth`` file to load."""
    if spec in ASSET_BY_NAME:
        asset = ASSET_BY_NAME[spec]
        if not asset.path().exists():
            raise MissingAssetError(missing_message(asset, asset.path(), "it is not in the cache, and the "
                                                    "publisher gives a shared-folder link, no file to download"))
        archive = fetch(asset, allow_download=False)  # verifies what is there (by size: no sha256 published)
        dest = cache_root() / "checkpoints" / "sagan" / archive.stem
        if not (dest.exists() and any(dest.rglob("*.G.pth"))):
            safe_extract(archive, dest)
        return latest_generator_file(dest)
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"sagan: checkpoint {spec!r} is neither a file/directory nor one of the declared "
                                f"assets {sorted(ASSET_BY_NAME)}")
    return latest_generator_file(path)


def load_official_generator(g_file: Path, device: torch.device | str = "cpu") -> Generator:
    """A 128 px, width-32 Generator with the public implementation's weights (strict: every key and shape)."""
    state = torch.load(g_file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    G = Generator(RELEASE_RESOLUTION, RELEASE_WIDTH)
    check_state_dict(G, state, str(g_file))
    G.load_state_dict(state, strict=True)
    return G.to(device).eval()


def check_state_dict(model: torch.nn.Module, state: dict, where: str) -> None:
    """Name missing/unexpected keys and shape mismatches in one message before ``load_state_dict``."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        raise ValueError(f"sagan: {where} is not a SaGAN generator state dict of the public layout: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
                         f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, shape mismatch {shapes[:5]}")
