"""Tests of the PVQAE model (paper Sec. III, Fig. 2) and its static single-level special case."""

from __future__ import annotations

import pytest
import torch

from pvqae.model import PVQAE, ModelConfig, ModelOutput
from pvqae.routing import level_masks

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw) -> ModelConfig:
    base = dict(image_size=32, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16, router_hidden=16, groups=8)
    base.update(kw)
    return ModelConfig(**base)


def _model(seed: int = 0, **kw) -> PVQAE:
    torch.manual_seed(seed)
    return PVQAE(_cfg(**kw))


def _x(b: int = 2, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, size, size, generator=torch.Generator().manual_seed(seed))




# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize("size,ch_mult,grids", [
    (32, (1, 1, 2), (8, 16, 32)),
    (32, (1, 1, 2, 2), (4, 8, 16)),
    (64, (1, 1, 2, 2), (8, 16, 32)),
])
def test_encoder_grids_match_config(size, ch_mult, grids):
    cfg = _cfg(image_size=size, ch_mult=ch_mult)
    L = len(ch_mult)
    assert cfg.grids == (size // 2 ** (L - 1), size // 2 ** (L - 2), size // 2 ** (L - 3)) == grids
    torch.manual_seed(0)
    model = PVQAE(cfg).eval()
    x = _x(1, size)
    feats = model.encoder(x)
    assert [tuple(f.shape) for f in feats] == [(1, 8, g, g) for g in grids]
    assert model.sizes == list(grids)
    assert model.coarse_grid == grids[0]
    out = model(x)
    assert isinstance(out, ModelOutput)
    assert out.recon.shape == x.shape
    assert out.routing.levels.shape == (1, grids[0], grids[0])
    assert [tuple(i.shape) for i in out.indices] == [(1, g, g) for g in grids]
    assert out.used_fraction.shape == (3,)
    assert out.used_fraction.sum().item() == pytest.approx(1.0)
    assert out.vq_loss.shape == ()


@pytest.mark.parametrize("level", [0, 1, 2])
def test_static_single_level_model(level):
    model = _model(levels=(level,)).eval()
    assert not model.dynamic
    assert model.router is None
    assert len(model.quantizers) == 1
    assert list(model.encoder.heads.keys()) == [str(level)]
    x = _x()
    out = model(x)
    g = model.cfg.grids[level]
    assert out.recon.shape == x.shape
    assert out.routing is None
    assert len(out.indices) == 1 and out.indices[0].shape == (2, g, g)
    assert torch.equal(out.used_fraction, torch.ones(1))
    # vq loss of a static model: mean of the loss map over all positions
    q = model.quantizer(0)(model.encoder(x)[0])
    torch.testing.assert_close(out.vq_loss, q.loss_map.mean())
    # the router-free parameter list is everything
    assert len(model.generator_parameters()) == len(list(model.parameters()))


def test_config_roundtrip():
    cfg = _cfg(codebook="shared", levels=(2,), beta=0.5)
    d = cfg.to_dict()
    assert d["ch_mult"] == [1, 1, 2] and d["levels"] == [2]
    again = ModelConfig.from_dict(d)
    assert again == cfg
    assert isinstance(again.ch_mult, tuple) and isinstance(again.levels, tuple)
    # missing keys take defaults; an unknown key is a named error with the closest valid key
    assert ModelConfig.from_dict({"image_size": 64}) == ModelConfig(image_size=64)
    with pytest.raises(ValueError, match=r"model\.embed_dimm: unknown key; did you mean embed_dim\?"):
        ModelConfig.from_dict({"embed_dimm": 1})


@pytest.mark.parametrize("kw,msg", [
    (dict(codebook="per-image"), r"model.codebook must be 'per-level' or 'shared', got 'per-image'"),
    (dict(levels=(0, 1)), r"model.levels must name one level \(static VQ\) or all three \(PVQAE\)"),
    (dict(levels=(3,)), r"model.levels must be a non-empty subset of 0 \(coarse\), 1 \(median\), 2 \(fine\)"),
    (dict(levels=()), r"model.levels must be a non-empty subset"),
    (dict(ch_mult=(1, 2)), r"ch_mult needs at least 3 levels"),
])
def test_invalid_config_raises(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PVQAE(_cfg(**kw))


def test_shared_codebook_is_one_quantizer():
    model = _model(codebook="shared").eval()
    assert len(model.quantizers) == 1
    assert model.quantizer(0) is model.quantizer(1) is model.quantizer(2)
    per_level = _model(codebook="per-level")
    assert len(per_level.quantizers) == 3
    assert len({id(per_level.quantizer(i)) for i in range(3)}) == 3
    # every level's indices come from the same codebook
    x = _x()
    out = model(x)
    feats = model.encoder(x)
    q = model.quantizers[0]
    for f, idx in zip(feats, out.indices):
        assert torch.equal(idx, q.lookup(f))
    n_shared = sum(p.numel() for p in model.quantizers.parameters())
    n_per = sum(p.numel() for p in per_level.quantizers.parameters())
    assert n_per == 3 * n_shared == 3 * 16 * 8


def test_unknown_mode_and_missing_level_map_raise():
    model = _model().eval()
    x = _x(1)
    with pytest.raises(ValueError, match="unknown routing mode 'nope'"):
        model(x, mode="nope")
    with pytest.raises(ValueError, match="routing mode 'given' needs a level_map"):
        model(x, mode="given")


# ------------------------------------------------------------------ gradients


def _grad_nonzero(p: torch.nn.Parameter) -> bool:
    return p.grad is not None and bool(torch.count_nonzero(p.grad) > 0)


def test_straight_through_gradients_reach_encoder_and_router():
    model = _model().train()
    x = _x()
    out = model(x, mode="dynamic", tau=1.0, generator=torch.Generator().manual_seed(0))
    assert (out.used_fraction > 0).all(), "every level should be picked somewhere"
    loss = (x - out.recon).abs().mean() + out.vq_loss
    loss.backward()
    assert _grad_nonzero(model.encoder.conv_in.weight)
    for k in ("0", "1", "2"):
        assert _grad_nonzero(model.encoder.heads[k].net[-1].weight), f"code head {k}"
    assert _grad_nonzero(model.router.mlp[0].weight)
    assert _grad_nonzero(model.router.mlp[2].weight)
    for q in model.quantizers:
        assert _grad_nonzero(q.codebook.weight)


def test_router_gradient_comes_from_reconstruction_not_vq_loss():
    model = _model().train()
    x = _x()
    out = model(x, mode="dynamic", generator=torch.Generator().manual_seed(0))
    out.vq_loss.backward(retain_graph=True)
    # the VQ loss counts positions by detached hard masks: no gradient to the router
    assert not _grad_nonzero(model.router.mlp[0].weight)
    model.zero_grad(set_to_none=True)
    (x - out.recon).abs().mean().backward()
    assert _grad_nonzero(model.router.mlp[0].weight)
    assert _grad_nonzero(model.router.mlp[2].weight)


def test_random_mode_gives_router_no_gradient():
    model = _model().train()
    x = _x()
    out = model(x, mode="random", generator=torch.Generator().manual_seed(0))
    ((x - out.recon).abs().mean() + out.vq_loss).backward()
    assert _grad_nonzero(model.encoder.conv_in.weight)
    for name, p in model.router.named_parameters():
        assert not _grad_nonzero(p), name
    # the generator parameters exclude exactly the router
    names = {n for n, _ in model.named_parameters()}
    gen = {id(p) for p in model.generator_parameters()}
    router_ids = {id(p) for p in model.router.parameters()}
    assert gen.isdisjoint(router_ids)
    assert len(gen) + len(router_ids) == len(names)


def test_random_mode_is_reproducible_with_generator():
    model = _model().eval()
    x = _x()
    a = model(x, mode="random", generator=torch.Generator().manual_seed(4))
    b = model(x, mode="random", generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.routing.levels, b.routing.levels)
    assert torch.equal(a.recon, b.recon)
    assert set(a.routing.levels.unique().tolist()) == {0, 1, 2}


# ------------------------------------------------------------------ given level maps


def test_given_mode_uses_the_map():
    model = _model().eval()
    x = _x()
    g = model.coarse_grid
    lm = torch.randint(0, 3, (2, g, g), generator=torch.Generator().manual_seed(3))
    out = model(x, mode="given", level_map=lm)
    assert torch.equal(out.routing.levels, lm)
    expected_frac = torch.bincount(lm.flatten(), minlength=3).float() / lm.numel()
    torch.testing.assert_close(out.used_fraction, expected_frac)
    coarse = model(x, mode="given", level_map=torch.zeros_like(lm))
    fine = model(x, mode="given", level_map=torch.full_like(lm, 2))
    assert torch.equal(coarse.used_fraction, torch.tensor([1.0, 0.0, 0.0]))
    assert torch.equal(fine.used_fraction, torch.tensor([0.0, 0.0, 1.0]))
    assert not torch.allclose(coarse.recon, fine.recon)
    assert coarse.recon.shape == fine.recon.shape == x.shape


def test_given_mode_matches_manual_assembly():
    model = _model().eval()
    x = _x(1)
    g = model.coarse_grid
    lm = torch.randint(0, 3, (1, g, g), generator=torch.Generator().manual_seed(3))
    out = model(x, mode="given", level_map=lm)
    feats = model.encoder(x)
    codes = [model.quantizer(i).embed(model.quantizer(i).lookup(f)) for i, f in enumerate(feats)]
    fine = model.sizes[-1]
    z = torch.zeros_like(codes[-1])
    up_lm = lm.repeat_interleave(fine // g, -1).repeat_interleave(fine // g, -2)
    for k, c in enumerate(codes):
        r = fine // c.shape[-1]
        z = torch.where((up_lm == k)[:, None], c.repeat_interleave(r, -1).repeat_interleave(r, -2), z)
    torch.testing.assert_close(out.recon, model.decoder(z), atol=1e-5, rtol=1e-5)


def test_vq_loss_counts_each_used_code_once():
    model = _model(beta=0.25).eval()
    x = _x()
    g = model.coarse_grid
    lm = torch.randint(0, 3, (2, g, g), generator=torch.Generator().manual_seed(5))
    out = model(x, mode="given", level_map=lm)
    with torch.no_grad():
        feats = model.encoder(x)
        qs = [model.quantizer(i)(f) for i, f in enumerate(feats)]
    total, count = 0.0, 0
    for b in range(2):
        for i in range(g):
            for j in range(g):
                k = int(lm[b, i, j])
                s = 2 ** k
                vals = qs[k].loss_map[b, i * s:(i + 1) * s, j * s:(j + 1) * s]
                total += float(vals.sum())
                count += vals.numel()
    n_expected = int(sum((lm == k).sum() * 4 ** k for k in range(3)))
    assert count == n_expected
    assert out.vq_loss.item() == pytest.approx(total / count, rel=1e-5)
    # loss map = (1 + beta) * squared distance to the chosen code, in the forward value
    k0 = qs[0]
    e0 = model.quantizer(0).embed(k0.indices)
    torch.testing.assert_close(k0.loss_map, 1.25 * (feats[0] - e0).pow(2).mean(1), atol=1e-6, rtol=1e-5)
    # not the naive average over all three full grids
    naive = sum(q.loss_map.mean() for q in qs) / 3
    assert abs(out.vq_loss.item() - naive.item()) > 1e-6
    # and the same via the library's masks
    masks = level_masks(out.routing.gate, model.sizes)
    num = sum((q.loss_map * m).sum() for q, m in zip(qs, masks))
    den = sum(m.sum() for m in masks)
    assert out.vq_loss.item() == pytest.approx((num / den).item(), rel=1e-6)


def test_vq_loss_all_coarse_is_mean_of_coarse_loss_map():
    model = _model().eval()
    x = _x()
    g = model.coarse_grid
    out = model(x, mode="given", level_map=torch.zeros(2, g, g, dtype=torch.long))
    q = model.quantizer(0)(model.encoder(x)[0])
    assert out.vq_loss.item() == pytest.approx(q.loss_map.mean().item(), rel=1e-6)
    assert out.perplexity[1].item() == pytest.approx(1.0)  # nothing used at the median level


def test_eval_dynamic_is_deterministic():
    model = _model().eval()
    x = _x()
    a, b = model(x), model(x)
    assert torch.equal(a.recon, b.recon) and torch.equal(a.routing.levels, b.routing.levels)
    assert torch.equal(a.routing.levels, a.routing.logits.argmax(1))


def test_silu_is_in_place_only_in_eval_mode():
    from pvqae.autoencoder import EvalInplaceSiLU

    act = EvalInplaceSiLU()
    x = torch.randn(4, 3)
    ref = torch.nn.functional.silu(x)
    x_train = x.clone()
    torch.testing.assert_close(act.train()(x_train), ref)
    assert torch.equal(x_train, x)  # training keeps its input (needed for backward)
    x_eval = x.clone()
    out = act.eval()(x_eval)
    assert out.data_ptr() == x_eval.data_ptr() and torch.equal(out, ref)  # same values, no new tensor
