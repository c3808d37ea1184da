"""Downloadable weights L2M-GAN can use, declared once (DESIGN §6).  None is needed offline: the
``cpu`` / ``reference`` presets train with w_hpf = 0 and without the perceptual and identity terms.
No publisher gives a sha256 for any of them, so ``sha256`` is None (verified by presence and, where
known, size) and each note says so; we never invent a hash.
"""
from __future__ import annotations

from benchmark.assets import Asset, declare

OFFICIAL_SMILING = declare(Asset(
    name="l2mgan_celebahq_smiling",
    # rucmlcv/L2M-GAN README, "Datasets and Pre-trained Networks": Baidu disk, extract code cka0.
    url="https://pan.baidu.com/s/1iVgVR-ljh3L4NYo9yqlDDw",
    filename="100000_nets_ema.ckpt",
    sha256=None,  # not published
    licence="CC BY-NC 4.0 (the official code's header, inherited from StarGAN v2); CelebA-HQ: non-commercial research",
    subdir="weights/l2mgan",
    description="official L2M-GAN EMA nets for Smiling on CelebA-HQ 256 px (generator, style_encoder, fan, vgg)",
    how_to_get="download 100000_nets_ema.ckpt from the Baidu disk link of github.com/rucmlcv/L2M-GAN "
    "(https://pan.baidu.com/s/1iVgVR-ljh3L4NYo9yqlDDw, extract code cka0); Baidu needs a browser, so "
    "this file is never downloaded automatically",
))

WING = declare(Asset(
    name="stargan_v2_wing",
    # clovaai/stargan-v2 download.sh, "wing" (dl=1 for the raw file).
    url="https://www.dropbox.com/s/tjxpypwpt38926e/wing.ckpt?dl=1",
    filename="wing.ckpt",
    sha256=None,  # not published
    licence="CC BY-NC 4.0 (StarGAN v2 release); FAN / AdaptiveWing architecture",
    subdir="weights/l2mgan",
    description="FAN face-landmark weights for the w_hpf = 1 high-pass skips (StarGAN v2 wing.ckpt)",
    how_to_get="run `bash download.sh wing` from github.com/clovaai/stargan-v2, or download "
    "https://www.dropbox.com/s/tjxpypwpt38926e/wing.ckpt?dl=1",
))

RESNET18_IMAGENET = declare(Asset(
    name="torchvision_resnet18_imagenet",
    # torchvision ResNet18_Weights.IMAGENET1K_V1; the official "vgg" entry is built from it.
    url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
    filename="resnet18-f37072fd.pth",
    sha256=None,  # torchvision publishes only the prefix f37072fd (checked after loading, see train.py)
    licence="BSD-3-Clause (torchvision); trained on ImageNet",
    subdir="weights/l2mgan",
    description="ImageNet ResNet-18 for the optional perceptual term (the official checkpoint's 'vgg')",
    how_to_get="download https://download.pytorch.org/models/resnet18-f37072fd.pth",
))
RESNET18_SHA256_PREFIX = "f37072fd"

ARCFACE_IR_SE50 = declare(Asset(
    name="arcface_ir_se50",
    # the Google Drive copy of TreB1eN/InsightFace_Pytorch's model_ir_se50.pth linked from the
    # pixel2style2pixel README (eladrich/pixel2style2pixel, "Pretrained Models").
    url="gdrive:1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn",
    filename="model_ir_se50.pth",
    sha256=None,  # not published
    licence="MIT (TreB1eN/InsightFace_Pytorch); trained on MS-Celeb-1M (research use)",
    subdir="weights/l2mgan",
    description="ArcFace IR-SE-50 for the optional identity loss (official option --face_path)",
    how_to_get="download model_ir_se50.pth from the pixel2style2pixel README link "
    "(https://drive.google.com/file/d/1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn)",
))

ALL = (OFFICIAL_SMILING, WING, RESNET18_IMAGENET, ARCFACE_IR_SE50)
