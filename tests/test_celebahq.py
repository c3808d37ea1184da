"""celebahq / stargan_v2_celebahq datasets and CelebAMask-HQ region masks.

Real-data tests read ../shared/data beside the checkout and skip when it is absent.
Known facts used below: the data README (idx 1 Blond_Hair, 39 Male, 12345 Bangs;
split 24,183 / 2,993 / 2,824) and values read by eye with ``sed -n`` from the
attribute file (idx 0: Smiling 1, Male -1, Eyeglasses -1; idx 39: Mustache 1).
"""
from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from benchmark.assets import Asset, MissingAssetError
from benchmark.data.base import CELEBA_ATTRIBUTE_NAMES, DataError, collate_faces
from benchmark.data.celebahq import ATTRIBUTE_FILE, MAPPING_FILE, ensure_extracted, parse_attribute_file
from benchmark.data.images import load_rgb
from benchmark.data.masks import (
    CELEBAMASK_CLASSES, CLASS_LABEL, MASK_DIR, mask_file, region_from_label_map, to_mask_tensor,
)
from benchmark.registry import DATASETS, UnknownNameError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CELEBAHQ = SHARED_DATA / "celebahq"
SAMPLES = SHARED_DATA / "samples"
needs_celebahq = pytest.mark.skipif(not (CELEBAHQ / ATTRIBUTE_FILE).is_file(), reason="no ../shared/data/celebahq")
needs_samples = pytest.mark.skipif(not SAMPLES.is_dir(), reason="no ../shared/data/samples")

ATTR = {n: i for i, n in enumerate(CELEBA_ATTRIBUTE_NAMES)}


@pytest.fixture(scope="module")
def mirror64():
    if not (CELEBAHQ / ATTRIBUTE_FILE).is_file():
        pytest.skip("no ../shared/data/celebahq")
    return DATASETS.create("celebahq", resolution=32, root=str(CELEBAHQ), image_dir="CelebA-HQ-img-64")


# -- the real attribute file and split -------------------------------------------------------------


@needs_celebahq
def test_real_attribute_file_known_rows():
    table = parse_attribute_file(CELEBAHQ / ATTRIBUTE_FILE)
    assert table.names == CELEBA_ATTRIBUTE_NAMES
    assert table.values.shape == (30000, 40) and list(table.indices[:3]) == [0, 1, 2]
    row = {int(i): r for i, r in zip(table.indices, table.values)}
    assert row[1][ATTR["Blond_Hair"]] == 1
    assert row[39][ATTR["Male"]] == 1 and row[39][ATTR["Mustache"]] == 1
    assert row[12345][ATTR["Bangs"]] == 1
    assert row[0][ATTR["Smiling"]] == 1 and row[0][ATTR["Male"]] == 0 and row[0][ATTR["Eyeglasses"]] == 0
    assert set(np.unique(table.values)) == {0, 1}


