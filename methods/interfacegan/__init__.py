"""InterFaceGAN (Shen et al., CVPR 2020 / TPAMI 2020): linear SVM boundaries in a GAN's latent space.

Modules: ``networks`` (our StyleGAN2-like GAN), ``train`` (the stages), ``labeller`` (attribute scorer,
not the judge), ``encoder`` (real-image inversion), ``boundary`` / ``manipulate`` (genforce's boundary
fitting and latent edits), ``official`` / ``assets`` (the released generators and boundaries), and
``editor`` (the registered ``interfacegan`` Editor; importing it registers the method).
"""
