"""The floor of every table: the median-filter residual, a detector with no training at all.

Pixel score = ``|x - median_k(x)|`` (a ``k x k`` median, reflect-padded borders), averaged
over channels: large where a pixel differs from its neighbourhood (a scratch, a hole, an
edge), zero on flat and on smoothly varying surfaces. It learns nothing about what is
normal, so a method that does not beat it on a dataset has not shown that it learned the
dataset's normal appearance. Scored by the study's shared post-processing like every method.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import median_filter
from torch import nn

from pvqae.baselines.common import BaselineOutput


class MedianFilterResidual(nn.Module):
    """``|x - median_k(x)|`` per pixel, channel mean; nothing to fit.

    Args:
        kernel: side of the median window in pixels (odd, >= 3).
    """

    def __init__(self, kernel: int = 9):
        super().__init__()
        if kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"baselines.median_filter.kernel must be an odd integer >= 3, got {kernel}")
        self.kernel = int(kernel)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> BaselineOutput:
        """Raw residual maps (N, S, S) and their max (N,) of images (N, C, S, S) in [0, 1]."""
        x = images.detach().cpu().float().numpy()
        med = median_filter(x, size=(1, 1, self.kernel, self.kernel), mode="reflect")
        res = torch.from_numpy(np.abs(x - med).mean(1)).to(images.device)
        return BaselineOutput(score_map=res, image_score=res.flatten(1).amax(1))
