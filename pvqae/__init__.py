"""pvqae: a reproducible study of Patch-aware Vector Quantized Codebook Learning (PVQAE).

The library backs the papermill notebooks in ``notebooks/``; one module per concept of the
paper (``../shared/papers/000_*.txt``):

- ``pvqae.data``        dataset readers (MVTec AD, BTAD, MTSD, any MVTec-layout folder) and
                        the synthetic default dataset
- ``pvqae.metrics``     image/pixel AUROC, AUPRO@0.3, F1-max
- ``pvqae.quantizer``   vector quantizer (Sec. III-A1)
- ``pvqae.autoencoder`` VQ-GAN encoder/decoder blocks (Sec. III-A, IV-A)
- ``pvqae.losses``      SSIM, PatchGAN discriminator, hinge loss, adaptive weight (Sec. III-A2)
- ``pvqae.routing``     Dynamic Routing Module (Sec. III-B1)
- ``pvqae.budget``      DWT-entropy budget cost and lambda schedules (Sec. III-B2)
- ``pvqae.prior``       Budget Prior Transformer (Sec. III-C1)
- ``pvqae.scoring``     defect score maps (Sec. III-C2)
"""

__version__ = "0.1.0"
