"""WideResNet-50-2 (Zagoruyko & Komodakis 2016, as in torchvision), the frozen ImageNet
feature extractor of PatchCore (Roth et al., CVPR 2022) and PaDiM (Defard et al., ICPR 2021).

torchvision is not a dependency, so the network is defined here with module and parameter
names identical to torchvision's ``wide_resnet50_2`` (``conv1``, ``bn1``, ``layer1.0.conv1``,
..., ``layer1.0.downsample.0``/``.1``, ``fc``): torchvision's ImageNet files
``wide_resnet50_2-95faca4d.pth`` (IMAGENET1K_V1, the weights both papers used) and
``wide_resnet50_2-9ba9bcbe.pth`` (IMAGENET1K_V2) load with ``strict=True``.

Weights are never invented: ``load_wide_resnet`` returns ``(None, "not run: ...")`` when no
pretrained file is available, and the caller reports the baseline as not run. Randomly
initialised networks (``random_backbone``) exist for tests only.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from pvqae.backbones import NO_WEIGHTS, FeatureExtractor, load_state_dict_checked, state_dict_from_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TORCHVISION_URL = "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"  # IMAGENET1K_V1
CACHE_PATTERN = "wide_resnet50_2-*.pth"
PREFERRED_FILE = "wide_resnet50_2-95faca4d.pth"
LAYER_NAMES = ("layer1", "layer2", "layer3", "layer4")
LAYER_AT_STRIDE = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}


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


class WideResNet50_2(FeatureExtractor):
    """torchvision's ``wide_resnet50_2``: Bottleneck blocks [3, 4, 6, 3], width_per_group 128.

    ``layer1``..``layer4`` are the endpoints at strides 4/8/16/32 (256/512/1024/2048 channels).
    ``features`` takes images in [0, 1] (1 or 3 channels) and applies the ImageNet mean / std
    normalisation itself. The normalisation constants are non-persistent buffers, so the
    state dict holds exactly torchvision's keys.
    """

    endpoints: ClassVar[dict[int, int]] = {4: 256, 8: 512, 16: 1024, 32: 2048}
    display_name: ClassVar[str] = "WRN50"

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
        return (self.to_rgb(images).to(self.mean.dtype) - self.mean) / self.std

    def _run(self, x: torch.Tensor, strides: tuple[int, ...]) -> dict[int, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for stride, name in LAYER_AT_STRIDE.items():
            if stride > max(strides):
                break
            x = getattr(self, name)(x)
            if stride in strides:
                out[stride] = x
        return out

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


def _from_file(path: Path) -> tuple[WideResNet50_2, str]:
    model = WideResNet50_2()
    load_state_dict_checked(model, state_dict_from_file(path), str(path), "torchvision wide_resnet50_2")
    return model.eval(), f"weights: {path.name}"


def cached_weights() -> Path | None:
    """torchvision's wide_resnet50_2 file in the torch hub cache, if any (V1 preferred)."""
    found = sorted((Path(torch.hub.get_dir()) / "checkpoints").glob(CACHE_PATTERN))
    preferred = [p for p in found if p.name == PREFERRED_FILE]
    return (preferred or found or [None])[0]


def load_wide_resnet(path: Path | None, download: bool = False) -> tuple[WideResNet50_2 | None, str]:
    """The ImageNet WideResNet-50-2 and a status string, or ``(None, "not run: ...")``.

    ``path``: torchvision's ``wide_resnet50_2`` .pth (a raw state dict or one under
    ``"state_dict"``/``"model"``), or None for the torch hub cache
    (``torch.hub.get_dir()/checkpoints/wide_resnet50_2-*.pth``); ``download``: with nothing
    cached, download torchvision's IMAGENET1K_V1 file into the hub cache. Never random weights.
    """
    if path is not None:
        return _from_file(path)
    cached = cached_weights()
    if cached is not None:
        return _from_file(cached)
    if not download:
        return None, NO_WEIGHTS + " (WideResNet-50-2: set baselines.backbone_weights)"
    try:
        state = torch.hub.load_state_dict_from_url(TORCHVISION_URL, map_location="cpu", progress=True,
                                                   check_hash=True, weights_only=True)
    except (OSError, RuntimeError, ValueError) as e:  # no network / HTTP error (URLError is an OSError), bad hash
        return None, f"{NO_WEIGHTS} (download failed: {type(e).__name__}: {e})"
    model = WideResNet50_2()
    load_state_dict_checked(model, state, TORCHVISION_URL, "torchvision wide_resnet50_2")
    return model.eval(), f"weights: {Path(TORCHVISION_URL).name}"
