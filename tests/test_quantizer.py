"""Tests of the vector quantizer (paper Sec. III-A1): look-up, straight-through estimator,
VQ loss terms (beta on the commitment term) and dead-code restarts."""

from __future__ import annotations

import math

import pytest
import torch

from pvqae.quantizer import QuantizerOutput, VectorQuantizer

pytestmark = pytest.mark.usefixtures("one_thread")




def _vq(num_codes: int = 16, dim: int = 8, beta: float = 0.25, dead_after: int = 0, seed: int = 0) -> VectorQuantizer:
    torch.manual_seed(seed)
    vq = VectorQuantizer(num_codes, dim, beta=beta, dead_after=dead_after)
    # a codebook with spread-out codes (the default init is tiny and near-degenerate)
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.randn(num_codes, dim, generator=torch.Generator().manual_seed(seed + 1)))
    return vq


def _z(b: int = 2, d: int = 8, h: int = 4, w: int = 4, seed: int = 2) -> torch.Tensor:
    return torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ look-up


def test_lookup_equals_brute_force_argmin():
    vq = _vq(num_codes=32, dim=8)
    z = _z(3, 8, 5, 6)
    idx = vq.lookup(z)
    assert idx.shape == (3, 5, 6) and idx.dtype == torch.int64
    e = vq.codebook.weight.detach()
    brute = torch.empty(3, 5, 6, dtype=torch.long)
    for b in range(3):
        for i in range(5):
            for j in range(6):
                d = ((z[b, :, i, j][None] - e) ** 2).sum(1)
                brute[b, i, j] = int(d.argmin())
    assert torch.equal(idx, brute)


def test_embed_of_lookup_is_the_codebook_rows():
    vq = _vq()
    z = _z()
    idx = vq.lookup(z)
    emb = vq.embed(idx)
    assert emb.shape == z.shape
    w = vq.codebook.weight
    for b in range(z.shape[0]):
        for i in range(z.shape[2]):
            for j in range(z.shape[3]):
                assert torch.equal(emb[b, :, i, j], w[idx[b, i, j]])


def test_lookup_of_codes_returns_their_own_index():
    vq = _vq(num_codes=8, dim=8)
    idx = torch.arange(8).view(1, 2, 4)
    assert torch.equal(vq.lookup(vq.embed(idx).detach()), idx)


def test_forward_rejects_wrong_shape():
    vq = _vq(dim=8)
    with pytest.raises(ValueError, match=r"expected z of shape \(B, 8, H, W\)"):
        vq(torch.zeros(2, 4, 3, 3))
    with pytest.raises(ValueError, match="expected z"):
        vq(torch.zeros(8, 3, 3))


def test_forward_output_shapes_and_perplexity():
    vq = _vq().eval()
    z = _z()
    out = vq(z)
    assert isinstance(out, QuantizerOutput)
    assert out.z_q.shape == z.shape
    assert out.indices.shape == (2, 4, 4)
    assert out.loss_map.shape == (2, 4, 4)
    assert out.perplexity.shape == ()
    # perplexity of a histogram uniform over k codes is k
    vq2 = _vq(num_codes=8, dim=8).eval()
    idx = torch.arange(4).repeat(8).view(2, 4, 4)  # codes 0..3, equally often
    out2 = vq2(vq2.embed(idx).detach())
    assert torch.equal(out2.indices, idx)
    assert out2.perplexity.item() == pytest.approx(4.0, rel=1e-5)


# ------------------------------------------------------------------ straight-through


def test_straight_through_forward_value_and_identity_gradient():
    vq = _vq().eval()
    z = _z().requires_grad_(True)
    out = vq(z)
    codes = vq.embed(out.indices).detach()
    torch.testing.assert_close(out.z_q.detach(), codes, atol=1e-6, rtol=0)
    w = torch.randn(z.shape, generator=torch.Generator().manual_seed(5))
    (out.z_q * w).sum().backward()
    torch.testing.assert_close(z.grad, w, atol=1e-7, rtol=0)
    # the straight-through output gives no gradient to the codebook
    assert vq.codebook.weight.grad is None or torch.count_nonzero(vq.codebook.weight.grad) == 0


# ------------------------------------------------------------------ loss terms: beta on the commitment term


@pytest.mark.parametrize("beta", [0.25, 0.7])
def test_beta_weights_the_commitment_term(beta):
    vq = _vq(beta=beta).eval()
    z = _z().requires_grad_(True)
    out = vq(z)
    b, d, h, w = z.shape
    n = b * h * w
    e = vq.embed(out.indices).detach()

    out.loss_map.mean().backward()

    # w.r.t. z: beta * d/dz mean_{positions} mean_D (z - sg(e))^2 = beta * 2 (z - e) / (D * N)
    expected_z = beta * 2.0 * (z.detach() - e) / (d * n)
    torch.testing.assert_close(z.grad, expected_z, atol=1e-8, rtol=1e-5)
    # same thing via autograd on the reference expression
    z_ref = z.detach().clone().requires_grad_(True)
    (beta * (z_ref - e).pow(2).mean()).backward()
    torch.testing.assert_close(z.grad, z_ref.grad, atol=1e-8, rtol=1e-5)

    # w.r.t. the codebook: coefficient 1 on mean((sg(z) - e)^2): dL/de_k = sum_{i: k(i)=k} 2 (e_k - z_i) / (D * N)
    flat_z = z.detach().permute(0, 2, 3, 1).reshape(-1, d)
    flat_i = out.indices.reshape(-1)
    wgt = vq.codebook.weight.detach()
    expected_e = torch.zeros_like(wgt)
    expected_e.index_add_(0, flat_i, 2.0 * (wgt[flat_i] - flat_z) / (d * n))
    torch.testing.assert_close(vq.codebook.weight.grad, expected_e, atol=1e-8, rtol=1e-5)
    # and via autograd on the reference expression
    cb = wgt.clone().requires_grad_(True)
    e_ref = cb[out.indices].permute(0, 3, 1, 2)
    (z.detach() - e_ref).pow(2).mean().backward()
    torch.testing.assert_close(vq.codebook.weight.grad, cb.grad, atol=1e-8, rtol=1e-5)


