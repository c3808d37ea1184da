"""Sampling of SynthFaces' hidden factors: who a person is, and how one photo of them looks.

Three kinds of factors, kept apart on purpose because the benchmark scores them differently:

* **identity factors** (``IDENTITY_PARAM_NAMES``): continuous, one draw per person, independent
  of every attribute.  An attribute edit must keep them; the identity evaluator regresses them.
* **nuisance factors** (``IMAGE_PARAM_NAMES``): pose jitter, light, background, clothes, drawn
  per image; they make several photos of one person differ.
* **attributes** (``ATTRIBUTE_NAMES``, CelebA names): 0/1.  Male, Young, Blond_Hair, Pale_Skin,
  Bangs, Mustache and No_Beard belong to the person; Smiling, Mouth_Slightly_Open and Eyeglasses
  vary from photo to photo.  They are drawn with CelebA-like correlations (see ``_sample_labels``).

Every factor is stored as a float in [0, 1] (attributes in {0, 1}); ``render.py`` maps them to
geometry and colour.  Sampling uses one ``torch.Generator`` per split, seeded from (seed, split), so
a split is bit-for-bit reproducible and the two splits never share a person.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

# Dataset attribute order = the official CelebA order restricted to the modelled attributes.
ATTRIBUTE_NAMES: tuple[str, ...] = (
    "Bangs", "Blond_Hair", "Eyeglasses", "Male", "Mouth_Slightly_Open", "Mustache", "No_Beard",
    "Pale_Skin", "Smiling", "Young",
)
PER_IMAGE_ATTRIBUTES: tuple[str, ...] = ("Eyeglasses", "Mouth_Slightly_Open", "Smiling")

IDENTITY_PARAM_NAMES: tuple[str, ...] = (
    "face_width", "face_length", "jaw_width", "chin_length", "skin_tone", "skin_warmth",
    "eye_size", "eye_spacing", "eye_height", "eye_slant", "iris_hue", "iris_darkness",
    "nose_length", "nose_width", "lip_width", "lip_fullness", "lip_colour",
    "brow_thickness", "brow_height", "brow_arch", "ear_size",
    "hair_length", "hair_volume", "hair_part", "hair_darkness", "hair_hue", "grey_amount",
)
# Per-person styling that is not identity (not regressed): glasses frame shape and colour, beard shape.
STYLE_PARAM_NAMES: tuple[str, ...] = ("glasses_shape", "glasses_colour", "beard_fullness", "smile_size")
IMAGE_PARAM_NAMES: tuple[str, ...] = (
    "shift_x", "shift_y", "rotation", "scale", "light_azimuth", "light_elevation", "light_strength",
    "bg_hue", "bg_value", "shirt_hue", "shirt_value", "gaze_x", "gaze_y", "expression_jitter",
)

SPLIT_CODES = {"train": 1, "test": 2, "val": 3}


def split_generator(seed: int, split: str) -> torch.Generator:
    """A generator whose stream depends on (seed, split) only, so splits are independent streams."""
    digest = hashlib.sha256(f"synthfaces/{int(seed)}/{split}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _bern(gen: torch.Generator, p: torch.Tensor) -> torch.Tensor:
    return (torch.rand(p.shape, generator=gen) < p).float()


@dataclass
class SplitParams:
    """All factors of one split: per-person tables and the per-image rows that index them."""

    identity: torch.Tensor          # (N,) int64 global identity id
    person: torch.Tensor            # (N,) int64 row into the per-person tables
    latent: torch.Tensor            # (n_ids, P) identity factors in [0, 1]
    style: torch.Tensor             # (n_ids, S)
    image: torch.Tensor             # (N, Q) nuisance factors in [0, 1]
    labels: torch.Tensor            # (N, A) 0/1 float in ATTRIBUTE_NAMES order

    def __len__(self) -> int:
        return int(self.identity.numel())

    def gather(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The renderer's input for the images ``index``: name -> (B,) float tensor."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        rows = self.person[index]
        out: dict[str, torch.Tensor] = {}
        for table, names in ((self.latent[rows], IDENTITY_PARAM_NAMES), (self.style[rows], STYLE_PARAM_NAMES),
                             (self.image[index], IMAGE_PARAM_NAMES), (self.labels[index], ATTRIBUTE_NAMES)):
            out.update({n: table[:, j].clone() for j, n in enumerate(names)})
        return out


def _sample_labels(gen: torch.Generator, n_ids: int, images_per_id: int,
                   latent: torch.Tensor) -> torch.Tensor:
    """CelebA-like joint label distribution.

    Targets are the CelebA-HQ marginals and conditionals measured on
    CelebAMask-HQ-attribute-anno.txt (30,000 faces): Male 0.37, Young|M 0.60, Young|F 0.88,
    Blond|M 0.02, Blond|F 0.26, Bangs|M 0.10, Bangs|F 0.23, Smiling|M 0.40, Smiling|F 0.51,
    Mouth_Slightly_Open|Smiling 0.77, |not 0.21, Mustache|F 0.00, No_Beard|F 1.00, No_Beard|M 0.49.
    Rare attributes are raised so that a 1,000-image test set has both directions in numbers:
    Eyeglasses 0.05 -> ~0.15 (still mostly men and older people), Mustache 0.06 -> ~0.15 (men only),
    Pale_Skin 0.05 -> ~0.15 (more often women and light skin).
    """
    male = _bern(gen, torch.full((n_ids,), 0.37))
    young = _bern(gen, 0.88 - 0.28 * male)
    blond = _bern(gen, (0.26 - 0.22 * male) * (0.6 + 0.8 * latent[:, IDENTITY_PARAM_NAMES.index("skin_tone")]))
    bangs = _bern(gen, 0.23 - 0.13 * male)
    mustache = _bern(gen, male * (0.30 + 0.25 * (1 - young)))
    beard = _bern(gen, male * (0.35 + 0.40 * mustache))
    light_skin = latent[:, IDENTITY_PARAM_NAMES.index("skin_tone")]
    pale = _bern(gen, (0.10 + 0.08 * (1 - male)) * (0.3 + 1.4 * light_skin))
    wearer = _bern(gen, 0.10 + 0.14 * male + 0.12 * (1 - young))
    smiler = torch.rand(n_ids, generator=gen) * 0.4 - 0.2 + (0.51 - 0.11 * male)  # per-person propensity

    rep = lambda t: t.repeat_interleave(images_per_id)  # noqa: E731
    smiling = _bern(gen, rep(smiler).clamp(0.05, 0.95))
    mouth_open = _bern(gen, 0.21 + 0.56 * smiling)
    glasses = _bern(gen, rep(wearer) * 0.9)
    cols = {"Bangs": rep(bangs), "Blond_Hair": rep(blond), "Eyeglasses": glasses, "Male": rep(male),
            "Mouth_Slightly_Open": mouth_open, "Mustache": rep(mustache), "No_Beard": 1 - rep(beard),
            "Pale_Skin": rep(pale), "Smiling": smiling, "Young": rep(young)}
    return torch.stack([cols[a] for a in ATTRIBUTE_NAMES], dim=1)


def sample_split(seed: int, split: str, n_ids: int, images_per_id: int, id_offset: int) -> SplitParams:
    """Draw every factor of one split.  Identities are ``id_offset .. id_offset + n_ids - 1``."""
    gen = split_generator(seed, split)
    latent = torch.rand(n_ids, len(IDENTITY_PARAM_NAMES), generator=gen)
    style = torch.rand(n_ids, len(STYLE_PARAM_NAMES), generator=gen)
    labels = _sample_labels(gen, n_ids, images_per_id, latent)
    n = n_ids * images_per_id
    image = torch.rand(n, len(IMAGE_PARAM_NAMES), generator=gen)
    person = torch.arange(n_ids).repeat_interleave(images_per_id)
    return SplitParams(identity=person + id_offset, person=person, latent=latent, style=style,
                       image=image, labels=labels)


# -- the judges' sampler (additive: the editors' train/test sampling above is untouched) ------------------
JUDGE_SPLITS: tuple[str, ...] = ("judge", "judge_val")
JUDGE_ID_OFFSET = 10_000_000  # judge identities never collide with train (0..) or test (n_train..) ids


def sample_judge_split(seed: int, split: str, n_ids: int, images_per_id: int) -> SplitParams:
    """Factors for the evaluators' own training (``judge``) and checking (``judge_val``) renders.

    Why a separate sampler: the editors' splits follow CelebA's correlations (no bearded women, few
    blond men), and a judge trained on them learns the correlations instead of the attribute, so
    the exact counterfactual of a correct edit is misjudged (issue 15).  Here every attribute of
    every *image* is an independent fair coin, so one person is seen with and without each attribute
    (what the identity judge needs) and every combination occurs (what the attribute judge needs).
    Identity, style and nuisance factors are drawn as in ``sample_split``.  The generator stream is
    keyed by ``split`` (``split_generator``), so these draws cannot change the editors' splits, and
    identities start at ``JUDGE_ID_OFFSET`` (+ 1,000,000 for ``judge_val``), disjoint from both.
    """
    if split not in JUDGE_SPLITS:
        raise ValueError(f"judge split must be one of {JUDGE_SPLITS}, got {split!r}")
    gen = split_generator(seed, split)
    latent = torch.rand(n_ids, len(IDENTITY_PARAM_NAMES), generator=gen)
    style = torch.rand(n_ids, len(STYLE_PARAM_NAMES), generator=gen)
    n = n_ids * images_per_id
    labels = (torch.rand(n, len(ATTRIBUTE_NAMES), generator=gen) < 0.5).float()
    image = torch.rand(n, len(IMAGE_PARAM_NAMES), generator=gen)
    person = torch.arange(n_ids).repeat_interleave(images_per_id)
    offset = JUDGE_ID_OFFSET + 1_000_000 * JUDGE_SPLITS.index(split)
    return SplitParams(identity=person + offset, person=person, latent=latent, style=style,
                       image=image, labels=labels)
