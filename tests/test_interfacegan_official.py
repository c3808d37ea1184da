"""InterFaceGAN's official generators: checkpoint key layouts and the numeric facts that make outputs equal.

The expected 1024-px layouts are written out here from genforce/interfacegan's
``_PGGAN_PTH_VARS_TO_TF_VARS`` / ``_STYLEGAN_PTH_VARS_TO_TF_VARS`` shape comments
(commit 8da3fc0), independently of the module's own tables; state dicts are built by
the tests (no downloads).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmark.assets import ASSETS
from methods.interfacegan.assets import GENERATOR_ASSETS
from benchmark.assets import MissingAssetError
from methods.interfacegan.official import (OFFICIAL_MODELS, OfficialLayoutError, build_official,
                                           check_official_state_dict, load_official, load_released)
from methods.interfacegan.official.pggan import PGGANGenerator, normalize_z, pixel_norm
from methods.interfacegan.official.stylegan import (Epilogue, MappingNetwork, StyleGANGenerator, Truncation, UpBlock,
                                                    fused_upconv, instance_norm, stylegan_num_layers)


CH_1024 = [512, 512, 512, 512, 512, 256, 128, 64, 32, 16]  # genforce _RESOLUTIONS_TO_CHANNELS[1024]


def genforce_pggan_shapes() -> dict[str, tuple[int, ...]]:
    """pggan_celebahq.pth: lod, 18 convolutions, 9 toRGB layers."""
    s: dict[str, tuple[int, ...]] = {"lod": ()}
    for b in range(1, 10):
        s[f"layer{2 * b - 2}.conv.weight"] = (CH_1024[b], CH_1024[b - 1], 4, 4) if b == 1 else \
            (CH_1024[b], CH_1024[b - 1], 3, 3)
        s[f"layer{2 * b - 1}.conv.weight"] = (CH_1024[b], CH_1024[b], 3, 3)
        s[f"output{b - 1}.conv.weight"] = (3, CH_1024[b], 1, 1)
        for name in (f"layer{2 * b - 2}", f"layer{2 * b - 1}"):
            s[f"{name}.wscale.bias"] = (CH_1024[b],)
        s[f"output{b - 1}.wscale.bias"] = (3,)
    return s


def genforce_stylegan_shapes() -> dict[str, tuple[int, ...]]:
    """stylegan_*.pth: model.state_dict() minus truncation.truncation (blur kernels included)."""
    s: dict[str, tuple[int, ...]] = {"truncation.w_avg": (512,), "synthesis.lod": (),
                                     "synthesis.layer0.first_layer": (1, 512, 4, 4)}
    for i in range(8):
        s[f"mapping.dense{i}.linear.weight"] = (512, 512)
        s[f"mapping.dense{i}.wscale.bias"] = (512,)
    for i in range(18):
        c_out, c_in, r = CH_1024[i // 2 + 1], CH_1024[i // 2], 2 ** (i // 2 + 2)
        p = f"synthesis.layer{i}"
        if i in (10, 12, 14, 16):  # fused up-convs from 128 px on
            s[f"{p}.weight"] = (3, 3, c_in, c_out)
        elif i > 0:
            s[f"{p}.conv.weight"] = (c_out, c_in if i % 2 == 0 else c_out, 3, 3)
        if i > 0 and i % 2 == 0:
            s[f"{p}.blur.kernel"] = (c_out, 1, 3, 3)
        s[f"{p}.epilogue.apply_noise.noise"] = (1, 1, r, r)
        s[f"{p}.epilogue.apply_noise.weight"] = (c_out,)
        s[f"{p}.epilogue.bias"] = (c_out,)
        s[f"{p}.epilogue.style_mod.dense.linear.weight"] = (2 * c_out, 512)
        s[f"{p}.epilogue.style_mod.dense.wscale.bias"] = (2 * c_out,)
    for j in range(9):
        s[f"synthesis.output{j}.conv.weight"] = (3, CH_1024[j + 1], 1, 1)
        s[f"synthesis.output{j}.bias"] = (3,)
    return s


@pytest.mark.parametrize("kind,expected", [("pggan", genforce_pggan_shapes), ("stylegan", genforce_stylegan_shapes)])
def test_1024px_layout_matches_genforce_without_missing_or_unexpected_keys(kind, expected):
    shapes = expected()
    with torch.device("meta"):
        model = build_official(kind, 1024, "meta")
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(shapes) - set(got)) == [] and sorted(set(got) - set(shapes)) == []
    assert got == shapes
    # the strict checker accepts a checkpoint in that layout (meta tensors: nothing allocated) ...
    meta_sd = {k: torch.empty(v, device="meta") for k, v in shapes.items()}
    check_official_state_dict(meta_sd, kind, 1024)
    # ... also with genforce's dropped truncation table present, and the released model names
    if kind == "stylegan":
        check_official_state_dict({**meta_sd, "truncation.truncation": torch.empty(1, 18, 1, device="meta")},
                                  "stylegan_ffhq", 1024)
    else:
        check_official_state_dict(meta_sd, "pggan_celebahq", 1024)


def test_pggan_parameter_count_is_the_papers():
    # Karras et al. 2018, Table 2: the CelebA-HQ generator has 23.1M trainable parameters
    with torch.device("meta"):
        n = sum(p.numel() for p in build_official("pggan_celebahq", device="meta").parameters())
    assert abs(n - 23.1e6) < 0.05e6


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v, generator=g) * 0.1 for k, v in shapes.items()}


def _small_pggan_shapes(res: int) -> dict[str, tuple[int, ...]]:
    stages = int(math.log2(res)) - 1

    def keep(key: str) -> bool:
        if key == "lod":
            return True
        index = int(key.split(".")[0].lstrip("layeroutput"))
        return index < (2 * stages if key.startswith("layer") else stages)
    return {k: v for k, v in genforce_pggan_shapes().items() if keep(k)}


def test_load_official_pggan_state_dict_built_here(tmp_path):
    sd = _random_state(_small_pggan_shapes(16))
    sd["lod"] = torch.tensor(0.0)
    torch.save(sd, tmp_path / "pggan16.pth")
    model = load_official(tmp_path / "pggan16.pth", "pggan", "cpu")
    assert model.resolution == 16 and not model.training
    loaded = model.state_dict()
    assert set(loaded) == set(sd) and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert all(not p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert model(normalize_z(torch.randn(2, 512))).shape == (2, 3, 16, 16)


def test_load_official_stylegan_with_fused_layers_built_here(tmp_path):
    # a 32-px checkpoint whose up-convs are all stored fused ([3, 3, in, out]) and which still
    # carries truncation.truncation (genforce deletes it before saving; the loader must ignore it)
    shapes = {k: v for k, v in genforce_stylegan_shapes().items()
              if not k.startswith("synthesis.") or k == "synthesis.lod"
              or int(k.split(".")[1].lstrip("layeroutput")) < (8 if ".layer" in k else 4)}
    for i in (2, 4, 6):
        c = shapes.pop(f"synthesis.layer{i}.conv.weight")
        shapes[f"synthesis.layer{i}.weight"] = (3, 3, c[1], c[0])
    sd = _random_state(shapes, seed=1)
    sd["synthesis.lod"] = torch.tensor(0.0)
    sd["truncation.truncation"] = torch.full((1, 8, 1), 123.0)
    torch.save(sd, tmp_path / "sg32.pth")
    model = load_official(tmp_path / "sg32.pth", "stylegan", "cpu")
    assert model.resolution == 32 and model.num_layers == 8
    assert all(model.synthesis.get_submodule(f"layer{i}").fused for i in (2, 4, 6))
    assert torch.allclose(model.truncation.truncation.flatten(), torch.full((8,), 0.7))  # rebuilt, not loaded
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], sd[k]) for k in sd if k != "truncation.truncation")
    with torch.no_grad():
        assert model(normalize_z(torch.randn(1, 512))).shape == (1, 3, 32, 32)


def test_load_official_names_missing_unexpected_and_misshaped_keys(tmp_path):
    sd = _random_state(_small_pggan_shapes(8))
    del sd["layer1.wscale.bias"]
    sd["layer1.conv.bias"] = torch.zeros(512)
    sd["output0.conv.weight"] = torch.zeros(3, 256, 1, 1)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(OfficialLayoutError) as err:
        load_official(tmp_path / "bad.pth", "pggan", "cpu")
    msg = str(err.value)
    assert "missing keys: layer1.wscale.bias" in msg
    assert "unexpected keys: layer1.conv.bias" in msg
    assert "output0.conv.weight: (3, 256, 1, 1) (expected (3, 512, 1, 1))" in msg
    torch.save(_random_state(_small_pggan_shapes(8)), tmp_path / "small.pth")
    with pytest.raises(OfficialLayoutError, match="pggan_celebahq is 1024 px"):
        load_official(tmp_path / "small.pth", "pggan_celebahq", "cpu")
    with pytest.raises(FileNotFoundError):
        load_official(tmp_path / "absent.pth", "pggan", "cpu")
    with pytest.raises(ValueError, match="unknown official generator"):
        load_official(tmp_path / "small.pth", "biggan", "cpu")


def test_generator_assets_are_declared_with_the_colab_urls():
    assert set(GENERATOR_ASSETS) == set(OFFICIAL_MODELS) == {"pggan_celebahq", "stylegan_celebahq", "stylegan_ffhq"}
    for name, asset in GENERATOR_ASSETS.items():
        assert ASSETS[asset.name][0] == asset
        assert asset.url.startswith("https://www.dropbox.com/s/") and asset.url.endswith(f"/{name}.pth?dl=1")
        assert asset.sha256 is None and "CC BY-NC 4.0" in asset.licence  # unpublished hash, never invented
        assert OFFICIAL_MODELS[name].asset is asset


def test_load_released_offline_says_where_the_file_goes(tmp_path):
    with pytest.raises(MissingAssetError) as err:
        load_released("stylegan_ffhq", "cpu", cache=tmp_path, allow_download=False)
    msg = str(err.value)
    assert "stylegan_ffhq.pth" in msg and "dropbox.com/s/qyv37eaobnow7fu" in msg and str(tmp_path) in msg
    with pytest.raises(ValueError, match="unknown released"):
        load_released("stylegan2_ffhq", "cpu", cache=tmp_path, allow_download=False)


# -- PGGAN numerics -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pggan16() -> PGGANGenerator:
    torch.manual_seed(0)
    return build_official("pggan", 16).eval()


def test_pggan_first_layer_is_the_dense_layer_as_a_4x4_conv_with_padding_3(pggan16):
    z = torch.randn(3, 512)
    with torch.no_grad():
        out = pggan16.layer0(z.view(3, 512, 1, 1))
    assert out.shape == (3, 512, 4, 4)
    # TF: dense on the pixel-normed latent, reshaped to 4×4; the converter flips the kernel,
    # so output (y, x) reads kernel tap (3 − y, 3 − x); fan-in 512·16, gain √2
    w, b = pggan16.layer0.conv.weight, pggan16.layer0.wscale.bias
    zn = z / torch.sqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    ref = torch.einsum("oiyx,bi->boyx", w.flip(2, 3), zn) * math.sqrt(2) / math.sqrt(512 * 16)
    ref = F.leaky_relu(ref + b.view(1, -1, 1, 1), 0.2)
    assert torch.allclose(out, ref, atol=1e-5)


def test_pggan_is_blind_to_the_latent_norm_and_has_no_tanh(pggan16):
    z = torch.randn(2, 512)
    with torch.no_grad():
        a, b = pggan16(z), pggan16(normalize_z(z) * 7.0)  # pixel norm starts every block
    assert torch.allclose(a, b, atol=1e-4)
    model = build_official("pggan", 8)
    with torch.no_grad():
        model.output1.conv.weight.zero_()
        model.output1.wscale.bias.fill_(5.0)
        assert torch.allclose(model(z), torch.full((2, 3, 8, 8), 5.0))  # raw toRGB, not squashed into [-1, 1]


def test_pggan_lod_upsamples_the_coarser_output(pggan16):
    z = torch.randn(2, 512)
    model = build_official("pggan", 16)
    model.load_state_dict(pggan16.state_dict())
    with torch.no_grad():
        model.lod.fill_(1.0)
        coarse = model.output1(model.layer3(model.layer2(model.layer1(model.layer0(z.view(2, 512, 1, 1))))))
        assert torch.allclose(model(z), F.interpolate(coarse, scale_factor=2, mode="nearest"), atol=1e-6)


def test_z_renormalisation_gives_norm_sqrt_512(pggan16):
    z = pggan16.sample(5, "cpu", torch.Generator().manual_seed(3))
    assert torch.allclose(z.norm(dim=1), torch.full((5,), math.sqrt(512)), atol=1e-3)
    z2 = pggan16.sample(5, "cpu", torch.Generator().manual_seed(3))
    assert torch.equal(z, z2)
    assert torch.allclose(normalize_z(torch.randn(4, 512) * 3).norm(dim=1), torch.full((4,), math.sqrt(512)))


# -- StyleGAN numerics ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stylegan16() -> StyleGANGenerator:
    torch.manual_seed(0)
    model = build_official("stylegan", 16).eval()
    with torch.no_grad():
        model.truncation.w_avg.normal_()
        for name, p in model.named_parameters():
            if name.endswith("apply_noise.weight"):
                p.normal_(std=0.1)  # make the fixed noise matter
    return model


@pytest.mark.parametrize("resolution", [64, 1024])
def test_truncation_touches_layers_0_to_7_only(resolution):
    layers = stylegan_num_layers(resolution)
    assert layers == {64: 10, 1024: 18}[resolution]
    trunc = Truncation(layers)  # what StyleGANGenerator builds, with genforce's ψ 0.7 on 8 layers
    with torch.no_grad():
        trunc.w_avg.normal_()
    w = torch.randn(3, 512)
    wp = trunc(w)
    avg = trunc.w_avg
    assert wp.shape == (3, layers, 512)
    assert torch.allclose(wp[:, :8], avg + 0.7 * (w[:, None] - avg), atol=1e-6)
    assert torch.equal(wp[:, 8:], w[:, None].expand(-1, layers - 8, -1))
    trunc.set_truncation(None, None)
    assert torch.equal(trunc(w), w[:, None].expand(-1, layers, -1))


def test_stylegan_spaces_agree_and_wplus_codes_are_not_truncated(stylegan16):
    z = stylegan16.sample(2, "cpu", torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = stylegan16.to_space(z, "w")
        wp = stylegan16.to_space(z, "wp")
        img_z = stylegan16.synthesize(z, "z")
        assert img_z.shape == (2, 3, 16, 16)
        assert torch.allclose(img_z, stylegan16.synthesize(w, "w"), atol=1e-5)
        assert torch.allclose(img_z, stylegan16.synthesize(wp, "wp"), atol=1e-5)
        untruncated = w[:, None].expand(-1, 6, -1)
        assert not torch.allclose(stylegan16.synthesize(untruncated, "wp"), img_z, atol=1e-3)
        assert torch.equal(img_z, stylegan16(z))  # fixed noise: deterministic
    with pytest.raises(ValueError, match="unknown latent space"):
        stylegan16.synthesize(z, "s")


def test_randomized_noise_changes_the_image(stylegan16):
    model = build_official("stylegan", 16, randomize_noise=True)
    model.load_state_dict(stylegan16.state_dict())
    z = torch.randn(1, 512)
    with torch.no_grad():
        assert not torch.allclose(model(z), model(z))


def test_mapping_lr_multiplier_applies_to_the_biases():
    mapping = MappingNetwork()
    with torch.no_grad():
        for i in range(8):
            getattr(mapping, f"dense{i}").linear.weight.zero_()
            getattr(mapping, f"dense{i}").wscale.bias.fill_(-3.0 if i == 7 else 1.0)
        out = mapping(torch.randn(2, 512))
    assert torch.allclose(out, torch.full((2, 512), 0.2 * -0.03))  # lrelu(0.01 · −3)


def test_style_modulation_is_x_times_s_plus_1_plus_b():
    epi = Epilogue(layer_idx=3, channels=4)
    s = torch.tensor([0.5, -1.0, 2.0, 0.0])
    b = torch.tensor([1.0, 0.0, -2.0, 3.0])
    with torch.no_grad():
        epi.style_mod.dense.linear.weight.zero_()
        epi.style_mod.dense.wscale.bias.copy_(torch.cat([s, b]))
        epi.apply_noise.weight.zero_()
        epi.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))
        x = torch.randn(2, 4, 8, 8)
        out = epi(x, torch.randn(2, 512))
    ref = instance_norm(F.leaky_relu(x + epi.bias.view(1, -1, 1, 1), 0.2))
    assert torch.allclose(out, ref * (s + 1).view(1, -1, 1, 1) + b.view(1, -1, 1, 1), atol=1e-5)


def test_instance_norm_uses_eps_1e8():
    x = torch.tensor([1e-4, -1e-4]).repeat(8).view(1, 1, 4, 4)  # variance exactly 1e-8
    assert torch.allclose(instance_norm(x).abs(), torch.full_like(x, 1 / math.sqrt(2)), atol=1e-4)
    assert torch.equal(instance_norm(torch.ones(1, 2, 4, 4)), torch.zeros(1, 2, 4, 4))
    assert torch.allclose(pixel_norm(torch.full((1, 3, 1, 1), 2.0)), torch.ones(1, 3, 1, 1))


def test_fused_upconv_is_upsample_then_flipped_conv_then_blur():
    torch.manual_seed(0)
    fused, plain = UpBlock(10, 6, 5, fused_scale="auto"), UpBlock(8, 6, 5, fused_scale="auto")
    assert fused.fused and not plain.fused  # layer 10 runs at 128 px, layer 8 at 64 px
    with torch.no_grad():
        plain.conv.weight.copy_(fused.weight.permute(3, 2, 0, 1).flip(2, 3))  # [3,3,in,out] -> [out,in,3,3]
        x, w = torch.randn(2, 6, 64, 64), torch.randn(2, 512)  # layer 10 runs at 128 px
        direct = fused_upconv(x, fused.weight, fused.scale)
        ref = F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), plain.conv.weight * plain.scale, padding=1)
        assert torch.allclose(direct, ref, atol=1e-5)
        blurred = fused.blur(direct)  # the blur follows the conv
        k = torch.tensor([[1.0, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16
        assert torch.equal(fused.blur.kernel[0, 0], k)
        assert torch.allclose(blurred, F.conv2d(direct, k.view(1, 1, 3, 3).repeat(5, 1, 1, 1), padding=1, groups=5))
        fused.epilogue.apply_noise.weight.zero_()
        assert torch.allclose(fused(x, w), fused.epilogue(blurred, w), atol=1e-6)


def test_bad_resolutions_fail_clearly():
    with pytest.raises(ValueError, match="resolution 48 is not supported"):
        build_official("stylegan", 48)
    with pytest.raises(ValueError, match="resolution 4 is not supported"):
        build_official("pggan", 4)
