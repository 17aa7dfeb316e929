"""Tests of the Budget Prior Transformer (paper Sec. III-C1): spiral order, model, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pvqae.prior import (
    PRIOR_MODES,
    BudgetPriorTransformer,
    MaskedLossOutput,
    inverse_permutation,
    spiral_order,
)


@pytest.fixture
def single_thread():
    """Tiny models train much faster (and reproducibly) on one thread of a busy CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(prior: str = "per-class", grid: int = 4, num_classes: int = 3, seed: int = 0,
           **kwargs) -> BudgetPriorTransformer:
    torch.manual_seed(seed)
    return BudgetPriorTransformer(num_levels=3, grid=grid, dim=16, heads=2, prior=prior,
                                  num_classes=num_classes, **kwargs).eval()


def _levels(batch: int, grid: int = 4, seed: int = 0, num_levels: int = 3) -> torch.Tensor:
    return torch.randint(0, num_levels, (batch, grid, grid), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ spiral order


def test_spiral_order_known_values():
    assert spiral_order(1).tolist() == [0]
    assert spiral_order(2).tolist() == [0, 1, 3, 2]
    assert spiral_order(3).tolist() == [0, 1, 2, 5, 8, 7, 6, 3, 4]
    assert spiral_order(4).tolist() == [0, 1, 2, 3, 7, 11, 15, 14, 13, 12, 8, 4, 5, 6, 10, 9]


@pytest.mark.parametrize("grid", range(1, 10))
def test_spiral_order_is_a_clockwise_permutation(grid):
    order = spiral_order(grid)
    assert order.dtype == torch.long
    assert sorted(order.tolist()) == list(range(grid * grid))
    # Consecutive cells are 4-neighbours (a spiral never jumps) ...
    rows, cols = order // grid, order % grid
    steps = (rows.diff().abs() + cols.diff().abs()).tolist()
    assert all(s == 1 for s in steps)
    # ... and it starts by running right along the top row.
    assert order[:grid].tolist() == list(range(grid))
    inverse = inverse_permutation(order)
    assert torch.equal(order[inverse], torch.arange(grid * grid))
    assert torch.equal(inverse[order], torch.arange(grid * grid))


def test_spiral_order_rejects_bad_grid():
    with pytest.raises(ValueError, match="grid"):
        spiral_order(0)


# ------------------------------------------------------------------------------ model


def test_forward_shape_and_mask_changes_output():
    model = _model()
    levels = _levels(5)
    no_mask = torch.zeros(5, 4, 4, dtype=torch.bool)
    mask = no_mask.clone()
    mask[:, 1, 2] = True
    with torch.no_grad():
        out_a = model(levels, no_mask, torch.tensor([0, 1, 2, 0, 1]))
        out_b = model(levels, mask, torch.tensor([0, 1, 2, 0, 1]))
    assert out_a.shape == (5, 3, 4, 4)
    assert not torch.allclose(out_a, out_b)
    assert model.num_parameters == sum(p.numel() for p in model.parameters())


def test_spiral_permutation_is_undone_in_outputs(monkeypatch):
    # Replace the network by an identity on tokens (one-hot of the spiral-ordered token):
    # forward must then return the one-hot of the input map in *grid* layout, and masked cells
    # must have become the MASK token at the right grid position.
    model = _model(grid=5)

    def echo(tokens, class_rows):
        return F.one_hot(tokens, model.num_levels + 1).float()

    monkeypatch.setattr(model, "_sequence_logits", echo)
    levels = _levels(2, grid=5, seed=7)
    mask = torch.zeros(2, 5, 5, dtype=torch.bool)
    mask[0, 1, 3] = mask[1, 4, 0] = True
    out = model(levels, mask, torch.tensor([0, 1]))
    expected = F.one_hot(levels.masked_fill(mask, model.mask_index), 4).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(out, expected)


def test_per_class_prior_depends_on_class_universal_does_not():
    levels = _levels(2)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    per_class = _model("per-class")
    universal = _model("universal")
    with torch.no_grad():
        a = per_class(levels, mask, torch.tensor([0, 0]))
        b = per_class(levels, mask, torch.tensor([1, 2]))
        assert not torch.allclose(a, b)
        u0 = universal(levels, mask, torch.tensor([0, 0]))
        u1 = universal(levels, mask, torch.tensor([1, 2]))
        u_none = universal(levels, mask)
    torch.testing.assert_close(u0, u1)
    torch.testing.assert_close(u0, u_none)
    # Both modes use the same sequence length (a prepended token) and parameter layout.
    assert per_class.pos_embedding.shape == universal.pos_embedding.shape
    assert universal.class_embedding.num_embeddings == 1


def test_int_class_index_broadcasts():
    model = _model()
    levels, mask = _levels(3), torch.zeros(3, 4, 4, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(model(levels, mask, 2), model(levels, mask, torch.tensor([2, 2, 2])))


def test_forward_validation_errors():
    model = _model()
    levels, mask = _levels(2), torch.zeros(2, 4, 4, dtype=torch.bool)
    cls = torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model(levels + 3, mask, cls)
    with pytest.raises(ValueError, match=r"\(B, 4, 4\)"):
        model(_levels(2, grid=5), torch.zeros(2, 5, 5, dtype=torch.bool), cls)
    with pytest.raises(ValueError, match="integer"):
        model(levels.float(), mask, cls)
    with pytest.raises(ValueError, match="bool"):
        model(levels, mask.long(), cls)
    with pytest.raises(ValueError, match="class_index is required"):
        model(levels, mask)
    with pytest.raises(ValueError, match="class_index"):
        model(levels, mask, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="per-class, universal"):
        BudgetPriorTransformer(prior="none")
    assert PRIOR_MODES == ("per-class", "universal")


def test_single_class_per_class_prior_needs_no_index():
    model = _model(num_classes=1)
    levels, mask = _levels(2), torch.zeros(2, 4, 4, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(model(levels, mask), model(levels, mask, 0))


# ------------------------------------------------------------------------------ predict_all


@pytest.mark.parametrize("prior", PRIOR_MODES)
@pytest.mark.parametrize("grid", [1, 4, 5])
def test_predict_all_equals_enumerating_the_single_masks(prior, grid):
    """The one-pass predict_all gives what the paper's enumeration gives: one forward per
    position with only that position masked. Weights are drawn large (std 0.5) so attention is
    far from uniform and a wrong key, value or diagonal would show."""
    model = _model(prior, grid=grid, num_classes=3)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    model.train()  # predict_all must switch to eval itself and restore the mode
    levels = _levels(3, grid=grid, seed=1)
    cls = torch.tensor([2, 0, 1])
    probs = model.predict_all(levels, cls)
    assert model.training

    model.eval()
    expected = torch.empty(3, 3, grid, grid)
    with torch.no_grad():
        for r in range(grid):
            for c in range(grid):
                mask = torch.zeros(3, grid, grid, dtype=torch.bool)
                mask[:, r, c] = True
                expected[:, :, r, c] = model(levels, mask, cls).softmax(dim=1)[:, :, r, c]
    assert probs.shape == (3, 3, grid, grid)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3, grid, grid))
    assert probs.std() > 0.05  # the check above is not between near-uniform outputs
    # Each map's prediction depends on that map only (no mixing across the batch).
    torch.testing.assert_close(model.predict_all(levels[1:2], cls[1:2]), probs[1:2], atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------ masked loss


def test_masked_loss_is_ce_on_masked_positions():
    model = _model()
    model.train()
    levels, cls = _levels(4, seed=2), torch.tensor([0, 1, 2, 0])
    out = model.masked_loss(levels, cls, generator=torch.Generator().manual_seed(5))
    assert isinstance(out, MaskedLossOutput)
    assert out.mask.shape == (4, 4, 4) and out.mask.dtype == torch.bool
    assert (out.mask.flatten(1).sum(dim=1) >= 1).all()
    logits = model(levels, out.mask, cls)
    ce = F.cross_entropy(logits, levels, reduction="none")
    torch.testing.assert_close(out.loss, ce[out.mask].mean())
    acc = (logits.argmax(dim=1) == levels)[out.mask].float().mean()
    torch.testing.assert_close(out.accuracy, acc)
    out.loss.backward()
    assert model.token_embedding.weight.grad.abs().sum() > 0
    assert model.class_embedding.weight.grad.abs().sum() > 0


def test_mask_sampling_ratios_and_reproducibility():
    model = _model(grid=8)
    fixed = model.sample_mask(6, max_mask_ratio=0.3, ratio_sampling="fixed",
                              generator=torch.Generator().manual_seed(0))
    assert fixed.flatten(1).sum(dim=1).tolist() == [math.ceil(0.3 * 64)] * 6
    uniform = model.sample_mask(500, max_mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    counts = uniform.flatten(1).sum(dim=1)
    assert counts.min() >= 1 and counts.max() <= 32
    assert counts.float().std() > 3  # the ratio varies per sample
    again = model.sample_mask(500, max_mask_ratio=0.5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(uniform, again)
    every = model.sample_mask(2, max_mask_ratio=1.0, ratio_sampling="fixed")
    assert every.all()
    with pytest.raises(ValueError, match="uniform, fixed"):
        model.sample_mask(2, ratio_sampling="beta")
    with pytest.raises(ValueError, match="max_mask_ratio"):
        model.sample_mask(2, max_mask_ratio=0.0)


# ------------------------------------------------------------------------------ learning


def _synthetic_patterns(grid: int) -> torch.Tensor:
    """Two classes with position-wise conflicting level maps, ``(2, G, G)``.

    Class 0: fine border, median ring, coarse centre. Class 1: fine/coarse checkerboard.
    """
    i, j = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    ring = torch.minimum(torch.minimum(i, j), torch.minimum(grid - 1 - i, grid - 1 - j))
    bordered = torch.where(ring == 0, 2, torch.where(ring == 1, 1, 0))
    checker = ((i + j) % 2) * 2
    return torch.stack([bordered, checker])


def _train(prior: str, patterns: torch.Tensor, steps: int = 200, batch: int = 32,
           noise: float = 0.05) -> BudgetPriorTransformer:
    grid = patterns.shape[-1]
    torch.manual_seed(0)
    model = BudgetPriorTransformer(num_levels=3, grid=grid, dim=32, heads=2, prior=prior,
                                   num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        cls = torch.randint(0, 2, (batch,), generator=gen)
        levels = patterns[cls].clone()
        flip = torch.rand(levels.shape, generator=gen) < noise  # 5% random noise tokens
        levels[flip] = torch.randint(0, 3, (int(flip.sum()),), generator=gen)
        out = model.masked_loss(levels, cls, max_mask_ratio=1.0, generator=gen)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return model.eval()


def test_prior_learns_synthetic_level_patterns(single_thread):
    patterns = _synthetic_patterns(6)
    cls = torch.tensor([0, 1])
    assert (patterns[0] != patterns[1]).float().mean() > 0.5  # the classes conflict

    per_class = _train("per-class", patterns)
    universal = _train("universal", patterns)

    # Normal budget prior with every position predicted from all others: near-perfect.
    pred = per_class.predict_all(patterns, cls).argmax(dim=1)
    assert (pred == patterns).float().mean() > 0.95

    # Without visible context only the class token can resolve the conflicting patterns:
    # the per-class prior still recalls each map, the universal prior can at best predict the
    # per-position majority (here exactly 1/3 agreeing + 1/2 of the 2/3 conflicting cells).
    all_masked = torch.ones(2, 6, 6, dtype=torch.bool)
    with torch.no_grad():
        acc_per_class = (per_class(patterns, all_masked, cls).argmax(1) == patterns).float().mean()
        acc_universal = (universal(patterns, all_masked, cls).argmax(1) == patterns).float().mean()
    assert acc_per_class > 0.95
    assert acc_universal < 0.75
    assert acc_per_class - acc_universal > 0.2

    # The predicted prior flags an unexpected budget: a fine patch in class 0's coarse centre
    # gets low prior probability of its routed level.
    anomalous = patterns[:1].clone()
    anomalous[0, 2, 3] = 2
    probs = per_class.predict_all(anomalous, 0)
    assert probs[0, 2, 2, 3] < 0.2
    assert probs[0, 0, 2, 3] > 0.8
