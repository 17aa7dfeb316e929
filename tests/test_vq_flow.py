"""VQ-Flow (document 001) on the real ImageNet EfficientNet-Lite0: the flows invert, training
raises the likelihood of normal images above that of a defective copy, determinism."""

from __future__ import annotations

import pytest
import torch
from conftest import textures

from pvqae.baselines.vq_flow import VQFlow, VQFlowConfig, positional_encoding, train_vq_flow
from pvqae.batches import BatchStream

pytestmark = pytest.mark.usefixtures("one_thread", "resume_in_tmp")
S = 64  # conftest.textures' default size


def _cfg(**kw) -> VQFlowConfig:
    base = dict(num_concepts=2, num_patterns=8, dim=16, pos_dim=8, blocks=2, subnet_hidden=32, steps=30,
                batch_size=4, lr=1e-3, log_every=1, ckpt_every=100)
    base.update(kw)
    return VQFlowConfig(**base)


def _trained(lite0, tmp_path, name="vq_flow", seed=0, **kw):
    torch.manual_seed(seed)
    model = VQFlow(lite0, _cfg(**kw), seed=seed)
    x = textures(8)
    train_vq_flow(model, BatchStream({"image": x, "entropy": torch.zeros(8, 1, 1)}, 4, seed), tmp_path / name, name,
                  seed, progress=False)
    return model, x


@pytest.mark.parametrize("subnet", ["mlp", "conv"])
def test_every_flow_inverts(lite0, subnet):
    torch.manual_seed(0)
    model = VQFlow(lite0, _cfg(subnet=subnet), seed=0)
    for p in model.flows.parameters():  # away from the identity initialisation (not the fixed permutations)
        if p.requires_grad:
            p.data.add_(0.05 * torch.randn_like(p))
    for i, s in enumerate(model.cfg.strides):
        x, cond = torch.randn(2, lite0.endpoints[s], 5, 6), torch.randn(2, 2 * model.cfg.dim, 5, 6)
        z, logdet = model.flow_map(i, x, cond)
        back, logdet_rev = model.flow_map(i, z, cond, rev=True)
        assert (back - x).abs().max() < 1e-4 and not torch.allclose(z, x)
        torch.testing.assert_close(logdet, -logdet_rev, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("subnet", ["mlp", "conv"])
def test_training_makes_normal_images_more_likely_than_a_defective_copy(lite0, tmp_path, subnet):
    model, x = _trained(lite0, tmp_path, subnet=subnet)
    import csv

    with open(tmp_path / "vq_flow" / "vq_flow_log.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["nll"]) < float(rows[0]["nll"])
    defect = x[:1].clone()
    defect[:, :, 24:40, 24:40] = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert model.log_likelihood(x[:1]) > model.log_likelihood(defect)
    out = model(torch.cat([textures(3, seed=5), defect]))
    assert out.score_map.shape == (4, S, S) and out.image_score[3] > out.image_score[:3].max()


def test_deterministic_from_the_seed(lite0, tmp_path):
    a, _ = _trained(lite0, tmp_path, "a")
    b, _ = _trained(lite0, tmp_path, "b")
    c, _ = _trained(lite0, tmp_path, "c", seed=1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_positional_encoding_and_config():
    pe = positional_encoding(8, 4, 6)
    assert pe.shape == (8, 4, 6) and torch.equal(pe[:4, :, 0], pe[:4, :, 5])  # rows: constant along x
    assert torch.equal(pe[4:, 0], pe[4:, 3]) and not torch.equal(pe[4:, :, 0], pe[4:, :, 3])  # columns
    with pytest.raises(ValueError, match=r"baselines\.vq_flow\.blokcs: unknown key; did you mean blocks\?"):
        VQFlowConfig.from_dict({"blokcs": 3})


def test_neighbourhood_changes_what_the_flow_sees_not_the_shapes(lite0):
    x = textures(2)
    torch.manual_seed(0)
    plain = VQFlow(lite0, _cfg(), seed=0)
    torch.manual_seed(0)
    pooled = VQFlow(lite0, _cfg(neighbourhood=3), seed=0)
    za, _, _, _ = plain.latents(x)
    zb, _, _, _ = pooled.latents(x)
    assert [z.shape for z in za] == [z.shape for z in zb]
    assert not torch.allclose(za[0], zb[0])


def test_conv_subnets_see_the_neighbours_mlp_subnets_do_not(lite0):
    """A change to one position's feature moves the latent of its neighbours only through the
    reference's 3x3 couplings (``subnet: conv``); per-position MLPs keep positions apart."""
    for subnet, spreads in (("mlp", False), ("conv", True)):
        torch.manual_seed(0)
        model = VQFlow(lite0, _cfg(subnet=subnet), seed=0)
        for p in model.flows.parameters():
            if p.requires_grad:
                p.data.add_(0.05 * torch.randn_like(p))
        c = lite0.endpoints[model.cfg.strides[0]]
        x, cond = torch.randn(1, c, 12, 12), torch.randn(1, 2 * model.cfg.dim, 12, 12)
        bumped = x.clone()
        bumped[:, :, 3, 3] += 1.0  # 2 blocks of two 3x3 convs: the change reaches 4 positions, not (11, 11)
        za, zb = model.flow_map(0, x, cond)[0], model.flow_map(0, bumped, cond)[0]
        moved = (za - zb).abs().amax(1)[0] > 1e-6
        assert moved[3, 3] and bool(moved[3, 2]) == spreads and not moved[11, 11]


def test_subnet_is_checked():
    with pytest.raises(ValueError, match=r"baselines\.vq_flow\.subnet must be one of mlp, conv, got 'cnn'"):
        VQFlowConfig.from_dict({"subnet": "cnn"})
