"""What every baseline returns, and the map -> score step they share.

Both memory-based baselines (PatchCore, Roth et al., CVPR 2022; PaDiM, Defard et al.,
ICPR 2021) upsample a patch-level score grid bilinearly to the input size, smooth it with a
Gaussian (sigma 4 in both references) and take the image score as the max of the map.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from pvqae.scoring import gaussian_blur


class BaselineOutput(NamedTuple):
    """Scores of a batch.

    Attributes:
        score_map: (N, H, W) pixel scores at input resolution (higher = more anomalous).
        image_score: (N,) image scores.
    """

    score_map: torch.Tensor
    image_score: torch.Tensor


def patch_scores_to_output(patch_scores: torch.Tensor, size: tuple[int, int], smooth_sigma: float) -> BaselineOutput:
    """(N, h, w) patch scores -> bilinear upsampling to ``size`` -> Gaussian blur (``smooth_sigma``,
    0 = off) -> ``BaselineOutput`` with image score = max of the smoothed map."""
    up = F.interpolate(patch_scores.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
    score_map = gaussian_blur(up, smooth_sigma)
    return BaselineOutput(score_map=score_map, image_score=score_map.flatten(1).max(1).values)
