"""SynthFaces: determinism, splits, item contract, ground-truth invariants, correlations, oracle.

Small on purpose (32 px, a few dozen faces): the renderer is the real one.
"""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from benchmark.data.base import CELEBA_GROUPS, ITEM_KEYS, DataError, FaceDataset, FaceSplit, collate_faces
from benchmark.data.synthfaces import SynthFaces
from benchmark.data.synthfaces.dataset import RENDERER_VERSION
from benchmark.registry import DATASETS, METHODS, UnknownNameError
from methods.base import EditContext, EditorError

LEVEL = 2 / 255 + 1e-6  # one 8-bit level in [-1, 1] units


@pytest.fixture(scope="module")
def ds() -> SynthFaces:
    return SynthFaces(resolution=32, n_train_ids=10, n_test_ids=30, images_per_id=3, seed=0)


@pytest.fixture(scope="module")
def test_split(ds):
    return ds.split("test")


@pytest.fixture(scope="module")
def labels_only() -> SynthFaces:
    """Many identities for label statistics; nothing is rendered."""
    return SynthFaces(resolution=32, n_train_ids=6000, n_test_ids=10, images_per_id=2, seed=3)


def _person_mask(split, idx):
    return split.region_masks(idx, "Male")


def test_registered_with_celeba_groups(ds):
    assert isinstance(DATASETS.create("synthfaces", resolution=32, n_train_ids=2, n_test_ids=2), SynthFaces)
    assert ds.has_masks and ds.has_identities and ds.has_counterfactuals
    for a in ds.attributes:
        assert a.group == CELEBA_GROUPS[a.name]
    for name in ("Smiling", "Eyeglasses", "Bangs", "Mouth_Slightly_Open", "Mustache", "No_Beard",
                 "Male", "Young", "Blond_Hair", "Pale_Skin"):
        assert name in ds.attribute_names


def test_same_seed_bit_identical_other_seed_differs(ds):
    again = SynthFaces(resolution=32, n_train_ids=10, n_test_ids=30, images_per_id=3, seed=0)
    other = SynthFaces(resolution=32, n_train_ids=10, n_test_ids=30, images_per_id=3, seed=1)
    idx = torch.arange(0, 12)
    for split in ("train", "test"):
        a = ds.split(split).images(idx)
        assert torch.equal(a, again.split(split).images(idx))
        assert torch.equal(ds.split(split).labels_matrix(), again.split(split).labels_matrix())
        b = other.split(split).images(idx)
        assert (a - b).abs().mean() > 0.05
    assert ds.fingerprint() != other.fingerprint()
    # a renderer change must change every cache key built on the dataset
    assert ds.fingerprint()["renderer_version"] == RENDERER_VERSION


def test_splits_disjoint_and_several_images_per_identity(ds, labels_only):
    tr, te = ds.split("train"), ds.split("test")
    assert len(tr) == 30 and len(te) == 90
    assert not set(tr.identities().tolist()) & set(te.identities().tolist())
    ids = te.identities()
    assert torch.bincount(ids - ids.min()).eq(3).all()
    imgs = te.images(torch.tensor([0, 1, 2]))  # one person, three photos: pose / light differ
    assert (imgs[0] - imgs[1]).abs().mean() > 0.01
    p = te.identity_params(torch.tensor([0, 1, 2, 3]))
    assert p.shape == (4, len(SynthFaces.identity_param_names))
    assert torch.equal(p[0], p[2]) and not torch.equal(p[0], p[3])
    # per-person attributes are constant within an identity, per-image ones vary somewhere
    lab, pid = labels_only.split("train").labels_matrix(), labels_only.split("train").identities()
    pair_same = lambda col: bool((lab[0::2, col] == lab[1::2, col]).all())  # noqa: E731
    assert (pid[0::2] == pid[1::2]).all()
    for a in ("Male", "Young", "Blond_Hair", "Bangs", "Mustache"):
        assert pair_same(labels_only.attribute_index(a)), a
    for a in ("Smiling", "Mouth_Slightly_Open"):
        assert not pair_same(labels_only.attribute_index(a)), a
    z = labels_only.split("train").identity_params(torch.arange(0, 12000, 2))
    assert z.mean(0).abs().max() < 0.1 and ((z.std(0) - 1).abs() < 0.1).all()


