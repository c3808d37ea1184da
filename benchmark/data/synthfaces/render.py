"""Vectorised torch renderer of SynthFaces: signed distances, analytic anti-aliasing, soft shading.

Every part of a face is a 2-D signed distance field (SDF) in *face coordinates* (x right, y down,
about 1 unit = half the image at scale 1), drawn as a layer with coverage
``clamp(0.5 - sdf / pixel, 0, 1)``: an analytic box-filter edge one pixel wide.  That ramp is exactly
zero one half-pixel outside a shape, so the pixels a layer can touch are known exactly; this is what
makes the region masks and the locality of counterfactuals *provable* rather than approximate.

Shading: the skin and the hair are lit by a directional light through normals of an ellipsoid head
plus analytic Gaussian bumps (nose, cheeks, chin, brow ridge), so faces get smooth shading and a
nose that casts its side shadow wherever the light comes from.

Every layer names the attributes its geometry or colour depends on (``tags``); ``render`` can return,
per attribute, the support of the layers that depend on it.  An attribute flip changes a pixel only
where one of its layers has non-zero coverage in either state (layers above are the same in both
renderings, layers below are only seen through it), which is how ``region_masks`` are defined.

All ops are elementwise over a B×1×H×W grid: one call renders a whole batch, on any device.
"""
from __future__ import annotations

from typing import Iterable

import torch

Params = dict[str, torch.Tensor]
PERSON = "_person"  # support key of everything that is not background


