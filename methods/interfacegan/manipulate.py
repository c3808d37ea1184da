"""Moving latent codes along boundary normals: the official interpolation, the benchmark's edit, conditional normals.

Facts from genforce/interfacegan ``utils/manipulator.py`` and ``edit.py`` (commit 8da3fc0):

* ``linear_interpolate``: a Z or W code (1×D) is moved so that its signed distance to the
  hyperplane through the origin, zᵀn, takes each value of linspace(−3, 3, 10):
  z' = z + (d − zᵀn)·n.  A W+ code (1×L×D) is instead *shifted* by d·n on every layer,
  without subtracting its current distance.  −3 … 3 is the range of ``edit.py``.
* ``project_boundary``: one condition n₁ − (n₁ᵀn₂)n₂; two conditions the closed form
  with α, β (and genforce's 1e-8 in the denominator); more conditions the projection off
  their span (genforce solves the normal equations; here least squares, which also copes
  with nearly dependent conditions); the result is renormalised.  The conditional files
  shipped with InterFaceGAN (``*_c_*_boundary.npy``) are exactly these projections
  (asserted in the tests).

The benchmark's edit (``edit_latent``), with ``s = strength`` and the target distance
``d_t = +3`` for target 1 and ``−3`` for target 0 (``max_distance``, the official range):

* Z, W (``mode="absolute"``, the default for 2-D codes): z' = z + s·(d_t − zᵀn)·n, i.e.
  z' = z + (d − zᵀn)·n with d = (1 − s)·zᵀn + s·d_t.  Strength 1 lands exactly at d_t (the
  official end points), strength 0 leaves the code unchanged, 0 < s < 1 goes part of the
  way, s > 1 overshoots.
* W+ (``mode="relative"``, the default for 3-D codes, as genforce treats W+):
  w'_l = w_l + s·d_t·n on every layer l (or on ``layers``).  ``mode="absolute"`` moves each
  chosen layer to distance d on its own instead.

All functions accept torch tensors or numpy arrays and return the type of the code (the
normal is cast to the code's dtype and device); normals are normalised before use.
"""
from __future__ import annotations

from typing import Any, Iterable, Literal

import numpy as np
import torch

__all__ = ["MAX_DISTANCE", "signed_distance", "target_distance", "move_to_distance", "shift_along",
           "edit_latent", "linear_interpolate", "project_boundary"]

MAX_DISTANCE = 3.0  # edit.py: --start_distance -3.0, --end_distance 3.0
Layers = Iterable[int] | slice | None


