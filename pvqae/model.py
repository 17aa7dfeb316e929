"""The PVQAE autoencoder (paper Sec. III, Fig. 2) and its static-VQ special case.

``PVQAE`` = multi-resolution VQ-GAN encoder -> one quantizer per level (or one shared) ->
Dynamic Routing Module -> mixed-resolution code map -> decoder. With a single level it is
a plain static-resolution VQ-VAE/VQ-GAN (the "VQ-E style" baseline and the static-VQ
ablation), so both share every line of code.

``fixed_level`` gives the *same-network* static VQ of the core claim's ablation: PVQAE's
whole network (all three encoder heads, the decoder from the fine grid) whose every coarse
patch takes the one level, whatever the routing mode asks (a caller's ``given`` map aside).

Routing modes of ``forward``:
  - ``"dynamic"``: the router decides (Gumbel-softmax in training, argmax in eval);
  - ``"random"``: a uniformly random level per coarse patch (used to pre-train all three
    codebooks and the decoder before budget learning; see README "method decisions");
  - ``"given"``: a level map supplied by the caller (the prior budget at inference, or a
    forced single level).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from pvqae import distributed
from pvqae.autoencoder import Decoder, Encoder
from pvqae.checkpoint import load_checkpoint
from pvqae.quantizer import VectorQuantizer
from pvqae.routing import (
    DynamicRouter,
    RoutingOutput,
    assemble_codes,
    level_masks,
    noise_device,
)
from pvqae.strict_config import Config

LEVEL_NAMES = ("coarse", "median", "fine")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Architecture of a PVQAE / static VQ model (params.yaml section ``model``; image_size and
    in_channels come from ``data``, levels from the method)."""

    SECTION = "model"
    image_size: int = 64
    in_channels: int = 3
    ch: int = 16  # base width of the VQ-GAN encoder / decoder
    ch_mult: tuple[int, ...] = (1, 1, 2, 2)  # width per encoder level; the last three are coarse/median/fine
    num_res_blocks: int = 1
    embed_dim: int = 32  # code dimension
    num_codes: int = 128  # codebook size (per level, or shared)
    codebook: str = "per-level"  # per-level | shared
    beta: float = 0.25  # commitment weight of the encoder term
    dead_after: int = 100  # restart codes unused for this many steps (0 = never)
    groups: int = 32  # GroupNorm groups
    router_hidden: int = 64  # the routing MLP's single hidden layer
    decoder_attention: bool = False
    levels: tuple[int, ...] = (0, 1, 2)  # (k,) for a static single-level VQ
    fixed_level: int | None = None  # PVQAE with its routing fixed to this level: the same-network static VQ

    @property
    def grids(self) -> tuple[int, int, int]:
        """(coarse, median, fine) grid sides."""
        return Encoder.grid_sizes(self.image_size, len(self.ch_mult))


class ModelOutput(NamedTuple):
    """Forward result.

    Attributes:
        recon: reconstruction (B, C, S, S), same range as the input.
        vq_loss: VQ loss, each used code counted once (scalar).
        routing: router result (None for a single-level model).
        indices: code indices per level used, coarse first.
        perplexity: per-level codebook perplexity of the used codes.
        used_fraction: fraction of coarse patches per level (K,), for logging.
    """

    recon: torch.Tensor
    vq_loss: torch.Tensor
    routing: RoutingOutput | None
    indices: list[torch.Tensor]
    perplexity: list[torch.Tensor]
    used_fraction: torch.Tensor


