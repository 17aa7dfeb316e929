"""Memory-based baselines (PatchCore, PaDiM) and the in-project WideResNet-50-2.

Most tests run on a randomly initialised WideResNet-50-2 (``random_backbone``) at 32-64 px,
so they check the mechanics (shapes, weight loading, coreset, Gaussians, scores rising where
an image was changed); the last ones run PatchCore and PaDiM on the real ImageNet
EfficientNet-Lite0 (from its installed weights package).
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import textures

from pvqae import backbones
from pvqae.backbones import load_backbone, state_dict_from_file
from pvqae.backbones import wide_resnet as wrn
from pvqae.backbones.wide_resnet import WideResNet50_2, random_backbone
from pvqae.baselines.common import BaselineOutput
from pvqae.baselines.padim import PaDiM
from pvqae.baselines.patchcore import (
    PatchCore,
    coreset_size,
    greedy_coreset,
    nearest_distance,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest: threads thrash on busy cores

S = 64
SQUARE = (24, 40)  # rows/cols of the pasted noise square (centre of the image)


def paste_noise(image: torch.Tensor, seed: int = 1) -> torch.Tensor:
    x = image.clone()
    a, b = SQUARE
    x[:, :, a:b, a:b] = torch.rand(x.shape[0], x.shape[1], b - a, b - a, generator=torch.Generator().manual_seed(seed))
    return x


def square_mask() -> torch.Tensor:
    m = torch.zeros(S, S, dtype=torch.bool)
    a, b = SQUARE
    m[a:b, a:b] = True
    return m


@pytest.fixture(scope="module")
def bb() -> WideResNet50_2:
    return random_backbone(0)


@pytest.fixture(scope="module")
def train_images() -> torch.Tensor:
    return textures(5)


@pytest.fixture(scope="module")
def random_weights_file(bb, tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "wide_resnet50_2-95faca4d.pth"
    torch.save(bb.state_dict(), path)
    return path


# --- backbone -------------------------------------------------------------------------------

def test_wrn50_2_matches_torchvision_layout(bb):
    assert sum(p.numel() for p in bb.parameters()) == 68_883_240  # torchvision wide_resnet50_2
    sd = bb.state_dict()
    assert len(sd) == 320  # no extra keys (the normalisation buffers are non-persistent)
    # bottleneck width = planes * width_per_group / 64 = 2 * planes; output = 4 * planes
    expected = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_var": (64,), "layer1.0.conv1.weight": (128, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1), "layer1.0.downsample.1.weight": (256,),
        "layer2.0.conv2.weight": (256, 256, 3, 3), "layer2.3.conv3.weight": (512, 256, 1, 1),
        "layer3.5.conv2.weight": (512, 512, 3, 3), "layer3.0.downsample.0.weight": (1024, 512, 1, 1),
        "layer4.2.conv3.weight": (2048, 1024, 1, 1), "fc.weight": (1000, 2048), "fc.bias": (1000,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "layer3.6.conv1.weight" not in sd and "layer4.2.bn3.num_batches_tracked" in sd


def test_feature_endpoints_shapes_grayscale_and_early_stop(bb):
    x = torch.rand(2, 3, S, S)
    feats = bb.features(x, (4, 8, 16))
    assert {k: tuple(v.shape) for k, v in feats.items()} == {
        4: (2, 256, S // 4, S // 4), 8: (2, 512, S // 8, S // 8), 16: (2, 1024, S // 16, S // 16)}
    assert not any(v.requires_grad for v in feats.values())
    gray = x[:, :1]
    f1 = bb.features(gray, (4,))[4]
    f3 = bb.features(gray.expand(-1, 3, -1, -1), (4,))[4]
    torch.testing.assert_close(f1, f3)
    calls = []
    handle = bb.layer2.register_forward_hook(lambda *_: calls.append(1))
    try:
        bb.features(x, (4,))
    finally:
        handle.remove()
    assert calls == []  # stops after the deepest requested layer
    bb.train()
    torch.testing.assert_close(bb.features(x, (4,))[4], feats[4])  # eval inside
    assert bb.training
    bb.eval()


def test_load_backbone_without_weights_never_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model, status = load_backbone("wide_resnet50_2")
    assert model is None and status.startswith("not run: no pretrained weights")

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    model, status = load_backbone("wide_resnet50_2", download=True)
    assert model is None
    assert status.startswith("not run: no pretrained weights (download failed:") and "network unreachable" in status


def test_load_backbone_file_round_trip(bb, random_weights_file):
    model, status = load_backbone("wide_resnet50_2", str(random_weights_file))
    assert status == "weights: wide_resnet50_2-95faca4d.pth" and not model.training
    for key, value in bb.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_load_backbone_uses_hub_cache_and_wrapped_dicts(tmp_path, monkeypatch):
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    for name in ("wide_resnet50_2-9ba9bcbe.pth", "wide_resnet50_2-95faca4d.pth"):  # V2, V1
        (ckpt / name).write_bytes(b"")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    assert wrn.cached_weights() == ckpt / "wide_resnet50_2-95faca4d.pth"  # V1, the papers' weights
    monkeypatch.setattr(wrn, "_from_file", lambda path: ("model", f"weights: {path.name}"))
    assert load_backbone("wide_resnet50_2") == ("model", "weights: wide_resnet50_2-95faca4d.pth")
    inner = {"conv1.weight": torch.ones(2)}
    for wrapper in ({"state_dict": inner, "epoch": 3}, {"model": inner}, inner):
        torch.save(wrapper, tmp_path / "w.pth")
        assert state_dict_from_file(tmp_path / "w.pth").keys() == inner.keys()


def test_load_backbone_errors(tmp_path):
    missing = tmp_path / "nope" / "wide_resnet50_2.pth"
    with pytest.raises(FileNotFoundError, match="nope/wide_resnet50_2.pth") as e:
        load_backbone("wide_resnet50_2", str(missing))
    assert "backbone_weights" in str(e.value)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1.weight": torch.zeros(1), "head.weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a torchvision wide_resnet50_2") as e:
        load_backbone("wide_resnet50_2", bad)
    msg = str(e.value)
    assert "missing keys (319)" in msg and "head.weight" in msg and "conv1.weight (1,) != (64, 3, 7, 7)" in msg
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="could not read"):
        load_backbone("wide_resnet50_2", corrupt)


# --- PatchCore ------------------------------------------------------------------------------

def test_greedy_coreset_picks_far_points():
    line = torch.arange(11.0).unsqueeze(1)
    assert greedy_coreset(line, 3, start=0).tolist() == [0, 10, 5]
    first = greedy_coreset(line, 1, seed=7).item()
    assert greedy_coreset(line, 2, seed=7).tolist() == [first, 10 if first < 5 else 0]
    clusters = torch.cat([torch.randn(20, 2, generator=torch.Generator().manual_seed(0)) * 0.01 + c
                          for c in (torch.tensor([0.0, 0.0]), torch.tensor([5.0, 0.0]), torch.tensor([0.0, 5.0]))])
    picked = greedy_coreset(clusters, 3, seed=1)
    assert sorted((picked // 20).tolist()) == [0, 1, 2]  # one per cluster
    assert coreset_size(30, 0.1) == 3 and coreset_size(31, 0.1) == 4 and coreset_size(5, 1.0) == 5


@pytest.fixture(scope="module")
def patchcore(bb, train_images):
    pc = PatchCore(bb, coreset_ratio=0.25, seed=0)
    return pc, pc.fit(train_images, progress=False)


def test_patchcore_fit_coreset_and_determinism(bb, train_images, patchcore):
    pc, summary = patchcore
    n = len(train_images) * (S // 8) ** 2
    assert summary["bank_size_full"] == n and summary["bank_size"] == math.ceil(0.25 * n) == len(pc.memory_bank)
    assert summary["feature_dim"] == 1024 and pc.memory_bank.shape == (80, 1024)
    arch = PatchCore.memory_bank_mb(len(train_images), S, coreset_ratio=0.25)
    assert arch["full_mb"] == pytest.approx(summary["bank_mb_full"])
    assert arch["coreset_mb"] == pytest.approx(summary["bank_mb"])
    for seed, same in ((0, True), (1, False)):
        other = PatchCore(bb, coreset_ratio=0.25, seed=seed)
        other.fit(train_images, batch_size=5, progress=False)
        assert torch.equal(pc.memory_bank, other.memory_bank) == same


def test_patchcore_scores_own_patches_zero_and_pasted_noise_high(bb, train_images):
    pc = PatchCore(bb, coreset_ratio=1.0)
    pc.fit(train_images, progress=False)
    emb = pc.embed(train_images[:1]).reshape(-1, 1024)
    own = nearest_distance(emb, pc.memory_bank, chunk_size=16)
    # the winner's distance is recomputed directly: what is left is the features' own rounding
    # (a batch of 1 vs the fit's batch of 16), ~2e-7 relative, not cdist's cancellation (~1e-3)
    assert own.max() < 1e-5 * emb.norm(dim=1).mean()
    out = pc(torch.cat([train_images[:1], paste_noise(train_images[:1])]))
    assert isinstance(out, BaselineOutput)
    assert out.score_map.shape == (2, S, S) and out.image_score.shape == (2,)
    torch.testing.assert_close(out.image_score, out.score_map.flatten(1).max(1).values)
    assert out.image_score[0] < 0.05 * out.image_score[1]
    peak = out.score_map[1].argmax()
    assert square_mask().flatten()[peak]
    assert out.score_map[1][square_mask()].mean() > 1.3 * out.score_map[1][~square_mask()].mean()


def test_patchcore_state_dict_round_trip(bb, train_images, patchcore, tmp_path):
    pc, _ = patchcore
    assert list(pc.state_dict()) == ["memory_bank"]  # the backbone is not saved
    torch.save(pc.state_dict(), tmp_path / "patchcore.pt")
    fresh = PatchCore(bb, coreset_ratio=0.25)
    fresh.load_state_dict(torch.load(tmp_path / "patchcore.pt", weights_only=True))
    x = paste_noise(train_images[:2])
    a, b = pc(x), fresh(x)
    assert torch.equal(a.score_map, b.score_map) and torch.equal(a.image_score, b.image_score)
    fresh.train()
    assert not fresh.backbone.training


# --- PaDiM ----------------------------------------------------------------------------------

def test_padim_channel_subset_is_seeded():
    bb_stub = WideResNet50_2.__new__(WideResNet50_2)  # only .endpoints is read before fit
    torch.nn.Module.__init__(bb_stub)
    a, b, c = (PaDiM(bb_stub, dims=100, seed=s).channel_index for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(a) == 100 and len(a.unique()) == 100 and a.min() >= 0 and a.max() < 256 + 512 + 1024
    assert torch.equal(a, a.sort().values)
    assert len(PaDiM(bb_stub, dims=None).channel_index) == 1792


def test_padim_gaussians_match_direct_computation(bb, train_images):
    pd = PaDiM(bb, dims=40, cov_eps=0.01)
    summary = pd.fit(train_images, batch_size=2, progress=False)  # 3 batches: exercises the running sums
    P = (S // 4) ** 2
    assert pd.mean.shape == (P, 40) and pd.cov_inv.shape == (P, 40, 40) and list(pd.state_dict()) == [
        "channel_index", "mean", "cov_inv"]
    assert summary["mb"] == pytest.approx(PaDiM.memory_mb(S, dims=40))
    emb = pd.embed(train_images).flatten(1, 2)  # (N, P, d)
    torch.testing.assert_close(pd.mean, emb.mean(0), rtol=1e-4, atol=1e-4)
    for p in (0, 37, P - 1):
        cov = torch.cov(emb[:, p].T.double()) + 0.01 * torch.eye(40, dtype=torch.float64)
        torch.testing.assert_close(pd.cov_inv[p].double() @ cov, torch.eye(40, dtype=torch.float64), atol=2e-3, rtol=0)
    assert pd.mahalanobis(pd.mean.unsqueeze(0)).abs().max() < 1e-5  # the training mean is at distance 0


def test_padim_scores_pasted_noise_higher_and_round_trips(bb, train_images, tmp_path):
    pd = PaDiM(bb, dims=100)
    pd.fit(train_images, progress=False)
    x = torch.cat([train_images[:1], paste_noise(train_images[:1])])
    out = pd(x)
    assert out.score_map.shape == (2, S, S) and out.image_score.shape == (2,)
    assert out.image_score[1] > 10 * out.image_score[0]
    assert out.score_map[1][square_mask()].mean() > 1.1 * out.score_map[1][~square_mask()].mean()
    torch.save(pd.state_dict(), tmp_path / "padim.pt")
    fresh = PaDiM(bb, dims=100)
    fresh.load_state_dict(torch.load(tmp_path / "padim.pt", weights_only=True))
    again = fresh(x)
    assert torch.equal(again.score_map, out.score_map)
    with pytest.raises(ValueError, match="training image size"):
        pd(torch.rand(1, 3, 32, 32))


def test_small_images_and_module_api(bb):
    imgs = textures(3, size=32, seed=5)
    pc = PatchCore(bb, coreset_ratio=0.5, feature_dim=None)
    pc.fit(imgs, batch_size=2, progress=False)
    assert pc.memory_bank.shape == (coreset_size(3 * 16, 0.5), 512 + 1024)
    out = pc(imgs[:1])
    assert out.score_map.shape == (1, 32, 32) and torch.isfinite(out.score_map).all()
    with pytest.raises(RuntimeError, match="fit"):
        PatchCore(bb)(imgs[:1])
    assert backbones.NO_WEIGHTS == "not run: no pretrained weights"


def test_nearest_distance_is_exact_at_large_norms():
    """cdist's matrix-multiply path loses ~eps * |x|^2 to cancellation (0.14 at norm ~123 was
    seen on a 2-core CPU); the winner's distance is recomputed directly, so it is exact."""
    g = torch.Generator().manual_seed(0)
    bank = 120 + 10 * torch.randn(3000, 152, generator=g)
    queries = torch.cat([bank[::7], bank[5:40] + 1e-3])
    d = nearest_distance(queries, bank, chunk_size=64)
    assert torch.equal(d[:len(bank[::7])], torch.zeros(len(bank[::7])))
    direct = (queries[-35:] - bank[5:40]).norm(dim=1)  # ~0.012
    torch.testing.assert_close(d[-35:], direct, rtol=1e-6, atol=0)
    plain = torch.cdist(queries[-35:], bank).min(1).values  # what the fix replaces
    assert (plain - direct).abs().max() > 100 * (d[-35:] - direct).abs().max()


