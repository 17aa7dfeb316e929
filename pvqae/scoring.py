"""Defect scoring (paper Sec. III-C2).

For an image x the Dynamic Routing Module gives the routed budget b (a level per coarse
patch); the Budget Prior Transformer gives the normal budget prior, a distribution p over
levels per patch (each patch predicted from all the others). Then

    S_budget = CE(b, p) = -log p(b)      per coarse patch, upsampled to pixels,
    S_rec    = ||x - D(codes allocated by argmax p)||^2     per pixel (summed over channels),
    S        = S_budget * S_rec          (pixel-wise product).

The paper is silent on the prior's calibration. ``evaluate.score.prior_smoothing`` a (0, the
paper, by default) mixes the prior with the uniform distribution before the CE,
p' = (1 - a) p + a / K: it bounds a patch's CE by -log(a / K), so a few patches the prior
did not expect cannot hold the image maximum alone, and it damps the CE's tiny
position-dependent differences where router and prior agree (CE -> -log(1 - a + a / K)
instead of about 0). a = 1 makes the CE the constant log K, i.e. S_rec up to a factor. The
prior's argmax, and so S_rec, does not change with a. A run with a > 0 is a labelled
calibration of the paper's score (:meth:`ScoreConfig.label`).

Reconstructing with the prior's budget keeps the model from spending fine codes on
unexpected detail (defects), so defects reconstruct worse. With no prior (Table III
"No priors") the routed budget reconstructs and S = S_rec; a static VQ scores S_rec.

Post-processing, the same for every method of the study (PVQAE, the static VQ, the Table I
baselines and the median-filter floor; :func:`postprocess`): the raw pixel map is smoothed
with a Gaussian of ``smooth_sigma`` pixels at 256 px, scaled with the map's size (PatchCore's
and PaDiM's sigma 4 at 256 px, a convention of the field, not a tuned value), and the image
score is the max of the smoothed map (or the mean of its top-k fraction).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pvqae.model import PVQAE
from pvqae.prior import BudgetPriorTransformer
from pvqae.routing import RoutingOutput
from pvqae.strict_config import Config, ConfigError


class ScoreOutput(NamedTuple):
    """Scores of a batch.

    Attributes:
        score_map: S, (B, S, S).
        image_score: (B,).
        rec_map: S_rec, (B, S, S).
        budget_map: S_budget on the coarse grid, (B, G, G) (ones without a prior).
        recon: reconstruction used for S_rec, (B, C, S, S).
        routed_levels: (B, G, G) routed budget (None for a static VQ).
        prior_levels: (B, G, G) argmax of the prior (None without a prior).
        prior_probs: (B, K, G, G) prior distribution (None without a prior).
        router_logits: (B, K, G, G) the router's logits (None for a static VQ).
    """

    score_map: torch.Tensor
    image_score: torch.Tensor
    rec_map: torch.Tensor
    budget_map: torch.Tensor
    recon: torch.Tensor
    routed_levels: torch.Tensor | None
    prior_levels: torch.Tensor | None
    prior_probs: torch.Tensor | None
    router_logits: torch.Tensor | None = None


SIGMA_REFERENCE_SIZE = 256  # smooth_sigma is given in pixels of a 256 px map
COMBINES = ("product", "one_plus_ce", "rec", "budget")  # evaluate.score.combine: how CE and S_rec make S


@dataclasses.dataclass(frozen=True)
class ScoreConfig(Config):
    """How maps become scores, for every method alike (params.yaml ``evaluate.score``)."""

    SECTION = "evaluate.score"
    image_score: str = "max"  # max | topk (mean of the top topk_fraction pixels)
    topk_fraction: float = 0.01
    smooth_sigma: float = 4.0  # Gaussian sigma in px at 256 px, scaled with the map size (0 = off)
    budget_upsample: str = "nearest"  # nearest | bilinear
    # product (the paper) | one_plus_ce ((1 + CE) x S_rec, a labelled variant: a CE near 0 where
    # router and prior agree no longer erases S_rec) | rec | budget (diagnostics)
    combine: str = "product"
    # the prior mixed with uniform before the CE, p' = (1 - a) p + a / K (0 = the paper; module
    # docstring): a calibration the paper is silent on, chosen on validation like any variant
    prior_smoothing: float = 0.0
    # image score only: ignore this many px at 256 px (scaled) along every edge, where padding
    # artefacts, not defects, can hold the map's maximum; the pixel maps keep every pixel
    border_margin: int = 0

    def __post_init__(self):
        if self.combine not in COMBINES:
            raise ConfigError(f"{self.SECTION}.combine must be one of {', '.join(COMBINES)}, got {self.combine!r}")
        if not 0.0 <= self.prior_smoothing <= 1.0:
            raise ConfigError(f"{self.SECTION}.prior_smoothing must be in [0, 1] (0 = the paper's prior), "
                              f"got {self.prior_smoothing}")
        if self.border_margin < 0:
            raise ConfigError(f"{self.SECTION}.border_margin must be >= 0 px, got {self.border_margin}")

    @property
    def is_paper(self) -> bool:
        """Whether S is the paper's score: the product with the prior as trained."""
        return self.combine == "product" and self.prior_smoothing == 0

    def label(self) -> str:
        """The score's short name for tables and records: ``product`` (the paper), else the
        combine and any prior smoothing, e.g. ``product, prior smoothing 0.1``."""
        uses_ce = self.combine != "rec"
        return self.combine + (f", prior smoothing {self.prior_smoothing:g}" if self.prior_smoothing and uses_ce else "")

    def sigma_at(self, size: int) -> float:
        """Gaussian sigma in pixels for a ``size`` px map: ``smooth_sigma * size / 256``."""
        return self.smooth_sigma * size / SIGMA_REFERENCE_SIZE

    def margin_at(self, size: int) -> int:
        """The ignored border in pixels of a ``size`` px map: ``border_margin * size / 256``,
        rounded, kept below half the map (so at least the centre pixel scores)."""
        return min(int(round(self.border_margin * size / SIGMA_REFERENCE_SIZE)), (size - 1) // 2)



def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (B, H, W) maps, radius 4 sigma, reflect padding."""
    if sigma <= 0:
        return x
    r = max(1, int(4 * sigma + 0.5))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    h = F.pad(x.unsqueeze(1), (r, r, 0, 0), mode="reflect")
    h = F.conv2d(h, k.view(1, 1, 1, -1))
    h = F.pad(h, (0, 0, r, r), mode="reflect")
    h = F.conv2d(h, k.view(1, 1, -1, 1))
    return h[:, 0]


def image_scores(score_map: torch.Tensor, cfg: ScoreConfig) -> torch.Tensor:
    """Image-level score from (B, H, W) maps: max, or mean of the top-k fraction, over the map
    inside ``cfg.border_margin`` (scaled to the map's width)."""
    m = cfg.margin_at(score_map.shape[-1])
    if m:
        score_map = score_map[:, m:score_map.shape[-2] - m, m:score_map.shape[-1] - m]
    flat = score_map.flatten(1)
    if cfg.image_score == "max":
        return flat.max(1).values
    if cfg.image_score == "topk":
        k = max(1, int(round(cfg.topk_fraction * flat.shape[1])))
        return flat.topk(k, dim=1).values.mean(1)
    raise ValueError(f"evaluate.score.image_score must be 'max' or 'topk', got {cfg.image_score!r}")


def postprocess(raw_map: torch.Tensor, cfg: ScoreConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The study's one post-processing, for every method: (B, H, W) raw maps -> (smoothed map,
    image score) with ``cfg.sigma_at(W)`` and ``cfg.image_score``."""
    smap = gaussian_blur(raw_map, cfg.sigma_at(raw_map.shape[-1]))
    return smap, image_scores(smap, cfg)


def inference_layout(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, S, S) in channels-last memory layout, the layout scoring runs in (oneDNN's
    CPU convolutions are faster in it). Training keeps the default layout (its GroupNorm
    backward is slower channels-last). Same values up to float rounding."""
    return x.contiguous(memory_format=torch.channels_last)


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per-pixel squared L2 error summed over channels, (B, H, W)."""
    return (x - recon).pow(2).sum(1)


def budget_ce(probs: torch.Tensor, levels: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Per-patch budget cross-entropy ``-log p_prior(routed level)`` (Sec. III-C2): (B, K, G, G)
    prior probabilities and (B, G, G) routed levels -> (B, G, G). ``smoothing`` a > 0 first
    mixes the prior with uniform, ``(1 - a) p + a / K`` (``ScoreConfig.prior_smoothing``)."""
    if smoothing:
        probs = (1 - smoothing) * probs + smoothing / probs.shape[1]
    return -torch.log(probs.gather(1, levels.unsqueeze(1)).squeeze(1).clamp_min(1e-12))


def combine_score_map(budget: torch.Tensor | None, rec: torch.Tensor, cfg: ScoreConfig) -> torch.Tensor:
    """Raw S from the coarse budget CE map (B, G, G) -- None without a prior -- and S_rec
    (B, S, S): the budget map is upsampled to pixels (``cfg.budget_upsample``) and multiplied
    with S_rec (``cfg.combine == "product"``, the paper). Not yet post-processed."""
    if budget is None:
        return rec
    size = rec.shape[-1]
    if cfg.budget_upsample == "nearest":
        f = size // budget.shape[-1]
        budget_px = budget.repeat_interleave(f, -1).repeat_interleave(f, -2)
    elif cfg.budget_upsample == "bilinear":
        budget_px = F.interpolate(budget.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    else:
        raise ValueError(f"evaluate.score.budget_upsample must be 'nearest' or 'bilinear', got {cfg.budget_upsample!r}")
    smap = {"product": lambda: budget_px * rec, "one_plus_ce": lambda: (1 + budget_px) * rec,
            "rec": lambda: rec, "budget": lambda: budget_px}.get(cfg.combine)
    if smap is None:
        raise ValueError(f"evaluate.score.combine must be one of {', '.join(COMBINES)}, got {cfg.combine!r}")
    return smap()


@torch.no_grad()
def score_batch(model: PVQAE, x: torch.Tensor, class_index: torch.Tensor | None = None,
                prior: BudgetPriorTransformer | None = None, cfg: ScoreConfig | None = None,
                out_size: int | None = None) -> ScoreOutput:
    """Defect scores of a batch (eval mode expected; see module docstring). ``out_size``: the
    side of the score map when it differs from the input's (PVQAE-F reads a feature map: its
    raw map is upsampled bilinearly to the image before the shared post-processing)."""
    cfg = cfg or ScoreConfig()
    x = inference_layout(x)
    if not model.dynamic:
        out = model(x)
        rec = reconstruction_error(x, out.recon)
        budget = torch.ones(x.shape[0], model.coarse_grid, model.coarse_grid, device=x.device)
        routed = prior_levels = probs = logits = None
        recon = out.recon
    else:
        p = _prior_pass(model, x, class_index, prior)
        routed, probs, prior_levels, recon = p.routing.levels, p.probs, p.prior_levels, p.recon
        logits = p.routing.logits
        budget = (torch.ones_like(routed, dtype=x.dtype) if prior is None
                  else budget_ce(probs, routed, cfg.prior_smoothing))
        rec = reconstruction_error(x, recon)
    rec, recon = rec.contiguous(), recon.contiguous()
    smap, img = _finish(combine_score_map(budget if prior is not None else None, rec, cfg), cfg, out_size)
    return ScoreOutput(smap, img, rec, budget, recon, routed, prior_levels, probs, logits)


class _PriorPass(NamedTuple):
    routing: RoutingOutput
    probs: torch.Tensor | None
    prior_levels: torch.Tensor | None
    recon: torch.Tensor


def _prior_pass(model: PVQAE, x: torch.Tensor, class_index, prior) -> _PriorPass:
    """Encode once, route, ask the prior, and decode once with the budget that reconstructs
    (the prior's; the routed one without a prior)."""
    feats = model.encoder(x)
    routing = model.route(feats, mode="dynamic")
    if prior is None:
        return _PriorPass(routing, None, None, model.decode(feats, routing).recon)
    probs = prior.predict_all(routing.levels, class_index)
    levels = probs.argmax(1)
    return _PriorPass(routing, probs, levels, model.decode(feats, model.route(feats, mode="given", level_map=levels)).recon)


def _finish(raw: torch.Tensor, cfg: ScoreConfig, out_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A raw map upsampled to ``out_size`` when it differs (PVQAE-F), then post-processed."""
    if out_size is not None and raw.shape[-1] != out_size:
        raw = F.interpolate(raw.unsqueeze(1), size=(out_size, out_size), mode="bilinear", align_corners=False)[:, 0]
    return postprocess(raw, cfg)


SCORE_VARIANTS = {  # name -> what it is; "product" is the paper's score, the rest are diagnostics
    "product": "the paper: CE(routed, prior) x S_rec, CE upsampled nearest",
    "rec": "S_rec alone (reconstruction with the prior's budget)",
    "one_plus_ce": "(1 + CE) x S_rec",
    "soft_ce": "soft CE (the router's softmax against the prior) x S_rec",
    "bilinear": "CE x S_rec, CE upsampled bilinearly",
}


@torch.no_grad()
def score_variants(model: PVQAE, x: torch.Tensor, class_index: torch.Tensor | None,
                   prior: BudgetPriorTransformer, cfg: ScoreConfig | None = None,
                   out_size: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every :data:`SCORE_VARIANTS` map and image score of a batch from one encoder, prior and
    decoder pass, each with the shared post-processing (issue 13's diagnostic table; the
    paper's product is ``score_batch``'s under the default config)."""
    if not model.dynamic or prior is None:
        raise ValueError("score variants need a PVQAE with a prior (they combine its budget CE with S_rec)")
    return variant_maps(score_batch(model, x, class_index, prior, cfg, out_size), cfg, out_size)


def variant_maps(out: ScoreOutput, cfg: ScoreConfig | None = None,
                 out_size: int | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every :data:`SCORE_VARIANTS` map and image score from :func:`score_batch`'s output of a
    PVQAE with a prior (its S_rec, routed levels, router logits and prior probabilities): the
    variants of the pass that gave the main score, without a second one."""
    if out.prior_probs is None or out.router_logits is None:
        raise ValueError("score variants need a PVQAE with a prior (they combine its budget CE with S_rec)")
    cfg = cfg or ScoreConfig()
    # the paper's CE against the prior as trained, whatever evaluate.score.prior_smoothing the run's S used
    rec, ce = out.rec_map, budget_ce(out.prior_probs, out.routed_levels)
    soft = -(torch.softmax(out.router_logits.float(), 1) * torch.log(out.prior_probs.clamp_min(1e-12))).sum(1)
    nearest, bilinear = cfg.replace(budget_upsample="nearest", combine="product"), \
        cfg.replace(budget_upsample="bilinear", combine="product")
    raw = {"product": combine_score_map(ce, rec, nearest), "rec": rec,
           "one_plus_ce": combine_score_map(ce, rec, nearest.replace(combine="one_plus_ce")),
           "soft_ce": combine_score_map(soft, rec, nearest), "bilinear": combine_score_map(ce, rec, bilinear)}
    return {k: _finish(v, cfg, out_size) for k, v in raw.items()}
