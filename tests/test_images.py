"""benchmark.data.images.load_rgb on every bad-input kind, each made with PIL in tmp_path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from benchmark.data.base import DataError
from benchmark.data.images import BACKGROUND, MIN_SIZE, load_rgb


def _to_unit(t: torch.Tensor) -> np.ndarray:
    return ((t + 1) / 2).permute(1, 2, 0).numpy()


def _noise(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_rgb_output_contract(tmp_path):
    arr = np.zeros((40, 40, 3), np.uint8)
    arr[20:] = 255  # top half black, bottom half white: the full range must map to [-1, 1]
    Image.fromarray(arr).save(tmp_path / "a.png")
    x = load_rgb(tmp_path / "a.png", 16)
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0


def test_same_size_is_exact(tmp_path):
    arr = _noise(24, 24)
    Image.fromarray(arr).save(tmp_path / "a.png")
    np.testing.assert_allclose(_to_unit(load_rgb(tmp_path / "a.png", 24)), arr / 255.0, atol=1e-6)


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_is_a_data_error(tmp_path, cut):
    Image.fromarray(_noise(64, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: int(len(data) * cut)])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    with pytest.raises(DataError, match="cut.jpg"):
        load_rgb(tmp_path / "cut.jpg", 32)


def test_truncated_png_and_garbage_and_missing(tmp_path):
    Image.fromarray(_noise(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for name in ("cut.png", "junk.jpg", "absent.jpg"):
        with pytest.raises(DataError, match=name):
            load_rgb(tmp_path / name, 32)


def test_refuses_when_truncated_loading_was_enabled_elsewhere(tmp_path, monkeypatch):
    Image.fromarray(_noise(16, 16)).save(tmp_path / "a.png")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(DataError, match="LOAD_TRUNCATED_IMAGES"):
        load_rgb(tmp_path / "a.png", 16)


def test_grayscale_is_replicated(tmp_path):
    g = _noise(20, 20)[:, :, 0]
    Image.fromarray(g, mode="L").save(tmp_path / "g.png")
    out = _to_unit(load_rgb(tmp_path / "g.png", 20))
    for c in range(3):
        np.testing.assert_allclose(out[:, :, c], g / 255.0, atol=1e-6)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_composites_on_background(tmp_path, mode):
    # left half opaque red (or grey for LA), right half fully transparent
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[:, :8] = (200, 0, 0, 255) if mode != "LA" else (90, 90, 90, 255)
    rgba[:, 8:] = (0, 200, 0, 0)
    im = Image.fromarray(rgba, mode="RGBA")
    if mode == "LA":
        im = im.convert("LA")
    elif mode == "P":
        im = im.convert("P")
        pal_idx = np.asarray(im)[0, 12]
        im.info["transparency"] = int(pal_idx)
    path = tmp_path / f"t_{mode}.png"
    im.save(path, **({"transparency": im.info["transparency"]} if mode == "P" else {}))
    assert Image.open(path).mode == mode
    out = _to_unit(load_rgb(path, 16)) * 255
    np.testing.assert_allclose(out[:, 8:], np.broadcast_to(np.array(BACKGROUND, float), (16, 8, 3)), atol=0.6)
    expect_left = (90, 90, 90) if mode == "LA" else (200, 0, 0)
    np.testing.assert_allclose(out[:, :8], np.broadcast_to(np.array(expect_left, float), (16, 8, 3)), atol=0.6)


def test_cmyk(tmp_path):
    cmyk = np.zeros((16, 16, 4), np.uint8)
    cmyk[..., 1] = 255  # full magenta, no black -> RGB (255, 0, 255) under PIL's conversion
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "c.tif")
    out = _to_unit(load_rgb(tmp_path / "c.tif", 8)) * 255
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), [255, 0, 255], atol=1)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16_bit_is_scaled_not_clipped(tmp_path, mode):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32)
    raw = {"I": ramp.astype("<i4"), "I;16": ramp.astype("<u2"), "I;16B": ramp.astype(">u2")}[mode]
    im = Image.frombytes(mode, (32, 32), raw.tobytes())
    path = tmp_path / f"h_{mode.replace(';', '_')}.tif"
    im.save(path)
    assert Image.open(path).mode == mode
    out = _to_unit(load_rgb(path, 32))[:, :, 0]
    # a clipping loader would saturate everything above 255/65535 at 1.0
    np.testing.assert_allclose(out, ramp / 65535.0, atol=1e-4)
    assert 0.45 < np.median(out) < 0.55


def test_float_image_range(tmp_path):
    f = np.linspace(0, 1, 16 * 16, dtype=np.float32).reshape(16, 16)
    Image.fromarray(f, mode="F").save(tmp_path / "f.tif")
    np.testing.assert_allclose(_to_unit(load_rgb(tmp_path / "f.tif", 16))[:, :, 1], f, atol=1e-6)
    Image.fromarray(f * 300, mode="F").save(tmp_path / "big.tif")
    with pytest.raises(DataError, match="big.tif"):
        load_rgb(tmp_path / "big.tif", 16)


def test_tiny_image_is_refused(tmp_path):
    Image.fromarray(_noise(MIN_SIZE - 1, 30)).save(tmp_path / "tiny.png")
    with pytest.raises(DataError, match="tiny.png"):
        load_rgb(tmp_path / "tiny.png", 16)
    Image.fromarray(_noise(MIN_SIZE, MIN_SIZE)).save(tmp_path / "ok.png")
    assert load_rgb(tmp_path / "ok.png", 16).shape == (3, 16, 16)


def test_non_square_is_centre_cropped(tmp_path):
    # 20 rows × 60 cols: left and right thirds black, the centre square white
    arr = np.zeros((20, 60, 3), np.uint8)
    arr[:, 20:40] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    out = load_rgb(tmp_path / "wide.png", 10)
    assert out.shape == (3, 10, 10)
    assert torch.allclose(out, torch.ones_like(out), atol=1e-6)  # a squash would have pulled in black


def test_downscale_is_antialiased(tmp_path):
    # a one-pixel checkerboard averages to mid-grey under an antialiased resize;
    # point sampling would give pure black or white
    board = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    Image.fromarray(board, mode="L").save(tmp_path / "board.png")
    out = _to_unit(load_rgb(tmp_path / "board.png", 8))
    assert np.abs(out - 0.5).max() < 0.1