def _tensor(x: Any, like: torch.Tensor | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    if like is not None:
        return t.to(device=like.device, dtype=like.dtype)
    return t.to(dtype) if dtype is not None else t


def _back(result: torch.Tensor, original: Any) -> Any:
    """Return numpy when the code came as numpy (in its dtype), else the tensor."""
    if isinstance(original, np.ndarray):
        return result.detach().cpu().numpy().astype(original.dtype, copy=False)
    return result


def _unit_normal(normal: Any, like: torch.Tensor) -> torch.Tensor:
    n = _tensor(normal, like).reshape(-1)
    if n.shape[0] != like.shape[-1]:
        raise ValueError(f"the normal has {n.shape[0]} entries but the codes have dimension {like.shape[-1]}")
    norm = n.norm()
    if not torch.isfinite(norm) or norm <= 0:
        raise ValueError("the normal must be a finite non-zero vector")
    return n / norm


def _layer_mask(codes: torch.Tensor, layers: Layers) -> torch.Tensor:
    """A (1, L, 1) 0/1 mask of the W+ rows to edit; all rows when ``layers`` is None."""
    num = codes.shape[1]
    mask = torch.zeros(num, dtype=codes.dtype, device=codes.device)
    if layers is None:
        mask[:] = 1
    elif isinstance(layers, slice):
        mask[layers] = 1
    else:
        idx = [int(i) for i in layers]
        bad = [i for i in idx if not 0 <= i < num]
        if bad:
            raise ValueError(f"layers {bad} are out of range for W+ codes with {num} layers")
        mask[idx] = 1
    return mask.view(1, num, 1)


def _check_codes(codes: torch.Tensor) -> None:
    if codes.dim() not in (2, 3):
        raise ValueError(f"codes must be [batch, dim] (Z, W) or [batch, layers, dim] (W+), got {tuple(codes.shape)}")


def signed_distance(codes: Any, normal: Any) -> Any:
    """zᵀn per code: shape (B,) for Z/W codes, (B, L) for W+ codes (n normalised first)."""
    c = _tensor(codes)
    _check_codes(c)
    return _back(c @ _unit_normal(normal, c), codes)


def target_distance(target: Any, max_distance: float = MAX_DISTANCE) -> torch.Tensor:
    """d_t per image: +max_distance where target is 1, −max_distance where it is 0 (float tensor)."""
    t = _tensor(target, dtype=torch.float64).reshape(-1)
    if not ((t == 0) | (t == 1)).all():
        raise ValueError(f"targets must be 0 or 1, got {t.unique().tolist()}")
    return (2 * t - 1) * max_distance


def _per_sample(values: Any, codes: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) distance as a (B, 1[, 1]) tensor broadcasting against ``codes``."""
    d = _tensor(values, codes).reshape(-1)
    if d.numel() == 1:
        d = d.expand(codes.shape[0])
    if d.shape[0] != codes.shape[0]:
        raise ValueError(f"got {d.shape[0]} distances for {codes.shape[0]} codes")
    return d.view(-1, *([1] * (codes.dim() - 1)))


def move_to_distance(codes: Any, normal: Any, distance: Any, layers: Layers = None) -> Any:
    """z' = z + (d − zᵀn)·n: every code (each chosen W+ layer on its own) ends at signed distance d."""
    c = _tensor(codes)
    _check_codes(c)
    n = _unit_normal(normal, c)
    step = (_per_sample(distance, c) - (c @ n).unsqueeze(-1)) * n
    if c.dim() == 3:
        step = step * _layer_mask(c, layers)
    return _back(c + step, codes)


def shift_along(codes: Any, normal: Any, distance: Any, layers: Layers = None) -> Any:
    """z' = z + d·n (on the chosen W+ layers): genforce's W+ manipulation."""
    c = _tensor(codes)
    _check_codes(c)
    step = _per_sample(distance, c) * _unit_normal(normal, c)
    if c.dim() == 3:
        step = step * _layer_mask(c, layers)
    return _back(c + step, codes)


def edit_latent(codes: Any, normal: Any, target: Any, strength: float = 1.0, max_distance: float = MAX_DISTANCE,
                mode: Literal["absolute", "relative"] | None = None, layers: Layers = None) -> Any:
    """The benchmark's InterFaceGAN edit (see the module docstring for the mapping of target and strength).

    ``codes`` B×D (Z or W) or B×L×D (W+); ``normal`` 1×D or D (towards the attribute);
    ``target`` (B,) or a scalar of 0/1.  ``mode`` None picks genforce's behaviour per space:
    absolute for 2-D codes, relative for W+.  Strength 0 returns the codes unchanged.
    """
    c = _tensor(codes)
    _check_codes(c)
    mode = mode or ("absolute" if c.dim() == 2 else "relative")
    if mode not in ("absolute", "relative"):
        raise ValueError(f"mode must be 'absolute' or 'relative', got {mode!r}")
    d_t = _per_sample(target_distance(target, max_distance), c)
    n = _unit_normal(normal, c)
    if mode == "relative":
        step = strength * d_t * n
    else:
        step = strength * (d_t - (c @ n).unsqueeze(-1)) * n
    if c.dim() == 3:
        step = step * _layer_mask(c, layers)
    return _back(c + step, codes)


def linear_interpolate(latent_code: Any, boundary: Any, start_distance: float = -MAX_DISTANCE,
                       end_distance: float = MAX_DISTANCE, steps: int = 10) -> Any:
    """genforce's ``linear_interpolate``: ``steps`` codes from one 1×D (moved to each distance) or
    1×L×D code (shifted by each distance on every layer); returns steps×D or steps×L×D."""
    c = _tensor(latent_code)
    if c.dim() not in (2, 3) or c.shape[0] != 1:
        raise ValueError(f"linear_interpolate takes one code, [1, dim] or [1, layers, dim]; got {tuple(c.shape)}")
    d = torch.linspace(start_distance, end_distance, steps, dtype=torch.float64).to(c)
    reps = c.expand(steps, *c.shape[1:])
    out = move_to_distance(reps, boundary, d) if c.dim() == 2 else shift_along(reps, boundary, d)
    return _back(out, latent_code)


def project_boundary(primal: Any, *conditions: Any) -> Any:
    """The unit direction that moves ``primal``'s attribute while keeping each condition's distance fixed.

    One condition: n₁ − (n₁ᵀn₂)n₂; two: genforce's closed form; three or more: least-squares
    projection off the conditions' span.  Inputs are 1×D (or D) normals, normalised first;
    the result is 1×D in the primal's type (float64 for numpy).  Raises ValueError when the
    primal lies in the conditions' span.
    """
    p = _tensor(primal, dtype=torch.float64).reshape(1, -1)
    p = p / p.norm()
    conds = [_tensor(c, like=p).reshape(1, -1) for c in conditions]  # float64 on the primal's device
    for i, c in enumerate(conds):
        if c.shape[1] != p.shape[1]:
            raise ValueError(f"condition {i} has dimension {c.shape[1]}, the primal {p.shape[1]}")
    conds = [c / c.norm() for c in conds]
    if not conds:
        new = p
    elif len(conds) == 1:
        (c1,) = conds
        new = p - (p @ c1.T) * c1
    elif len(conds) == 2:
        c1, c2 = conds
        p1, p2, c12 = p @ c1.T, p @ c2.T, c1 @ c2.T
        alpha = (p1 - p2 * c12) / (1 - c12 ** 2 + 1e-8)  # genforce's closed form, 1e-8 included
        beta = (p2 - p1 * c12) / (1 - c12 ** 2 + 1e-8)
        new = p - alpha * c1 - beta * c2
    else:
        basis = torch.cat(conds)  # K×D
        coef = torch.linalg.lstsq(basis.T, p.T).solution  # min ‖basisᵀx − pᵀ‖
        new = p - (basis.T @ coef).T
    norm = new.norm()
    if norm < 1e-6:
        raise ValueError("the primal normal lies in the span of the conditions; no conditional direction exists")
    new = new / norm
    if isinstance(primal, np.ndarray):
        return new.cpu().numpy()
    return new.to(device=primal.device, dtype=primal.dtype) if isinstance(primal, torch.Tensor) else new
