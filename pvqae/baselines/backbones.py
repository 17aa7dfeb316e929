"""WideResNet-50-2 (Zagoruyko & Komodakis 2016, as in torchvision), the frozen ImageNet
feature extractor of PatchCore (Roth et al., CVPR 2022) and PaDiM (Defard et al., ICPR 2021).

torchvision is not a dependency, so the network is defined here with module and parameter
names identical to torchvision's ``wide_resnet50_2`` (``conv1``, ``bn1``, ``layer1.0.conv1``,
..., ``layer1.0.downsample.0``/``.1``, ``fc``): torchvision's ImageNet files
``wide_resnet50_2-95faca4d.pth`` (IMAGENET1K_V1, the weights both papers used) and
``wide_resnet50_2-9ba9bcbe.pth`` (IMAGENET1K_V2) load with ``strict=True``.

Weights are never invented: ``load_backbone`` returns ``(None, "not run: ...")`` when no
pretrained file is available, and the caller reports the baseline as not run. Randomly
initialised networks (``random_backbone``) exist for tests only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from pvqae.paths import repo_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"  # IMAGENET1K_V1
CACHE_PATTERN = "wide_resnet50_2-*.pth"
PREFERRED_FILE = "wide_resnet50_2-95faca4d.pth"
NO_WEIGHTS = "not run: no pretrained weights"
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), torchvision's layout and names."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 base_width: int = 64):
        super().__init__()
        width = int(planes * base_width / 64)
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class WideResNet50_2(nn.Module):
    """torchvision's ``wide_resnet50_2``: Bottleneck blocks [3, 4, 6, 3], width_per_group 128.

    ``layer1``..``layer4`` output 256/512/1024/2048 channels at strides 4/8/16/32 (``channels``,
    ``strides``). ``feature_layers`` is the feature-extractor entry point: it takes images in
    [0, 1] (1 or 3 channels), applies the ImageNet normalisation itself and runs only as deep
    as the deepest requested layer. The normalisation constants are non-persistent buffers,
    so the state dict holds exactly torchvision's keys.
    """

    channels: ClassVar[dict[str, int]] = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    strides: ClassVar[dict[str, int]] = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}

    def __init__(self, layers: tuple[int, ...] = (3, 4, 6, 3), width_per_group: int = 128, num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * Bottleneck.expansion, num_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion))
        layers = [Bottleneck(self.inplanes, planes, stride, downsample, self.base_width)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes, base_width=self.base_width) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1], (N, 1 or 3, H, W) -> ImageNet-normalised 3-channel input."""
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[1] != 3:
            raise ValueError(f"expected 1- or 3-channel images, got {images.shape[1]} channels")
        return (images.to(self.mean.dtype) - self.mean) / self.std

    @torch.no_grad()
    def feature_layers(self, images: torch.Tensor,
                       layers: tuple[str, ...] = ("layer2", "layer3")) -> dict[str, torch.Tensor]:
        """Intermediate feature maps ``{name: (N, C, H/stride, W/stride)}`` of images in [0, 1].

        Runs in eval mode (BatchNorm with ImageNet running statistics; the module's previous
        mode is restored) without gradients, and stops after the deepest requested layer.
        """
        unknown = set(layers) - set(LAYER_NAMES)
        if unknown:
            raise ValueError(f"unknown layers {sorted(unknown)}; choose from {LAYER_NAMES}")
        was_training = self.training
        self.eval()
        try:
            x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(images)))))
            out = {}
            deepest = max(LAYER_NAMES.index(name) for name in layers)
            for name in LAYER_NAMES[:deepest + 1]:
                x = getattr(self, name)(x)
                if name in layers:
                    out[name] = x
            return out
        finally:
            self.train(was_training)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (N, 1000) of images in [0, 1] (for completeness; unused by the baselines)."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.normalize(images)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def random_backbone(seed: int = 0) -> WideResNet50_2:
    """A randomly initialised WideResNet-50-2 (torchvision's init), in eval mode.

    FOR TESTS ONLY: random features make PatchCore/PaDiM run but say nothing about their
    accuracy; results must come from ``load_backbone`` with the ImageNet weights.
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return WideResNet50_2().eval()
    finally:
        torch.random.set_rng_state(gen_state)


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
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


def load_state_dict_checked(model: WideResNet50_2, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state, strict=True)`` with a readable ValueError on any key or
    shape mismatch (a few offending keys are named)."""
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
        raise ValueError(f"{source} is not a torchvision wide_resnet50_2 state dict: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _from_file(path: Path) -> tuple[WideResNet50_2, str]:
    model = WideResNet50_2()
    load_state_dict_checked(model, _state_dict_from_file(path), str(path))
    return model.eval(), f"weights: {path.name}"


def cached_weights() -> Path | None:
    """torchvision's wide_resnet50_2 file in the torch hub cache, if any (V1 preferred)."""
    found = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(CACHE_PATTERN))
    preferred = [p for p in found if p.name == PREFERRED_FILE]
    return (preferred or found or [None])[0]


def load_backbone(weights: str | Path | None, download: bool = False) -> tuple[WideResNet50_2 | None, str]:
    """The ImageNet WideResNet-50-2 and a status string, or ``(None, "not run: ...")``.

    Args:
        weights: a local torchvision ``wide_resnet50_2`` .pth file (relative paths are
            resolved against the repository root; a raw state dict or a dict holding one
            under ``"state_dict"``/``"model"``), or None to use the torch hub cache
            (``torch.hub.get_dir()/checkpoints/wide_resnet50_2-*.pth``).
        download: with ``weights=None`` and nothing cached, download torchvision's
            IMAGENET1K_V1 file into the hub cache.

    Returns:
        ``(model in eval mode, "weights: <file name>")`` or ``(None, "not run: no pretrained
        weights[ (download failed: <reason>)]")``. Never random weights.

    Raises:
        FileNotFoundError: ``weights`` names a file that does not exist.
        ValueError: the file is unreadable or not a wide_resnet50_2 state dict.
    """
    if weights is not None:
        path = repo_path(weights)
        if not path.is_file():
            raise FileNotFoundError(
                f"backbone weights not found: {path}. Set baselines.backbone_weights in params.yaml to "
                f"torchvision's wide_resnet50_2 .pth file (e.g. wide_resnet50_2-95faca4d.pth from "
                f"{TORCHVISION_URL}), or to null to use the torch hub cache.")
        return _from_file(path)
    cached = cached_weights()
    if cached is not None:
        return _from_file(cached)
    if not download:
        return None, NO_WEIGHTS
    try:
        state = torch.hub.load_state_dict_from_url(TORCHVISION_URL, map_location="cpu", progress=True,
                                                   check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:  # no network / HTTP error (URLError is an OSError), bad hash
        return None, f"{NO_WEIGHTS} (download failed: {type(e).__name__}: {e})"
    model = WideResNet50_2()
    load_state_dict_checked(model, state, TORCHVISION_URL)
    return model.eval(), f"weights: {Path(TORCHVISION_URL).name}"
