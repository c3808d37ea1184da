"""benchmark.data.images.load_rgb on every bad-input kind, each made with PIL in tmp_path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from benchmark.data.base import DataError
from benchmark.data.images import BACKGROUND, MIN_SIZE, ImagePolicy, check_listed_images, load_rgb, probe_image


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


# -- issue 7: bit depth read from the values, animations, directories, up-front checks ---------------


def test_mode_i_tiff_holding_8_bit_values_is_not_divided_by_65535(tmp_path):
    """32-bit integer TIFFs written by tools that keep 8-bit data: a face, not a black square."""
    ramp = np.linspace(0, 255, 32 * 32).round().reshape(32, 32)
    Image.frombytes("I", (32, 32), ramp.astype("<i4").tobytes()).save(tmp_path / "eight.tif")
    assert Image.open(tmp_path / "eight.tif").mode == "I"
    out = _to_unit(load_rgb(tmp_path / "eight.tif", 32))[:, :, 0]
    np.testing.assert_allclose(out, ramp / 255.0, atol=1e-4)
    assert out.max() == pytest.approx(1.0, abs=1e-4)  # was 255/65535 = 0.004: almost black


def _animated_gif(path, frames: int = 3) -> None:
    ims = [Image.fromarray(np.full((16, 16, 3), 60 * k, np.uint8)) for k in range(frames)]
    ims[0].save(path, save_all=True, append_images=ims[1:], duration=100, loop=0)


def test_animated_gif_is_refused_by_name(tmp_path):
    _animated_gif(tmp_path / "anim.gif")
    with pytest.raises(DataError, match=r"anim\.gif is animated \(GIF, 3 frames\).*still image"):
        load_rgb(tmp_path / "anim.gif", 16)
    assert probe_image(tmp_path / "anim.gif")[0] == "animated"  # found up front, too
    Image.fromarray(_noise(16, 16)).save(tmp_path / "still.gif")  # a one-frame GIF is an image like any other
    assert load_rgb(tmp_path / "still.gif", 16).shape == (3, 16, 16)


def test_directory_named_like_an_image_says_so(tmp_path):
    (tmp_path / "x.jpg").mkdir()
    with pytest.raises(DataError, match=r"is a directory, not an image file: .*x\.jpg"):
        load_rgb(tmp_path / "x.jpg", 16)
    with pytest.raises(DataError, match=r"image file not found: .*absent\.jpg"):
        load_rgb(tmp_path / "absent.jpg", 16)


def test_probe_depths(tmp_path):
    """header finds what a header shows; decode also finds cut image data; none checks existence only."""
    Image.fromarray(_noise(64, 64)).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.png").write_bytes(b"\x89PNG but not really")
    Image.fromarray(_noise(MIN_SIZE - 1, 30)).save(tmp_path / "tiny.png")
    assert probe_image(tmp_path / "full.jpg", "decode") is None
    assert probe_image(tmp_path / "cut.jpg", "header") is None  # the header is intact
    kind, reason = probe_image(tmp_path / "cut.jpg", "decode")
    assert kind == "undecodable" and "cut.jpg" in reason
    assert probe_image(tmp_path / "junk.png", "header")[0] == "undecodable"
    assert probe_image(tmp_path / "junk.png", "none") is None
    assert probe_image(tmp_path / "tiny.png", "header")[0] == "too_small"
    assert probe_image(tmp_path / "nope.png", "none")[0] == "missing"


def test_check_listed_images_reports_all_then_applies_the_policy(tmp_path):
    Image.fromarray(_noise(16, 16)).save(tmp_path / "ok.png")
    (tmp_path / "junk.jpg").write_bytes(b"garbage")
    (tmp_path / "dir.jpg").mkdir()
    _animated_gif(tmp_path / "anim.gif")
    names = ["ok.png", "junk.jpg", "gone.png", "dir.jpg", "anim.gif"]
    paths = [tmp_path / n for n in names]
    where = [f"list.csv:{k + 2}" for k in range(len(names))]
    with pytest.raises(DataError) as err:
        check_listed_images(paths, where, ImagePolicy(), "test split")
    msg = str(err.value)
    assert "4 of 5 listed images are unusable" in msg
    for line, name, reason in [(3, "junk.jpg", "cannot decode"), (4, "gone.png", "not found"),
                               (5, "dir.jpg", "is a directory"), (6, "anim.gif", "animated")]:
        assert f"list.csv:{line}: {tmp_path / name}: " in msg and reason in msg.split(name, 1)[1].split("\n")[0]
    with pytest.raises(DataError, match="4 of 5"):  # on_missing: skip covers missing files only
        check_listed_images(paths, where, ImagePolicy(on_missing="skip"), "test split")
    keep, problems = check_listed_images(paths, where, ImagePolicy(on_bad="skip"), "test split")
    assert keep.tolist() == [0]
    assert [(p["where"], p["kind"]) for p in problems] == [
        ("list.csv:3", "undecodable"), ("list.csv:4", "missing"), ("list.csv:5", "directory"),
        ("list.csv:6", "animated")]
    assert all(p["file"] == str(tmp_path / names[k + 1]) and p["action"] == "skipped" for k, p in enumerate(problems))
    with pytest.raises(DataError, match="None is left"):
        check_listed_images(paths[1:], where[1:], ImagePolicy(on_bad="skip"), "test split")
    keep, _ = check_listed_images(paths, where, ImagePolicy(on_bad="skip"), "test split", limit=0)
    assert keep.tolist() == []  # max_items 0: nothing checked, nothing reported


def test_policy_options_are_checked():
    policy = ImagePolicy.from_options({"on_bad": "skip", "validate": "decode"}, "x")
    assert policy == ImagePolicy("error", "skip", "decode")
    for key, bad in [("on_bad", "ignore"), ("on_missing", True), ("validate", "full")]:
        with pytest.raises(DataError, match=rf"x: option {key} must be one of"):
            ImagePolicy.from_options({key: bad}, "x")
