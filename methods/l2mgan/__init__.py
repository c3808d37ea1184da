"""L2M-GAN (Yang et al., CVPR 2021) as the registered editor ``l2mgan``; importing registers it."""
from methods.l2mgan.editor import L2MGANEditor  # noqa: F401
