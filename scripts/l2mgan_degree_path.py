#!/usr/bin/env python
"""Experiment (not part of the editor): L2M-GAN's degree sweep along a spherical path.

The published edit moves the relevant code on a straight line, s_un + s_re + d·(s̃_re − s_re).  On the
shipped Eyeglasses and Bangs fits s_re and s̃_re are nearly orthogonal, so the half-way code is shorter
than either (methods/l2mgan/README.md) and degree 0.5 gives washed-out faces.  This script asks whether
that shortening is the cause: with ``L2M_PATH=slerp`` it replaces the straight line by the great-circle
arc from s_re to s̃_re (direction by slerp, length linear between the two norms; d > 1 goes on along the
arc) for this process only, then runs the benchmark exactly as ``run_benchmark.py`` does.  Without
``L2M_PATH`` it is ``run_benchmark.py``.  The editor's package is not touched, so the shipped fits load
under their recorded source hash.

    OMP_NUM_THREADS=1 L2M_PATH=slerp python scripts/l2mgan_degree_path.py --config configs/default.yaml \
        "methods=[l2mgan]" "attributes=[Eyeglasses,Bangs]" "strengths=[0.25,0.5,0.75,1.0,1.25,1.5]" \
        method_options.l2mgan.preset=reference
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from methods.l2mgan.networks import style_encoder  # noqa: E402


def arc_edited(self: style_encoder.StyleCodes, degree: float | torch.Tensor = 1.0) -> torch.Tensor:
    """s_un + r(d)·u(d): u the slerp of the unit codes s_re, s̃_re; r linear between their norms."""
    d = degree[:, None] if isinstance(degree, torch.Tensor) and degree.dim() == 1 else degree
    a, b = self.s_re, self.s_re_tilde
    na, nb = a.norm(dim=1, keepdim=True), b.norm(dim=1, keepdim=True)
    ua, ub = a / na, b / nb
    omega = torch.acos((ua * ub).sum(1, keepdim=True).clamp(-1 + 1e-6, 1 - 1e-6))
    u = (torch.sin((1 - d) * omega) * ua + torch.sin(d * omega) * ub) / torch.sin(omega)
    return self.s - a + (na + d * (nb - na)) * u


if __name__ == "__main__":
    if os.environ.get("L2M_PATH", "linear") == "slerp":
        style_encoder.StyleCodes.edited = arc_edited
    from benchmark.cli import main

    sys.exit(main())