class PVQAE(nn.Module):
    """Patch-aware VQ autoencoder (or a static VQ when ``cfg.levels`` has one entry)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.codebook not in ("per-level", "shared"):
            raise ValueError(f"model.codebook must be 'per-level' or 'shared', got {cfg.codebook!r}")
        self.levels = tuple(sorted(cfg.levels))
        if not set(self.levels) <= {0, 1, 2} or not self.levels:
            raise ValueError(f"model.levels must be a non-empty subset of 0 (coarse), 1 (median), 2 (fine); got {cfg.levels}")
        if len(self.levels) not in (1, 3):
            raise ValueError("model.levels must name one level (static VQ) or all three (PVQAE)")
        if cfg.fixed_level is not None and (cfg.fixed_level not in (0, 1, 2) or len(self.levels) != 3):
            raise ValueError(f"model.fixed_level must be 0, 1 or 2 on a three-level PVQAE, got {cfg.fixed_level}")
        self.encoder = Encoder(cfg.in_channels, cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.embed_dim,
                               cfg.groups, self.levels)
        grids = cfg.grids
        self.sizes = [grids[k] for k in self.levels]
        n_q = 1 if cfg.codebook == "shared" else len(self.levels)
        self.quantizers = nn.ModuleList(
            [VectorQuantizer(cfg.num_codes, cfg.embed_dim, cfg.beta, cfg.dead_after) for _ in range(n_q)])
        self.router = DynamicRouter(cfg.embed_dim, 3, cfg.router_hidden, cfg.groups) if self.dynamic else None
        self.decoder = Decoder(cfg.in_channels, cfg.ch, cfg.ch_mult, cfg.num_res_blocks, cfg.embed_dim, cfg.groups,
                               grid=max(self.sizes), image_size=cfg.image_size, attention=cfg.decoder_attention)

    @property
    def dynamic(self) -> bool:
        """True for PVQAE (three levels and a router), False for a static VQ."""
        return len(self.levels) == 3

    @property
    def coarse_grid(self) -> int:
        return self.cfg.grids[0]

    def quantizer(self, i: int) -> VectorQuantizer:
        return self.quantizers[0 if len(self.quantizers) == 1 else i]

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, fixed_level: int | None = None) -> "PVQAE":
        """Load a model written by :func:`pvqae.train.train_autoencoder` (``weights_only=True``),
        in eval mode; ``fixed_level`` fixes a PVQAE's routing to that level from now on."""
        st = load_checkpoint(path)
        cfg = ModelConfig.from_dict(st["config"])
        model = cls(cfg if fixed_level is None else cfg.replace(fixed_level=fixed_level))
        model.load_state_dict(st["model"])
        return model.eval()

    def route(self, feats: list[torch.Tensor], *, mode: str, level_map: torch.Tensor | None = None,
              tau: float = 1.0, generator: torch.Generator | None = None) -> RoutingOutput:
        """The Dynamic Routing Module's choice (``dynamic``), a random level per coarse patch
        (``random``) or the caller's ``level_map`` (``given``). A ``fixed_level`` model takes
        its one level in every mode but ``given``."""
        assert self.router is not None
        if self.cfg.fixed_level is not None and mode != "given":
            b, g = feats[0].shape[0], feats[0].shape[-1]
            fixed = torch.full((b, g, g), self.cfg.fixed_level, dtype=torch.long, device=feats[0].device)
            return self.router(feats, level_map=fixed)
        if mode == "dynamic":
            return self.router(feats, tau=tau, level_map=None, generator=generator)
        if mode == "random":
            b, g = feats[0].shape[0], feats[0].shape[-1]
            rnd = torch.randint(0, 3, (b, g, g), generator=generator,
                                device=noise_device(generator, feats[0])).to(feats[0].device)
            return self.router(feats, level_map=rnd)
        if mode == "given":
            if level_map is None:
                raise ValueError("routing mode 'given' needs a level_map")
            return self.router(feats, level_map=level_map.to(feats[0].device))
        raise ValueError(f"unknown routing mode {mode!r}; use 'dynamic', 'random' or 'given'")

    def forward(self, x: torch.Tensor, mode: str = "dynamic", level_map: torch.Tensor | None = None,
                tau: float = 1.0, generator: torch.Generator | None = None) -> ModelOutput:
        """Encode, route, quantize, assemble and decode ``x`` (B, C, S, S) in [0, 1]."""
        feats = self.encoder(x)
        routing = self.route(feats, mode=mode, level_map=level_map, tau=tau, generator=generator) if self.dynamic else None
        return self.decode(feats, routing)

    def decode(self, feats: list[torch.Tensor], routing: RoutingOutput | None) -> ModelOutput:
        """Quantize the encoder's embeddings, assemble them by ``routing`` and decode.

        Split from :meth:`forward` so that scoring encodes once, routes, and decodes only with
        the prior's budget (``self.route(feats, mode="given", level_map=prior_levels)``)."""
        if not self.dynamic:
            q = self.quantizer(0)(feats[0])
            return ModelOutput(self.decoder(q.z_q), q.loss_map.mean(), None, [q.indices],
                               [q.perplexity], torch.ones(1, device=feats[0].device))
        if routing is None:
            raise ValueError("a PVQAE needs a routing to decode; see PVQAE.route")
        used = level_masks(routing.gate, self.sizes)
        outs = [self.quantizer(i)(f, used=u) for i, (f, u) in enumerate(zip(feats, used))]
        z = assemble_codes([o.z_q for o in outs], routing.gate)
        # each used code counted once: sum the loss over used positions of every level's own grid
        num = sum((o.loss_map * u).sum() for o, u in zip(outs, used))
        den = sum(u.sum() for u in used).clamp_min(1)
        used_fraction = routing.gate.detach().mean((0, 2, 3))
        return ModelOutput(self.decoder(z), num / den, routing, [o.indices for o in outs],
                           [o.perplexity for o in outs], used_fraction)

    @property
    def last_layer(self) -> torch.Tensor:
        return self.decoder.last_layer

    def generator_parameters(self) -> list[nn.Parameter]:
        """Autoencoder parameters without the router (pre-training does not train it)."""
        return [p for n, p in self.named_parameters() if not n.startswith("router.")]


@torch.no_grad()
def routed_levels(model: PVQAE, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Noise-free routed level maps (N, G, G) of ``images`` (eval mode)."""
    model.eval()
    with distributed.on_device(model) as dev:
        outs = [model(images[i:i + batch_size].to(dev), mode="dynamic").routing.levels.cpu()
                for i in range(0, len(images), batch_size)]
    return torch.cat(outs)
