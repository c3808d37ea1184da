"""L2M-GAN networks in the official module naming (rucmlcv/L2M-GAN core/model.py, core/wing.py)."""
from methods.l2mgan.networks.arcface import IRSE50
from methods.l2mgan.networks.blocks import AdaIN, AdainResBlk, Attention, HighPass, ResBlk
from methods.l2mgan.networks.discriminator import Discriminator
from methods.l2mgan.networks.fan import FAN
from methods.l2mgan.networks.generator import Generator, official_dim_in
from methods.l2mgan.networks.resnet_features import ResNet18Features
from methods.l2mgan.networks.style_encoder import StyleCodes, StyleEncoder

__all__ = ["AdaIN", "AdainResBlk", "Attention", "Discriminator", "FAN", "Generator", "HighPass", "IRSE50",
           "ResBlk", "ResNet18Features", "StyleCodes", "StyleEncoder", "official_dim_in"]
