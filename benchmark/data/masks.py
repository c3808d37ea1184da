"""CelebAMask-HQ region masks: which face parts each CelebA attribute may change.

The ``leak`` metric (DESIGN §4) needs, per attribute, the pixels an edit is
allowed to touch.  CelebAMask-HQ annotates 18 face-part classes (plus
background) at 512×512, stored one binary PNG per part:
``CelebAMask-HQ-mask-anno/<idx // 2000>/<idx:05d>_<class>.png``; a part that is
absent or fully occluded has no file.  The same classes numbered 1..18 (0 is
background) make the 19-class label maps of the face-parsing code, in the
order of ``CELEBAMASK_CLASSES`` (source: switchablenorms/CelebAMask-HQ,
face_parsing/Data_preprocessing/g_mask.py, ``label_list``).

Attribute -> classes (``ATTRIBUTE_REGIONS``).  An attribute not in the table
(``Attractive``, ``Blurry``, ``Chubby``, ``Heavy_Makeup``, ``Male``,
``Oval_Face``, ``Pale_Skin``, ``Young``) changes the whole face: no mask, and
``region_masks`` returns None.

==================== ===========================================================
attribute            CelebAMask-HQ classes
==================== ===========================================================
5_o_Clock_Shadow     skin (stubble lies on the skin class)
Arched_Eyebrows      l_brow r_brow
Bags_Under_Eyes      l_eye r_eye (the dilation reaches the skin just below)
Bald                 hair skin
Bangs                hair
Big_Lips             mouth u_lip l_lip
Big_Nose             nose
Black/Blond/Brown/Gray_Hair, Straight/Wavy_Hair    hair
Bushy_Eyebrows       l_brow r_brow
Double_Chin          skin neck
Eyeglasses           eye_g l_eye r_eye l_brow r_brow (see below)
Goatee               skin mouth u_lip l_lip
High_Cheekbones      skin
Mouth_Slightly_Open  mouth u_lip l_lip
Mustache             skin u_lip
Narrow_Eyes          l_eye r_eye
No_Beard             skin mouth u_lip l_lip
Pointy_Nose          nose
Receding_Hairline    hair skin
Rosy_Cheeks          skin
Sideburns            hair skin
Smiling              mouth u_lip l_lip
Wearing_Earrings     ear_r l_ear r_ear
Wearing_Hat          hat hair
Wearing_Lipstick     u_lip l_lip
Wearing_Necklace     neck_l neck
Wearing_Necktie      cloth neck
==================== ===========================================================

Adding an accessory to a face that has none (glasses, hat, earrings) has no
file for the accessory class, so each such row also lists the parts the
accessory sits on; a face with none of the listed classes gets an empty (all
zero) mask, not None.  Masks are resized to the dataset resolution with area
averaging (a pixel counts if any part of it is covered) and then dilated by
``DILATE_PX`` pixels, because edits legitimately blur a few pixels across a
part's border.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.data.base import DataError, resolve_inside

# label 1..18 in the 19-class label maps; 0 is background
CELEBAMASK_CLASSES: tuple[str, ...] = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
CLASS_LABEL: dict[str, int] = {c: i + 1 for i, c in enumerate(CELEBAMASK_CLASSES)}

_MOUTH = ("mouth", "u_lip", "l_lip")
_EYES = ("l_eye", "r_eye")
_BROWS = ("l_brow", "r_brow")
ATTRIBUTE_REGIONS: dict[str, tuple[str, ...]] = {
    "5_o_Clock_Shadow": ("skin",),
    "Arched_Eyebrows": _BROWS,
    "Bags_Under_Eyes": _EYES,
    "Bald": ("hair", "skin"),
    "Bangs": ("hair",),
    "Big_Lips": _MOUTH,
    "Big_Nose": ("nose",),
    "Black_Hair": ("hair",),
    "Blond_Hair": ("hair",),
    "Brown_Hair": ("hair",),
    "Gray_Hair": ("hair",),
    "Straight_Hair": ("hair",),
    "Wavy_Hair": ("hair",),
    "Bushy_Eyebrows": _BROWS,
    "Double_Chin": ("skin", "neck"),
    "Eyeglasses": ("eye_g",) + _EYES + _BROWS,
    "Goatee": ("skin",) + _MOUTH,
    "High_Cheekbones": ("skin",),
    "Mouth_Slightly_Open": _MOUTH,
    "Mustache": ("skin", "u_lip"),
    "Narrow_Eyes": _EYES,
    "No_Beard": ("skin",) + _MOUTH,
    "Pointy_Nose": ("nose",),
    "Receding_Hairline": ("hair", "skin"),
    "Rosy_Cheeks": ("skin",),
    "Sideburns": ("hair", "skin"),
    "Smiling": _MOUTH,
    "Wearing_Earrings": ("ear_r", "l_ear", "r_ear"),
    "Wearing_Hat": ("hat", "hair"),
    "Wearing_Lipstick": ("u_lip", "l_lip"),
    "Wearing_Necklace": ("neck_l", "neck"),
    "Wearing_Necktie": ("cloth", "neck"),
}
assert all(c in CLASS_LABEL for cs in ATTRIBUTE_REGIONS.values() for c in cs)

DILATE_PX = 2
MASK_DIR = "CelebAMask-HQ-mask-anno"


def region_classes(attribute: str) -> tuple[str, ...] | None:
    """The CelebAMask-HQ classes of ``attribute``, or None for a whole-face attribute."""
    return ATTRIBUTE_REGIONS.get(attribute)


def mask_file(mask_root: Path, idx: int, cls: str) -> Path:
    """``<mask_root>/<idx // 2000>/<idx:05d>_<cls>.png`` (the CelebAMask-HQ layout)."""
    return Path(mask_root) / str(idx // 2000) / f"{idx:05d}_{cls}.png"


def region_from_label_map(label_map: np.ndarray, attribute: str) -> np.ndarray | None:
    """H×W bool region of ``attribute`` in a 19-class label map (values 0..18), None if whole-face."""
    classes = region_classes(attribute)
    if classes is None:
        return None
    return np.isin(label_map, [CLASS_LABEL[c] for c in classes])


def _read_binary(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("L"))
    except Exception as exc:  # noqa: BLE001 - any decoder failure
        raise DataError(f"cannot decode mask {path}: {type(exc).__name__}: {exc}") from None
    return arr > 127  # the files are 0/255; JPEG-like noise near 0 must not count


def region_from_class_files(mask_root: Path, idx: int, attribute: str) -> np.ndarray | None:
    """H×W bool union of the part files of ``attribute`` for image ``idx``; None if whole-face.

    Parts without a file (absent or occluded) add nothing; a face with none of
    them gives an all-False 512×512 region.  A part file is read only from inside
    ``mask_root`` (symlinks resolved: ``resolve_inside``), like every dataset file.
    """
    classes = region_classes(attribute)
    if classes is None:
        return None
    mask_root = Path(mask_root)
    region: np.ndarray | None = None
    for cls in classes:
        path = mask_file(mask_root, idx, cls)
        if path.is_file():
            real = resolve_inside(mask_root, path.relative_to(mask_root), f"mask of CelebA-HQ image {idx}")
            part = _read_binary(real)
            region = part if region is None else region | part
    return np.zeros((512, 512), dtype=bool) if region is None else region


def to_mask_tensor(regions: Sequence[np.ndarray], resolution: int, dilate_px: int = DILATE_PX) -> torch.Tensor:
    """B×1×R×R float {0, 1}: area-resize (any coverage counts), then dilate by ``dilate_px``."""
    batch = torch.stack([torch.from_numpy(np.ascontiguousarray(r, dtype=np.float32)) for r in regions])[:, None]
    if batch.shape[-2:] != (resolution, resolution):
        batch = F.interpolate(batch, size=(resolution, resolution), mode="area")
    mask = (batch > 0).float()
    if dilate_px > 0:
        k = 2 * dilate_px + 1
        mask = F.max_pool2d(mask, kernel_size=k, stride=1, padding=dilate_px)
    return mask


def load_region_masks(
    mask_root: Path, indices: Sequence[int], attribute: str, resolution: int, dilate_px: int = DILATE_PX
) -> torch.Tensor | None:
    """B×1×R×R masks of ``attribute`` for CelebA-HQ images ``indices``; None if whole-face or no masks.

    None also when the folder of any requested image is absent (a partial
    download): a mask made of missing files would claim "nothing may change".
    """
    if region_classes(attribute) is None:
        return None
    mask_root = Path(mask_root)
    if not all((mask_root / str(int(i) // 2000)).is_dir() for i in indices):
        return None
    regions = [region_from_class_files(mask_root, int(i), attribute) for i in indices]
    return to_mask_tensor(regions, resolution, dilate_px)  # type: ignore[arg-type]
