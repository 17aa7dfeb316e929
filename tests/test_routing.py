"""Tests of the Dynamic Routing Module and mixed-resolution code maps (paper Sec. III-B1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pvqae.routing import (
    DynamicRouter,
    RoutingOutput,
    assemble_codes,
    gumbel_softmax,
    level_masks,
    upsample_to,
)

pytestmark = pytest.mark.usefixtures("one_thread")

G = 4  # coarse grid
D = 8  # code dim




def _feats(b: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, D, G * 2 ** k, G * 2 ** k, generator=g) for k in range(3)]


def _router(seed: int = 0) -> DynamicRouter:
    torch.manual_seed(seed)
    return DynamicRouter(D, 3, hidden=16, groups=8)


def _random_levels(b: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 3, (b, G, G), generator=torch.Generator().manual_seed(seed))


def _one_hot(levels: torch.Tensor) -> torch.Tensor:
    return F.one_hot(levels, 3).permute(0, 3, 1, 2).float()


# ------------------------------------------------------------------ Gumbel-softmax


def test_gumbel_softmax_hard_forward_is_one_hot():
    logits = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    y = gumbel_softmax(logits, tau=0.7, hard=True, dim=1, generator=torch.Generator().manual_seed(1))
    assert y.shape == logits.shape
    hard = y.detach()
    # one 1 per position along dim 1, zeros elsewhere (up to the float rounding of y_hard + soft - soft)
    torch.testing.assert_close(hard, F.one_hot(hard.argmax(1), 3).permute(0, 3, 1, 2).float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(hard.sum(1), torch.ones(4, 5, 5), atol=1e-6, rtol=0)


def test_gumbel_softmax_hard_forward_is_exactly_one_hot():
    logits = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = gumbel_softmax(logits, hard=True, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y.detach(), F.one_hot(y.detach().argmax(1), 3).permute(0, 3, 1, 2).float())


def test_gumbel_softmax_hard_passes_gradient_to_logits():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    y = gumbel_softmax(logits, tau=1.0, hard=True, generator=torch.Generator().manual_seed(1))
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2))
    (y * w).sum().backward()
    assert logits.grad is not None
    assert torch.count_nonzero(logits.grad) > 0
    assert torch.isfinite(logits.grad).all()


def test_gumbel_softmax_soft_is_a_distribution():
    logits = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = gumbel_softmax(logits, hard=False, generator=torch.Generator().manual_seed(1))
    assert (y > 0).all() and (y < 1).all()
    torch.testing.assert_close(y.sum(1), torch.ones(2, 4, 4))


def test_gumbel_softmax_same_seed_same_sample():
    logits = torch.zeros(3, 3, 6, 6)  # uniform: the sample is pure noise
    a = gumbel_softmax(logits, generator=torch.Generator().manual_seed(7))
    b = gumbel_softmax(logits, generator=torch.Generator().manual_seed(7))
    c = gumbel_softmax(logits, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a.argmax(1), c.argmax(1))
    # uniform logits: every level gets sampled
    assert set(a.argmax(1).unique().tolist()) == {0, 1, 2}


# ------------------------------------------------------------------ DynamicRouter


def test_router_output_shapes_train_and_eval():
    r = _router()
    feats = _feats(b=2)
    for mode in (r.train, r.eval):
        mode()
        out = r(feats, generator=torch.Generator().manual_seed(0))
        assert isinstance(out, RoutingOutput)
        assert out.logits.shape == (2, 3, G, G)
        assert out.gate.shape == (2, 3, G, G)
        assert out.levels.shape == (2, G, G) and out.levels.dtype == torch.int64
        assert torch.equal(out.levels, out.gate.argmax(1))


def test_router_eval_is_noise_free_argmax():
    r = _router().eval()
    feats = _feats()
    a = r(feats, tau=0.5)
    b = r(feats, tau=3.0)
    assert torch.equal(a.gate, b.gate) and torch.equal(a.levels, b.levels)
    assert torch.equal(a.levels, a.logits.argmax(1))
    assert torch.equal(a.gate, _one_hot(a.logits.argmax(1)))


def test_router_train_sampling_reproducible_with_generator():
    r = _router().train()
    feats = _feats()
    a = r(feats, generator=torch.Generator().manual_seed(3))
    b = r(feats, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.gate, b.gate)
    outs = [r(feats, tau=5.0, generator=torch.Generator().manual_seed(s)).levels for s in range(4)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:]), "Gumbel noise should change some choices"


def test_router_level_map_overrides_choice():
    r = _router().train()
    feats = _feats()
    lm = _random_levels()
    out = r(feats, level_map=lm)
    assert torch.equal(out.levels, lm)
    assert torch.equal(out.gate, _one_hot(lm))
    assert out.gate.dtype == out.logits.dtype
    # no gradient path from the forced gate back to the router
    assert not out.gate.requires_grad


def test_router_rejects_wrong_level_map_shape_and_level_count():
    r = _router()
    feats = _feats(b=2)
    with pytest.raises(ValueError, match=r"level_map must be \(B, G, G\) = \(2, 4, 4\)"):
        r(feats, level_map=torch.zeros(2, G + 1, G + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="level_map must be"):
        r(feats, level_map=torch.zeros(1, G, G, dtype=torch.long))
    with pytest.raises(ValueError, match="router expects 3 levels, got 2"):
        r(feats[:2])


def test_router_gradient_through_gate():
    r = _router().train()
    feats = _feats()
    out = r(feats, generator=torch.Generator().manual_seed(0))
    w = torch.randn(out.gate.shape, generator=torch.Generator().manual_seed(1))
    (out.gate * w).sum().backward()
    assert torch.count_nonzero(r.mlp[0].weight.grad) > 0
    assert torch.count_nonzero(r.mlp[2].weight.grad) > 0


# ------------------------------------------------------------------ assembling the code map


def test_upsample_to_repeats():
    x = torch.arange(4.0).view(1, 1, 2, 2)
    y = upsample_to(x, 4)
    assert torch.equal(y[0, 0], torch.tensor([[0., 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]))
    assert upsample_to(x, 2) is x


def test_assemble_codes_fills_each_patch_with_its_level():
    g = torch.Generator().manual_seed(0)
    b = 2
    codes = [torch.randn(b, D, G * 2 ** k, G * 2 ** k, generator=g) for k in range(3)]
    lm = _random_levels(b, seed=3)
    assert set(lm.unique().tolist()) == {0, 1, 2}
    out = assemble_codes(codes, _one_hot(lm))
    fine = G * 4
    assert out.shape == (b, D, fine, fine)
    p = fine // G  # fine pixels per coarse patch side
    for n in range(b):
        for i in range(G):
            for j in range(G):
                k = int(lm[n, i, j])
                s = 2 ** k  # codes of level k per coarse patch side
                src = codes[k][n, :, i * s:(i + 1) * s, j * s:(j + 1) * s]
                expected = src.repeat_interleave(p // s, -1).repeat_interleave(p // s, -2)
                region = out[n, :, i * p:(i + 1) * p, j * p:(j + 1) * p]
                assert torch.equal(region, expected), (n, i, j, k)


def test_assemble_codes_gate_gradient_reaches_logits():
    g = torch.Generator().manual_seed(0)
    codes = [torch.randn(1, D, G * 2 ** k, G * 2 ** k, generator=g) for k in range(3)]
    logits = torch.randn(1, 3, G, G, generator=g).requires_grad_(True)
    gate = gumbel_softmax(logits, generator=torch.Generator().manual_seed(1))
    out = assemble_codes(codes, gate)
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    assert torch.count_nonzero(logits.grad) > 0


def test_level_masks_shapes_and_counts():
    b = 3
    lm = _random_levels(b, seed=5)
    sizes = [G, 2 * G, 4 * G]
    masks = level_masks(_one_hot(lm), sizes)
    assert len(masks) == 3
    for k, (m, s) in enumerate(zip(masks, sizes)):
        assert m.shape == (b, s, s) and m.dtype == torch.bool
        # (2^k)^2 used positions per coarse patch routed to level k
        assert int(m.sum()) == int((lm == k).sum()) * 4 ** k
        # per image, too
        assert torch.equal(m.sum((1, 2)), (lm == k).sum((1, 2)) * 4 ** k)
    # upsampled to the fine grid the masks tile it exactly once
    cover = sum(upsample_to(m[:, None].float(), 4 * G)[:, 0] for m in masks)
    assert torch.equal(cover, torch.ones(b, 4 * G, 4 * G))
    # mask of level k marks exactly the patches routed to k
    for k, m in enumerate(masks):
        s = 2 ** k
        assert torch.equal(m[:, ::s, ::s], lm == k)


def test_level_masks_on_straight_through_gate_follow_hard_choice():
    logits = torch.randn(2, 3, G, G, generator=torch.Generator().manual_seed(0))
    gate = gumbel_softmax(logits, generator=torch.Generator().manual_seed(1))
    masks = level_masks(gate, [G, 2 * G, 4 * G])
    lv = gate.detach().argmax(1)
    assert torch.equal(masks[0], lv == 0)
    assert int(sum(m.sum() for m in masks[:1])) + int(masks[1].sum()) // 4 + int(masks[2].sum()) // 16 == 2 * G * G