@needs_celebahq
def test_official_split_counts(mirror64):
    sizes = {s: len(mirror64.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 24183, "val": 2993, "test": 2824}
    idx = [set(mirror64.split(s).celebahq_idx.tolist()) for s in ("train", "val", "test")]
    assert not (idx[0] & idx[1]) and not (idx[0] & idx[2]) and len(set.union(*idx)) == 30000


@needs_celebahq
def test_item_contract_and_resolution(mirror64):
    split = mirror64.split("val")
    item = split[0]
    assert set(item) == {"image", "labels", "identity", "index"}
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["labels"].dtype == torch.float32 and item["labels"].shape == (40,)
    assert item["identity"].item() == -1 and item["index"].item() == 0
    # 64 -> 32 with an antialiased bicubic is close to a 2×2 box average of the 64 px image
    full = load_rgb(split.paths[0], 64)
    assert (F.avg_pool2d(full[None], 2)[0] - item["image"]).abs().mean() < 0.03
    batch = collate_faces([split[i] for i in range(4)])
    assert batch["image"].shape == (4, 3, 32, 32) and batch["labels"].shape == (4, 40)


@needs_celebahq
def test_labels_follow_the_file(mirror64):
    """An item's labels are its own row of the file, found through its CelebA-HQ idx."""
    table = parse_attribute_file(CELEBAHQ / ATTRIBUTE_FILE)
    for name in ("train", "val"):
        split = mirror64.split(name)
        mat = split.labels_matrix()
        assert mat.shape == (len(split), 40)
        for k in (0, len(split) // 2, len(split) - 1):
            idx = int(split.celebahq_idx[k])
            assert torch.equal(mat[k], torch.as_tensor(table.values[idx], dtype=torch.float32))
            assert split.paths[k].name == f"{idx}.jpg"
    train = mirror64.split("train")
    k = int((train.celebahq_idx == 1).nonzero()[0])
    assert train[k]["labels"][ATTR["Blond_Hair"]] == 1


@needs_celebahq
def test_attribute_subset_and_max_items():
    ds = DATASETS.create("celebahq", resolution=16, root=str(CELEBAHQ), image_dir="CelebA-HQ-img-64",
                         attributes=["Smiling", "Male"], max_items=5)
    assert ds.attribute_names == ("Smiling", "Male") and ds.group("Smiling") == "local"
    split = ds.split("train")
    assert len(split) == 5 and split[4]["labels"].shape == (2,)
    table = parse_attribute_file(CELEBAHQ / ATTRIBUTE_FILE)
    idx = int(split.celebahq_idx[4])
    assert split[4]["labels"].tolist() == [table.values[idx][ATTR["Smiling"]], table.values[idx][ATTR["Male"]]]
    with pytest.raises(DataError, match="Smilling"):
        DATASETS.create("celebahq", root=str(CELEBAHQ), image_dir="CelebA-HQ-img-64", attributes=["Smilling"])


@needs_celebahq
def test_256_mirror_holds_the_test_split_only():
    ds = DATASETS.create("celebahq", resolution=64, root=str(CELEBAHQ), image_dir="CelebA-HQ-img-256")
    test = ds.split("test")
    assert len(test) == 2824 and test[0]["image"].shape == (3, 64, 64)
    with pytest.raises(DataError, match="only the official test split"):
        ds.split("train")
    skip = DATASETS.create("celebahq", root=str(CELEBAHQ), image_dir="CelebA-HQ-img-256", on_missing="skip")
    with pytest.raises(DataError, match="None is left"):
        skip.split("train")  # skipping everything would only hide the problem


# -- a small root in tmp_path ----------------------------------------------------------------------


def _write_anno(root: Path, rows: dict[int, list[int]], names=CELEBA_ATTRIBUTE_NAMES, count=None) -> None:
    lines = [str(len(rows) if count is None else count), " ".join(names)]
    lines += [f"{i}.jpg  " + " ".join(str(v) for v in vals) for i, vals in rows.items()]
    (root / ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")


def _small_root(tmp_path: Path, n: int = 6, mapping: bool = True) -> Path:
    """n images (idx 0..n-1) with one CelebA file per official split, in rotation."""
    root = tmp_path / "CelebAMask-HQ"
    (root / "CelebA-HQ-img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    _write_anno(root, {i: list(rng.choice([-1, 1], 40)) for i in range(n)})
    files = ["000010.jpg", "170000.jpg", "190000.jpg"]  # train, val, test
    if mapping:
        body = "".join(f"{i} {int(files[i % 3][:6]) - 1} {files[i % 3]}\n" for i in range(n))
        (root / MAPPING_FILE).write_text("idx orig_idx orig_file\n" + body)
    for i in range(n):
        Image.fromarray(np.full((20, 20, 3), 10 * i, np.uint8)).save(root / "CelebA-HQ-img" / f"{i}.jpg")
    return root


def test_small_root_splits_and_identities(tmp_path):
    root = _small_root(tmp_path)
    ids = tmp_path / "identity_CelebA.txt"
    ids.write_text("000010.jpg 7\n170000.jpg 8\n")
    ds = DATASETS.create("celebahq", resolution=8, root=str(root), identity_file=str(ids))
    assert [len(ds.split(s)) for s in ("train", "val", "test")] == [2, 2, 2]
    assert ds.split("train").celebahq_idx.tolist() == [0, 3]
    assert ds.split("train")[1]["identity"].item() == 7 and ds.split("test")[0]["identity"].item() == -1
    plain = DATASETS.create("celebahq", resolution=8, root=str(root))
    assert plain.split("val")[0]["identity"].item() == -1


def test_cache_keys_name_the_images_not_where_they_are(tmp_path):
    """The judge's and the FID reference's cache keys are the same for the same images in another folder,
    by a relative path or with ``download`` given; another image folder (the 256 px mirror) is another key.
    Keyed by ``root``, a shipped or already trained CelebA-HQ judge was trained again when the data moved."""
    import os

    from evaluators.classifier.cache import classifier_key
    from evaluators.classifier.config import default_config
    from evaluators.fid import reference_key

    class _Extractor:
        cache_id = "toy"

    a = _small_root(tmp_path / "a")
    b = _small_root(tmp_path / "b")
    same = [DATASETS.create("celebahq", resolution=8, root=str(a)),
            DATASETS.create("celebahq", resolution=8, root=os.path.relpath(b), download=False)]
    other = DATASETS.create("celebahq", resolution=8, root=str(a), image_dir="CelebA-HQ-img-256")
    keys = [(classifier_key(ds, default_config(ds)), reference_key(ds, "Smiling", 1, _Extractor(), 100, 0))
            for ds in (*same, other)]
    assert keys[0] == keys[1] and keys[2][0] != keys[0][0] and keys[2][1] != keys[0][1]
    assert same[0].fingerprint()["options"]["root"] != same[1].fingerprint()["options"]["root"]  # provenance keeps it


def test_edited_labels_get_a_key_of_their_own(tmp_path):
    """Options do not say what the attribute file holds: one label flipped, or one image moved to another
    split through the mapping file, is another cache key (judge, FID reference, fit); the same labels
    written with other spacing and line endings keep the key.  Keyed by options alone, an edited
    CelebAMask-HQ file (label-noise work does this) was served the judge trained on the old labels."""
    from evaluators.classifier.cache import classifier_key
    from evaluators.classifier.config import default_config
    from evaluators.fid import reference_key
    from methods.training import dataset_identity

    class _Extractor:
        cache_id = "toy"

    def keys(root: Path) -> tuple:
        ds = DATASETS.create("celebahq", resolution=8, root=str(root))
        return (classifier_key(ds, default_config(ds)), reference_key(ds, "Smiling", 1, _Extractor(), 100, 0),
                json.dumps(dataset_identity(ds), sort_keys=True))

    base = keys(_small_root(tmp_path / "a"))
    respaced = _small_root(tmp_path / "b")
    text = (respaced / ATTRIBUTE_FILE).read_text()
    (respaced / ATTRIBUTE_FILE).write_bytes(text.replace("  ", " ").replace("\n", "\r\n").encode())
    assert keys(respaced) == base
    flipped = _small_root(tmp_path / "c")
    lines = (flipped / ATTRIBUTE_FILE).read_text().splitlines()
    vals = lines[3].split()
    vals[1 + CELEBA_ATTRIBUTE_NAMES.index("Smiling")] = str(-int(vals[1 + CELEBA_ATTRIBUTE_NAMES.index("Smiling")]))
    lines[3] = " ".join(vals)
    (flipped / ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")
    moved = _small_root(tmp_path / "d")
    (moved / MAPPING_FILE).write_text((moved / MAPPING_FILE).read_text().replace("1 169999 170000.jpg",
                                                                                 "1 9 000010.jpg"))
    assert DATASETS.create("celebahq", root=str(moved)).split("train").celebahq_idx.tolist() == [0, 1, 3]
    for other in (keys(flipped), keys(moved)):
        assert all(k != b for k, b in zip(other, base))


@needs_celebahq
def test_the_official_labels_keep_the_keys_they_had():
    """The development copy of the official attribute and mapping files gives the declared official digest,
    so its keys carry no ``labels`` field: the keys made before label digests (the shipped judge's) hold."""
    from benchmark.data.base import content_fingerprint

    ds = DATASETS.create("celebahq", resolution=64, root=str(CELEBAHQ), image_dir="CelebA-HQ-img-64")
    assert ds.label_digest() in ds.official_label_digests and "labels" not in content_fingerprint(ds)
    index_split = DATASETS.create("celebahq", resolution=64, root=str(CELEBAHQ), split="index")
    assert "labels" in content_fingerprint(index_split)  # another split of the same files: its own digest


def test_missing_mapping_needs_explicit_index_split(tmp_path):
    root = _small_root(tmp_path, mapping=False)
    with pytest.raises(DataError, match=f"{MAPPING_FILE}.*official.*split: index"):
        DATASETS.create("celebahq", root=str(root))  # fails at construction, before any run starts
    idx_ds = DATASETS.create("celebahq", resolution=8, root=str(root), split="index")
    assert len(idx_ds.split("train")) == 6 and len(idx_ds.split("test")) == 0


def test_missing_listed_image(tmp_path):
    root = _small_root(tmp_path)
    (root / "CelebA-HQ-img" / "3.jpg").unlink()
    with pytest.raises(DataError, match="3.jpg"):
        DATASETS.create("celebahq", root=str(root)).split("train")
    assert DATASETS.create("celebahq", root=str(root), on_missing="skip").split("train").celebahq_idx.tolist() == [0]


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda lines: lines.__setitem__(4, lines[4].rsplit(" ", 1)[0]), r":5:.*39 values"),
        (lambda lines: lines.__setitem__(3, lines[3].replace(" -1", " 0", 1).replace(" 1", " 0", 1)), r":4:.*-1 or 1"),
        (lambda lines: lines.__setitem__(0, "7"), r":1:.*says 7"),
        (lambda lines: lines.__setitem__(1, lines[1].replace("Smiling", "Smilling")), r":2:.*Smilling"),
        (lambda lines: lines.__setitem__(5, "x.jpg " + lines[5].split(None, 1)[1]), r":6:.*<idx>.jpg"),
    ],
    ids=["value-count", "bad-value", "count-mismatch", "unknown-name", "bad-file-name"],
)
def test_malformed_attribute_files(tmp_path, mutate, where):
    root = _small_root(tmp_path)
    lines = (root / ATTRIBUTE_FILE).read_text().splitlines()
    mutate(lines)
    (root / ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=where) as err:
        DATASETS.create("celebahq", root=str(root))
    assert ATTRIBUTE_FILE in str(err.value)


def test_missing_data_without_download_says_what_where_how(tmp_path, cache_dir):
    with pytest.raises(MissingAssetError) as err:
        DATASETS.create("celebahq")
    msg = str(err.value)
    assert str(cache_dir / "datasets" / "CelebAMask-HQ") in msg  # where (the default root under the cache)
    assert ATTRIBUTE_FILE in msg and "CelebA-HQ-img" in msg  # what
    assert "switchablenorms/CelebAMask-HQ" in msg and "download: true" in msg  # how


def test_download_and_extract(tmp_path, cache_dir, monkeypatch):
    """ensure_extracted: fetch (file:// here; gdown is covered in test_assets) -> safe_extract -> root."""
    monkeypatch.delenv("FACEEDIT_OFFLINE", raising=False)
    src = _small_root(tmp_path / "src")
    archive = tmp_path / "CelebAMask-HQ.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in src.rglob("*"):
            zf.write(p, Path("CelebAMask-HQ") / p.relative_to(src))
    asset = Asset(name="CelebAMask-HQ", url=archive.as_uri(), filename="CelebAMask-HQ.zip", sha256=None,
                  subdir="datasets", how_to_get="test")
    root = cache_dir / "datasets" / "CelebAMask-HQ"
    ensure_extracted(asset, root, ATTRIBUTE_FILE, download=True, layout="test")
    ds = DATASETS.create("celebahq", resolution=8)  # the default root now holds the data
    assert ds.root == root and len(ds.split("test")) == 2
    assert not list(root.parent.glob(".*extracting*"))


# -- region masks on the real CelebAMask-HQ label maps ---------------------------------------------


def _label_maps() -> list[tuple[int, np.ndarray]]:
    """(CelebA-HQ idx, 512×512 19-class label map) of the ground-truth samples."""
    base = SAMPLES / "celebamask_hq_masks"
    with open(base / "celebahq_attributes.csv", newline="") as f:
        idx_of = {r["path"]: int(r["celebahq_idx"]) for r in csv.DictReader(f)}
    out = []
    for png in sorted((base / "gt_masks_1024").glob("*.png")):
        out.append((idx_of[f"gt_masks_1024/{png.stem}.jpg"], np.asarray(Image.open(png))))
    return out


def _centroid_y(region: np.ndarray) -> float:
    return float(np.nonzero(region)[0].mean())


@needs_samples
def test_class_table_matches_real_label_maps():
    """If the class order were wrong, mouth/hair/eyes would land in the wrong places."""
    for _, lm in _label_maps():
        mouth = region_from_label_map(lm, "Smiling")
        eyes = region_from_label_map(lm, "Narrow_Eyes")
        hair = region_from_label_map(lm, "Bangs")
        skin = lm == CLASS_LABEL["skin"]
        assert mouth.any() and eyes.any() and hair.any()
        nose = region_from_label_map(lm, "Big_Nose")
        assert np.nonzero(hair)[0].min() < _centroid_y(eyes) < _centroid_y(nose) < _centroid_y(mouth)
        assert skin.sum() > 10 * mouth.sum()  # skin is the big face class
        assert region_from_label_map(lm, "Male") is None


@needs_celebahq
@needs_samples
def test_region_masks_from_class_files(tmp_path):
    """Real label maps written out in the CelebAMask-HQ per-class layout, read back through the split."""
    root = tmp_path / "root"
    root.mkdir()
    for name in (ATTRIBUTE_FILE, MAPPING_FILE, "CelebA-HQ-img-64"):
        (root / name).symlink_to(CELEBAHQ / name)
    maps = _label_maps()
    for idx, lm in maps:
        for cls in CELEBAMASK_CLASSES:
            part = lm == CLASS_LABEL[cls]
            if part.any():
                path = mask_file(root / MASK_DIR, idx, cls)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(part.astype(np.uint8) * 255).save(path)
    ds = DATASETS.create("celebahq", resolution=32, root=str(root), image_dir="CelebA-HQ-img-64")
    for idx, lm in maps:
        split = next(ds.split(s) for s in ds.split_names if idx in ds.split(s).celebahq_idx.tolist())
        k = torch.tensor([split.celebahq_idx.tolist().index(idx)])
        got = split.region_masks(k, "Smiling")
        assert got.shape == (1, 1, 32, 32) and set(got.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(got, to_mask_tensor([region_from_label_map(lm, "Smiling")], 32))
        # dilation: the mask is a strict superset of the undilated one
        assert got.sum() > to_mask_tensor([region_from_label_map(lm, "Smiling")], 32, dilate_px=0).sum()
        assert split.region_masks(k, "Male") is None
        # no eyeglasses in these faces: the glasses region falls back to eyes and brows, not empty
        assert not (lm == CLASS_LABEL["eye_g"]).any()
        assert split.region_masks(k, "Eyeglasses").sum() > 0
        with pytest.raises(UnknownNameError):
            split.region_masks(k, "Smilling")
    # an image whose mask folder is absent has no masks
    train = ds.split("train")
    far = [k for k, i in enumerate(train.celebahq_idx.tolist()) if i >= 28000][:1]
    assert train.region_masks(torch.tensor(far), "Smiling") is None


def test_missing_part_files_give_an_empty_mask(tmp_path):
    root = _small_root(tmp_path)
    (root / MASK_DIR / "0").mkdir(parents=True)  # the folder exists, but image 0 has no hat, hair or any file
    ds = DATASETS.create("celebahq", resolution=8, root=str(root))
    m = ds.split("train").region_masks(torch.tensor([0]), "Wearing_Hat")
    assert m.shape == (1, 1, 8, 8) and m.sum() == 0
    no_masks = DATASETS.create("celebahq", resolution=8, root=str(_small_root(tmp_path / "b")))
    assert no_masks.split("train").region_masks(torch.tensor([0]), "Smiling") is None


# -- stargan_v2_celebahq ----------------------------------------------------------------------------


@needs_samples
def test_stargan_v2_layout(tmp_path):
    src = SAMPLES / "stargan_v2_celebahq_1024"
    root = tmp_path / "celeba_hq"
    for ours, theirs in (("train", "ref"), ("val", "src")):
        (root / ours).mkdir(parents=True)
        for g in ("female", "male"):
            (root / ours / g).symlink_to(src / theirs / g)
    ds = DATASETS.create("stargan_v2_celebahq", resolution=16, root=str(root))
    assert ds.attribute_names == ("Male",) and ds.split_names == ("train", "test")
    train, test = ds.split("train"), ds.split("test")
    assert len(train) == 46 and len(test) == 10  # ref: 25 + 21; src: 5 + 5
    with open(src / "celeba_hq_attributes.csv", newline="") as f:
        male = {r["path"]: r["Male"] == "1" for r in csv.DictReader(f)}
    for k in range(len(test)):  # the folder labels agree with CelebA's own Male label
        p = test.paths[k]
        assert bool(test.labels[k, 0]) == male[f"src/{p.parent.name}/{p.name}"]
    assert test[0]["image"].shape == (3, 16, 16)
    short = DATASETS.create("stargan_v2_celebahq", root=str(root), max_items=4).split("train")
    assert sorted(short.labels[:, 0].tolist()) == [0, 0, 1, 1]


def test_stargan_v2_keys_follow_the_folder_labels(tmp_path):
    """The gender folders are StarGAN v2's labels and ``root`` is not in its keys: another folder in the same
    layout, or one image moved from female/ to male/, is another key."""
    from benchmark.data.base import content_fingerprint

    def make(root: Path, male: list[str]) -> dict:
        for split in ("train", "val"):
            for gender in ("female", "male"):
                (root / split / gender).mkdir(parents=True, exist_ok=True)
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            gender = "male" if name in male else "female"
            Image.fromarray(np.full((8, 8, 3), 99, np.uint8)).save(root / "train" / gender / name)
        return content_fingerprint(DATASETS.create("stargan_v2_celebahq", resolution=8, root=str(root)))

    one = make(tmp_path / "one", ["a.jpg"])
    assert make(tmp_path / "copy", ["a.jpg"]) == one
    assert make(tmp_path / "moved", ["a.jpg", "b.jpg"]) != one


def test_stargan_v2_missing(cache_dir):
    with pytest.raises(MissingAssetError, match="female"):
        DATASETS.create("stargan_v2_celebahq")


def test_download_flag_must_be_a_boolean(tmp_path):
    with pytest.raises(DataError, match="download"):
        DATASETS.create("celebahq", root=str(tmp_path / "absent"), download="false")


# -- issue 7: one image per index, containment, bad images, archive chains --------------------------


def test_two_names_for_one_image_index_name_both_files(tmp_path):
    root = _small_root(tmp_path)
    lines = (root / ATTRIBUTE_FILE).read_text().splitlines()
    lines[2] = lines[2].replace("0.jpg", "0.png", 1)  # line 3: image 0 as 0.png
    lines[5] = "00.jpg " + lines[5].split(None, 1)[1]  # line 6: 00.jpg is image 0 too
    (root / ATTRIBUTE_FILE).write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        DATASETS.create("celebahq", root=str(root))
    msg = str(err.value)
    assert ATTRIBUTE_FILE in msg and "'0.png' (line 3) and '00.jpg' (line 6) both name image 0" in msg


def test_listed_name_is_the_file_opened(tmp_path):
    root = _small_root(tmp_path)
    Image.fromarray(np.full((20, 20, 3), 250, np.uint8)).save(root / "CelebA-HQ-img" / "4.png")
    anno = (root / ATTRIBUTE_FILE).read_text().replace("\n4.jpg ", "\n4.png ")
    (root / ATTRIBUTE_FILE).write_text(anno)
    split = DATASETS.create("celebahq", resolution=8, root=str(root)).split("val")
    k = split.celebahq_idx.tolist().index(4)
    assert split.paths[k].name == "4.png" and split[k]["image"].mean() > 0.9  # not 4.jpg (value 40)


def test_image_symlinked_out_of_the_image_folder_is_refused(tmp_path):
    root = _small_root(tmp_path)
    outside = tmp_path / "other_dataset_face.jpg"
    Image.fromarray(np.full((20, 20, 3), 99, np.uint8)).save(outside)
    (root / "CelebA-HQ-img" / "3.jpg").unlink()
    (root / "CelebA-HQ-img" / "3.jpg").symlink_to(outside)
    ds = DATASETS.create("celebahq", root=str(root), on_bad="skip")
    with pytest.raises(DataError, match=rf"{ATTRIBUTE_FILE}:6: '3\.jpg' resolves to {outside}, outside the data root"):
        ds.split("train")


def test_bad_celebahq_images_are_skipped_by_name_with_their_line(tmp_path):
    root = _small_root(tmp_path)
    (root / "CelebA-HQ-img" / "3.jpg").write_bytes(b"truncated to nothing")
    with pytest.raises(DataError, match=rf"{ATTRIBUTE_FILE}:6: .*3\.jpg: cannot decode"):
        DATASETS.create("celebahq", root=str(root)).split("train")
    ds = DATASETS.create("celebahq", root=str(root), on_bad="skip")
    assert ds.split("train").celebahq_idx.tolist() == [0]
    (problem,) = ds.problems
    assert problem["split"] == "train" and problem["kind"] == "undecodable" and problem["dataset"] == "celebahq"
    assert problem["file"].endswith("3.jpg") and problem["where"] == f"{root / ATTRIBUTE_FILE}:6"


def test_mask_file_symlinked_out_of_the_mask_folder_is_refused(tmp_path):
    root = _small_root(tmp_path)
    part = root / MASK_DIR / "0" / "00000_skin.png"
    part.parent.mkdir(parents=True)
    outside = tmp_path / "somebody_elses_mask.png"
    Image.fromarray(np.full((512, 512), 255, np.uint8)).save(outside)
    part.symlink_to(outside)
    ds = DATASETS.create("celebahq", resolution=8, root=str(root))
    with pytest.raises(DataError, match="mask of CelebA-HQ image 0.*outside the data root"):
        ds.split("train").region_masks(torch.tensor([0]), "Rosy_Cheeks")


def test_download_of_an_archive_with_a_symlink_chain_is_refused_and_cleaned_up(tmp_path, cache_dir, monkeypatch):
    """Was: tarfile's LinkOutsideDestinationError (a traceback in the CLI) and a half-extracted staging folder."""
    import io
    import tarfile

    from benchmark.assets import AssetError

    monkeypatch.delenv("FACEEDIT_OFFLINE", raising=False)
    archive = tmp_path / "CelebAMask-HQ.tar"
    with tarfile.open(archive, "w") as tf:
        body = b"5\n" + " ".join(CELEBA_ATTRIBUTE_NAMES).encode() + b"\n"
        info = tarfile.TarInfo(f"CelebAMask-HQ/{ATTRIBUTE_FILE}")
        info.size = len(body)
        tf.addfile(info, io.BytesIO(body))
        for name, target in (("CelebAMask-HQ/y", ".."), ("CelebAMask-HQ/x", "y/..")):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = tarfile.SYMTYPE, target
            tf.addfile(link)
    asset = Asset(name="CelebAMask-HQ", url=archive.as_uri(), filename="CelebAMask-HQ.tar", sha256=None,
                  subdir="datasets", how_to_get="test")
    root = cache_dir / "datasets" / "CelebAMask-HQ"
    with pytest.raises(AssetError, match=r"archive link 'CelebAMask-HQ/x' -> 'y/\.\.' points outside"):
        ensure_extracted(asset, root, ATTRIBUTE_FILE, download=True, layout="test")
    assert not root.exists() and not list(root.parent.glob(".*extracting*"))
