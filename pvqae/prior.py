"""Budget Prior Transformer: learning normal budget priors (paper Sec. III-C1).

Past ~350 lines on purpose: one paper concept (model, config, masking, the enumerated
prediction and loading), with the validation of every input it gets.

After PVQAE is trained, the Dynamic Routing Module assigns every patch of the coarse ``G x G``
grid a resolution level (``0`` = coarse ... ``K - 1`` = fine). The *normal budget prior* is a
model of these level maps on normal images:

1. the level map is flattened "in a clockwise order" (:func:`spiral_order`: a clockwise spiral
   from the top-left corner, going right, then inward);
2. a class token is prepended (per-class prior) or a single shared token (universal prior);
3. one transformer block is trained, VQ-GAN/MaskGIT style, to predict masked levels from the
   visible ones with cross-entropy on the masked positions (:meth:`masked_loss`);
4. at test time every position is predicted with only itself masked, "enumerating the masks
   to obtain the fully predicted sequence" (:meth:`predict_all`).

The "no prior" ablation of Table III (use the routed levels directly) involves no model and is
handled by the caller.

Layouts: level maps ``(B, G, G)`` long; masks ``(B, G, G)`` bool; logits / probabilities
``(B, K, G, G)`` (levels on dim 1, like :mod:`pvqae.budget`). The spiral permutation is
internal: inputs and outputs are always in grid (row-major) layout.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pvqae.checkpoint import load_checkpoint
from pvqae.strict_config import Config

__all__ = [
    "PRIOR_MODES",
    "PriorConfig",
    "BudgetPriorTransformer",
    "load_prior",
    "MaskedLossOutput",
    "inverse_permutation",
    "spiral_order",
]

#: Valid ``prior`` values of :class:`BudgetPriorTransformer` (``"none"`` is the caller's job).
PRIOR_MODES: tuple[str, ...] = ("per-class", "universal")

#: Valid ``ratio_sampling`` values of :meth:`BudgetPriorTransformer.masked_loss`.
RATIO_SAMPLING: tuple[str, ...] = ("uniform", "fixed")


@dataclasses.dataclass(frozen=True)
class PriorConfig(Config):
    """Budget Prior Transformer and its training (params.yaml section ``prior``)."""

    SECTION = "prior"
    mode: str = "per-class"  # per-class (class token) | universal (shared token) | none (Table III)
    steps: int = 120
    batch_size: int = 64
    lr: float = 1e-3  # AdamW with a one-cycle schedule
    dim: int = 64
    heads: int = 4
    dropout: float = 0.1
    max_mask_ratio: float = 0.5  # masked fraction drawn uniformly in (0, this]
    ckpt_every: int = 500


def spiral_order(grid: int) -> torch.Tensor:
    """Clockwise spiral flattening of a ``grid x grid`` map (Sec. III-C1).

    Starts at the top-left corner, runs right along the top row, down the right column, left
    along the bottom row, up the left column, then repeats one ring further inward.

    Args:
        grid: Side length ``G >= 1``.

    Returns:
        ``(G*G,)`` long tensor ``order``: ``sequence = flat_map[order]`` where ``flat_map`` is
        the row-major flattening. It is a permutation of ``0 .. G*G - 1``.
        E.g. ``spiral_order(3) = [0, 1, 2, 5, 8, 7, 6, 3, 4]``.

    Raises:
        ValueError: If ``grid < 1``.
    """
    if int(grid) != grid or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    top, bottom, left, right = 0, grid - 1, 0, grid - 1
    order: list[int] = []
    while top <= bottom and left <= right:
        order += [top * grid + c for c in range(left, right + 1)]
        order += [r * grid + right for r in range(top + 1, bottom + 1)]
        if top < bottom:
            order += [bottom * grid + c for c in range(right - 1, left - 1, -1)]
        if left < right:
            order += [r * grid + left for r in range(bottom - 1, top, -1)]
        top, bottom, left, right = top + 1, bottom - 1, left + 1, right - 1
    return torch.tensor(order, dtype=torch.long)


def inverse_permutation(order: torch.Tensor) -> torch.Tensor:
    """Inverse of a permutation: ``inverse[order[i]] = i``.

    With ``order = spiral_order(G)``: ``flat_map = sequence[inverse_permutation(order)]``.

    Args:
        order: ``(N,)`` long tensor, a permutation of ``0 .. N - 1``.

    Returns:
        ``(N,)`` long tensor.
    """
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), dtype=order.dtype, device=order.device)
    return inverse


class MaskedLossOutput(NamedTuple):
    """Result of :meth:`BudgetPriorTransformer.masked_loss`.

    Attributes:
        loss: Scalar cross-entropy over masked positions (differentiable).
        accuracy: Scalar (detached) fraction of masked positions whose argmax equals the level.
        mask: ``(B, G, G)`` bool mask that was used (True = masked).
    """

    loss: torch.Tensor
    accuracy: torch.Tensor
    mask: torch.Tensor


class BudgetPriorTransformer(nn.Module):
    """Masked-token model of normal resolution-level maps (Sec. III-C1, Table III).

    Sequence: ``[CLS, t_1, ..., t_N]`` with ``t_i`` the level (or MASK) of the ``i``-th patch in
    clockwise spiral order. Tokens use a learnable embedding of ``num_levels + 1`` indices (the
    last one is MASK, Sec. IV-A "learnable embedding matrix to tokenize code resolution
    indices"), plus a learnable positional embedding of the ``N + 1`` slots. Exactly one
    pre-norm transformer block (Sec. IV-A), a final LayerNorm and a linear head give
    ``num_levels`` logits per patch.

    ``prior="per-class"`` prepends a learnable token looked up by class index (CLS token of the
    paper); ``prior="universal"`` prepends one shared learnable token, so both have the same
    sequence length and differ only in whether the token depends on the class (Sec. IV-D2).

    Args:
        num_levels: Number of resolution levels ``K``.
        grid: Side ``G`` of the coarse level map.
        dim: Embedding width.
        heads: Attention heads (must divide ``dim``).
        mlp_ratio: Feed-forward width as a multiple of ``dim``.
        dropout: Dropout inside the transformer block.
        prior: ``"per-class"`` or ``"universal"`` (:data:`PRIOR_MODES`).
        num_classes: Number of object classes (size of the class-token table for per-class).
        init_std: Std of the normal initialisation of token, class and positional embeddings.

    Raises:
        ValueError: On an unknown ``prior`` or a non-positive size.
    """

    def __init__(
        self,
        num_levels: int = 3,
        grid: int = 8,
        dim: int = 64,
        heads: int = 4,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        prior: str = "per-class",
        num_classes: int = 1,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        if prior not in PRIOR_MODES:
            raise ValueError(
                f"unknown prior {prior!r}; valid: {', '.join(PRIOR_MODES)} "
                "(the 'none' ablation uses no prior model and is handled by the caller)"
            )
        for name, value in (("num_levels", num_levels), ("grid", grid), ("dim", dim),
                            ("heads", heads), ("mlp_ratio", mlp_ratio), ("num_classes", num_classes)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")

        self.num_levels = num_levels
        self.grid = grid
        self.prior = prior
        self.num_classes = num_classes
        self.mask_index = num_levels  # token index of MASK
        self.seq_len = grid * grid

        self.register_buffer("order", spiral_order(grid), persistent=False)
        self.register_buffer("inverse_order", inverse_permutation(self.order), persistent=False)

        self.token_embedding = nn.Embedding(num_levels + 1, dim)
        # per-class: one token per class; universal: a single shared token (index 0).
        self.class_embedding = nn.Embedding(num_classes if prior == "per-class" else 1, dim)
        self.pos_embedding = nn.Parameter(torch.zeros(1, self.seq_len + 1, dim))
        self.block = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=heads,
            dim_feedforward=mlp_ratio * dim,
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_levels)

        for emb in (self.token_embedding.weight, self.class_embedding.weight, self.pos_embedding):
            nn.init.normal_(emb, std=init_std)

    @classmethod
    def from_config(cls, cfg: PriorConfig, *, grid: int, num_classes: int) -> "BudgetPriorTransformer":
        """The prior of ``cfg`` (mode per-class or universal) for a ``grid x grid`` level map."""
        return cls(num_levels=3, grid=grid, dim=cfg.dim, heads=cfg.heads, dropout=cfg.dropout, prior=cfg.mode,
                   num_classes=num_classes)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "BudgetPriorTransformer":
        """Load a prior written by :func:`pvqae.train.train_prior` (``weights_only=True``), in
        eval mode; see :func:`load_prior` for files of the ``none`` mode."""
        st = load_checkpoint(path)
        if st["mode"] == "none":
            raise ValueError(f"{path} holds the 'none' prior (no model); use pvqae.prior.load_prior")
        prior = cls.from_config(PriorConfig.from_dict(st["config"]), grid=st["grid"], num_classes=st["num_classes"])
        prior.load_state_dict(st["model"])
        return prior.eval()

    @property
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ validation helpers

    def _check_levels(self, levels: torch.Tensor) -> torch.Tensor:
        g = self.grid
        if not isinstance(levels, torch.Tensor) or levels.ndim != 3 or levels.shape[1:] != (g, g):
            shape = tuple(levels.shape) if hasattr(levels, "shape") else type(levels).__name__
            raise ValueError(f"levels must be a (B, {g}, {g}) tensor, got {shape}")
        if levels.is_floating_point() or levels.is_complex() or levels.dtype == torch.bool:
            raise ValueError(f"levels must be an integer tensor, got dtype {levels.dtype}")
        if levels.numel() and (int(levels.min()) < 0 or int(levels.max()) >= self.num_levels):
            raise ValueError(
                f"levels must lie in [0, {self.num_levels}), got range "
                f"[{int(levels.min())}, {int(levels.max())}]"
            )
        return levels.long()

    def _class_tokens_index(self, class_index: torch.Tensor | int | None, batch: int,
                            device: torch.device) -> torch.Tensor:
        """``(B,)`` rows of ``class_embedding`` to prepend."""
        if self.prior == "universal":
            return torch.zeros(batch, dtype=torch.long, device=device)
        if class_index is None:
            if self.num_classes == 1:
                return torch.zeros(batch, dtype=torch.long, device=device)
            raise ValueError(
                f"class_index is required for a per-class prior with num_classes={self.num_classes}"
            )
        idx = torch.as_tensor(class_index, device=device)
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise ValueError(f"class_index must be integer, got dtype {idx.dtype}")
        if idx.ndim == 0:
            idx = idx.expand(batch)
        if idx.shape != (batch,):
            raise ValueError(f"class_index must be an int or a ({batch},) tensor, got {tuple(idx.shape)}")
        if int(idx.min()) < 0 or int(idx.max()) >= self.num_classes:
            raise ValueError(
                f"class_index must lie in [0, {self.num_classes}), got range "
                f"[{int(idx.min())}, {int(idx.max())}]"
            )
        return idx.long()

    # ------------------------------------------------------------------ core

    def _sequence_logits(self, tokens: torch.Tensor, class_rows: torch.Tensor) -> torch.Tensor:
        """Spiral-ordered tokens ``(B, N)`` (MASK allowed) -> logits ``(B, N, K)``, spiral order."""
        x = torch.cat(
            [self.class_embedding(class_rows)[:, None, :], self.token_embedding(tokens)], dim=1
        )
        x = self.block(x + self.pos_embedding)
        return self.head(self.norm(x[:, 1:]))

    def _to_grid(self, seq: torch.Tensor) -> torch.Tensor:
        """``(B, N, K)`` in spiral order -> ``(B, K, G, G)`` grid layout."""
        flat = seq[:, self.inverse_order]
        return flat.reshape(seq.shape[0], self.grid, self.grid, -1).permute(0, 3, 1, 2)

    def forward(self, levels: torch.Tensor, mask: torch.Tensor,
                class_index: torch.Tensor | int | None = None) -> torch.Tensor:
        """Predict level logits with the ``mask``-ed positions hidden.

        Args:
            levels: ``(B, G, G)`` integer level map, values in ``[0, K)``.
            mask: ``(B, G, G)`` bool; True positions are replaced by the MASK token.
            class_index: ``(B,)`` long or int class of each map; required for per-class priors
                with ``num_classes > 1``; ignored by universal priors.

        Returns:
            ``(B, K, G, G)`` logits (for every position; meaningful where masked).

        Raises:
            ValueError: On bad shapes, dtypes or out-of-range values.
        """
        levels = self._check_levels(levels)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != levels.shape:
            got = (tuple(mask.shape), mask.dtype) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask must be a bool tensor of shape {tuple(levels.shape)}, got {got}")
        batch = levels.shape[0]
        class_rows = self._class_tokens_index(class_index, batch, levels.device)
        tokens = levels.masked_fill(mask, self.mask_index).reshape(batch, -1)[:, self.order]
        return self._to_grid(self._sequence_logits(tokens, class_rows))

    def sample_mask(self, batch: int, max_mask_ratio: float = 0.5, ratio_sampling: str = "uniform",
                    generator: torch.Generator | None = None,
                    device: torch.device | str | None = None) -> torch.Tensor:
        """Random training masks, at least one masked position per map.

        Args:
            batch: Number of maps ``B``.
            max_mask_ratio: Upper bound (``"uniform"``) or exact value (``"fixed"``) of the masked
                fraction, in (0, 1].
            ratio_sampling: ``"uniform"``: per map ``r ~ U(0, max_mask_ratio]`` (MaskGIT-style, so
                the model sees from one to many hidden positions, including the single-mask
                case used by :meth:`predict_all`); ``"fixed"``: ``r = max_mask_ratio``.
            generator: Optional torch generator for reproducibility.
            device: Device of the mask.

        Returns:
            ``(B, G, G)`` bool mask with ``max(1, ceil(r * G*G))`` True entries per map.
        """
        if ratio_sampling not in RATIO_SAMPLING:
            raise ValueError(f"unknown ratio_sampling {ratio_sampling!r}; valid: {', '.join(RATIO_SAMPLING)}")
        if not 0.0 < max_mask_ratio <= 1.0:
            raise ValueError(f"max_mask_ratio must be in (0, 1], got {max_mask_ratio}")
        n = self.seq_len
        if ratio_sampling == "uniform":
            # 1 - U[0, 1) lies in (0, 1], so r lies in (0, max_mask_ratio].
            ratio = max_mask_ratio * (1.0 - torch.rand(batch, generator=generator))
        else:
            ratio = torch.full((batch,), float(max_mask_ratio))
        count = torch.ceil(ratio * n).long().clamp(1, n)
        rank = torch.rand(batch, n, generator=generator).argsort(dim=1).argsort(dim=1)
        mask = rank < count[:, None]
        return mask.reshape(batch, self.grid, self.grid).to(device)

    def masked_loss(self, levels: torch.Tensor, class_index: torch.Tensor | int | None = None,
                    max_mask_ratio: float = 0.5, ratio_sampling: str = "uniform",
                    generator: torch.Generator | None = None) -> MaskedLossOutput:
        """Masked-token training objective (Sec. III-C1, ``L_prior = CE(p_hat, p)``).

        Samples a mask per map (:meth:`sample_mask`), predicts the hidden levels from the
        visible ones and the class token, and averages cross-entropy over masked positions only.

        Args:
            levels: ``(B, G, G)`` routed levels of normal images (from the frozen routing module).
            class_index: See :meth:`forward`.
            max_mask_ratio: See :meth:`sample_mask`.
            ratio_sampling: See :meth:`sample_mask`.
            generator: Optional torch generator for the mask.

        Returns:
            :class:`MaskedLossOutput` ``(loss, accuracy, mask)``.
        """
        levels = self._check_levels(levels)
        mask = self.sample_mask(levels.shape[0], max_mask_ratio, ratio_sampling, generator, levels.device)
        logits = self(levels, mask, class_index)
        ce = F.cross_entropy(logits, levels, reduction="none")
        masked = mask.float()
        loss = (ce * masked).sum() / masked.sum()
        with torch.no_grad():
            correct = (logits.argmax(dim=1) == levels).float()
            accuracy = (correct * masked).sum() / masked.sum()
        return MaskedLossOutput(loss=loss, accuracy=accuracy, mask=mask)

    @torch.no_grad()
    def predict_all(self, levels: torch.Tensor, class_index: torch.Tensor | int | None = None) -> torch.Tensor:
        """Normal budget prior ``p_hat``: each position predicted with only itself masked.

        "Enumerating the masks to obtain the fully predicted sequence" (Sec. III-C1) means ``N = G*G``
        copies of each map, copy ``i`` with position ``i`` masked, one forward pass each: ``N``
        passes over ``N + 1`` tokens, the cost growing with the cube of the grid's area. With one
        pre-norm block the same numbers come from a single pass. Copy ``i`` differs from the
        unmasked sequence at token ``i`` only, and everything but attention acts per token, so its
        output at ``i`` needs the masked token's own query ``q~_i`` against the unmasked keys and
        values, except at key ``i``, where the masked ``k~_i, v~_i`` stand. Hence the ``N x (N+1)``
        scores of the masked queries against the unmasked keys, with entry ``(i, i)`` replaced by
        ``q~_i . k~_i``, give every copy's attention weights at once; the value at ``i`` is swapped
        the same way. ``tests/test_prior.py`` checks the result against the enumeration. Runs in
        eval mode without gradients; the previous train/eval mode is restored.

        Args:
            levels: ``(B, G, G)`` integer level map (the routed budget of the test image).
            class_index: See :meth:`forward`.

        Returns:
            ``(B, K, G, G)`` probabilities (softmax over dim 1).
        """
        levels = self._check_levels(levels)
        batch, n = levels.shape[0], self.seq_len
        class_rows = self._class_tokens_index(class_index, batch, levels.device)
        block, attn = self.block, self.block.self_attn
        heads, dim = attn.num_heads, self.pos_embedding.shape[-1]
        scale = (dim // heads) ** -0.5

        def qkv(tokens: torch.Tensor) -> list[torch.Tensor]:  # (B, L, D) -> 3 x (B, heads, L, D / heads)
            out = F.linear(block.norm1(tokens), attn.in_proj_weight, attn.in_proj_bias)
            return [t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in out.chunk(3, dim=-1)]

        was_training = self.training
        self.eval()
        try:
            seq = levels.reshape(batch, -1)[:, self.order]  # (B, N) spiral order
            tokens = torch.cat([self.class_embedding(class_rows)[:, None, :], self.token_embedding(seq)], dim=1)
            _, k, v = qkv(tokens + self.pos_embedding)  # unmasked keys / values, class token first
            masked = self.token_embedding.weight[self.mask_index] + self.pos_embedding[:, 1:]  # (1, N, D)
            q_m, k_m, v_m = qkv(masked)  # position i's token as MASK
            pos = torch.arange(n, device=levels.device)
            scores = (q_m @ k.transpose(-1, -2)) * scale  # (B, heads, N, N + 1)
            scores[:, :, pos, pos + 1] = ((q_m * k_m).sum(-1) * scale).expand(batch, -1, -1)
            weights = scores.softmax(dim=-1)
            mixed = weights @ v + weights[:, :, pos, pos + 1, None] * (v_m - v[:, :, 1:])
            x = masked + attn.out_proj(mixed.transpose(1, 2).flatten(2))
            x = x + block.linear2(block.activation(block.linear1(block.norm2(x))))
            logits = self.head(self.norm(x))  # (B, N, K), spiral order
        finally:
            self.train(was_training)
        return self._to_grid(logits.softmax(dim=-1))


def load_prior(path: str | Path) -> BudgetPriorTransformer | None:
    """The prior saved at ``path``, or None when it is the ``none`` mode (Table III's "no prior")."""
    return None if load_checkpoint(path)["mode"] == "none" else BudgetPriorTransformer.from_checkpoint(path)