def test_items_follow_contract(ds, test_split):
    item = test_split[4]
    assert set(item) == set(ITEM_KEYS)
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    assert item["labels"].dtype == torch.float32 and item["labels"].shape == (len(ds.attribute_names),)
    assert set(item["labels"].unique().tolist()) <= {0.0, 1.0}
    assert item["identity"].dtype == torch.int64 and item["identity"].ndim == 0
    assert item["index"].dtype == torch.int64 and int(item["index"]) == 4
    batch = next(iter(DataLoader(test_split, batch_size=7, collate_fn=collate_faces)))
    assert batch["image"].shape == (7, 3, 32, 32)
    assert torch.equal(batch["labels"], test_split.labels_matrix()[:7])
    assert torch.equal(test_split[-1]["index"], torch.tensor(len(test_split) - 1))
    with pytest.raises(IndexError):
        test_split[len(test_split)]


@pytest.mark.parametrize("attribute", ["Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Bangs", "Mustache",
                                       "No_Beard"])
def test_local_counterfactual_changes_only_inside_mask(ds, test_split, attribute):
    assert ds.group(attribute) == "local"
    idx = torch.arange(len(test_split))
    cur = test_split.labels_matrix()[:, ds.attribute_index(attribute)]
    src = test_split.images(idx)
    cf = test_split.counterfactuals(idx, attribute, 1 - cur)
    mask = test_split.region_masks(idx, attribute)
    assert mask.shape == (len(idx), 1, 32, 32) and set(mask.unique().tolist()) <= {0.0, 1.0}
    diff = (cf - src).abs().amax(dim=1, keepdim=True)
    assert (diff * (1 - mask)).max() <= LEVEL  # nothing outside the region changes
    changed = (diff > LEVEL).flatten(1).any(dim=1)
    assert changed.float().mean() > 0.9  # and the flip is visible in (nearly) every image
    person = _person_mask(test_split, idx)
    share = ((diff > 0).float() * person).sum((1, 2, 3)) / person.sum((1, 2, 3))
    assert share.mean() < 0.3


@pytest.mark.parametrize("attribute", ["Male", "Young", "Blond_Hair", "Pale_Skin"])
def test_global_counterfactual_changes_much_of_the_face(ds, test_split, attribute):
    assert ds.group(attribute) == "global"
    idx = torch.arange(0, len(test_split), 2)
    cur = test_split.labels_matrix()[idx, ds.attribute_index(attribute)]
    diff = (test_split.counterfactuals(idx, attribute, 1 - cur) - test_split.images(idx)).abs().amax(1, True)
    person = _person_mask(test_split, idx)
    share = ((diff > 0).float() * person).sum((1, 2, 3)) / person.sum((1, 2, 3))
    assert share.mean() > 0.3 and share.min() > 0.15
    mask = test_split.region_masks(idx, attribute)
    assert (diff * (1 - mask)).max() <= LEVEL


def test_counterfactual_with_current_label_is_the_image(ds, test_split):
    idx = torch.tensor([0, 5, 17, 40])
    for attribute in ("Smiling", "Male"):
        cur = test_split.labels_matrix()[idx, ds.attribute_index(attribute)]
        assert torch.equal(test_split.counterfactuals(idx, attribute, cur), test_split.images(idx))
        mixed = cur.clone()
        mixed[0] = 1 - mixed[0]
        cf = test_split.counterfactuals(idx, attribute, mixed)
        assert torch.equal(cf[1:], test_split.images(idx[1:])) and not torch.equal(cf[0], test_split.images(idx[:1])[0])


def test_bad_input_fails_clearly(ds, test_split):
    with pytest.raises(UnknownNameError):
        test_split.counterfactuals(torch.tensor([0]), "Wearing_Hat", torch.tensor([1]))
    with pytest.raises(DataError, match="0 or 1"):
        test_split.counterfactuals(torch.tensor([0]), "Smiling", torch.tensor([2]))
    with pytest.raises(DataError, match="resolution"):
        SynthFaces(resolution=16)
    with pytest.raises(DataError, match="unknown options"):
        SynthFaces(resolution=32, colour=True)