def test_loss_map_value_is_one_plus_beta_times_squared_distance():
    beta = 0.25
    vq = _vq(beta=beta).eval()
    z = _z()
    out = vq(z)
    e = vq.embed(out.indices).detach()
    torch.testing.assert_close(out.loss_map, (1 + beta) * (z - e).pow(2).mean(1), atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------ dead-code restart and usage


def _far_codebook_vq(dead_after: int) -> VectorQuantizer:
    """Codes 0..3 near the data, codes 4..15 far away (never chosen)."""
    vq = VectorQuantizer(16, 4, dead_after=dead_after)
    with torch.no_grad():
        w = torch.full((16, 4), 100.0)
        w[:4] = torch.eye(4)
        vq.codebook.weight.copy_(w)
    return vq


def _data_near_first_codes(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.eye(4)[torch.randint(0, 4, (2 * 3 * 3,), generator=g)] + 0.05 * torch.randn(18, 4, generator=g)
    return z.view(2, 3, 3, 4).permute(0, 3, 1, 2).contiguous()


def _is_row_of(rows: torch.Tensor, z: torch.Tensor) -> bool:
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    return all(bool((flat == r).all(1).any()) for r in rows)


def test_dead_codes_restart_on_encoder_outputs_after_dead_after_steps():
    torch.manual_seed(0)
    vq = _far_codebook_vq(dead_after=2).train()
    z = _data_near_first_codes()
    before = vq.codebook.weight.detach().clone()

    out1 = vq(z)
    assert int(out1.indices.max()) < 4
    assert torch.equal(vq.codebook.weight, before)  # one step idle: not dead yet
    assert torch.equal(vq.idle_steps[4:], torch.ones(12, dtype=torch.long))
    assert torch.equal(vq.idle_steps[:4], torch.zeros(4, dtype=torch.long))

    vq(z)  # second step: codes 4..15 idle for 2 steps -> restarted
    after = vq.codebook.weight.detach()
    assert torch.equal(after[:4], before[:4])  # used codes untouched
    assert not torch.equal(after[4:], before[4:])
    assert (after[4:].abs() < 10).all()
    assert _is_row_of(after[4:], z)  # each new code is one of the batch's encoder outputs
    assert torch.equal(vq.idle_steps, torch.zeros(16, dtype=torch.long))


def test_usage_counts_and_codes_in_use():
    torch.manual_seed(0)
    vq = _far_codebook_vq(dead_after=0).train()  # restarts disabled
    z = _data_near_first_codes()
    out = vq(z)
    expected = torch.bincount(out.indices.reshape(-1), minlength=16)
    assert torch.equal(vq.usage, expected)
    assert vq.codes_in_use() == int((expected > 0).sum())
    vq(z)
    assert torch.equal(vq.usage, 2 * expected)
    assert int(vq.usage.sum()) == 2 * 18
    # restarts disabled: never-chosen codes stay put, idle counters keep growing
    assert torch.equal(vq.codebook.weight[4:], torch.full((12, 4), 100.0))
    assert torch.equal(vq.idle_steps[4:], torch.full((12,), 2, dtype=torch.long))
    vq.reset_usage()
    assert vq.codes_in_use() == 0 and int(vq.usage.sum()) == 0


def test_no_usage_update_or_restart_in_eval_mode():
    torch.manual_seed(0)
    vq = _far_codebook_vq(dead_after=1).eval()
    z = _data_near_first_codes()
    before = vq.codebook.weight.detach().clone()
    for _ in range(3):
        vq(z)
    assert torch.equal(vq.codebook.weight, before)
    assert int(vq.usage.sum()) == 0
    assert int(vq.idle_steps.sum()) == 0
    assert vq.codes_in_use() == 0


def test_used_mask_restricts_counting_and_restart_sources():
    torch.manual_seed(0)
    vq = _far_codebook_vq(dead_after=1).train()
    z = _data_near_first_codes()
    used = torch.zeros(2, 3, 3, dtype=torch.bool)
    used[0, 0, 0] = used[1, 2, 1] = True
    out = vq(z, used=used)
    expected = torch.bincount(out.indices[used], minlength=16)
    assert torch.equal(vq.usage, expected)
    assert int(vq.usage.sum()) == 2
    assert vq.codes_in_use() == int((expected > 0).sum())
    # the perplexity counts only the used positions too
    probs = expected.float() / 2
    assert out.perplexity.item() == pytest.approx(math.exp(-(probs[probs > 0] * probs[probs > 0].log()).sum().item()))
    # every code not chosen at a used position was restarted (dead_after=1) on a used output
    chosen = set(out.indices[used].tolist())
    dead = [k for k in range(16) if k not in chosen]
    new = vq.codebook.weight.detach()[dead]
    allowed = z.permute(0, 2, 3, 1)[used]  # (2, D)
    for r in new:
        assert bool((allowed == r).all(1).any()), "restart must draw from used positions only"


def test_used_mask_all_false_counts_nothing_and_restarts_nothing():
    torch.manual_seed(0)
    vq = _far_codebook_vq(dead_after=1).train()
    z = _data_near_first_codes()
    before = vq.codebook.weight.detach().clone()
    vq(z, used=torch.zeros(2, 3, 3, dtype=torch.bool))
    assert int(vq.usage.sum()) == 0
    assert torch.equal(vq.codebook.weight, before)