# --------------------------------------------------------------------------- SDF helpers
def coverage(sdf: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Analytic anti-aliased coverage: a one-pixel linear ramp across the zero level set.

    In place on the quotient (one allocation instead of three): -(q) + 0.5 is 0.5 - q exactly.
    """
    return (sdf / px).neg_().add_(0.5).clamp_(0.0, 1.0)


def ellipse(x: torch.Tensor, y: torch.Tensor, cx, cy, a, b) -> torch.Tensor:
    """Approximate signed distance to an ellipse (first-order: f / |grad f|), good near the edge."""
    qx, qy = (x - cx) / a, (y - cy) / b
    k0 = torch.sqrt(qx * qx + qy * qy + 1e-12)
    k1 = torch.sqrt((qx / a) ** 2 + (qy / b) ** 2 + 1e-12)
    return k0 * (k0 - 1.0) / k1


def smin(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum (smooth union of two SDFs)."""
    h = (0.5 + 0.5 * (b - a) / k).clamp(0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def between(y: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """Vertical signed distance to the band top <= y <= bottom (negative inside)."""
    return torch.maximum(top - y, y - bottom)


def rounded_box(x, y, cx, cy, hw, hh, r) -> torch.Tensor:
    qx, qy = (x - cx).abs() - hw + r, (y - cy).abs() - hh + r
    outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
    return outside + torch.maximum(qx, qy).clamp(max=0) - r


# exp(z) is exactly 0.0 in float32 for z <= -104 (the smallest denormal is exp(-103.28)); Sleef's exp
# takes a slow path there (~11x the normal cost), and most of a small bump's grid lies there
EXP_ZERO_BELOW = -104.0


def gauss(x, y, cx, cy, sx, sy) -> torch.Tensor:
    """An unnormalised Gaussian bump; where it underflows to exactly 0 it is set to 0 without calling exp."""
    z = -0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2)
    live = z > EXP_ZERO_BELOW
    return torch.where(live, torch.exp(torch.where(live, z, 0.0)), 0.0)


def lerp(a, b, t):
    return a + (b - a) * t


def rgb(r: float, g: float, b: float, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor([r, g, b], dtype=like.dtype, device=like.device).view(1, 3, 1, 1)


def palette(t: torch.Tensor, stops: list[tuple[float, float, float]]) -> torch.Tensor:
    """Piecewise-linear colour ramp: t (B,) in [0, 1] -> B×3×1×1."""
    cols = torch.tensor(stops, dtype=t.dtype, device=t.device)
    pos = t.clamp(0, 1) * (len(stops) - 1)
    i0 = pos.floor().long().clamp(max=len(stops) - 2)
    w = (pos - i0.to(t.dtype)).unsqueeze(1)
    return (cols[i0] * (1 - w) + cols[i0 + 1] * w).view(-1, 3, 1, 1)


# --------------------------------------------------------------------------- canvas
class Canvas:
    """Back-to-front alpha compositing that also records each tag's support."""

    def __init__(self, background: torch.Tensor, track: bool):
        self.img = background
        self.track = track
        self.support: dict[str, torch.Tensor] = {}

    def over(self, colour: torch.Tensor, alpha: torch.Tensor, tags: Iterable[str] = (),
             person: bool = True) -> None:
        # img + (colour - img) * alpha, in place on the canvas (same ops, same order, two allocations fewer)
        self.img.add_((colour - self.img).mul_(alpha))
        if not self.track:
            return
        hit = alpha > 0
        for t in (*tags, PERSON) if person else tuple(tags):
            self.support[t] = self.support[t] | hit if t in self.support else hit


# --------------------------------------------------------------------------- geometry from factors
class Face:
    """Per-image scalars (B×1×1×1) derived from the factors; attributes enter here, once."""

    def __init__(self, p: Params, dtype: torch.dtype, device: torch.device):
        cache: dict[str, torch.Tensor] = {}

        def v(k: str) -> torch.Tensor:
            """Factor ``k`` as B×1×1×1 (converted once: layers ask for the same factors again and again)."""
            if k not in cache:
                cache[k] = p[k].to(device=device, dtype=dtype).view(-1, 1, 1, 1)
            return cache[k]

        self.v = v
        self.has = lambda k: k in p  # optional factors (``recolour``) are absent from the editors' renders
        male, young = v("Male"), v("Young")
        self.male, self.young, self.old = male, young, 1 - young
        self.W = 0.35 + 0.08 * v("face_width") + 0.03 * male
        self.Hh = 0.50 + 0.08 * v("face_length") + 0.015 * self.old
        self.cy = torch.full_like(self.W, 0.02)
        self.jaw_a = self.W * (0.70 + 0.18 * v("jaw_width") + 0.12 * male)
        self.jaw_b = self.Hh * (0.60 + 0.10 * v("chin_length") + 0.03 * male + 0.02 * self.old)
        self.eye_y = self.cy - 0.10 + 0.05 * (v("eye_height") - 0.5)
        self.ex = self.W * (0.38 + 0.12 * v("eye_spacing"))
        self.ew = 0.070 + 0.022 * v("eye_size") + 0.004 * young
        self.eh = self.ew * (0.40 + 0.08 * v("eye_size") - 0.04 * male)
        self.slant = (v("eye_slant") - 0.5) * 0.5
        self.ny = self.eye_y + 0.16 + 0.06 * v("nose_length")
        self.nw = 0.040 + 0.022 * v("nose_width") + 0.008 * male
        self.my = self.ny + 0.085 + 0.02 * v("chin_length")
        self.mw = 0.092 + 0.035 * v("lip_width") + 0.006 * male
        self.hairline = self.eye_y - 0.19 - 0.05 * male - 0.02 * self.old * male
        self.hair_len = v("hair_length") * (1 - 0.92 * male)
        self.hair_vol = v("hair_volume") * (1 - 0.8 * male) - 0.25 * male
        self.brow_y = self.eye_y - self.eh - 0.040 - 0.025 * v("brow_height") + 0.010 * male


# --------------------------------------------------------------------------- colours
SKIN_STOPS = [(0.33, 0.20, 0.14), (0.55, 0.36, 0.25), (0.75, 0.55, 0.42), (0.90, 0.72, 0.61), (0.96, 0.82, 0.73)]
HAIR_STOPS = [(0.06, 0.05, 0.05), (0.18, 0.11, 0.07), (0.33, 0.20, 0.11), (0.45, 0.27, 0.14)]
IRIS_STOPS = [(0.20, 0.11, 0.05), (0.35, 0.20, 0.08), (0.45, 0.40, 0.18), (0.30, 0.45, 0.30), (0.30, 0.45, 0.62),
              (0.45, 0.52, 0.58)]
GLASSES_STOPS = [(0.05, 0.05, 0.06), (0.30, 0.17, 0.08), (0.55, 0.55, 0.58), (0.12, 0.14, 0.25)]


# Attributes whose layer colour the judges' renders may replace by an off-palette one (``recolour``):
# the glasses frame, the fringe, the moustache and the beard (No_Beard's layer).
RECOLOUR_ATTRIBUTES: tuple[str, ...] = ("Bangs", "Eyeglasses", "Mustache", "No_Beard")
RECOLOUR_RGB: tuple[str, ...] = ("recolour_r", "recolour_g", "recolour_b")


def recolour(f: Face, attr: str, col: torch.Tensor) -> torch.Tensor:
    """``col`` blended towards the image's ``recolour_r/g/b`` by its optional factor ``recolour_<attr>``.

    Why: SaGAN "removed" glasses by painting the frames gold, and a judge that saw only the palette's
    four frame colours read gold frames as no glasses (docs/metrics.md).  The judges' renders
    (``evaluators/judge_data.py``) therefore draw some attributes in colours this renderer never picks,
    labelled present: the attribute is its shape, not its colour.  Without the factor (every editor's
    split, every dataset image) ``col`` is returned untouched, so those renders are bit-identical.
    """
    key = f"recolour_{attr}"
    if not f.has(key):
        return col
    target = torch.cat([f.v(k) for k in RECOLOUR_RGB], dim=1)
    return lerp(col, target, f.v(key))


def skin_colour(f: Face) -> torch.Tensor:
    v = f.v
    base = palette(v("skin_tone").flatten(), SKIN_STOPS)
    base = base + (v("skin_warmth") - 0.5) * 0.08 * rgb(1.0, 0.1, -0.8, base)
    pale = rgb(0.97, 0.89, 0.85, base)
    base = lerp(base, pale, 0.72 * v("Pale_Skin"))
    grey = base.mean(dim=1, keepdim=True)
    base = lerp(base, grey, 0.18 * f.old) * (1 - 0.05 * f.old) * (1 - 0.03 * f.male)
    return base.clamp(0, 1)


def hair_colour(f: Face) -> torch.Tensor:
    v = f.v
    dark = v("hair_darkness")
    natural = palette((v("hair_hue") * (1 - 0.8 * dark)).flatten(), HAIR_STOPS)
    blond = lerp(rgb(0.93, 0.80, 0.52, dark), rgb(0.70, 0.53, 0.30, dark), dark)
    col = lerp(natural, blond, v("Blond_Hair"))
    grey_level = 0.35 + 0.55 * v("grey_amount")
    return lerp(col, rgb(0.78, 0.77, 0.76, col), grey_level * f.old)


# --------------------------------------------------------------------------- shading
def head_normal(x, y, f: Face):
    """Normal of the head ellipsoid, perturbed by Gaussian bumps (nose, cheeks, chin, brow ridge)."""
    a, b, d = f.W * 1.08, f.Hh * 1.05, f.W * 0.9
    nx, ny = x / a ** 2, (y - f.cy) / b ** 2
    zz = (1 - (x / a) ** 2 - ((y - f.cy) / b) ** 2).clamp(min=0.02)
    nz = torch.sqrt(zz) / d
    gx = torch.zeros_like(x)
    gy = torch.zeros_like(y)
    ridge_top = f.eye_y - 0.01
    bumps = [  # (cx, cy, sx, sy, height): nose tip, nose ridge, cheeks, chin, brow ridge
        (0.0, f.ny - 0.015, f.nw * 0.75, f.nw * 0.65, 0.045),
        (0.0, (ridge_top + f.ny) / 2, f.nw * 0.35, (f.ny - ridge_top) / 2, 0.03),
        (f.ex, f.eye_y + 0.12, 0.07, 0.06, 0.025), (-f.ex, f.eye_y + 0.12, 0.07, 0.06, 0.025),
        (0.0, f.cy + 0.12 + f.jaw_b * 0.85, 0.07, 0.04, 0.02),
        (f.ex, f.brow_y + 0.01, 0.07, 0.02, 0.012 + 0.01 * f.male),
        (-f.ex, f.brow_y + 0.01, 0.07, 0.02, 0.012 + 0.01 * f.male),
        (f.ex, f.eye_y, f.ew * 0.8, f.eh * 1.6, -0.012), (-f.ex, f.eye_y, f.ew * 0.8, f.eh * 1.6, -0.012),
    ]
    for cx, cy, sx, sy, h in bumps:
        g = h * gauss(x, y, cx, cy, sx, sy)
        gx = gx - g * (x - cx) / sx ** 2
        gy = gy - g * (y - cy) / sy ** 2
    nx = nx / nz - gx  # slopes of head + bumps; the normal is (-dz/dx, -dz/dy, 1) normalised
    ny = ny / nz - gy
    n = torch.rsqrt(nx ** 2 + ny ** 2 + 1.0)
    return nx * n, ny * n, n


def light_dir(f: Face):
    az = (f.v("light_azimuth") - 0.5) * 1.4
    el = 0.15 + 0.45 * f.v("light_elevation")
    return torch.sin(az) * torch.cos(el), -torch.sin(el), torch.cos(az) * torch.cos(el)


def shade(nx, ny, nz, f: Face, ambient: float = 0.42, diffuse: float = 0.68) -> torch.Tensor:
    lx, ly, lz = light_dir(f)
    strength = 0.8 + 0.35 * f.v("light_strength")
    lam = (nx * lx + ny * ly + nz * lz).clamp(min=0)
    return ambient + diffuse * strength * lam


# --------------------------------------------------------------------------- layers
def face_sdf(x, y, f: Face) -> torch.Tensor:
    upper = ellipse(x, y, 0.0, f.cy - 0.05, f.W, f.Hh * 0.85)
    lower = ellipse(x, y, 0.0, f.cy + 0.12, f.jaw_a, f.jaw_b)
    return smin(upper, lower, 0.08)


def strands(x, y, f: Face, freq: float = 60.0) -> torch.Tensor:
    """Hair strand texture: wavy stripes along the hair flow."""
    ph = f.v("hair_part") * 6.28
    t = x * freq + 2.0 * torch.sin(y * 7.0 + ph)
    return 1.0 + 0.10 * torch.sin(t + ph) + 0.06 * torch.sin(2.3 * t + 1.7 * ph) - 0.04


def draw_background(X, Y, f: Face) -> torch.Tensor:
    hue = f.v("bg_hue") * 6.2832
    ph = torch.tensor([0.0, 2.094, 4.189], dtype=X.dtype, device=X.device).view(1, 3, 1, 1)
    col = 0.55 + 0.22 * torch.cos(hue + ph)
    val = 0.45 + 0.45 * f.v("bg_value")
    vign = 1.08 - 0.18 * (X ** 2 + Y ** 2) - 0.06 * Y
    return (col * val * vign).clamp(0, 1)


def draw_hair_back(cv: Canvas, x, y, f: Face, hair: torch.Tensor, px) -> None:
    top = f.cy - 0.12
    bottom = f.eye_y + 0.12 + 1.0 * f.hair_len
    hw = f.W * (1.10 + 0.22 * f.hair_vol) + 0.10 * (y - top).clamp(min=0) * f.hair_len
    box = rounded_box(x, y, 0.0, (top + bottom) / 2, hw, (bottom - top) / 2, 0.10)
    cap = ellipse(x, y, 0.0, f.cy - 0.12, f.W * (1.08 + 0.14 * f.hair_vol), f.Hh * (0.92 + 0.10 * f.hair_vol))
    sdf = torch.minimum(box, cap)
    nx, ny = x / (f.W * 1.6), (y - f.cy) / 1.2
    lit = shade(nx, ny, torch.sqrt((1 - nx ** 2 - ny ** 2).clamp(min=0.05)), f, 0.35, 0.55)
    cv.over((hair * strands(x, y, f) * lit * 0.85).clamp(0, 1), coverage(sdf, px), ("Male", "Young", "Blond_Hair"))


def draw_body(cv: Canvas, x, y, f: Face, skin: torch.Tensor, px) -> None:
    v = f.v
    hue = v("shirt_hue") * 6.2832
    ph = torch.tensor([0.0, 2.094, 4.189], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    shirt = (0.45 + 0.35 * torch.cos(hue + ph)) * (0.35 + 0.6 * v("shirt_value"))
    neck_w = f.W * (0.40 + 0.10 * f.male)
    neck = rounded_box(x, y, 0.0, f.cy + 0.75, neck_w, 0.55, 0.02)
    chin_y = f.cy + 0.12 + f.jaw_b
    neck_shadow = 1 - 0.55 * gauss(x, y, 0.0, chin_y + 0.01, neck_w * 1.4, 0.06)
    lx, _, _ = light_dir(f)
    neck_lit = (0.66 + 0.15 * lx * x / neck_w) * neck_shadow
    cv.over(skin * neck_lit, coverage(neck, px), ("Male", "Young", "Pale_Skin"))
    torso = ellipse(x, y, 0.0, f.cy + 1.26, 0.92 + 0.16 * f.male, 0.52)
    collar = ellipse(x, y, 0.0, f.cy + 0.74, neck_w * 1.15, 0.10)
    body = torch.maximum(torso, -collar)
    cv.over(shirt * (1.0 - 0.25 * (y - 0.8).clamp(0, 1)), coverage(body, px), ("Male",))


def draw_ears(cv: Canvas, x, y, f: Face, skin, lit, px) -> None:
    a = 0.045 + 0.02 * f.v("ear_size")
    b = 0.085 + 0.03 * f.v("ear_size")
    ecx, ecy = f.W * 0.96, f.eye_y + 0.07
    ax = x.abs()
    ear = ellipse(ax, y, ecx, ecy, a, b)
    inner = gauss(ax, y, ecx + a * 0.1, ecy, a * 0.45, b * 0.5)
    col = skin * lit * (0.92 - 0.25 * inner)
    cv.over(col, coverage(ear, px), ("Male", "Young", "Pale_Skin"))


def draw_face(cv: Canvas, x, y, f: Face, skin, lit, px) -> torch.Tensor:
    sdf = face_sdf(x, y, f)
    cheeks = gauss(x.abs(), y, f.ex * 1.05, f.eye_y + 0.14, 0.06, 0.045)
    col = skin * lit + 0.05 * cheeks * (1 - 0.5 * f.male) * rgb(1.0, -0.4, -0.3, skin)
    cv.over(col.clamp(0, 1), coverage(sdf, px), ("Male", "Young", "Pale_Skin"))
    return sdf


def line_band(y, curve, slope, half):
    return ((y - curve).abs() - half) / (1 + slope ** 2) ** 0.5


def draw_wrinkles(cv: Canvas, x, y, f: Face, skin, lit, px) -> None:
    """Age lines (Young = 0): forehead, crow's feet, nasolabial folds, under-eye bags."""
    dark = skin * lit * 0.62
    strength = f.old * (0.45 + 0.3 * f.v("grey_amount"))
    thin = 0.0035  # lines thinner than a pixel stay faint through the coverage ramp
    sdfs = []
    for k in range(3):
        cyk = f.hairline + 0.055 + 0.032 * k
        band = line_band(y, cyk + 0.25 * x ** 2, 0.5 * x, thin)
        sdfs.append(torch.maximum(band, x.abs() - f.W * (0.42 - 0.06 * k)))
    ax = x.abs()
    # nasolabial folds: from the nose wing down and out past the mouth corner
    t = ((y - f.ny + 0.01) / (f.my + 0.03 - f.ny + 0.01)).clamp(0, 1)
    xf = f.nw * 1.5 + (f.mw + 0.02 - f.nw * 1.5) * t
    fold = torch.maximum((ax - xf).abs() - thin, torch.maximum(f.ny - 0.01 - y, y - f.my - 0.03))
    sdfs.append(fold)
    # crow's feet
    cx0 = f.ex + f.ew * 1.15
    for k in (-1, 0, 1):
        slope = 0.45 * k
        band = line_band(y, f.eye_y + slope * (ax - cx0), slope, thin)
        sdfs.append(torch.maximum(band, (ax - cx0 - 0.025).abs() - 0.025))
    # under-eye bags
    u = (ax - f.ex) / (f.ew * 0.9)
    bag = line_band(y, f.eye_y + f.eh * 1.9 - 0.012 * (1 - u ** 2), 0.0, thin)
    sdfs.append(torch.maximum(bag, u.abs() - 1))
    sdf = sdfs[0]
    for other in sdfs[1:]:  # the running minimum: amin over a stack, without the 11-deep copy
        sdf = torch.minimum(sdf, other)
    inside_face = (face_sdf(x, y, f) < -px).to(x.dtype)
    cv.over(dark, coverage(sdf, px) * strength * inside_face, ("Young",))


def draw_eyes(cv: Canvas, x, y, f: Face, lit, px) -> None:
    ax = x.abs()
    u = (ax - f.ex) / f.ew
    yy = y - f.eye_y + f.slant * u * f.ew * 0.6
    prof = (1 - u ** 2)
    almond = (yy.abs() - f.eh * prof) / torch.sqrt(1 + (2 * f.eh * u / f.ew) ** 2)
    a_eye = coverage(almond, px)
    cv.over(rgb(0.94, 0.92, 0.89, x) * lit.clamp(max=1.05) * 0.97, a_eye, ("Male", "Young"))
    gx = (f.v("gaze_x") - 0.5) * f.ew * 0.5
    gy = (f.v("gaze_y") - 0.5) * f.eh * 0.4
    lx = x - torch.sign(x) * f.ex - gx
    ly = y - f.eye_y - gy
    ri = f.eh * 1.05
    iris_col = palette(f.v("iris_hue").flatten(), IRIS_STOPS) * (1 - 0.4 * f.v("iris_darkness"))
    r = torch.sqrt(lx ** 2 + ly ** 2)
    ring = 0.75 + 0.35 * (r / ri).clamp(max=1)  # darker limbal ring, lighter centre falloff
    cv.over(iris_col * (1.6 - ring * 0.8), coverage(r - ri, px) * a_eye, ("Male", "Young"))
    cv.over(rgb(0.03, 0.02, 0.02, x), coverage(r - ri * 0.45, px) * a_eye, ("Male", "Young"))
    lxd, lyd, _ = light_dir(f)
    hl = torch.sqrt((lx - lxd * ri * 0.5) ** 2 + (ly + ri * 0.35) ** 2) - ri * 0.18
    cv.over(rgb(1.0, 1.0, 1.0, x), coverage(hl, px) * a_eye * 0.9, ("Male", "Young"))
    # upper lid and lashes (thicker for women), faint lower lid
    lash = 0.006 + 0.004 * (1 - f.male)
    upper = torch.maximum(line_band(yy, -f.eh * prof - lash * 0.6, -2 * f.eh * u / f.ew, lash),
                          u.abs() - 1.08)
    cv.over(rgb(0.10, 0.07, 0.06, x), coverage(upper, px), ("Male", "Young"))
    crease = torch.maximum(line_band(yy, -f.eh * prof * 1.5 - 0.018, 0.0, 0.0025), u.abs() - 0.85)
    cv.over(rgb(0.0, 0.0, 0.0, x), coverage(crease, px) * 0.18, ("Male", "Young"))


def draw_brows(cv: Canvas, x, y, f: Face, hair, px) -> None:
    v = f.v
    ax = x.abs()
    bw = f.ew * 1.30
    ub = (ax - f.ex * 1.03) / bw
    arch = 0.012 + 0.022 * v("brow_arch") - 0.010 * f.male
    curve = f.brow_y - arch * (1 - ub ** 2)
    thick = (0.008 + 0.008 * v("brow_thickness") + 0.006 * f.male) * (1.15 - 0.45 * (ub + 1) / 2)
    sdf = torch.maximum(line_band(y, curve, 2 * arch * ub / bw, thick), (ub.abs() - 1) * bw)
    col = hair * 0.75 + 0.04
    cv.over(col, coverage(sdf, px) * 0.92, ("Male", "Young", "Blond_Hair"))


def draw_nose(cv: Canvas, x, y, f: Face, skin, lit, px) -> None:
    ax = x.abs()
    nostril = ellipse(ax, y, f.nw * 0.48, f.ny + 0.010, f.nw * 0.30, f.nw * 0.16)
    cv.over(skin * lit * 0.35, coverage(nostril, px) * 0.85, ("Male", "Young", "Pale_Skin"))
    ala = torch.maximum(line_band(ax, f.nw * 0.95, 0.0, 0.003),
                        (y - f.ny + 0.005).abs() - 0.022)
    cv.over(skin * lit * 0.6, coverage(ala, px) * 0.35, ("Male", "Young", "Pale_Skin"))


def draw_beard(cv: Canvas, x, y, f: Face, hair, face, px) -> None:
    full = f.v("beard_fullness")
    ax = x.abs()
    cut = f.ny + 0.03 - 0.30 * (ax / f.W) ** 2
    region = torch.maximum(face - 0.012 * full, cut - y)
    region = torch.maximum(region, f.eye_y + 0.06 - y)
    stipple = 0.88 + 0.12 * torch.sin(x * 90.0 + 3.0 * torch.sin(y * 40.0)) * torch.sin(y * 70.0 + x * 20.0)
    alpha = coverage(region, px) * (0.55 + 0.4 * full) * stipple * (1 - f.v("No_Beard"))
    cv.over(recolour(f, "No_Beard", hair) * 0.8, alpha, ("No_Beard",))


def mouth_shape(x, y, f: Face) -> dict[str, torch.Tensor]:
    """Mouth geometry (SDFs) for the current Smiling / Mouth_Slightly_Open state.

    Sizes are chosen to read at 64 px, where one pixel is ~0.026 face units: a smile widens the
    mouth by ~30 % (1-1.5 px per side), lifts the corners ~2 px and parts the lips on a band of
    teeth (most CelebA smiles show teeth); an open mouth adds a dark gap of 2-3 px, almost all of it
    by dropping the lower lip (the jaw opens).  ``es`` tapers every band towards the corners.
    """
    v = f.v
    sm = v("Smiling") * (0.8 + 0.4 * v("smile_size"))
    mw = f.mw * (1 + 0.30 * sm)
    u = x / mw
    es = torch.sqrt((1 - u ** 2).clamp(min=0))
    yc = f.my - 0.050 * sm * u ** 2 + 0.012 * sm
    teeth = 0.040 * sm  # height of the teeth band at the centre
    gap = v("Mouth_Slightly_Open") * (0.075 + 0.025 * v("expression_jitter"))
    # an opening mouth is mostly the jaw dropping: the upper lip (and a mustache above it) barely moves
    top = yc - (0.25 * teeth + 0.15 * gap) * es
    bottom = yc + (0.75 * teeth + 0.85 * gap) * es
    tu = (0.024 + 0.014 * v("lip_fullness") - 0.005 * f.male) * (1 - 0.2 * sm)
    bow = 1 - 0.3 * torch.exp(-(u / 0.18) ** 2)
    outside = (u.abs() - 1) * mw
    band = lambda a, b: torch.maximum(between(y, a, b), outside)  # noqa: E731
    # upper teeth hang from the top of the opening: the whole band in a closed smile, a sliver when open
    teeth_bottom = top + (teeth + 0.2 * gap) * es
    return {
        "opening": band(top, bottom),
        "teeth": torch.maximum(band(top, teeth_bottom), u.abs() - 0.85),
        "upper": band(top - tu * es * bow, top),
        "lower": band(bottom, bottom + 1.3 * tu * es),
        "line": torch.maximum((y - yc).abs() - 0.004, outside),
        "mw": mw, "yc": yc,
    }


def draw_mouth(cv: Canvas, x, y, f: Face, skin, lit, face, px) -> None:
    """Lips, opening, teeth, raised cheeks, smile folds: everything Smiling / Mouth_Slightly_Open may move.

    Drawn after the beard and the mustache, so facial hair never hides the lips.
    """
    v = f.v
    tags = ("Smiling", "Mouth_Slightly_Open", "Male", "Young", "Pale_Skin")
    smile_tags = ("Smiling", "Male", "Young", "Pale_Skin")  # cheeks, folds, dimples: not the opening
    smiling = v("Smiling")
    m = mouth_shape(x, y, f)
    inside_face = (face < -px).to(x.dtype)
    # raised cheek apples: a compact highlight (exactly zero outside its ellipse) under each eye
    r2 = ((x.abs() - f.ex * 0.95) / 0.095) ** 2 + ((y - f.eye_y - 0.16) / 0.065) ** 2
    apple = (1 - r2).clamp(min=0) ** 2 * inside_face
    cheek_col = (skin * lit * 1.15 + 0.06 * rgb(1.0, -0.3, -0.3, skin)).clamp(0, 1)
    cv.over(cheek_col, apple * 0.6 * smiling, smile_tags)
    # smile folds: from beside the nose wing, bowing out past the mouth corners
    ax = x.abs()
    t = ((y - f.ny) / (f.my + 0.04 - f.ny)).clamp(0, 1)
    xf = f.nw * 1.6 + (m["mw"] + 0.035 - f.nw * 1.6) * torch.sin(t * 1.5708)
    fold = torch.maximum((ax - xf).abs() - 0.008, torch.maximum(f.ny - y, y - f.my - 0.04))
    cv.over(skin * lit * 0.68, coverage(fold, px) * 0.7 * smiling * inside_face, smile_tags)
    lip_col = lerp(skin, palette(v("lip_colour").flatten(), [(0.62, 0.30, 0.30), (0.72, 0.32, 0.35),
                                                            (0.78, 0.25, 0.28)]), 0.85 - 0.25 * f.male) * 0.92
    cv.over(rgb(0.16, 0.04, 0.04, x), coverage(m["opening"], px), tags)
    cv.over(rgb(0.95, 0.93, 0.88, x) * lit.clamp(max=1.0), coverage(m["teeth"], px), tags)
    cv.over(lip_col * lit * 0.88, coverage(m["upper"], px), tags)
    cv.over(lip_col * lit * 1.05, coverage(m["lower"], px), tags)
    cv.over(lip_col * 0.4, coverage(m["line"], px) * 0.8, tags)
    # dimples at the corners of a smile
    corner = ellipse(ax, y, m["mw"] + 0.006, m["yc"], 0.010, 0.014)
    cv.over(skin * lit * 0.55, coverage(corner, px) * 0.8 * smiling, smile_tags)


def draw_mustache(cv: Canvas, x, y, f: Face, hair, px) -> None:
    """Above the (resting) upper lip; drawn before the mouth, so it never covers the lips."""
    u = x / (f.mw * 1.12)
    top = f.ny + 0.012 + 0.012 * u ** 2
    bottom = f.my - 0.004 + 0.030 * u ** 2
    sdf = torch.maximum(between(y, top, bottom), (u.abs() - 1) * f.mw)
    tex = 0.85 + 0.15 * torch.sin(x * 300.0 + 40.0 * y)
    cv.over(recolour(f, "Mustache", hair) * 0.72 * tex, coverage(sdf, px) * 0.95 * f.v("Mustache"), ("Mustache",))


def hair_window(x, y, f: Face, face) -> torch.Tensor:
    """The part of the face that the hair leaves bare (SDF): face below the hairline."""
    hl = f.hairline + 0.55 * x ** 2 + 0.03 * torch.sin(x * 9 + f.v("hair_part") * 6.28)
    return torch.maximum(face, hl - y)


def draw_hair_front(cv: Canvas, x, y, f: Face, hair, face, px) -> None:
    cap = ellipse(x, y, 0.0, f.cy - 0.12, f.W * (1.06 + 0.14 * f.hair_vol), f.Hh * (0.90 + 0.10 * f.hair_vol))
    side_cut = f.eye_y + 0.01 + 0.30 * f.hair_len
    sdf = torch.maximum(torch.maximum(cap, -hair_window(x, y, f, face)), y - side_cut)
    nx, ny = x / (f.W * 1.3), (y - f.cy + 0.1) / (f.Hh * 1.1)
    lit = shade(nx, ny, torch.sqrt((1 - nx ** 2 - ny ** 2).clamp(min=0.05)), f, 0.38, 0.6)
    part = f.W * (f.v("hair_part") - 0.5) * 0.8
    flow = torch.sign(x - part) * (y - f.hairline)
    cv.over((hair * strands(x + flow * 0.4, y, f) * lit).clamp(0, 1), coverage(sdf, px),
            ("Male", "Young", "Blond_Hair"))


def draw_bangs(cv: Canvas, x, y, f: Face, hair, face, px) -> None:
    ph = f.v("hair_part") * 6.28
    bottom = f.brow_y - 0.012 + 0.010 * torch.sin(x * 60 + ph) + 0.012 * x ** 2
    sdf = torch.maximum(torch.maximum(face + 0.004, y - bottom), f.hairline - 0.08 - y)
    nx, ny = x / (f.W * 1.3), (y - f.cy + 0.1) / (f.Hh * 1.1)
    lit = shade(nx, ny, torch.sqrt((1 - nx ** 2 - ny ** 2).clamp(min=0.05)), f, 0.38, 0.6)
    tip = 1 - 0.25 * ((y - bottom + 0.05) / 0.05).clamp(0, 1)
    cv.over((recolour(f, "Bangs", hair) * strands(x, y * 0.2, f, 80.0) * lit * tip).clamp(0, 1), coverage(sdf, px) * f.v("Bangs"), ("Bangs",))


def draw_glasses(cv: Canvas, x, y, f: Face, px) -> None:
    v = f.v
    on = v("Eyeglasses")
    n = 2.2 + 3.0 * v("glasses_shape")
    a, b = f.ew * 1.55, f.ew * (0.95 + 0.2 * v("glasses_shape"))
    gy = f.eye_y + 0.006
    lx = (x.abs() - f.ex) / a
    ly = (y - gy) / b
    lens = ((lx.abs() + 1e-6) ** n + (ly.abs() + 1e-6) ** n) ** (1 / n) - 1
    lens = lens * torch.minimum(a, b)
    frame_t = 0.006 + 0.003 * v("glasses_colour")
    col = recolour(f, "Eyeglasses", palette(v("glasses_colour").flatten(), GLASSES_STOPS))
    cv.over(rgb(0.75, 0.82, 0.88, x), coverage(lens, px) * 0.16 * on, ("Eyeglasses",))
    bridge = torch.maximum((y - gy + b * 0.25).abs() - frame_t * 0.8, x.abs() - (f.ex - a * 0.9))
    arms = torch.maximum((y - gy + b * 0.3).abs() - frame_t * 0.7,
                         torch.maximum(f.ex + a * 0.9 - x.abs(), x.abs() - f.W * 1.02))
    sdf = torch.minimum(torch.minimum(lens.abs() - frame_t, bridge), arms)
    cv.over(col, coverage(sdf, px) * on, ("Eyeglasses",))
    glint = torch.maximum(lens + b * 0.35, (lx + ly + 0.5).abs() * a - 0.008)
    cv.over(rgb(1.0, 1.0, 1.0, x), coverage(glint, px) * 0.35 * on, ("Eyeglasses",))


# --------------------------------------------------------------------------- entry point
def pixel_grid(batch: int, resolution: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    lin = (torch.arange(resolution, dtype=dtype, device=device) + 0.5) / resolution * 2 - 1
    Y, X = torch.meshgrid(lin, lin, indexing="ij")
    return X.expand(batch, 1, resolution, resolution), Y.expand(batch, 1, resolution, resolution)


def render(p: Params, resolution: int, device: torch.device | str = "cpu", track: bool = False,
           dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render a batch.  Returns (B×3×H×W image in [-1, 1], quantised to 8 bits; tag -> B×1×H×W bool support).

    The 8-bit quantisation makes the rendered image *the* image (as a PNG would be), so a
    counterfactual with the current label is bit-identical to the dataset image.
    """
    device = torch.device(device)
    f = Face(p, dtype, device)
    B = f.W.shape[0]
    X, Y = pixel_grid(B, resolution, dtype, device)
    s = 1.12 + 0.16 * f.v("scale")
    rot = (f.v("rotation") - 0.5) * 0.22
    dx = X - (f.v("shift_x") - 0.5) * 0.12
    dy = Y - (f.v("shift_y") - 0.5) * 0.10 + 0.02
    c, si = torch.cos(rot), torch.sin(rot)
    x = (c * dx + si * dy) / s
    y = (-si * dx + c * dy) / s
    px = (2.0 / resolution) / s

    cv = Canvas(draw_background(X, Y, f), track)
    skin, hair = skin_colour(f), hair_colour(f)
    nx, ny, nz = head_normal(x, y, f)
    lit = shade(nx, ny, nz, f)
    draw_hair_back(cv, x, y, f, hair, px)
    draw_body(cv, x, y, f, skin, px)
    draw_ears(cv, x, y, f, skin, lit, px)
    face = draw_face(cv, x, y, f, skin, lit, px)
    draw_wrinkles(cv, x, y, f, skin, lit, px)
    draw_nose(cv, x, y, f, skin, lit, px)
    draw_eyes(cv, x, y, f, lit, px)
    draw_brows(cv, x, y, f, hair, px)
    draw_beard(cv, x, y, f, hair, face, px)
    draw_mustache(cv, x, y, f, hair, px)
    draw_mouth(cv, x, y, f, skin, lit, face, px)
    draw_hair_front(cv, x, y, f, hair, face, px)
    draw_bangs(cv, x, y, f, hair, face, px)
    draw_glasses(cv, x, y, f, px)
    img = (cv.img.clamp(0, 1) * 255).round() / 127.5 - 1
    return img, cv.support

