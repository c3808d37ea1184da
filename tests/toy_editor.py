"""A toy trainable editor (a few hundred parameters) that exercises the training platform.

Two stages like a real GAN editor: ``shared`` (attribute-independent, e.g. InterFaceGAN's GAN) and
``head`` (per attribute). Training is real gradient descent on SynthFaces batches, with global-RNG
noise (so resume must restore RNG state), an optional per-step delay (so a test can kill it
mid-fit), and an optional poisoned step (so a test can watch the divergence stop).
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from benchmark.registry import register_method
from methods.base import EditContext, Editor, EditorMeta
from methods.training import (
    EditorOptions, FitContext, TrainContext, load_safetensors, option, save_safetensors,
)


class ColourNet(nn.Module):
    """1×1 convs: a colour mixer shared by all attributes and a target-conditioned shift."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.mix = nn.Sequential(nn.Conv2d(3, width, 1), nn.Tanh(), nn.Conv2d(width, 3, 1))
        self.shift = nn.Linear(1, 3)


@dataclass(frozen=True)
class ToyOptions(EditorOptions):
    width: int = 8
    lr: float = 0.05
    shared_steps: int = 12
    poison_step: int = option(-1, doc="step at which the loss becomes NaN (tests)")
    step_delay: float = option(0.0, runtime=True, doc="seconds to sleep per step (tests)")
    count_file: str = option("", runtime=True, doc="append a line per training run (tests)")


@register_method("toy_trainable")
class ToyEditor(Editor):
    meta = EditorMeta(paper="test toy", strength="shift magnitude")
    Options = ToyOptions
    presets = {"cpu": {"steps": 10, "batch_size": 8}, "test": {"steps": 6, "batch_size": 4, "shared_steps": 4}}
    shared_stages = ("shared",)

    def prepare(self, fit: FitContext) -> None:
        self.net = ColourNet(self.opts.width)
        shared = fit.stage("shared", self._train_shared, per_attribute=False, steps=self.opts.shared_steps)
        self.net.mix.load_state_dict(_prefixed(load_safetensors(shared / "mix.safetensors"), "mix."))
        head = fit.stage("head", self._train_head, per_attribute=True, steps=self.opts.steps,
                         extra={"shared": shared.name})
        self.net.shift.load_state_dict(_prefixed(load_safetensors(head / "shift.safetensors"), "shift."))
        self.net.to(fit.device).eval()
        self.device = fit.device

    def _count(self, stage: str) -> None:
        if self.opts.count_file:
            with open(self.opts.count_file, "a") as f:
                f.write(f"{stage} {os.getpid()}\n")

    def _train_shared(self, tc: TrainContext) -> None:
        self._count("shared")
        data = tc.fit.train_data(resolution=32)
        opt = torch.optim.Adam(self.net.mix.parameters(), lr=self.opts.lr)
        tc.register(mix=self.net.mix, opt=opt)
        for step in tc.loop():
            x, _ = data.batch(self.opts.batch_size, tc.generator(step), device=tc.device)
            noisy = x + 0.05 * torch.randn_like(x)  # global RNG: resume must restore it
            loss = (self.net.mix(noisy) - x).pow(2).mean()
            if step == self.opts.poison_step:
                loss = loss * float("nan")
            tc.log(step, loss=loss.item())
            opt.zero_grad()
            loss.backward()
            tc.check_gradients(step, self.net.mix)
            opt.step()
            tc.sample(step, lambda: self.net.mix(x[:4]).clamp(-1, 1))
            if self.opts.step_delay:
                time.sleep(self.opts.step_delay)
        save_safetensors(tc.out_dir / "mix.safetensors", _strip(self.net.mix.state_dict()))

    def _train_head(self, tc: TrainContext) -> None:
        self._count("head")
        data = tc.fit.train_data(resolution=32)
        opt = torch.optim.SGD(self.net.shift.parameters(), lr=self.opts.lr)
        tc.register(shift=self.net.shift, opt=opt)
        for step in tc.loop():
            x1, _ = data.batch(self.opts.batch_size, tc.generator(step), value=1, device=tc.device)
            x0, _ = data.batch(self.opts.batch_size, tc.generator(step, 1), value=0, device=tc.device)
            want = (x1.mean((0, 2, 3)) - x0.mean((0, 2, 3)))
            got = self.net.shift(torch.ones(1, 1, device=tc.device))[0] - self.net.shift(torch.zeros(1, 1, device=tc.device))[0]
            loss = (got - want).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tc.log(step, loss=loss.item())
            if self.opts.step_delay:
                time.sleep(self.opts.step_delay)
        save_safetensors(tc.out_dir / "shift.safetensors", _strip(self.net.shift.state_dict()))
        (tc.out_dir / "head.json").write_text(json.dumps({"steps": tc.total_steps}))

    def edit(self, images: torch.Tensor, attribute: str, target: torch.Tensor, strength: float = 1.0,
             context: EditContext | None = None) -> torch.Tensor:
        t = target.reshape(-1, 1).to(images)
        delta = self.net.shift(t) - self.net.shift(1 - t)
        return (images + strength * 0.5 * delta[:, :, None, None]).clamp(-1, 1)

    def weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}


def _strip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items()}


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def fit_once(cache: Path, attribute: str = "Smiling", seed: int = 0, fits: dict | None = None, **options) -> ToyEditor:
    """Prepare the toy editor on the smoke-sized SynthFaces with ``$FACEEDIT_CACHE`` = ``cache``."""
    from benchmark.registry import DATASETS

    ds = DATASETS.create("synthfaces", resolution=32, n_train_ids=8, n_test_ids=4, images_per_id=4)
    torch.manual_seed(seed)  # as the runner's seed_everything does before prepare
    ed = ToyEditor(**options)
    fit = FitContext(editor=ed, dataset=ds, attribute=attribute, seed=seed, device="cpu",
                     fits={"checkpoint_every": 2, "log_every": 1, "sample_every": 0, **(fits or {})},
                     show_progress=False, cache=Path(cache))
    ed.prepare(fit)
    ed.fit_context = fit
    return ed


if __name__ == "__main__":  # a child process for the lock and kill tests
    import sys

    out = Path(sys.argv[2])
    opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    ed = fit_once(Path(sys.argv[1]), **opts)
    save_safetensors(out, ed.weights())
    print(json.dumps([r.source for r in ed.fit_context.records]), flush=True)
