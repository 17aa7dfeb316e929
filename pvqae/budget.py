"""Progressive budget learning (paper Sec. III-B2): what the budget objective needs besides
the context richness ``H`` of each coarse patch (:mod:`pvqae.entropy`).

1. **Level costs**: the base cost ``1 / H`` (regularised, ``1 / (H + eps)``) rises by a constant
   ``factor`` per finer level (:func:`level_costs`).
2. **Budget loss**: the gate-weighted cost summed over levels and patches
   (:func:`budget_loss`), weighted by ``lambda`` in the total objective.
3. **Lambda schedule**: ``lambda`` rises from 0 to ``lambda_max`` (linearly in the paper; cosine
   and constant are the Table II ablations) (:func:`lambda_schedule`).

Level convention: index ``0`` = coarse, ``1`` = median, ``2`` = fine (``K = 3`` by default;
every function here works for any ``K``). Tensor layout: gates and costs are
``(B, K, G, G)`` (levels on dim 1, like class scores in ``torch.nn.functional.cross_entropy``);
entropies are ``(B, G, G)`` or ``(G, G)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

__all__ = ["LAMBDA_SCHEDULES", "budget_loss", "lambda_schedule", "level_costs"]

#: Valid ``kind`` values of :func:`lambda_schedule`.
LAMBDA_SCHEDULES: tuple[str, ...] = ("linear", "cosine", "constant")

_REDUCTIONS: tuple[str, ...] = ("mean", "sum")


# --------------------------------------------------------------------------------------------
# Costs and the budget loss
# --------------------------------------------------------------------------------------------


def level_costs(
    entropy: Any,
    num_levels: int = 3,
    factor: float = 4.0,
    eps: float = 0.1,
    dim: int = -1,
) -> Any:
    """Context-dependent cost of every resolution level (Sec. III-B2).

    ``cost_k = factor**k / (H + eps)`` for ``k = 0 (coarse) .. num_levels - 1 (fine)``: the
    base cost is the inverse entropy (cheaper where context is rich), regularised by ``eps`` so
    flat patches (``H = 0``) get a finite cost ``1 / eps``, and each finer level costs
    ``factor`` times more.

    Args:
        entropy: Entropies of any shape ``S`` (NumPy array or tensor).
        num_levels: Number of resolution levels ``K``.
        factor: Cost multiplier per finer level (``> 0``).
        eps: Added to ``H`` before inversion (``> 0``).
        dim: Where the new level axis goes in the output. Default ``-1`` gives ``(*S, K)``;
            use ``dim=1`` on ``(B, G, G)`` entropies to get the ``(B, K, G, G)`` layout that
            :func:`budget_loss` expects.

    Returns:
        Costs with the level axis inserted at ``dim``; same type (NumPy/torch), and for tensors
        the same dtype (floating) and device, as ``entropy``.

    Raises:
        ValueError: If ``num_levels < 1``, ``factor <= 0`` or ``eps <= 0``.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    if eps <= 0:
        raise ValueError(f"eps must be > 0 (it keeps 1/(H+eps) finite for flat patches), got {eps}")
    if isinstance(entropy, torch.Tensor):
        h = entropy if entropy.is_floating_point() else entropy.float()
        base = 1.0 / (h + eps)
        return torch.stack([base * factor**k for k in range(num_levels)], dim=dim)
    h = np.asarray(entropy, dtype=np.float64)
    base = 1.0 / (h + eps)
    return np.stack([base * factor**k for k in range(num_levels)], axis=dim)


