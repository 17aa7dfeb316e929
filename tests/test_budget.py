"""Tests of the budget (paper Sec. III-B2): DWT entropy (pvqae.entropy), costs, loss, schedule."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch

from pvqae.budget import LAMBDA_SCHEDULES, budget_loss, lambda_schedule, level_costs
from pvqae.entropy import batch_patch_entropies, dwt_entropy, patch_entropies

P = 32  # patch side used by the single-patch tests (256 / 8, the paper's coarse grid)


def _flat(value: float = 0.3) -> np.ndarray:
    return np.full((P, P), value)


def _gradient() -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, P), (P, 1))


def _checkerboard(amplitude: float = 0.5) -> np.ndarray:
    ij = np.add.outer(np.arange(P), np.arange(P))
    return 0.5 + amplitude * ((ij % 2) - 0.5)


def _noise(std: float, seed: int = 0, mean: float = 0.5) -> np.ndarray:
    return mean + std * np.random.default_rng(seed).standard_normal((P, P))


# ------------------------------------------------------------------------------ dwt_entropy


@pytest.mark.parametrize("value", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("noise_floor", [0.0, 0.01])
def test_flat_patch_has_zero_entropy(value, noise_floor):
    assert dwt_entropy(_flat(value), noise_floor=noise_floor) == 0.0


@pytest.mark.parametrize("noise_floor", [0.0, 0.01])
def test_entropy_orders_flat_gradient_texture(noise_floor):
    flat = dwt_entropy(_flat(), noise_floor=noise_floor)
    gradient = dwt_entropy(_gradient(), noise_floor=noise_floor)
    checker = dwt_entropy(_checkerboard(), noise_floor=noise_floor)
    noise = dwt_entropy(np.clip(_noise(0.1), 0, 1), noise_floor=noise_floor)
    assert flat < gradient < checker < noise
    # A smooth gradient is clearly poorer in context than fine texture.
    assert checker - gradient > 0.2
    assert noise - gradient > 0.3


def test_entropy_is_normalised_and_scale_free_without_gate():
    rng = np.random.default_rng(1)
    for _ in range(5):
        patch = rng.random((P, P))
        h = dwt_entropy(patch, noise_floor=0.0)
        assert 0.0 <= h <= 1.0
        # Normalised Shannon entropy of c^2 / sum c^2 does not depend on the amplitude ...
        assert dwt_entropy(0.5 + 0.01 * (patch - 0.5), noise_floor=0.0) == pytest.approx(h)
    # ... and a single-subband pattern has exactly log(#coeffs in band) / log(N):
    # the pixel checkerboard puts equal energy in the 16x16 level-1 diagonal band.
    assert dwt_entropy(_checkerboard(), noise_floor=0.0) == pytest.approx(
        math.log(16 * 16) / math.log(P * P)
    )


def test_noise_gate_suppresses_sub_floor_noise_only():
    tiny = _noise(0.001)  # sensor noise far below the 0.01 floor on a smooth surface
    assert dwt_entropy(tiny, noise_floor=0.0) > 0.8  # entropy alone calls it "rich"
    assert dwt_entropy(tiny, noise_floor=0.01) < 0.05  # the gate does not
    # Gate value is E / (E + floor^2) with E = variance (orthonormal Haar): ~ (0.001/0.01)^2.
    ratio = dwt_entropy(tiny, noise_floor=0.01) / dwt_entropy(tiny, noise_floor=0.0)
    assert ratio == pytest.approx(np.var(tiny) / (np.var(tiny) + 0.01**2), rel=1e-9)
    # Visible texture is essentially untouched by the gate.
    strong = np.clip(_noise(0.1), 0, 1)
    assert dwt_entropy(strong, noise_floor=0.01) > 0.98 * dwt_entropy(strong, noise_floor=0.0)


def test_gate_does_not_kill_block_aligned_structure():
    # 4-pixel stripes align with level-2 Haar blocks: all energy is in the approximation band,
    # so a detail-only gate would zero them. The all-coefficient gate keeps them "rich".
    stripes = np.tile((np.arange(P) // 4) % 2 * 0.5, (P, 1))
    assert dwt_entropy(stripes) > 0.5


def test_dwt_entropy_argument_errors():
    with pytest.raises(ValueError, match="2-D"):
        dwt_entropy(np.zeros((3, P, P)))
    with pytest.raises(ValueError, match="too deep"):
        dwt_entropy(np.zeros((4, 4)), level=3)
    with pytest.raises(ValueError, match="noise_floor"):
        dwt_entropy(_flat(), noise_floor=-1.0)
    with pytest.raises(ValueError, match="wavelet"):
        dwt_entropy(_flat(), wavelet="not-a-wavelet")


# ------------------------------------------------------------------------------ patch maps


def test_patch_entropies_are_high_exactly_in_textured_patches():
    grid, size = 8, 256
    rng = np.random.default_rng(0)
    image = np.full((3, size, size), 0.4)
    # Texture in the top-left block of 3 x 5 patches (rows 0..2, cols 0..4) only.
    image[:, : 3 * 32, : 5 * 32] = rng.random((3 * 32, 5 * 32))
    ent = patch_entropies(image, grid)
    assert ent.shape == (grid, grid)
    textured = np.zeros((grid, grid), dtype=bool)
    textured[:3, :5] = True
    assert (ent[textured] > 0.8).all()
    assert (ent[~textured] == 0.0).all()


def test_patch_entropies_matches_per_patch_dwt_entropy_and_gray_conversion():
    rng = np.random.default_rng(3)
    image = rng.random((3, 64, 64))
    ent = patch_entropies(image, 4)
    gray = image.mean(axis=0)
    for i in range(4):
        for j in range(4):
            patch = gray[16 * i : 16 * (i + 1), 16 * j : 16 * (j + 1)]
            assert ent[i, j] == pytest.approx(dwt_entropy(patch))
    np.testing.assert_allclose(patch_entropies(gray, 4), ent)
    np.testing.assert_allclose(patch_entropies(torch.from_numpy(image).float(), 4), ent, atol=1e-6)


def test_batch_patch_entropies_stacks_single_images():
    rng = np.random.default_rng(4)
    images = rng.random((3, 1, 32, 64))
    batch = batch_patch_entropies(images, 2)
    # Non-square images: 32x64 in a 2x2 grid gives 16x32 patches.
    assert batch.shape == (3, 2, 2)
    for n in range(3):
        np.testing.assert_allclose(batch[n], patch_entropies(images[n], 2))
    np.testing.assert_array_equal(batch_patch_entropies(images, 2, chunk_size=2), batch)
    assert batch_patch_entropies(images[:0], 2).shape == (0, 2, 2)


def test_patch_entropies_shape_errors_name_the_shapes():
    with pytest.raises(ValueError, match=r"\(3, 250, 256\).*divisible by grid=8"):
        patch_entropies(np.zeros((3, 250, 256)), 8)
    with pytest.raises(ValueError, match="shape"):
        patch_entropies(np.zeros((1, 1, 32, 32)), 2)


def test_patch_entropies_is_fast():
    image = np.random.default_rng(0).random((3, 256, 256))
    patch_entropies(image, 8)  # warm-up
    best = min(_timed(lambda: patch_entropies(image, 8)) for _ in range(5))
    assert best < 0.05


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ------------------------------------------------------------------------------ costs


def test_level_costs_rise_by_factor_and_favour_rich_context():
    entropy = np.array([[0.0, 0.2], [0.5, 0.9]])
    costs = level_costs(entropy, num_levels=3, factor=4.0, eps=0.1)
    assert isinstance(costs, np.ndarray) and costs.shape == (2, 2, 3)
    np.testing.assert_allclose(costs[..., 0], 1.0 / (entropy + 0.1))
    np.testing.assert_allclose(costs[..., 1] / costs[..., 0], 4.0)
    np.testing.assert_allclose(costs[..., 2] / costs[..., 1], 4.0)
    assert costs[0, 0, 0] == pytest.approx(10.0)  # flat patch: finite cost 1 / eps
    # Textured (H = 0.9) is cheaper than flat (H = 0) at every level.
    assert (costs[1, 1] < costs[0, 0]).all()


def test_level_costs_torch_and_layout():
    entropy = torch.rand(2, 4, 4, dtype=torch.float64)
    last = level_costs(entropy, num_levels=4, factor=2.0)
    assert isinstance(last, torch.Tensor) and last.shape == (2, 4, 4, 4)
    assert last.dtype == torch.float64
    first = level_costs(entropy, num_levels=4, factor=2.0, dim=1)
    assert first.shape == (2, 4, 4, 4)
    torch.testing.assert_close(first, last.permute(0, 3, 1, 2))
    np.testing.assert_allclose(last.numpy(), level_costs(entropy.numpy(), num_levels=4, factor=2.0))
    with pytest.raises(ValueError, match="eps"):
        level_costs(entropy, eps=0.0)


# ------------------------------------------------------------------------------ budget loss


def test_budget_loss_hand_case_and_gradient():
    # B=1, K=2, G=2. Hard gate: coarse everywhere except the top-left patch.
    gate = torch.tensor([[[[0.0, 1.0], [1.0, 1.0]], [[1.0, 0.0], [0.0, 0.0]]]], requires_grad=True)
    costs = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[10.0, 20.0], [30.0, 40.0]]]])
    # Sum over patches: 10 (fine, top-left) + 2 + 3 + 4 = 19.
    loss_sum = budget_loss(gate, costs, reduction="sum")
    assert loss_sum.item() == pytest.approx(19.0)
    loss_mean = budget_loss(gate, costs)
    assert loss_mean.item() == pytest.approx(19.0 / 4)
    loss_mean.backward()
    torch.testing.assert_close(gate.grad, costs / 4)


def test_budget_loss_mean_sum_relation_and_batch_average():
    gen = torch.Generator().manual_seed(0)
    gate = torch.rand(3, 3, 5, 5, generator=gen).softmax(dim=1)
    costs = level_costs(torch.rand(3, 5, 5, generator=gen), dim=1)
    total = budget_loss(gate, costs, reduction="sum")
    assert total.item() == pytest.approx(25 * budget_loss(gate, costs).item())
    per_image = [budget_loss(gate[i : i + 1], costs[i : i + 1], reduction="sum") for i in range(3)]
    assert total.item() == pytest.approx(sum(p.item() for p in per_image) / 3)
    # NumPy costs are accepted.
    assert budget_loss(gate, costs.numpy()).item() == pytest.approx(budget_loss(gate, costs).item())


def test_budget_loss_prefers_cheap_allocation():
    entropy = torch.tensor([[[0.0, 0.9]]])  # flat patch, textured patch (G = 1 x 2)
    costs = level_costs(entropy, dim=1)  # (1, 3, 1, 2)
    fine_on_texture = torch.zeros(1, 3, 1, 2)
    fine_on_texture[0, 0, 0, 0] = fine_on_texture[0, 2, 0, 1] = 1
    fine_on_flat = torch.zeros(1, 3, 1, 2)
    fine_on_flat[0, 2, 0, 0] = fine_on_flat[0, 0, 0, 1] = 1
    assert budget_loss(fine_on_texture, costs) < budget_loss(fine_on_flat, costs)


def test_budget_loss_shape_errors():
    gate = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, K, G, G\)"):
        budget_loss(gate, torch.rand(2, 4, 4, 3))  # (B, G, G, K) layout is rejected
    with pytest.raises(ValueError, match="gate"):
        budget_loss(torch.rand(3, 4, 4), torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match="reduction"):
        budget_loss(gate, torch.rand(2, 3, 4, 4), reduction="max")


# ------------------------------------------------------------------------------ lambda schedule


@pytest.mark.parametrize(
    ("kind", "start", "middle", "end"),
    [("linear", 0.0, 0.5, 1.0), ("cosine", 0.0, 0.5, 1.0), ("constant", 1.0, 1.0, 1.0)],
)
def test_lambda_schedule_values(kind, start, middle, end):
    lam = 1.25
    assert lambda_schedule(0, 100, lam, kind) == pytest.approx(start * lam)
    assert lambda_schedule(50, 100, lam, kind) == pytest.approx(middle * lam)
    assert lambda_schedule(100, 100, lam, kind) == pytest.approx(end * lam)
    assert lambda_schedule(500, 100, lam, kind) == pytest.approx(lam)  # clamped after the end


def test_lambda_schedule_shapes_between_points():
    assert lambda_schedule(25, 100) == pytest.approx(1.25 * 0.25)  # linear, default max 1.25
    assert lambda_schedule(25, 100, kind="cosine") == pytest.approx(1.25 * (1 - math.cos(math.pi / 4)) / 2)
    # Cosine starts slower than linear and catches up symmetrically.
    assert lambda_schedule(25, 100, kind="cosine") < lambda_schedule(25, 100)
    assert lambda_schedule(75, 100, kind="cosine") > lambda_schedule(75, 100)
    values = [lambda_schedule(s, 100, kind="linear") for s in range(101)]
    assert all(a <= b for a, b in zip(values, values[1:]))


def test_lambda_schedule_warmup():
    for step in (0, 10, 19, 20):
        assert lambda_schedule(step, 120, 1.0, "linear", warmup_steps=20) == 0.0
        assert lambda_schedule(step, 120, 1.0, "cosine", warmup_steps=20) == 0.0
    assert lambda_schedule(70, 120, 1.0, "linear", warmup_steps=20) == pytest.approx(0.5)
    assert lambda_schedule(70, 120, 1.0, "cosine", warmup_steps=20) == pytest.approx(0.5)
    assert lambda_schedule(120, 120, 1.0, "linear", warmup_steps=20) == pytest.approx(1.0)
    assert lambda_schedule(5, 120, 1.0, "constant", warmup_steps=20) == 1.0


def test_lambda_schedule_errors():
    with pytest.raises(ValueError, match="linear, cosine, constant"):
        lambda_schedule(0, 10, kind="exponential")
    with pytest.raises(ValueError, match="total_steps"):
        lambda_schedule(0, 10, warmup_steps=10)
    with pytest.raises(ValueError, match="step"):
        lambda_schedule(-1, 10)
    assert set(LAMBDA_SCHEDULES) == {"linear", "cosine", "constant"}