def test_label_correlations_are_celeba_like(labels_only):
    lab = labels_only.split("train").labels_matrix()
    col = {a: lab[:, labels_only.attribute_index(a)] for a in labels_only.attribute_names}
    male, smiling = col["Male"].bool(), col["Smiling"].bool()
    p = lambda a, cond: float(col[a][cond].mean())  # noqa: E731
    assert p("Mustache", male) > p("Mustache", ~male) + 0.2
    assert p("No_Beard", ~male) > p("No_Beard", male) + 0.2
    assert p("Blond_Hair", ~male) > p("Blond_Hair", male) + 0.1
    assert p("Eyeglasses", male) > p("Eyeglasses", ~male)
    assert p("Mouth_Slightly_Open", smiling) > p("Mouth_Slightly_Open", ~smiling) + 0.3
    assert p("Young", ~male) > p("Young", male)
    marginals = {a: float(c.mean()) for a, c in col.items()}
    assert 0.32 < marginals["Male"] < 0.42 and 0.70 < marginals["Young"] < 0.86
    assert 0.40 < marginals["Smiling"] < 0.56
    for a in ("Eyeglasses", "Mustache", "Pale_Skin", "Bangs", "Blond_Hair"):
        assert 0.1 < marginals[a] < 0.25, (a, marginals[a])


def test_oracle_editor_returns_counterfactuals(ds, test_split):
    oracle = METHODS.create("oracle")
    assert oracle.trainable is False
    idx = torch.tensor([1, 2, 30])
    images = test_split.images(idx)
    target = 1 - test_split.labels_matrix()[idx, ds.attribute_index("Eyeglasses")]
    out = oracle.edit(images, "Eyeglasses", target, strength=0.3, context=EditContext(split=test_split, index=idx))
    assert torch.equal(out, test_split.counterfactuals(idx, "Eyeglasses", target))
    assert not torch.equal(out, images)
    with pytest.raises(EditorError, match="EditContext"):
        oracle.edit(images, "Eyeglasses", target)

    class _NoTruth(FaceDataset):  # a dataset without counterfactuals, as any real one
        name = "no_truth"

        def split(self, name):
            return _Split(self)

    class _Split(FaceSplit):
        def __init__(self, dataset):
            self.dataset, self.split_name = dataset, "test"

        def __len__(self):
            return 3

        def __getitem__(self, i):
            raise NotImplementedError

    with pytest.raises(EditorError, match="no ground-truth"):
        oracle.edit(images, "Eyeglasses", target, context=EditContext(split=_NoTruth().split("test"), index=idx))


@pytest.mark.parametrize("attribute", ["Smiling", "Mouth_Slightly_Open"])
def test_mouth_changes_are_visible_at_64px_even_with_a_beard(attribute):
    """Issue 3: each attribute is a visible change.  At 64 px a smile (teeth, wider mouth) or an open
    mouth (a 2-3 px dark gap) must move a dozen-odd pixels strongly, and facial hair must not hide it
    (lips are drawn over the beard and the mustache)."""
    d = SynthFaces(resolution=64, n_train_ids=1, n_test_ids=40, images_per_id=1, seed=0)
    sp = d.split("test")
    idx = torch.arange(len(sp))
    p = sp.params.gather(idx)
    bearded = {**p, "Male": torch.ones(len(idx)), "No_Beard": torch.zeros(len(idx)), "Mustache": torch.ones(len(idx))}
    counts = []
    for params in (p, bearded):
        imgs = []
        for value in (0.0, 1.0):
            q = dict(params)
            q[attribute] = torch.full((len(idx),), value)
            imgs.append(sp._render(q)[0])
        strong = ((imgs[1] - imgs[0]).abs().amax(dim=1) > 0.25).flatten(1).sum(dim=1).float()
        assert strong.min() >= 4, strong
        counts.append(strong.mean())
    assert counts[0] >= 15 and counts[1] >= 0.7 * counts[0], counts


@pytest.mark.parametrize("resolution", [32, 256])
def test_resolutions_render(resolution):
    d = SynthFaces(resolution=resolution, n_train_ids=1, n_test_ids=1, images_per_id=1, seed=0, chunk_size=1)
    img = d.split("test")[0]["image"]
    assert img.shape == (3, resolution, resolution)
    assert img.std() > 0.1 and img.min() >= -1 and img.max() <= 1