def budget_loss(gate: torch.Tensor, costs: Any, reduction: str = "mean") -> torch.Tensor:
    """Budget loss ``L_budget = sum_patches sum_k s_k * cost_k`` (Sec. III-B2).

    The paper sums the gate-weighted costs over all patches of the coarsest level. With
    ``reduction="sum"`` that is exactly what is computed per image. **Method decision:** the
    default ``reduction="mean"`` divides by the number of patches ``G*G`` so the weight
    ``lambda`` (e.g. the paper's ``lambda_max = 1.25``) has the same meaning at any grid size.
    Either way the result is averaged over the batch.

    Args:
        gate: ``(B, K, G, G)`` per-patch level scores (soft Gumbel-softmax or hard one-hot), the
            output of the Dynamic Routing Module; gradients flow into it.
        costs: ``(B, K, G, G)`` level costs (from :func:`level_costs` with ``dim=1``); tensor or
            NumPy array, treated as constants (detached).
        reduction: ``"mean"`` (average over patches, default) or ``"sum"`` (paper's sum).

    Returns:
        Scalar tensor.

    Raises:
        ValueError: On wrong ranks, mismatched shapes or an unknown ``reduction``.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}; valid: {', '.join(_REDUCTIONS)}")
    if not isinstance(gate, torch.Tensor) or gate.ndim != 4:
        shape = tuple(gate.shape) if hasattr(gate, "shape") else type(gate).__name__
        raise ValueError(f"gate must be a (B, K, G, G) tensor, got {shape}")
    if isinstance(costs, torch.Tensor):
        costs_t = costs.detach().to(device=gate.device, dtype=gate.dtype)
    else:
        costs_t = torch.as_tensor(np.asarray(costs), device=gate.device, dtype=gate.dtype)
    if costs_t.shape != gate.shape:
        raise ValueError(
            f"costs shape {tuple(costs_t.shape)} must equal gate shape {tuple(gate.shape)}; both "
            "use the (B, K, G, G) layout (levels on dim 1): build costs with "
            "level_costs(entropy, dim=1)"
        )
    per_image = (gate * costs_t).sum(dim=(1, 2, 3))
    if reduction == "mean":
        per_image = per_image / (gate.shape[2] * gate.shape[3])
    return per_image.mean()


# --------------------------------------------------------------------------------------------
# Progressive schedule
# --------------------------------------------------------------------------------------------


def lambda_schedule(
    step: int,
    total_steps: int,
    lambda_max: float = 1.25,
    kind: str = "linear",
    warmup_steps: int = 0,
) -> float:
    """Budget-loss weight ``lambda`` at a training step (Sec. III-B2, Table II, Fig. 5).

    The paper linearly increases ``lambda`` "from 0 to the maximum value" so the model first
    learns to reconstruct and only then economises capacity; ``lambda_max = 1.25`` was best
    (Fig. 5). With ``t = clip((step - warmup_steps) / (total_steps - warmup_steps), 0, 1)``:

    - ``"linear"``:   ``lambda_max * t`` (paper's choice);
    - ``"cosine"``:   ``lambda_max * (1 - cos(pi * t)) / 2``;
    - ``"constant"``: ``lambda_max`` at every step (warmup ignored).

    Before ``warmup_steps`` the ramps give 0; the ramp reaches ``lambda_max`` at
    ``total_steps`` and stays there (clamped) afterwards.

    Args:
        step: Current step (``>= 0``).
        total_steps: Step at which the ramp reaches ``lambda_max`` (``> warmup_steps``).
        lambda_max: Terminal weight.
        kind: One of :data:`LAMBDA_SCHEDULES`.
        warmup_steps: Steps with ``lambda = 0`` before the ramp starts.

    Returns:
        The weight as a Python float.

    Raises:
        ValueError: On an unknown ``kind`` or inconsistent step arguments.
    """
    if kind not in LAMBDA_SCHEDULES:
        raise ValueError(f"unknown lambda schedule {kind!r}; valid kinds: {', '.join(LAMBDA_SCHEDULES)}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
    if total_steps <= warmup_steps:
        raise ValueError(
            f"total_steps ({total_steps}) must be greater than warmup_steps ({warmup_steps})"
        )
    if kind == "constant":
        return float(lambda_max)
    t = min(max((step - warmup_steps) / (total_steps - warmup_steps), 0.0), 1.0)
    if kind == "linear":
        return float(lambda_max * t)
    return float(lambda_max * (1.0 - math.cos(math.pi * t)) / 2.0)
