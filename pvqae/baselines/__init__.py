"""Baselines the PVQAE study compares against, each a plain ``nn.Module`` that turns a
batch of images in [0, 1] into a pixel score map and an image score at input resolution:
memory-based methods on a frozen ImageNet WideResNet-50-2 (``patchcore``: Roth et al.,
CVPR 2022; ``padim``: Defard et al., ICPR 2021; backbone in ``backbones``, shared output
type in ``common``) and a reconstruction baseline (``ae_ssim``).
"""
