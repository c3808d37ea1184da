"""SaGAN (Zhang, Kan, Shan, Chen, ECCV 2018): attribute manipulation + spatial attention.

Importing the package registers the ``sagan`` editor and declares the released checkpoints.
"""
from methods.sagan.editor import SaGANEditor, SaGANOptions  # noqa: F401
