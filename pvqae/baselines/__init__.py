"""Baselines the PVQAE study compares against, each a plain ``nn.Module`` that turns a
batch of images in [0, 1] into a raw pixel score map and an image score at input resolution
(the harness applies the study's shared post-processing to every one):

- ``median_filter``: the untrained floor;
- ``ae_ssim``: a reconstruction baseline trained from scratch;
- on a frozen ImageNet backbone (``pvqae.backbones``): ``patchcore`` (Roth et al., CVPR 2022),
  ``padim`` (Defard et al., ICPR 2021);
- the study's other two systems, on the same backbone: ``patch_ae`` (document 002),
  ``vq_flow`` (document 001).

Shared output type and helpers in ``common``; one harness in ``harness``.
"""

METHODS = ("median_filter", "ae_ssim", "patchcore", "padim", "patch_ae", "vq_flow")
# the methods that need an ImageNet backbone; tables name it beside their label
NEEDS_BACKBONE = ("patchcore", "padim", "patch_ae", "vq_flow")