def test_patchcore_and_padim_on_imagenet_lite0_find_a_pasted_defect(lite0):
    """With the real ImageNet features, a pasted noise square is the top-scoring region and
    the defective image outscores held-out normal ones."""
    train, held_out = textures(6, seed=2), textures(3, seed=9)
    defect = paste_noise(held_out[:1])
    for model in (PatchCore(lite0, coreset_ratio=0.5, feature_dim=256), PaDiM(lite0, dims=None)):
        model.fit(train, batch_size=3, progress=False)
        out = model(torch.cat([held_out, defect]))
        assert out.image_score[3] > out.image_score[:3].max(), type(model).__name__
        assert square_mask().flatten()[out.score_map[3].argmax()], type(model).__name__
    assert PaDiM(lite0, dims=None).channel_index.numel() == 24 + 40 + 112


def test_padim_inverts_covariances_correctly_after_a_thread_count_change():
    """MKL's batched LU (torch.linalg.inv) breaks after set_num_threads(1) -> (2) in a process;
    PaDiM's Cholesky inverse stays exact. Run in a fresh interpreter: the state is per process."""
    import subprocess
    import sys

    script = (
        "import torch\n"
        "from pvqae.baselines.padim import invert_spd\n"
        "torch.manual_seed(0)\n"
        "torch.set_num_threads(1); torch.set_num_threads(2)\n"
        "a = torch.randn(64, 176, 40); c = a @ a.transpose(1, 2) / 40 + 0.01 * torch.eye(176)\n"
        "print(float((invert_spd(c) @ c - torch.eye(176)).abs().max()))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert float(out.split()[-1]) < 1e-2
