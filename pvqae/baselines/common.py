"""What every baseline returns, and the map -> score step they share.

Both memory-based baselines (PatchCore, Roth et al., CVPR 2022; PaDiM, Defard et al.,
ICPR 2021) upsample a patch-level score grid bilinearly to the input size. Every baseline
returns its raw map; the harness applies the study's shared post-processing
(:func:`pvqae.scoring.postprocess`: Gaussian smoothing, sigma 4 at 256 px as in both
references, and the image score rule) to every method alike.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class BaselineOutput(NamedTuple):
    """Scores of a batch.

    Attributes:
        score_map: (N, H, W) pixel scores at input resolution (higher = more anomalous); raw
            from a model, post-processed once the harness has scored it.
        image_score: (N,) image scores (the raw map's max from a model).
    """

    score_map: torch.Tensor
    image_score: torch.Tensor


def patch_scores_to_output(patch_scores: torch.Tensor, size: tuple[int, int]) -> BaselineOutput:
    """(N, h, w) patch scores -> bilinear upsampling to ``size`` -> raw ``BaselineOutput``
    (image score = max of the raw map)."""
    up = F.interpolate(patch_scores.unsqueeze(1), size=size, mode="bilinear", align_corners=False)[:, 0]
    return BaselineOutput(score_map=up, image_score=up.flatten(1).max(1).values)


class FrozenBackboneModel(nn.Module):
    """Base of the memory-based baselines: a frozen, always-eval ImageNet backbone plus fitted
    buffers. ``state_dict()`` leaves the backbone out (a checkpoint holds only what was
    fitted); ``load_state_dict`` keeps the current backbone and resizes the fitted buffers
    named in ``resizable`` to the saved shapes (they depend on training set and image size)."""

    def __init__(self, backbone: nn.Module, resizable: tuple[str, ...]):
        super().__init__()
        self.backbone = backbone.eval().requires_grad_(False)
        self.register_state_dict_post_hook(_drop_backbone)
        self.register_load_state_dict_pre_hook(_fill_backbone_and_resize(tuple(resizable)))
        self._first_buffer = resizable[0]

    def train(self, mode: bool = True):
        """Mode switch that keeps the frozen backbone in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    @property
    def device(self) -> torch.device:
        return getattr(self, self._first_buffer).device


def _drop_backbone(module, state_dict, prefix, local_metadata) -> None:
    """State-dict post-hook: leave out the frozen backbone's weights."""
    for key in [k for k in state_dict if k.startswith(prefix + "backbone.")]:
        del state_dict[key]


def _fill_backbone_and_resize(resizable: tuple[str, ...]):
    """Load pre-hook: fill absent backbone keys with the current backbone's tensors (so a
    saved fitted state loads strictly) and resize the fitted buffers named in ``resizable``
    to the incoming shapes (their size depends on the training set and image size)."""

    def hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        for key, value in module.backbone.state_dict(prefix=prefix + "backbone.").items():
            state_dict.setdefault(key, value)
        for name in resizable:
            incoming = state_dict.get(prefix + name)
            current = getattr(module, name)
            if isinstance(incoming, torch.Tensor) and incoming.shape != current.shape:
                setattr(module, name, torch.empty(incoming.shape, dtype=current.dtype, device=current.device))

    return hook
