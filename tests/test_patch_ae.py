"""Patch AE (document 002) on the real ImageNet EfficientNet-Lite0: one-to-one patch decoding,
the artificial defect augmentation, deterministic training, the memory bank and its scores."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import textures

from pvqae.baselines.patch_ae import PatchAE, PatchAEConfig, defect_augment, train_patch_ae
from pvqae.batches import BatchStream

pytestmark = pytest.mark.usefixtures("one_thread", "resume_in_tmp")
S = 64  # conftest.textures' default size


def _cfg(**kw) -> PatchAEConfig:
    base = dict(hidden=32, feature_dim=16, decoder_hidden=32, steps=6, batch_size=4, ckpt_every=3, log_every=1,
                coreset_ratio=0.5)
    base.update(kw)
    return PatchAEConfig(**base)


def test_each_patch_is_decoded_from_its_own_feature_vector_only(lite0):
    torch.manual_seed(0)
    model = PatchAE(lite0, _cfg()).eval()
    x = textures(1)
    feats = model.features(x)
    assert feats.shape == (1, 16, S // 8, S // 8)
    out = model.reconstruct(x)
    bumped = feats.clone()
    bumped[0, :, 3, 5] += 1.0  # one feature vector: the patch at rows 24..31, cols 40..47
    model.features = lambda _: bumped  # the real reconstruct path, with that one vector changed
    out2 = model.reconstruct(x)
    changed = (out2 - out).abs().amax(1)[0] > 0
    inside = torch.zeros(S, S, dtype=torch.bool)
    inside[24:32, 40:48] = True
    assert changed[inside].any() and not changed[~inside].any()
    assert out.shape == x.shape


def test_defect_augmentation_is_seeded_and_changes_about_prob_of_the_images():
    x = textures(8)
    a, b = defect_augment(x, 0.5, seed=1, step=3), defect_augment(x, 0.5, seed=1, step=3)
    assert torch.equal(a, b) and not torch.equal(a, defect_augment(x, 0.5, seed=1, step=4))
    changed = [(a[i] - x[i]).abs().max() > 8 / 255 for i in range(8)]
    assert 1 <= sum(changed) <= 7
    assert torch.equal(defect_augment(x, 0.0, seed=1, step=3), x)


def test_training_is_deterministic_learns_and_scores_a_pasted_defect(lite0, tmp_path):
    train = textures(8)
    weights, summaries = [], []
    for run in ("a", "b"):
        torch.manual_seed(0)
        model = PatchAE(lite0, _cfg(steps=12))
        stream = BatchStream({"image": train, "entropy": torch.zeros(8, 1, 1)}, 4, 0)
        summaries.append(train_patch_ae(model, train, stream, tmp_path / run, "patch_ae", seed=0, progress=False))
        weights.append(model.state_dict())
    for k in weights[0]:
        assert torch.equal(weights[0][k], weights[1][k]), k
    assert not any(p.requires_grad for p in lite0.parameters()), "the shared backbone stays frozen"
    s = summaries[0]
    assert s["bank_size"] == math.ceil(0.5 * 8 * (S // 8) ** 2) and s["steps"] == 12
    log = (tmp_path / "a" / "patch_ae_log.csv").read_text().splitlines()
    first, last = float(log[1].split(",")[1]), float(log[-1].split(",")[1])
    assert last < first  # the reconstruction loss falls
    held_out = textures(3, seed=5)
    defect = held_out[:1].clone()
    defect[:, :, 24:40, 24:40] = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    out = model(torch.cat([held_out, defect]))
    assert out.score_map.shape == (4, S, S)
    assert out.image_score[3] > out.image_score[:3].max()
    # the checkpoint holds the trained weights and the bank: a fresh model scores the same
    fresh = PatchAE(lite0, _cfg(steps=12))
    fresh.load_state_dict(torch.load(tmp_path / "a" / "patch_ae.pt", weights_only=True)["model"])
    torch.testing.assert_close(fresh.eval()(defect).score_map, model(defect).score_map)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"baselines\.patch_ae\.feature_dimm: unknown key; did you mean feature_dim\?"):
        PatchAEConfig.from_dict({"feature_dimm": 3})
    assert PatchAEConfig.from_dict({"strides": [8, 16]}).strides == (8, 16)


def test_neighbourhood_averages_the_endpoints_and_keeps_one_vector_per_patch(lite0):
    x = textures(1)
    torch.manual_seed(0)
    plain = PatchAE(lite0, _cfg()).eval()
    torch.manual_seed(0)
    pooled = PatchAE(lite0, _cfg(neighbourhood=3)).eval()  # same weights: same seed, same shapes
    a, b = plain.features(x), pooled.features(x)
    assert a.shape == b.shape and not torch.allclose(a, b)
    maps = lite0.endpoint_maps(x, (8, 16))
    smooth = {s: torch.nn.functional.avg_pool2d(m, 3, 1, 1, count_include_pad=False) for s, m in maps.items()}
    from pvqae.backbones import concat_aligned

    torch.testing.assert_close(b, pooled.encoder(concat_aligned(smooth, (8, 16))))
    assert pooled.reconstruct(x).shape == x.shape


def test_bank_features_backbone_compares_the_trained_endpoints(lite0, tmp_path):
    torch.manual_seed(0)
    model = PatchAE(lite0, _cfg(bank_features="backbone", coreset_ratio=1.0))  # the whole bank
    width = lite0.endpoints[8] + lite0.endpoints[16]
    assert model.bank_dim == width and model.memory_bank.shape == (0, width)
    x = textures(4)
    train_patch_ae(model, x, BatchStream({"image": x, "entropy": torch.zeros(4, 1, 1)}, 4, 0), tmp_path, "pae", 0,
                   progress=False)
    assert model.memory_bank.shape[1] == width
    out = model(x[:1])
    torch.testing.assert_close(out.image_score, torch.zeros(1), atol=1e-3, rtol=0)  # a training image is in the bank
    assert any((a - b).abs().max() > 0 for a, b in zip(model.backbone.parameters(), lite0.parameters()))
    from pvqae.settings import BaselinesConfig
    from pvqae.strict_config import ConfigError

    with pytest.raises(ConfigError, match="finetune_backbone"):  # when params are read, before anything runs
        BaselinesConfig.from_dict({"patch_ae": {"bank_features": "backbone", "finetune_backbone": False}})
    with pytest.raises(ConfigError, match="bank_features must be one of encoder, backbone"):
        _cfg(bank_features="pixels")
