"""image_folder: a folder of images plus a CSV of CelebA attribute labels."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmark.data.base import DataError
from benchmark.data.folder import hashed_split
from benchmark.registry import DATASETS

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "samples" / "stargan_v2_celebahq_1024"


def _folder(tmp_path: Path, header: list[str], rows: list[list], n_img: int | None = None) -> Path:
    root = tmp_path / "faces"
    root.mkdir(exist_ok=True)
    for r in rows[: n_img if n_img is not None else len(rows)]:
        Image.fromarray(np.full((12, 16, 3), 128, np.uint8)).save(root / r[0])
    with open(root / "attributes.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return root


def test_labels_identity_and_split_columns(tmp_path):
    rows = [["a.png", 1, -1, 5, "train"], ["b.png", -1, 1, 6, "test"], ["c.png", 1, 1, "", "val"]]
    root = _folder(tmp_path, ["filename", "Smiling", "Male", "identity", "split"], rows)
    ds = DATASETS.create("image_folder", resolution=8, root=str(root))
    assert ds.attribute_names == ("Smiling", "Male") and ds.split_names == ("train", "val", "test")
    item = ds.split("train")[0]
    assert item["labels"].tolist() == [1.0, 0.0] and item["labels"].dtype == torch.float32
    assert item["identity"].item() == 5 and item["image"].shape == (3, 8, 8)
    assert ds.split("test")[0]["labels"].tolist() == [0.0, 1.0]
    assert ds.split("val")[0]["identity"].item() == -1
    assert ds.split("val").labels_matrix().tolist() == [[1.0, 1.0]]


def test_zero_one_coding_and_attribute_subset(tmp_path):
    rows = [["a.png", 0, 1, "test"], ["b.png", 1, 0, "test"]]
    root = _folder(tmp_path, ["filename", "Eyeglasses", "Young", "split"], rows)
    ds = DATASETS.create("image_folder", resolution=8, root=str(root), attributes=["Young"])
    assert ds.split("test").labels_matrix().tolist() == [[1.0], [0.0]]
    with pytest.raises(DataError, match="Bangs"):
        DATASETS.create("image_folder", root=str(root), attributes=["Bangs"])


@pytest.mark.parametrize("bad", ["2", "yes", "", "0.5"])
def test_bad_value_names_the_row(tmp_path, bad):
    rows = [["a.png", 1], ["b.png", bad], ["c.png", 0]]
    root = _folder(tmp_path, ["filename", "Smiling"], rows)
    with pytest.raises(DataError, match=r"attributes\.csv:3:.*Smiling"):
        DATASETS.create("image_folder", root=str(root))


def test_mixed_codings_in_a_column(tmp_path):
    rows = [["a.png", 1], ["b.png", 0], ["c.png", 1], ["d.png", -1]]
    root = _folder(tmp_path, ["filename", "Smiling"], rows)
    with pytest.raises(DataError, match=r":5:.*mixes -1 and 0"):
        DATASETS.create("image_folder", root=str(root))


def test_unknown_column_lists_celeba_names(tmp_path):
    root = _folder(tmp_path, ["filename", "smile", "Male"], [["a.png", 1, 1]])
    with pytest.raises(DataError) as err:
        DATASETS.create("image_folder", root=str(root))
    msg = str(err.value)
    assert "'smile'" in msg and "Smiling" in msg and "5_o_Clock_Shadow" in msg
    ds = DATASETS.create("image_folder", root=str(root), ignore_columns=["smile"])
    assert ds.attribute_names == ("Male",)


def test_bad_split_and_identity_cells(tmp_path):
    root = _folder(tmp_path, ["filename", "Male", "split"], [["a.png", 1, "train"], ["b.png", 1, "dev"]])
    with pytest.raises(DataError, match=r":3:.*split"):
        DATASETS.create("image_folder", root=str(root))
    root = _folder(tmp_path, ["filename", "Male", "identity"], [["a.png", 1, "x7"]])
    with pytest.raises(DataError, match=r":2:.*identity"):
        DATASETS.create("image_folder", root=str(root))


def test_hashed_split_is_deterministic_and_proportional(tmp_path):
    names = [f"img_{i:04d}.png" for i in range(2000)]
    share = np.mean([hashed_split(n, 0.1) == "test" for n in names])
    assert 0.08 < share < 0.12
    assert [hashed_split(n, 0.1) for n in names[:50]] == [hashed_split(n, 0.1) for n in names[:50]]
    rows = [[n, i % 2] for i, n in enumerate(names[:40])]
    root = _folder(tmp_path, ["filename", "Male"], rows)
    ds = DATASETS.create("image_folder", resolution=8, root=str(root), test_fraction=0.25)
    test_files = {p.name for p in ds.split("test").paths}
    assert test_files == {n for n in names[:40] if hashed_split(n, 0.25) == "test"}
    assert len(ds.split("train")) + len(test_files) == 40 and ds.split_names == ("train", "test")


def test_missing_images(tmp_path):
    rows = [["a.png", 1, "train"], ["b.png", 0, "train"]]
    root = _folder(tmp_path, ["filename", "Male", "split"], rows, n_img=1)
    ds = DATASETS.create("image_folder", root=str(root))
    with pytest.raises(DataError, match="b.png"):
        ds.split("train")
    assert len(DATASETS.create("image_folder", root=str(root), on_missing="skip").split("train")) == 1


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no ../shared/data/samples")
def test_real_samples_csv():
    """The StarGAN v2 samples' CSV (path, ids, 40 attributes in -1/1) read as an image folder."""
    ds = DATASETS.create(
        "image_folder", resolution=32, root=str(SAMPLES), csv="celeba_hq_attributes.csv",
        filename_column="path", ignore_columns=["celebahq_idx", "celeba_file", "celeba_identity"],
    )
    assert len(ds.attribute_names) == 40
    n = sum(len(ds.split(s)) for s in ds.split_names)
    assert n == 56
    split = ds.split("train")
    male = ds.attribute_index("Male")
    for k in range(len(split)):  # StarGAN v2 sorted these faces into female/male folders
        assert split.labels[k, male].item() == (split.paths[k].parent.name == "male")
    assert split[0]["image"].shape == (3, 32, 32)
