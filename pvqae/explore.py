"""Explaining one image's code allocation and defect score (paper Sec. III-B1, III-C).

The computation behind ``notebooks/explore_code_allocation.py``: for one image, the routed
budget (the Dynamic Routing Module's level per coarse patch, Sec. III-B1), the Budget Prior
Transformer's normal budget and the budget cross-entropy (Sec. III-C1), the reconstructions
with either budget, and the defect score map ``S = CE(routed, prior) x ||x - x^||^2``
(Sec. III-C2), plus two "what if" knobs:

- ``tau``: sample the routing instead of taking its argmax. The level of each coarse patch is
  drawn from ``softmax(logits / tau)`` by the Gumbel-max trick,
  ``gumbel_softmax(logits / tau, 1, hard=True)``: ``tau -> 0`` is the argmax routing used at
  evaluation, ``tau = 1`` samples the router's own distribution (= the hard forward routing
  of training; the Gumbel-softmax temperature of training, ``budget.tau``, changes only the
  soft gradient-carrying gate, never which level the hard sample picks, so it cannot be shown
  on a level map), ``tau > 1`` flattens the choice towards uniform.
- ``force_level``: reconstruct (and score) with every coarse patch at one level instead of
  the prior's budget, to see how much of the score comes from the budget chosen for the
  reconstruction (fine codes reconstruct defects too, so they lower the score).

The maps are combined and post-processed by :mod:`pvqae.scoring`
(:func:`~pvqae.scoring.combine_score_map`, :func:`~pvqae.scoring.postprocess`), so with
``tau=None`` and ``force_level=None`` the score map equals
:func:`pvqae.scoring.score_batch`'s.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch

from pvqae import plots
from pvqae.evaluation import code_allocation
from pvqae.model import LEVEL_NAMES, PVQAE, routed_levels
from pvqae.prior import BudgetPriorTransformer
from pvqae.routing import gumbel_softmax
from pvqae.scoring import (
    ScoreConfig,
    budget_ce,
    combine_score_map,
    inference_layout,
    postprocess,
    reconstruction_error,
)

FORCE_CHOICES = ("none",) + LEVEL_NAMES
IMAGE_KINDS = ("all", "normal", "defective")


def level_index(level: int | str | None) -> int | None:
    """``None``/"none" -> None; "coarse"/"median"/"fine" or 0/1/2 -> 0/1/2."""
    if level is None or level == "none":
        return None
    if isinstance(level, str):
        if level not in LEVEL_NAMES:
            raise ValueError(f"force_level must be one of {FORCE_CHOICES} or 0/1/2, got {level!r}")
        return LEVEL_NAMES.index(level)
    if int(level) not in (0, 1, 2):
        raise ValueError(f"force_level must be one of {FORCE_CHOICES} or 0/1/2, got {level!r}")
    return int(level)


@torch.no_grad()
def explain_image(model: PVQAE, prior: BudgetPriorTransformer | None, image: np.ndarray | torch.Tensor,
                  class_index: int | None = None, tau: float | None = None, force_level: int | str | None = None,
                  seed: int = 0, score_cfg: ScoreConfig | None = None) -> dict[str, Any]:
    """Everything the explorer shows for one image (see the module docstring).

    Args:
        model: a trained PVQAE (put in eval mode).
        prior: the Budget Prior Transformer, or None (prior mode "none": the routed budget
            reconstructs and ``S = S_rec``).
        image: ``(C, S, S)`` in [0, 1].
        class_index: the class token of a per-class prior (None for universal/none priors or a
            one-class prior).
        tau: routing sampling temperature (> 0), or None/0 for the argmax routing.
        force_level: None/"none", or a level (name or 0/1/2) that every coarse patch is
            reconstructed with instead of the prior's (or, without prior, the routed) budget.
        seed: seed of the Gumbel noise (same seed, same sample).
        score_cfg: how maps become scores (default :class:`pvqae.scoring.ScoreConfig`).

    Returns:
        numpy arrays without batch axis: ``image`` (C,S,S); ``routing_probs`` (K,G,G) softmax
        of the router logits; ``argmax_levels`` (G,G) the evaluation routing;
        ``routed_levels`` (G,G) the routing explained (= argmax_levels unless ``tau``);
        ``prior_probs`` (K,G,G), ``prior_levels`` (G,G) and ``budget_ce`` (G,G)
        ``-log p_prior(routed level)`` (None without prior); ``recon_levels`` (G,G) the budget
        of the scored reconstruction (prior's, routed, or all ``force_level``);
        ``recon_routed``, ``recon_prior`` (None without prior), ``recon`` (the scored one),
        each (C,S,S); ``rec_map`` (S,S) its squared error; ``score_map`` (S,S);
        ``image_score``; ``rec_error`` {routed, prior, scored} mean squared errors (summed over
        channels); ``fractions`` {routed, prior, recon} per-level fractions; and the
        arguments ``tau``, ``force_level`` (int or None), ``seed``, ``class_index``.
    """
    cfg = score_cfg or ScoreConfig()
    force = level_index(force_level)
    if tau is not None and tau < 0:
        raise ValueError(f"tau must be > 0 (or None/0 for the argmax routing), got {tau}")
    model.eval()
    x = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if x.ndim != 3:
        raise ValueError(f"image must be (C, S, S), got shape {tuple(x.shape)}")
    x = inference_layout(x[None])  # as score_batch, so the two agree to the last bit
    feats = model.encoder(x)  # encoded once; every reconstruction decodes these features

    def decode(levels: torch.Tensor) -> torch.Tensor:
        return model.decode(feats, model.route(feats, mode="given", level_map=levels)).recon

    routing = model.route(feats, mode="dynamic")
    logits, argmax = routing.logits, routing.levels
    if tau:
        g = torch.Generator().manual_seed(int(seed))
        routed = gumbel_softmax(logits / tau, tau=1.0, hard=True, dim=1, generator=g).argmax(1)
        recon_routed = decode(routed)
    else:
        routed, recon_routed = argmax, model.decode(feats, routing).recon
    ci = None if class_index is None else torch.tensor([int(class_index)])
    prior_probs = prior_levels = budget = recon_prior = None
    if prior is not None:
        prior.eval()
        prior_probs = prior.predict_all(routed, ci)
        prior_levels = prior_probs.argmax(1)
        # S_budget of the routing explained (argmax or sampled): -log p_prior(level), as in score_batch
        budget = budget_ce(prior_probs, routed, cfg.prior_smoothing)
        recon_prior = decode(prior_levels)
    if force is not None:
        recon_levels = torch.full_like(routed, force)
        recon = decode(recon_levels)
    elif prior is not None:
        recon_levels, recon = prior_levels, recon_prior
    else:
        recon_levels, recon = routed, recon_routed
    rec = reconstruction_error(x, recon).contiguous()  # contiguous as in score_batch: same blur rounding
    smap, img_score = postprocess(combine_score_map(budget, rec, cfg), cfg)

    def np0(t):
        return None if t is None else t[0].numpy()

    def frac(lv):
        return None if lv is None else plots.level_fractions(lv[0])

    return {
        "image": x[0].numpy(), "routing_probs": logits.softmax(1)[0].numpy(), "argmax_levels": np0(argmax),
        "routed_levels": np0(routed), "prior_probs": np0(prior_probs), "prior_levels": np0(prior_levels),
        "budget_ce": np0(budget), "recon_levels": np0(recon_levels), "recon_routed": np0(recon_routed),
        "recon_prior": np0(recon_prior), "recon": np0(recon), "rec_map": np0(rec), "score_map": np0(smap),
        "image_score": float(img_score[0]),
        "rec_error": {"routed": float(reconstruction_error(x, recon_routed).mean()),
                      "prior": float(reconstruction_error(x, recon_prior).mean()) if recon_prior is not None else None,
                      "scored": float(rec.mean())},
        "fractions": {"routed": frac(routed), "prior": frac(prior_levels), "recon": frac(recon_levels)},
        "tau": tau, "force_level": force, "seed": int(seed), "class_index": class_index,
    }


@torch.no_grad()
def allocation_stats(model: PVQAE, prior: BudgetPriorTransformer | None, split: dict,
                     batch_size: int = 32) -> list[dict]:
    """Code-allocation rows (:func:`pvqae.evaluation.code_allocation`) of a split: fraction of
    coarse patches per level, per class and normal/defective, for the routed budget and, with
    a prior, the prior's budget (argmax of each patch predicted from the others)."""
    routed = routed_levels(model, split["image"], batch_size)
    rows = code_allocation(split, routed.numpy(), "routed")
    if prior is not None:
        prior.eval()
        pl = [prior.predict_all(routed[i:i + batch_size], split["class_index"][i:i + batch_size]).argmax(1)
              for i in range(0, len(routed), batch_size)]
        rows += code_allocation(split, torch.cat(pl).numpy(), "prior")
    return rows


def select_images(split: dict, class_name: str, kind: str = "all") -> list[int]:
    """Indices into ``split`` of class ``class_name`` and kind "all", "normal" or "defective".

    Raises:
        ValueError: an unknown class (the message lists the valid ones) or kind.
    """
    if class_name not in split["classes"]:
        raise ValueError(f"unknown class {class_name!r}; classes: {', '.join(split['classes'])}")
    if kind not in IMAGE_KINDS:
        raise ValueError(f"image kind must be one of {IMAGE_KINDS}, got {kind!r}")
    k = split["classes"].index(class_name)
    sel = split["class_index"].numpy() == k
    if kind != "all":
        sel &= split["label"].numpy() == (1 if kind == "defective" else 0)
    return np.nonzero(sel)[0].tolist()


# ----------------------------------------------------------------------------- figures

def _level_title(name: str, fr: list[float] | None) -> str:
    if fr is None:
        return name
    return f"{name}\n" + " ".join(f"{n[0]}{100 * v:.0f}%" for n, v in zip(LEVEL_NAMES, fr))


def explain_figure(res: dict, mask: np.ndarray | None = None, title: str = ""):
    """Eight panels of :func:`explain_image`'s result: image, ground truth, routed level map,
    prior level map / budget-CE map, reconstruction with the routed budget, the scored
    reconstruction (prior's budget or forced level), score map."""
    size = res["image"].shape[-1]
    fig, axes = plt.subplots(2, 4, figsize=(9.6, 5.4))
    a = axes.ravel()
    a[0].imshow(plots.to_rgb(res["image"]))
    plots.clean_axes(a[0], "image")
    if mask is not None:
        a[1].imshow(mask, cmap="gray", vmin=0, vmax=1)
        plots.clean_axes(a[1], f"ground truth ({int(np.asarray(mask).sum())} px)")
    else:
        a[1].axis("off")
    routed_name = "routed budget" + (f" (sampled, tau={res['tau']:g})" if res["tau"] else "")
    plots.show_levels(a[2], res["routed_levels"], size, _level_title(routed_name, res["fractions"]["routed"]))
    if res["prior_levels"] is not None:
        plots.show_levels(a[3], res["prior_levels"], size, _level_title("prior budget", res["fractions"]["prior"]))
        im = a[4].imshow(res["budget_ce"], cmap="magma", vmin=0, interpolation="nearest", extent=(0, size, size, 0))
        fig.colorbar(im, ax=a[4], fraction=0.046, pad=0.04)
        plots.clean_axes(a[4], f"budget CE -log p(routed)\nmax {res['budget_ce'].max():.3g}")
    else:
        a[3].text(0.5, 0.5, "no prior\n(S = S_rec)", ha="center", va="center", fontsize=9)
        a[3].axis("off")
        a[4].axis("off")
    err = res["rec_error"]
    a[5].imshow(plots.to_rgb(res["recon_routed"]))
    plots.clean_axes(a[5], f"recon, routed budget\nerr {err['routed']:.4f}")
    if res["force_level"] is not None:
        scored = f"recon, all {LEVEL_NAMES[res['force_level']]} (forced)"
    else:
        scored = "recon, prior budget" if res["prior_levels"] is not None else "recon, routed budget"
    a[6].imshow(plots.to_rgb(res["recon"]))
    plots.clean_axes(a[6], f"{scored}\nerr {err['scored']:.4f}")
    plots.show_score_map(a[7], res["score_map"], mask=mask, title=f"score map S\nimage score {res['image_score']:.4g}")
    plots.level_legend(fig)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def forced_levels_figure(results: dict[str, dict], title: str = ""):
    """One row per reconstruction budget ({"none": prior budget, "coarse": ..., ...} ->
    :func:`explain_image` results): its level map, reconstruction, error map and score map,
    error and score maps on shared colour scales so the rows compare."""
    n = len(results)
    fig, axes = plt.subplots(n, 4, figsize=(8.4, 2.2 * n + 0.3), squeeze=False)
    vmax_rec = max(float(r["rec_map"].max()) for r in results.values()) or 1e-12
    vmax_s = max(float(r["score_map"].max()) for r in results.values()) or 1e-12
    for i, (name, r) in enumerate(results.items()):
        size = r["image"].shape[-1]
        label = "prior budget" if r["force_level"] is None and r["prior_levels"] is not None else (
            "routed budget" if r["force_level"] is None else f"all {name}")
        plots.show_levels(axes[i, 0], r["recon_levels"], size, label)
        axes[i, 1].imshow(plots.to_rgb(r["recon"]))
        plots.clean_axes(axes[i, 1], "reconstruction")
        axes[i, 2].imshow(r["rec_map"], cmap="viridis", vmin=0, vmax=vmax_rec)
        plots.clean_axes(axes[i, 2], f"error, mean {r['rec_error']['scored']:.4f}")
        plots.show_score_map(axes[i, 3], r["score_map"], vmax=vmax_s, colorbar=False,
                             title=f"score map, image score {r['image_score']:.4g}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def explain_all_levels(model: PVQAE, prior: BudgetPriorTransformer | None, image, class_index: int | None = None,
                       **kw) -> dict[str, dict]:
    """:func:`explain_image` with no forced level and with each level forced, keyed by
    :data:`FORCE_CHOICES` (input of :func:`forced_levels_figure`)."""
    return {name: explain_image(model, prior, image, class_index, force_level=name, **kw) for name in FORCE_CHOICES}
