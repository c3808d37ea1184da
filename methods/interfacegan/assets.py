"""InterFaceGAN's released files, declared as assets: the three converted generators and the boundaries.

Generators: genforce/interfacegan converts NVIDIA's TensorFlow pickles to PyTorch state
dicts and distributes them from Dropbox; the URLs are those of the official Colab notebook
(``docs/InterFaceGAN.ipynb``, commit 8da3fc0; README, "GAN Models Used").  No checksum or
size is published, so ``sha256`` is None and a download is checked by the strict key/shape
load (``official.load_official``).  The weights are NVIDIA's: CC BY-NC 4.0 (the licence
of github.com/tkarras/progressive_growing_of_gans and github.com/NVlabs/stylegan).

Boundaries: the 39 ``boundaries/*_boundary.npy`` files of genforce/interfacegan (MIT),
fetched from a pinned commit.  Their sha256 values were computed here from copies whose
git blob ids equal the blobs of that commit's tree (``git hash-object`` against
``git ls-tree``), i.e. they hash the published files; GitHub itself publishes no sha256.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.assets import Asset, declare, fetch

__all__ = ["GENERATOR_ASSETS", "OFFICIAL_BOUNDARY_SHA256", "boundary_asset", "fetch_boundary", "GENFORCE_COMMIT"]

GENFORCE_COMMIT = "8da3fc0fe2a1d4c88dc5f9bee65e8077093ad2bb"  # genforce/interfacegan master, 2022
GENERATOR_LICENCE = ("CC BY-NC 4.0 (NVIDIA's PGGAN/StyleGAN weights, converted by genforce/interfacegan; "
                     "converter code MIT)")
_SUBDIR = "weights/interfacegan"


def _generator(name: str, url: str, what: str) -> Asset:
    return declare(Asset(
        name=f"interfacegan_{name}",
        url=url,
        filename=f"{name}.pth",
        sha256=None,  # genforce publishes neither a checksum nor a size
        size=None,
        licence=GENERATOR_LICENCE,
        subdir=_SUBDIR,
        description=f"{what}, converted to a PyTorch state dict by genforce/interfacegan "
                    "(no checksum is published; verified by a strict key/shape load)",
        how_to_get=f"download {url} (the URL of genforce/interfacegan docs/InterFaceGAN.ipynb), "
                   "or run once with internet access",
    ))


# name -> asset; the URLs are the three `wget` lines of docs/InterFaceGAN.ipynb
GENERATOR_ASSETS: dict[str, Asset] = {
    "pggan_celebahq": _generator(
        "pggan_celebahq", "https://www.dropbox.com/s/t74z87pk3cf8ny7/pggan_celebahq.pth?dl=1",
        "ProgressiveGAN CelebA-HQ 1024 px (karras2018iclr-celebahq-1024x1024.pkl)"),
    "stylegan_celebahq": _generator(
        "stylegan_celebahq", "https://www.dropbox.com/s/nmo2g3u0qt7x70m/stylegan_celebahq.pth?dl=1",
        "StyleGAN CelebA-HQ 1024 px (karras2019stylegan-celebahq-1024x1024.pkl)"),
    "stylegan_ffhq": _generator(
        "stylegan_ffhq", "https://www.dropbox.com/s/qyv37eaobnow7fu/stylegan_ffhq.pth?dl=1",
        "StyleGAN FFHQ 1024 px (karras2019stylegan-ffhq-1024x1024.pkl)"),
}

# stem (file name without `_boundary.npy`) -> sha256 of boundaries/<stem>_boundary.npy at GENFORCE_COMMIT.
# Each file is a 1x512 float64 unit normal (4224 bytes).  `_w` stems live in StyleGAN's W space (the
# mapping output before truncation), `_c_<attrs>` stems are conditional directions, all others live in Z.
OFFICIAL_BOUNDARY_SHA256: dict[str, str] = {
    "pggan_celebahq_age": "21f0c9e8d770d5dbcf8a595a0a3393ef06493f1ea10a7e94bdd9d377b4b25808",
    "pggan_celebahq_age_c_eyeglasses": "b302977794404669617e94801a8b42cd202279b871f8afb8f9cd0565bbbd476d",
    "pggan_celebahq_age_c_gender": "99deeeef7c80dad287767f95cc228b2d225b3985e63f5ac42f4d38b182c47995",
    "pggan_celebahq_age_c_gender_eyeglasses": "b9d3c3c30f22f45c9a2be50c187c1ffc26e22cc9c6a5cbc25bf6d79661029aa4",
    "pggan_celebahq_eyeglasses": "610887e564b02f3bdb40ceeb74ecf35d996f10fa4726b813ce3222a7ec0d0cb2",
    "pggan_celebahq_eyeglasses_c_age": "be3ded3af1aa222a9f2629b88bbf63ca61b7e2f632200b814bed42f372762afa",
    "pggan_celebahq_eyeglasses_c_age_gender": "22285e42c3d21dcfbcb228e0c13fb7113ffe58caf43e4238a0805d1cce66250d",
    "pggan_celebahq_eyeglasses_c_gender": "36a3d5cc5be0318a7093e6a917aac7a7111fa6c8db45b44f0a4b58265f9e04ff",
    "pggan_celebahq_gender": "52d8d086930c2b75a0ecfd526fcb373781398d78ec76dd89216074d7769833f1",
    "pggan_celebahq_gender_c_age": "bfd76a86f0db88fb640525db9f4c60894cff506d9627175fb6bf300666de040f",
    "pggan_celebahq_gender_c_age_eyeglasses": "83acb608b370390615fc0dd9dc325cbc49f1ada1f0e8f8252d3e043cfbc13cb7",
    "pggan_celebahq_gender_c_eyeglasses": "ada9cf353ac6195c350a311557bfe20187d467c636007a910539811d49cfd701",
    "pggan_celebahq_pose": "4f2ad3c43ecc4dcd58362e7a8e340c39992c9c8a66bfae5ca381f050f9a519a8",
    "pggan_celebahq_quality": "2d7299e94d20e6e29025c9a2a633441054988f4674cfa2dad80b794bad26333d",
    "pggan_celebahq_smile": "a8005cd24aa46d2810065358480cae4611bf8b8838ac453ec148a58a0162c3a8",
    "stylegan_celebahq_age": "ff4095c4cbc389e88a30b5faf351e641b598f6af50960b45d29f36ad2b278127",
    "stylegan_celebahq_age_w": "1193f356feb29bb535c689d2c14d2f6971318117eba2c3601df2a97c6339eb95",
    "stylegan_celebahq_eyeglasses": "01d8de63932d2d5328c9aaca4af59ad0a8d5ab87dc95e55cc607ffe20f1184ed",
    "stylegan_celebahq_eyeglasses_w": "897301c31db00bab38f709252ed7acff4c3b827abac1e0deed0c8ea590c6ebf9",
    "stylegan_celebahq_gender": "0d466f14cd644f7444c02614bdb0cef18ca9e8172f2794c156266ef2deb66141",
    "stylegan_celebahq_gender_w": "efa7d73ce4186bd791aa61a8deb2a2b7fae975381b80f3d48fa4361b80d00300",
    "stylegan_celebahq_pose": "2d06a03300ea1ccfceda408333d751193db604c6cc939dc4e8aee1eb46dd7851",
    "stylegan_celebahq_pose_w": "3da694dc6d08be345c58cc259be5af925bcf6fd43a69df370b1235b36fc79274",
    "stylegan_celebahq_smile": "fe58f46c58a42b833c1cb1d12f3a1089f51a53746dda1f691ae19f05c1d36879",
    "stylegan_celebahq_smile_w": "a722af195a3b6372027edbbd1aed3880bbb882fae45cfc4cb24a21a6ef37c82e",
    "stylegan_ffhq_age": "4317407b6601233af2ccdd912f30622636309a05c799c36cc5ce25271bb66488",
    "stylegan_ffhq_age_c_eyeglasses": "7ecaf2f7e5bde4749792990b1d1be95636e99ce5ffe61ef2df4d9f79b7ae671b",
    "stylegan_ffhq_age_c_gender": "e9defc75fddaca12b7c0cef4fe87dfb9c9778e2ab1921b466657e241388a5e62",
    "stylegan_ffhq_age_w": "f92c72c6621fd9630a2100168462a15a531bee410099847fdcdf844159eb7e30",
    "stylegan_ffhq_eyeglasses": "449efdec8d5890db3697f083a1c8525e84a03b6ca04ac0da8c14ad1be2985d83",
    "stylegan_ffhq_eyeglasses_c_age": "5f0d6dc4a2c37a4345c9278189bb4652f1af5d06323575d100cda8e1a978383f",
    "stylegan_ffhq_eyeglasses_c_gender": "9705c101d9156c7c35c897828b654495b0b1893760e78ca97daf7c9b2ed415ab",
    "stylegan_ffhq_eyeglasses_w": "ac826235cc7347eb1f57ba9e6e2904e52f34a6052a4db03dc693648a4f231cc5",
    "stylegan_ffhq_gender": "4fd66591b88ab174605db9e8e7fb2c2cdcd366d0bf4d068cbee0843e04c02100",
    "stylegan_ffhq_gender_w": "077953b129bbb52605b3391d4824938c9ded35337f60d282478c72dcc3c5c28f",
    "stylegan_ffhq_pose": "5f86d2db1961c9636b3c172a822a038641060d7a7d55a3912a6881e46996df78",
    "stylegan_ffhq_pose_w": "688585cf4d2bc3eead7bc18b4cf6e0985a0beb8a5ed46f25a08b2925d33efc1a",
    "stylegan_ffhq_smile": "ea42deb1077732d9689d0b41bee689e6d3605eb863638ac3011935738b020ca6",
    "stylegan_ffhq_smile_w": "5a729c200c2c933806116cb77624ccedbd6fce21aa98fca8be49aeaa35caa1c7",
}
BOUNDARY_FILE_SIZE = 4224  # 128-byte .npy header + 512 float64


def boundary_asset(stem: str) -> Asset:
    """The asset of official boundary ``stem`` (e.g. ``"stylegan_ffhq_smile_w"``), declared on first use.

    Declared lazily so that ``--assets`` lists only the boundaries a run actually uses.
    """
    if stem not in OFFICIAL_BOUNDARY_SHA256:
        raise KeyError(f"unknown official InterFaceGAN boundary {stem!r}; known: {sorted(OFFICIAL_BOUNDARY_SHA256)}")
    filename = f"{stem}_boundary.npy"
    url = f"https://raw.githubusercontent.com/genforce/interfacegan/{GENFORCE_COMMIT}/boundaries/{filename}"
    return declare(Asset(
        name=f"interfacegan_boundary_{stem}",
        url=url,
        filename=filename,
        sha256=OFFICIAL_BOUNDARY_SHA256[stem],
        size=BOUNDARY_FILE_SIZE,
        licence="MIT (genforce/interfacegan)",
        subdir=f"{_SUBDIR}/boundaries",
        description=f"InterFaceGAN boundary {stem} (1x512 float64 unit normal)",
        how_to_get=f"download {url}",
    ))


def fetch_boundary(stem: str, cache: Path | None = None, allow_download: bool | None = None) -> np.ndarray:
    """The official boundary ``stem`` as a checked 1×512 array (downloaded and verified on first use)."""
    from .boundary import load_boundary  # local import: boundary.py must stay importable without assets

    return load_boundary(fetch(boundary_asset(stem), cache=cache, allow_download=allow_download))
