"""L2M-GAN (methods/l2mgan): networks, latent factorisation, losses, training, checkpoints, editor.

The official-layout checkpoints are built here from the official architecture (rucmlcv/L2M-GAN
core/model.py, StarGAN v2 core/wing.py) written out as key -> shape tables, independently of the
modules under test, so a renamed or re-shaped parameter fails the load test.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision

import methods.l2mgan  # noqa: F401 - registers "l2mgan"
from benchmark.data.base import DataError
from benchmark.registry import DATASETS, METHODS, UnknownNameError
from methods.base import EditorError
from methods.gan import ema_update
from methods.l2mgan.checkpoint import CheckpointLayoutError, infer_config, load_official
from methods.l2mgan.losses import LossWeights, d_loss, g_loss, orthogonality, orthogonality_loss
from methods.l2mgan.networks import FAN, Discriminator, Generator, StyleEncoder
from methods.l2mgan.networks.fan import _shift, preprocess
from methods.l2mgan.train import L2MGANOptions, Trainer, augment
from methods.training import FitContext, OptionsError, load_safetensors, save_safetensors



def small_nets(img: int = 32, w_hpf: float = 0.0, dim_in: int = 8, style_dim: int = 16):
    torch.manual_seed(0)
    return (Generator(img, style_dim, 32, w_hpf, dim_in), StyleEncoder(img, style_dim, 2, 32, dim_in),
            Discriminator(img, 2, 32, dim_in))


def synth(res: int = 32, **kw):
    opts = {"n_train_ids": 8, "n_test_ids": 4, "images_per_id": 4, **kw}
    return DATASETS.create("synthfaces", resolution=res, **opts)


def prepared(tmp_path: Path, attribute: str = "Smiling", res: int = 32, **options):
    ds = synth(res)
    ed = METHODS.create("l2mgan", preset="test", **options)
    fit = FitContext(editor=ed, dataset=ds, attribute=attribute, seed=0, device="cpu",
                     fits={"checkpoint_every": 2, "log_every": 1, "sample_every": 0}, show_progress=False,
                     cache=tmp_path / "cache")
    torch.manual_seed(0)
    ed.prepare(fit)
    return ed, fit, ds


# -- networks ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("img,w_hpf", [(32, 0.0), (64, 0.0), (32, 1.0), (64, 1.0)])
def test_shapes(img, w_hpf):
    G, E, D = small_nets(img, w_hpf)
    x = torch.rand(3, 3, img, img) * 2 - 1
    y, y_trg = torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1])
    codes = E(x, y, y_trg)
    assert all(c.shape == (3, 16) for c in codes)
    masks = None
    if w_hpf > 0:  # FAN masks (random weights: only the shapes matter here)
        masks = (torch.rand(3, 1, 256, 256), torch.rand(3, 1, 256, 256))
    out = G(x, codes.edited(1.0), masks=masks)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert D(x, y).shape == (3,)
    # the high-pass skip changes the output only when masks are given
    if w_hpf > 0:
        assert not torch.allclose(out, G(x, codes.edited(1.0)))


def test_generator_layout_follows_the_official_code():
    """w_hpf adds one down/up block; decode.0/1 are the bottlenecks; w_hpf > 0 drops the decoder shortcut."""
    with torch.device("meta"):  # layout only: no memory, no init
        g0, g1 = Generator(256, w_hpf=0), Generator(256, w_hpf=1)
    assert (len(g0.encode), len(g1.encode)) == (4 + 2, 5 + 2)
    assert g0.decode[0].upsample is False and g0.decode[1].upsample is False and g0.decode[2].upsample
    assert g1.from_rgb.out_channels == 64 and g1.encode[4].conv2.out_channels == 512
    assert hasattr(g1.decode[-1], "conv1x1") and g1.decode[-1].conv1.in_channels == 128
    torch.manual_seed(0)
    blk = type(g1.decode[-1])(128, 64, 64, w_hpf=1, upsample=True)  # conv1x1 exists but w_hpf = 1 skips it
    x, s = torch.randn(1, 128, 8, 8), torch.randn(1, 64)
    assert torch.allclose(blk(x, s), blk._residual(x, s))
    blk.w_hpf = 0
    assert torch.allclose(blk(x, s), (blk._residual(x, s) + blk._shortcut(x)) / math.sqrt(2))


def test_factorisation_and_degree_zero_is_reconstruction():
    G, E, _ = small_nets()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 0, 1])
    codes = E(x, y, 1 - y)
    assert torch.equal(codes.s_re, codes.s - codes.s_un)          # s_re is defined as s - s_un
    assert torch.allclose(codes.s_un + codes.s_re, codes.s, rtol=0, atol=1e-6)
    assert torch.equal(codes.edited(0.0), codes.s)                # degree 0: the code of x itself
    assert torch.equal(G(x, codes.edited(0.0)), G(x, codes.s))    # the reconstruction path G(x, s)
    assert torch.allclose(codes.edited(1.0), codes.s_un + codes.s_re_tilde, atol=1e-6)  # official degree 1
    # the second argument picks the unshared head, the third the transformer
    assert not torch.allclose(E(x, 1 - y, 1 - y).s, codes.s)
    swapped = E(x, y, y)
    assert torch.equal(swapped.s, codes.s) and not torch.allclose(swapped.s_re_tilde, codes.s_re_tilde)


def test_fan_shift_is_the_official_permutation():
    """core/wing.py ``shift`` builds index permutations; ours is a roll: compare on random maps."""
    def official_shift(x, n):
        h = x.shape[2]
        up, n = n >= 0, abs(n)
        if up:
            head, tail = torch.arange(h - n) + n, torch.arange(n)
        else:
            head, tail = torch.arange(n) + (h - n), torch.arange(h - n)
        return x[:, :, torch.cat([head, tail]), :]

    x = torch.rand(2, 3, 16, 5)
    for n in (-7, -1, 0, 3, 8):
        assert torch.equal(_shift(x, n), official_shift(x, n))


def test_fan_mask_preprocessing():
    yy, xx = torch.meshgrid(torch.arange(256.0), torch.arange(256.0), indexing="ij")
    centres = torch.rand(1, 98, 2, generator=torch.Generator().manual_seed(0)) * 160 + 48
    blobs = torch.exp(-((yy - centres[..., 0, None, None]) ** 2 + (xx - centres[..., 1, None, None]) ** 2) / 18)
    m0, m1 = preprocess(blobs)  # landmark-like heatmaps: one Gaussian per landmark
    assert m0.shape == m1.shape == (1, 1, 256, 256)
    assert float(m0.min()) >= 0 and float(m0.max()) <= 1
    assert bool((m1 <= m0 + 1e-6).all()) and float(m1.sum()) < float(m0.sum())  # mask 1 drops parts of mask 0


# -- losses -----------------------------------------------------------------------------------------

def test_orthogonality_forms():
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    a, b = q[:, :4].T.contiguous(), q[:, 4:8].T.contiguous()  # rows pairwise orthogonal, dense supports
    for form in ("cosine", "dot"):
        assert orthogonality(a, b, form) < 1e-6
        assert orthogonality(a, a + 0.5 * b, form) > 0.1
    disjoint_a = torch.zeros(4, 16)
    disjoint_a[:, :8] = torch.randn(4, 8)
    disjoint_b = torch.zeros(4, 16)
    disjoint_b[:, 8:] = torch.randn(4, 8)
    for form in ("cosine", "dot", "elementwise"):
        assert orthogonality(disjoint_a, disjoint_b, form) == 0
        assert orthogonality(disjoint_a, disjoint_a, form) > 0
    # the element-wise form of songquanpeng/L2M-GAN is stronger: orthogonal but overlapping codes cost
    assert orthogonality(a, b, "elementwise") > 1e-3
    # L_ort sums the two pairs
    assert torch.isclose(orthogonality_loss(a, a, b, "cosine"), orthogonality(a, a, "cosine"))
    with pytest.raises(ValueError, match="unknown orthogonality form"):
        orthogonality(a, b, "l2")
    with pytest.raises(ValueError, match="same shape"):
        orthogonality(a, b[:2], "dot")


def test_one_step_lowers_the_losses_on_a_fixed_batch():
    opts = METHODS.create("l2mgan", preset="test", randcrop_prob=0.0, hflip=False).opts
    tr = Trainer(opts, 32, torch.device("cpu"))
    torch.manual_seed(1)
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 0, 1])
    w = LossWeights()

    def losses():
        ld, _ = d_loss(tr.D, tr.G, tr.E, x, y, 1 - y, w)
        lg, _ = g_loss(tr.D, tr.G, tr.E, x, y, 1 - y, w)
        return ld.item(), lg.item()

    d0, g0 = losses()
    # D step alone lowers the D loss; then the G step (against the updated D) lowers the G loss
    ld, _ = d_loss(tr.D, tr.G, tr.E, x, y, 1 - y, w)
    tr.opt_d.zero_grad()
    ld.backward()
    tr.opt_d.step()
    d1, g_mid = losses()
    assert d1 < d0
    lg, _ = g_loss(tr.D, tr.G, tr.E, x, y, 1 - y, w)
    tr.opt_g.zero_grad()
    lg.backward()
    tr.opt_g.step()
    _, g1 = losses()
    assert g1 < g_mid


def test_trainer_step_updates_ema_by_the_official_rule():
    opts = METHODS.create("l2mgan", preset="test", ema_beta=0.9).opts
    tr = Trainer(opts, 32, torch.device("cpu"))
    before = {k: v.clone() for k, v in tr.G_ema.state_dict().items()}
    assert all(torch.equal(before[k], v) for k, v in tr.G.state_dict().items())  # EMA starts at the He init
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    y = torch.tensor([0, 1, 0, 1])
    stats = tr.step(x, y, 1 - y)
    assert {"loss_d", "loss_g", "g_ort", "g_cyc", "g_sty", "d_reg"} <= set(stats)
    raw = tr.G.state_dict()
    for k, v in tr.G_ema.state_dict().items():  # moving_average: lerp(param, ema, 0.9)
        assert torch.allclose(v, 0.9 * before[k] + 0.1 * raw[k], atol=1e-7), k
    changed = [k for k in raw if not torch.equal(raw[k], before[k])]
    assert changed and not torch.equal(tr.G_ema.state_dict()[changed[0]], raw[changed[0]])


def test_augment_is_seeded_and_keeps_shape():
    x = torch.rand(6, 3, 32, 32) * 2 - 1
    a = augment(x, torch.Generator().manual_seed(3), 0.5, True)
    b = augment(x, torch.Generator().manual_seed(3), 0.5, True)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert torch.equal(augment(x, torch.Generator().manual_seed(3), 0.0, False), x)
    flipped = augment(x, torch.Generator().manual_seed(3), 0.0, True)
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))


# -- the editor through the platform --------------------------------------------------------------

def test_fit_edit_save_load_round_trip(tmp_path):
    ed, fit, ds = prepared(tmp_path)
    path = Path(fit.records[-1].path)
    meta = json.loads((path / "l2mgan.json").read_text())
    assert "not available offline" in meta["terms"]["perceptual"]  # provenance says what did not run
    assert (path / "provenance.json").exists()
    x = torch.stack([ds.split("test")[i]["image"] for i in range(4)])
    t = torch.tensor([1.0, 0.0, 1.0, 0.0])
    out = ed.edit(x, "Smiling", t)
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().max() <= 1
    # a fresh editor loading the stage directory edits identically, also from fp16 weights (shipped fits)
    other = METHODS.create("l2mgan", preset="test")
    other.load(path, "cpu")
    other.attribute = "Smiling"
    assert torch.equal(other.edit(x, "Smiling", t), out)
    ed.save(tmp_path / "saved")  # save/load round trip
    other = METHODS.create("l2mgan", preset="test")
    other.load(tmp_path / "saved", "cpu")
    other.attribute = "Smiling"
    assert torch.equal(other.edit(x, "Smiling", t), out)
    half = tmp_path / "half"
    half.mkdir()
    for name in ("generator", "style_encoder"):
        save_safetensors(half / f"{name}.safetensors",
                         {k: v.half() for k, v in load_safetensors(path / f"{name}.safetensors").items()})
    (half / "l2mgan.json").write_text((path / "l2mgan.json").read_text())
    other.load(half, "cpu")
    assert (other.edit(x, "Smiling", t) - out).abs().max() < 0.05
    # the edit resizes in and out when the images are not at the native resolution
    big = torch.nn.functional.interpolate(x, size=64, mode="bilinear", align_corners=False)
    assert ed.edit(big, "Smiling", t).shape == big.shape
    # degree 0 is the reconstruction path G(x, s)
    with torch.no_grad():
        y_src = (1 - t).long()
        rec = ed.generator(x, ed.style_encoder(x, y_src, t.long()).s).clamp(-1, 1)
    assert torch.equal(ed.edit(x, "Smiling", t, strength=0.0), rec)
    # a second prepare reuses the cached stage
    ed2, fit2, _ = prepared(tmp_path)
    assert fit2.records[-1].source == "cache"


def test_bad_input_fails_before_training(tmp_path):
    with pytest.raises(OptionsError, match="unknown option"):
        METHODS.create("l2mgan", preset="test", widht=3)
    with pytest.raises(OptionsError, match="ort_form"):
        METHODS.create("l2mgan", preset="test", ort_form="l2")
    with pytest.raises(OptionsError, match="power of two"):
        METHODS.create("l2mgan", preset="test", resolution=48)
    with pytest.raises(UnknownNameError):
        prepared(tmp_path, attribute="Wings")
    ds = synth(48)  # the dataset's own resolution is used when resolution is None
    ed = METHODS.create("l2mgan", preset="test", resolution=None)
    fit = FitContext(editor=ed, dataset=ds, attribute="Smiling", seed=0, device="cpu", show_progress=False,
                     cache=tmp_path / "c2")
    with pytest.raises(EditorError, match="power-of-two"):
        ed.prepare(fit)
    assert not (tmp_path / "c2").exists()  # nothing trained
    ed, _, ds = prepared(tmp_path)
    x = torch.zeros(2, 3, 32, 32)
    with pytest.raises(EditorError, match="trained for 'Smiling'"):
        ed.edit(x, "Male", torch.ones(2))
    with pytest.raises(EditorError, match="0/1"):
        ed.edit(x, "Smiling", torch.tensor([0.5, 1.0]))
    with pytest.raises(EditorError, match="B×3×H×W"):
        ed.edit(x[:, :1], "Smiling", torch.ones(2))


def test_one_class_attribute_is_refused(tmp_path):
    ds = synth(32)
    col = ds.attribute_index("Smiling")
    split = ds.split("train")
    split.params.labels[:, col] = 1.0  # every training face smiles
    ed = METHODS.create("l2mgan", preset="test")
    fit = FitContext(editor=ed, dataset=ds, attribute="Smiling", seed=0, device="cpu", show_progress=False,
                     cache=tmp_path / "c")
    with pytest.raises(DataError, match="only one class"):
        ed.prepare(fit)


# -- official checkpoint layouts ------------------------------------------------------------------

def _bn(prefix: str, c: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def official_generator_shapes(img: int, w_hpf: int, style_dim: int = 64, max_dim: int = 512,
                              d: int | None = None) -> dict[str, tuple]:
    """Key -> shape of rucmlcv/L2M-GAN core/model.py ``Generator(img, 64, w_hpf=w_hpf).state_dict()``
    (``d`` and ``max_dim`` narrower than official give a slim net with the official names)."""
    d = d or 2**14 // img
    keys = {"from_rgb.weight": (d, 3, 3, 3), "from_rgb.bias": (d,), "to_rgb.0.weight": (d,), "to_rgb.0.bias": (d,),
            "to_rgb.2.weight": (3, d, 1, 1), "to_rgb.2.bias": (3,)}
    for i in (0, 2):
        keys[f"attention.layers.{i}.weight"] = (style_dim, style_dim)
        keys[f"attention.layers.{i}.bias"] = (style_dim,)

    def resblk(p, a, b):
        keys.update({f"{p}.conv1.weight": (a, a, 3, 3), f"{p}.conv1.bias": (a,), f"{p}.conv2.weight": (b, a, 3, 3),
                     f"{p}.conv2.bias": (b,), f"{p}.norm1.weight": (a,), f"{p}.norm1.bias": (a,),
                     f"{p}.norm2.weight": (a,), f"{p}.norm2.bias": (a,)})
        if a != b:
            keys[f"{p}.conv1x1.weight"] = (b, a, 1, 1)

    def adain(p, a, b):
        keys.update({f"{p}.conv1.weight": (b, a, 3, 3), f"{p}.conv1.bias": (b,), f"{p}.conv2.weight": (b, b, 3, 3),
                     f"{p}.conv2.bias": (b,), f"{p}.norm1.fc.weight": (2 * a, style_dim), f"{p}.norm1.fc.bias": (2 * a,),
                     f"{p}.norm2.fc.weight": (2 * b, style_dim), f"{p}.norm2.fc.bias": (2 * b,)})
        if a != b:
            keys[f"{p}.conv1x1.weight"] = (b, a, 1, 1)

    n = int(math.log2(img)) - 4 + w_hpf
    widths = [d]
    for i in range(n):
        widths.append(min(widths[-1] * 2, max_dim))
        resblk(f"encode.{i}", widths[i], widths[i + 1])
        adain(f"decode.{2 + n - 1 - i}", widths[i + 1], widths[i])  # inserted at 0, after them the bottlenecks
    for j in range(2):
        resblk(f"encode.{n + j}", widths[-1], widths[-1])
        adain(f"decode.{j}", widths[-1], widths[-1])
    return keys


def official_style_encoder_shapes(img: int, style_dim: int = 64, domains: int = 2, max_dim: int = 512,
                                  d: int | None = None) -> dict[str, tuple]:
    """Key -> shape of core/model.py ``StyleEncoder(img, 64, 2).state_dict()``."""
    d = d or 2**14 // img
    keys = {"shared.0.weight": (d, 3, 3, 3), "shared.0.bias": (d,)}
    n = int(math.log2(img)) - 2
    a = d
    for i in range(1, n + 1):
        b = min(a * 2, max_dim)
        keys.update({f"shared.{i}.conv1.weight": (a, a, 3, 3), f"shared.{i}.conv1.bias": (a,),
                     f"shared.{i}.conv2.weight": (b, a, 3, 3), f"shared.{i}.conv2.bias": (b,)})
        if a != b:
            keys[f"shared.{i}.conv1x1.weight"] = (b, a, 1, 1)
        a = b
    keys[f"shared.{n + 2}.weight"], keys[f"shared.{n + 2}.bias"] = (a, a, 4, 4), (a,)
    mlp = lambda p: {f"{p}.{i}.{t}": ((style_dim, style_dim) if t == "weight" else (style_dim,))  # noqa: E731
                     for i in (0, 2, 4) for t in ("weight", "bias")}
    for dom in range(domains):
        keys[f"unshared.{dom}.weight"], keys[f"unshared.{dom}.bias"] = (style_dim, a), (style_dim,)
        keys.update(mlp(f"transform2.{dom}"))
    keys.update(mlp("transform1"))
    for i in (0, 2):
        keys[f"attention.layers.{i}.weight"], keys[f"attention.layers.{i}.bias"] = (style_dim, style_dim), (style_dim,)
    return keys


def official_fan_shapes() -> dict[str, tuple]:
    """Key -> shape of StarGAN v2 core/wing.py ``FAN().state_dict()`` (1 hourglass, depth 4, 98 landmarks)."""
    keys = {"conv1.conv.weight": (64, 6, 7, 7), "conv1.conv.bias": (64,), **_bn("bn1", 64)}

    def block(p, a, b):
        keys.update({**_bn(f"{p}.bn1", a), f"{p}.conv1.weight": (b // 2, a, 3, 3), **_bn(f"{p}.bn2", b // 2),
                     f"{p}.conv2.weight": (b // 4, b // 2, 3, 3), **_bn(f"{p}.bn3", b // 4),
                     f"{p}.conv3.weight": (b // 4, b // 4, 3, 3)})
        if a != b:
            keys.update({**_bn(f"{p}.downsample.0", a), f"{p}.downsample.2.weight": (b, a, 1, 1)})

    block("conv2", 64, 128)
    block("conv3", 128, 128)
    block("conv4", 128, 256)
    keys["m0.coordconv.conv.weight"], keys["m0.coordconv.conv.bias"] = (256, 259, 1, 1), (256,)
    for level in range(1, 5):
        for b in ("b1", "b2", "b3"):
            block(f"m0.{b}_{level}", 256, 256)
    block("m0.b2_plus_1", 256, 256)
    block("top_m_0", 256, 256)
    keys.update({"conv_last0.weight": (256, 256, 1, 1), "conv_last0.bias": (256,), **_bn("bn_end0", 256),
                 "l0.weight": (99, 256, 1, 1), "l0.bias": (99,)})
    return keys


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7, dtype=torch.long)
        elif k.endswith("running_var"):
            out[k] = torch.rand(s, generator=g) + 0.5
        else:
            out[k] = torch.randn(s, generator=g) * 0.05
    return out


def official_checkpoint(img: int, w_hpf: int, slim: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """The ``100000_nets_ema.ckpt`` dict; ``slim``: the same names with narrow shapes (fast forwards)."""
    resnet = torchvision.models.resnet18(weights=None)  # the official "vgg": resnet18 children[:-1]
    widths = dict(style_dim=16, max_dim=32, d=8) if slim else {}
    enc = dict(widths)
    blob = {"generator": random_state(official_generator_shapes(img, w_hpf, **widths), 1),
            "style_encoder": random_state(official_style_encoder_shapes(img, **enc), 2),
            "vgg": torch.nn.Sequential(*list(resnet.children())[:-1]).state_dict()}
    if w_hpf:
        blob["fan"] = random_state(official_fan_shapes(), 3)
    return blob


@pytest.mark.parametrize("img,w_hpf", [(256, 0), (256, 1), (32, 0), (64, 1)])
def test_official_checkpoint_loads_strictly(img, w_hpf):
    blob = official_checkpoint(img, w_hpf)
    nets = load_official(blob, with_features=True)
    assert (nets.config.img_size, nets.config.w_hpf, nets.config.dim_in) == (img, float(w_hpf), 2**14 // img)
    assert (nets.fan is not None) == bool(w_hpf) and nets.vgg is not None
    for name, module in (("generator", nets.generator), ("style_encoder", nets.style_encoder), ("fan", nets.fan),
                         ("vgg", nets.vgg.features)):
        if name not in blob:
            continue
        got = module.state_dict()
        assert set(got) == set(blob[name]), name  # no missing, no unexpected keys
        assert all(torch.equal(got[k], blob[name][k]) for k in got), name


def test_official_checkpoint_file_loads_and_runs(tmp_path):
    """From a file (weights_only), then a forward pass with FAN masks (w_hpf 1, official names, slim shapes)."""
    blob = official_checkpoint(32, 1, slim=True)
    path = tmp_path / "100000_nets_ema.ckpt"
    torch.save(blob, path)
    nets = load_official(path)
    assert (nets.config.style_dim, nets.config.dim_in, nets.config.max_conv_dim) == (16, 8, 32)
    assert nets.vgg is None  # checked for its layout, not kept without with_features
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    masks = nets.fan.get_heatmap(x)
    assert masks[0].shape == masks[1].shape == (1, 1, 256, 256)
    assert float(masks[0].min()) >= 0 and float(masks[0].max()) <= 1
    codes = nets.style_encoder(x, torch.tensor([0]), torch.tensor([1]))
    out = nets.generator(x, codes.edited(1.0), masks=masks)
    assert out.shape == x.shape and not torch.allclose(out, nets.generator(x, codes.edited(1.0)))


def test_official_checkpoint_layout_errors(tmp_path):
    blob = official_checkpoint(32, 0, slim=True)
    extra = {**blob, "generator": {**blob["generator"], "mapping.weight": torch.zeros(1)}}
    with pytest.raises(CheckpointLayoutError, match="unexpected 1: mapping.weight"):
        load_official(extra)
    missing = {**blob, "style_encoder": {k: v for k, v in blob["style_encoder"].items() if "attention" not in k}}
    with pytest.raises(CheckpointLayoutError, match="missing 4: attention.layers.0.bias"):
        load_official(missing)
    with pytest.raises(CheckpointLayoutError, match="no 'fan'"):
        load_official({k: v for k, v in official_checkpoint(64, 1, slim=True).items() if k != "fan"})
    with pytest.raises(CheckpointLayoutError, match="has 'fan'"):
        load_official({**blob, "fan": {}})
    full = official_checkpoint(32, 0)
    assert infer_config(full["generator"], full["style_encoder"]).max_conv_dim == 512  # 2^14/32 = 512, capped
    path = tmp_path / "not_a_ckpt.ckpt"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointLayoutError, match="generator and style_encoder"):
        load_official(path)


def test_editor_with_an_official_checkpoint(tmp_path):
    path = tmp_path / "100000_nets_ema.ckpt"
    torch.save(official_checkpoint(32, 1, slim=True), path)
    ds = synth(32)
    ed = METHODS.create("l2mgan", checkpoint=str(path))
    fit = FitContext(editor=ed, dataset=ds, attribute="Smiling", seed=0, device="cpu", show_progress=False,
                     cache=tmp_path / "c")
    ed.prepare(fit)
    x = torch.stack([ds.split("test")[i]["image"] for i in range(2)])
    out = ed.edit(x, "Smiling", torch.tensor([1.0, 0.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert not (tmp_path / "c").exists()  # nothing trained
    ed.save(tmp_path / "saved")  # FAN is saved with it: reloading needs no wing.ckpt
    again = METHODS.create("l2mgan", checkpoint=str(path))
    again.load(tmp_path / "saved")
    again.attribute = "Smiling"
    assert torch.equal(again.edit(x, "Smiling", torch.tensor([1.0, 0.0])), out)
    ed = METHODS.create("l2mgan", checkpoint=str(path))
    fit = FitContext(editor=ed, dataset=ds, attribute="Male", seed=0, device="cpu", show_progress=False)
    with pytest.raises(EditorError, match="Smiling only"):
        ed.prepare(fit)


# -- a real training (slow) -------------------------------------------------------------------------

@pytest.mark.slow
def test_short_synthfaces_training_beats_the_noop(tmp_path):
    """Eyeglasses on SynthFaces 64 px, trained at 32 px: the edit (degree 1) must flip the judge's
    prediction far more often than the no-op and than the model's own reconstruction (degree 0), so
    that what flips is the learned transformer and not blur.  The classifier is used to score only."""
    from evaluators.classifier.training import load_classifier

    ds = DATASETS.create("synthfaces", resolution=64)
    ed = METHODS.create("l2mgan", preset="cpu", steps=6000, target="flip")
    fit = FitContext(editor=ed, dataset=ds, attribute="Eyeglasses", seed=0, device="cpu", show_progress=False,
                     fits={"sample_every": 0}, cache=tmp_path / "cache")
    torch.manual_seed(0)
    ed.prepare(fit)
    clf = load_classifier(ds, "cpu")
    test = ds.split("test")
    n = 200
    x = torch.stack([test[i]["image"] for i in range(n)])
    ai = ds.attribute_index("Eyeglasses")
    target = 1 - test.labels_matrix()[:n, ai]

    def success(images):
        pred = clf.predict(images)[:, ai].float()
        per_dir = [float((pred[target == t] == t).float().mean()) for t in (0.0, 1.0)]
        return sum(per_dir) / 2

    noop = success(x)
    edit = success(ed.edit(x, "Eyeglasses", target))
    recon = success(ed.edit(x, "Eyeglasses", target, strength=0.0))
    assert noop < 0.1
    assert edit > noop + 0.4 and edit > recon + 0.3, (noop, edit, recon)


def test_the_arc_degree_path_of_the_experiment_script_ends_where_the_line_does():
    """scripts/l2mgan_degree_path.py (README's "spherical degree path"): same end points as the published
    line, the relevant code's length linear in d, and on the great circle through s_re and s̃_re."""
    from methods.l2mgan.networks.style_encoder import StyleCodes
    from tests.script_loader import load_script

    script = load_script("l2mgan_degree_path")
    g = torch.Generator().manual_seed(0)
    s, s_un, b = (torch.randn(5, 16, generator=g) for _ in range(3))
    codes = StyleCodes(s, s_un, s - s_un, b)
    for d in (0.0, 1.0):
        assert torch.allclose(script.arc_edited(codes, d), codes.edited(d), atol=1e-5)
    na, nb = codes.s_re.norm(dim=1), b.norm(dim=1)
    mid = script.arc_edited(codes, 0.5) - s_un
    assert torch.allclose(mid.norm(dim=1), (na + nb) / 2, atol=1e-5)
    assert bool((mid.norm(dim=1) >= codes.edited(0.5).sub(s_un).norm(dim=1) - 1e-6).all())  # the line's is shorter
    # in the plane of s_re and s̃_re: nothing is left after projecting onto it
    basis, _ = torch.linalg.qr(torch.stack([codes.s_re, b], dim=2))
    resid = mid - (basis @ (basis.transpose(1, 2) @ mid[:, :, None]))[:, :, 0]
    assert resid.abs().max() < 1e-4
