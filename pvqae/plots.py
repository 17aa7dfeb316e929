"""Figures of the study (matplotlib/seaborn), each saved as PNG and PDF.

Level maps use one fixed colour per level (coarse light, fine dark); score maps use a hot
colour map (hot = high defect score), as in the paper's Fig. 4.
"""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from pvqae.model import LEVEL_NAMES

LEVEL_CMAP = ListedColormap(["#d9f0d3", "#5aae61", "#00441b"])  # coarse, median, fine (LEVEL_NAMES order)


def save_fig(fig, stem: Path, dpi: int = 120) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf``; close it; return the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in (".png", ".pdf"):
        p = stem.with_suffix(ext)
        fig.savefig(p, dpi=dpi, bbox_inches="tight")
        out.append(p)
    plt.close(fig)
    return out


def to_rgb(img: np.ndarray) -> np.ndarray:
    """(C,H,W) in [0,1] -> (H,W,3) for imshow."""
    img = np.asarray(img)
    if img.shape[0] == 1:
        img = np.repeat(img, 3, 0)
    return np.clip(img.transpose(1, 2, 0), 0, 1)


def level_fractions(levels) -> list[float]:
    """Fraction of the patches of a level map (any shape, numpy or CPU tensor) at each level,
    in :data:`pvqae.model.LEVEL_NAMES` order."""
    lv = np.asarray(levels)
    return [float((lv == k).mean()) for k in range(len(LEVEL_NAMES))]


def clean_axes(ax, title: str = "") -> None:
    """Small title, no ticks: the style of every image panel."""
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def level_legend(fig, fontsize: int = 8) -> None:
    """One colour patch per level below the panels of ``fig``."""
    handles = [plt.Rectangle((0, 0), 1, 1, color=LEVEL_CMAP(j)) for j in range(len(LEVEL_NAMES))]
    fig.legend(handles, LEVEL_NAMES, loc="lower center", ncol=len(LEVEL_NAMES), fontsize=fontsize, frameon=False)


def show_levels(ax, levels: np.ndarray, size: int | None = None, title: str = "") -> None:
    """A coarse level map (G,G), optionally stretched to ``size`` pixels."""
    g = levels.shape[-1]
    ext = (0, size, size, 0) if size else None
    ax.imshow(levels, cmap=LEVEL_CMAP, vmin=0, vmax=2, interpolation="nearest", extent=ext)
    clean_axes(ax, title)
    if size is None:
        ax.set_xlim(-0.5, g - 0.5)


def show_score_map(ax, score_map: np.ndarray, image: np.ndarray | None = None, mask: np.ndarray | None = None,
                   title: str = "", vmax: float | None = None, alpha: float = 0.5, colorbar: bool = True):
    """A defect score map in the hot colour map from 0 to its max (or ``vmax``, to share a
    scale between panels), overlaid on ``image`` (C,H,W) with ``alpha`` when given, with the
    ground-truth contour in cyan when ``mask`` holds defect pixels. Returns the map's artist."""
    if image is not None:
        ax.imshow(to_rgb(image))
    vmax = max(float(np.max(score_map)), 1e-12) if vmax is None else vmax
    im = ax.imshow(score_map, cmap="hot", alpha=alpha if image is not None else None, vmin=0, vmax=vmax)
    if mask is not None and np.asarray(mask).any():
        ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    clean_axes(ax, title)
    return im


def heatmap_figure(image: np.ndarray, score_map: np.ndarray, routed: np.ndarray | None,
                   prior_levels: np.ndarray | None = None, mask: np.ndarray | None = None, title: str = "",
                   alpha: float = 0.5):
    """One scored image: the image with its score map overlaid (:func:`show_score_map`)
    beside the routed level map and, with a prior, the prior's level map."""
    n = 1 + (routed is not None) + (prior_levels is not None)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n + 0.6, 2.6), squeeze=False)
    axes = axes[0]
    size = image.shape[-1]
    show_score_map(axes[0], score_map, image, mask, "score map", alpha=alpha)
    if routed is not None:
        show_levels(axes[1], routed, size, "routed budget")
    if prior_levels is not None:
        show_levels(axes[n - 1], prior_levels, size, "prior budget")
    if n > 1:
        level_legend(fig, fontsize=7)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def sample_grid(images: np.ndarray, masks: np.ndarray, entropy: np.ndarray, titles: list[str]):
    """Rows: image, image with ground-truth contour, DWT entropy of coarse patches."""
    n = len(images)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.0), squeeze=False)
    for i in range(n):
        axes[0, i].imshow(to_rgb(images[i]))
        clean_axes(axes[0, i], titles[i])
        axes[1, i].imshow(to_rgb(images[i]))
        if masks[i].any():
            axes[1, i].contour(masks[i], levels=[0.5], colors="red", linewidths=0.8)
        clean_axes(axes[1, i], "ground truth")
        im = axes[2, i].imshow(entropy[i], cmap="viridis", vmin=0, vmax=1)
        clean_axes(axes[2, i], "DWT entropy H")
    fig.colorbar(im, ax=axes[2, :].tolist(), shrink=0.8, label="normalised entropy")
    return fig


def training_curves(log_csvs: dict[str, Path], keys: tuple[str, ...] = ("rec", "vq", "budget", "lam")):
    """Loss curves of one or more training logs (CSV from ``pvqae.train``)."""
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 2.8), squeeze=False)
    for name, path in log_csvs.items():
        with open(path) as f:
            rows = list(csv.DictReader(f))
        steps = [int(r["step"]) for r in rows]
        for ax, k in zip(axes[0], keys):
            vals = [float(r[k]) if r.get(k) not in (None, "") else np.nan for r in rows]
            if not np.all(np.isnan(vals)):
                ax.plot(steps, vals, label=name)
            ax.set_title(k, fontsize=9)
            ax.set_xlabel("step")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def level_fraction_curve(log_csv: Path):
    """Fraction of coarse/median/fine patches during budget learning."""
    with open(log_csv) as f:
        rows = list(csv.DictReader(f))
    steps = [int(r["step"]) for r in rows]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    for j, name in enumerate(LEVEL_NAMES):
        ax.plot(steps, [float(r[f"frac_{name}"]) for r in rows], color=LEVEL_CMAP(j), label=name, lw=2)
    if rows and rows[0].get("lam") not in (None, ""):
        ax2 = ax.twinx()
        ax2.plot(steps, [float(r["lam"]) for r in rows], "k--", lw=1, label="lambda")
        ax2.set_ylabel("lambda")
    ax.set_xlabel("step")
    ax.set_ylabel("fraction of coarse patches")
    ax.legend(fontsize=7, loc="center left")
    fig.tight_layout()
    return fig


def level_maps(images: np.ndarray, routed: np.ndarray, titles: list[str], prior: np.ndarray | None = None):
    """Per image: the image with its routed level map overlaid, and the prior's map."""
    n = len(images)
    rows = 3 if prior is not None else 2
    fig, axes = plt.subplots(rows, n, figsize=(1.6 * n, 1.7 * rows + 0.4), squeeze=False)
    size = images.shape[-1]
    for i in range(n):
        axes[0, i].imshow(to_rgb(images[i]))
        clean_axes(axes[0, i], titles[i])
        axes[1, i].imshow(to_rgb(images[i]))
        axes[1, i].imshow(routed[i], cmap=LEVEL_CMAP, vmin=0, vmax=2, alpha=0.55, interpolation="nearest",
                          extent=(0, size, size, 0))
        clean_axes(axes[1, i], "routed budget")
        if prior is not None:
            show_levels(axes[2, i], prior[i], size, "prior budget")
    level_legend(fig)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def defect_panels(rows: list[dict]):
    """Fig. 4: per defect sample: image, ground truth, static-VQ map, PVQAE map, routed
    levels, prior levels. Each row dict has keys image, mask, static, pvqae, routed, prior,
    title."""
    cols = ("image", "ground truth", "static VQ score", "PVQAE score", "routed budget", "prior budget")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(1.7 * len(cols), 1.8 * len(rows)), squeeze=False)
    for i, r in enumerate(rows):
        size = r["image"].shape[-1]
        axes[i, 0].imshow(to_rgb(r["image"]))
        axes[i, 1].imshow(r["mask"], cmap="gray", vmin=0, vmax=1)
        for j, key in ((2, "static"), (3, "pvqae")):
            m = r[key]
            axes[i, j].imshow(m, cmap="jet", vmin=np.percentile(m, 1), vmax=max(np.percentile(m, 99.9), 1e-12))
        if r.get("routed") is not None:
            show_levels(axes[i, 4], r["routed"], size)
        if r.get("prior") is not None:
            show_levels(axes[i, 5], r["prior"], size)
        for j, c in enumerate(cols):
            clean_axes(axes[i, j], c if i == 0 else "")
        axes[i, 0].set_ylabel(r.get("title", ""), fontsize=7)
    fig.tight_layout()
    return fig


def allocation_bars(rows: list[dict]):
    """Stacked bars of the fraction of coarse/median/fine codes per class and image type,
    routed vs prior (rows from ``evaluation.code_allocation``)."""
    labels = [f"{r['class']}\n{r['images']}\n{r['budget']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(4, 0.75 * len(rows)), 3.4))
    bottom = np.zeros(len(rows))
    for j, name in enumerate(LEVEL_NAMES):
        vals = np.array([r[name] for r in rows])
        ax.bar(range(len(rows)), vals, bottom=bottom, color=LEVEL_CMAP(j), label=name, edgecolor="white")
        bottom += vals
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_ylabel("fraction of coarse patches")
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 1.15), frameon=False)
    fig.tight_layout()
    return fig


def metric_bars(table: dict[str, dict[str, float]], metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc")):
    """Grouped bars: methods x metrics (values in [0,1] shown as %)."""
    import seaborn as sns

    data = [{"method": m, "metric": k, "value": 100 * v.get(k, np.nan)} for m, v in table.items() for k in metrics]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(table), 3))
    xs = {k: i for i, k in enumerate(metrics)}
    width = 0.8 / max(1, len(table))
    pal = sns.color_palette("deep", len(table))
    for j, m in enumerate(table):
        vals = [d["value"] for d in data if d["method"] == m]
        ax.bar([xs[k] + j * width for k in metrics], vals, width, label=m, color=pal[j])
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(metrics))])
    ax.set_xticklabels(metrics)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def lambda_sweep(results: dict[float, dict], main: float | None = None,
                 metrics: tuple[str, ...] = ("image_auroc", "pixel_auroc")):
    """Fig. 5: class-mean AUROC (%) against lambda_max, ± std over seeds as a band."""
    xs = sorted(results)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for k, colour in zip(metrics, ("tab:blue", "tab:orange", "tab:green")):
        m = np.array([100 * results[x]["mean"][k] for x in xs])
        s = np.array([100 * results[x].get("std", {}).get(k, 0.0) for x in xs])
        ax.plot(xs, m, "o-", color=colour, label=k.replace("_", " ").replace("auroc", "AUROC"))
        ax.fill_between(xs, m - s, m + s, color=colour, alpha=0.2, linewidth=0)
    if main is not None:
        ax.axvline(main, color="grey", linestyle=":", label=f"main run ({main:g})")
    ax.set_xlabel(r"$\lambda_{max}$ (linear schedule)")
    ax.set_ylabel("mean over classes (%)")
    ax.set_xticks(xs)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def scaling_figure(record: dict, full_run: dict | None = None):
    """Issue 15's scaling study: image AUROC vs the fraction of the profile's schedule (log
    axis, with the log-linear fit, dashed where it extrapolates) and vs image size / width at
    one wall time. ``full_run``: an accuracy record of the whole schedule, drawn hollow."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    colours = {"pvqae": "#1b7837", "static_vq": "#762a83"}
    names = {"pvqae": "PVQAE", "static_vq": "static VQ"}
    sched = sorted((r for r in record["rows"] if r["series"] == "schedule"), key=lambda r: r["fraction"])
    xs = np.array([r["fraction"] for r in sched])
    for m in ("pvqae", "static_vq"):
        ax.plot(xs, [100 * r[m]["mean"]["image_auroc"] for r in sched], "o", color=colours[m], label=names[m])
        fit = (record.get("fit") or {}).get(m, {}).get("fit_vs_fraction")
        if fit and len(xs):
            grid = np.geomspace(xs.min(), max(1.0, xs.max()), 50)
            y = 100 * (fit["a"] + fit["b_per_decade"] * np.log10(grid))
            inside = grid <= xs.max()
            ax.plot(grid[inside], y[inside], "-", color=colours[m], lw=1)
            ax.plot(grid[~inside], y[~inside], "--", color=colours[m], lw=1)
        if full_run and m in full_run:
            ax.plot([1.0], [100 * full_run[m]["mean"]["image_auroc"]], "o", mfc="none", color=colours[m],
                    label=f"{names[m]}, whole schedule (earlier run)")
    for t, v in (record.get("targets") or {}).items():
        ax.axhline(100 * v, color="grey", ls=":", lw=1)
        ax.text(xs.min() if len(xs) else 0.1, 100 * v, " paper PVQAE", va="bottom", fontsize=7, color="grey")
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the profile's training schedule (steps)")
    ax.set_ylabel("image AUROC (%)")
    ax.set_title(f"{record['dataset']}: detection vs training (dashed: extrapolated)", fontsize=9)
    ax.legend(fontsize=7)
    size = [r for r in record["rows"] if r["series"] == "size"]
    ref = next((r for r in sched if r["fraction"] == record.get("reference_fraction")), None)
    pts = ([ref] if ref else []) + size
    labels = [f"{r['image_size']} px\nch {r['ch']}" for r in pts]
    w = 0.38
    for j, m in enumerate(("pvqae", "static_vq")):
        bx.bar(np.arange(len(pts)) + (j - 0.5) * w, [100 * r[m]["mean"]["image_auroc"] for r in pts], w,
               color=colours[m], label=names[m])
    bx.set_xticks(np.arange(len(pts)), labels, fontsize=8)
    bx.set_ylim(40, 100)
    bx.legend(fontsize=7)
    secs = ref["pvqae"]["train_seconds"] / 60 if ref else None
    bx.set_title("same training wall time" + (f" ({secs:.1f} min PVQAE)" if secs else ""), fontsize=9)
    bx.set_ylabel("image AUROC (%)")
    fig.tight_layout()
    return fig


def codes_tradeoff(statics: dict[str, dict], sweep: dict[float, dict], metric: str = "image_auroc"):
    """Detection vs codes per image (log axis): the same-network static VQ at each level and
    PVQAE at each lambda_max (mean ± std over seeds): the paper's expressiveness /
    compactness trade-off."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, r in statics.items():
        if r.get("codes_per_image"):
            ax.errorbar([r["codes_per_image"]], [100 * r["mean"][metric]], yerr=[100 * r.get("std", {}).get(metric, 0)],
                        fmt="s", color="#762a83", capsize=3)
            ax.annotate(f"static {name}", (r["codes_per_image"], 100 * r["mean"][metric]), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))
    pts = sorted((r["codes_per_image"], 100 * r["mean"][metric], 100 * r.get("std", {}).get(metric, 0), lam)
                 for lam, r in sweep.items() if r.get("codes_per_image"))
    if pts:
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt="o-", color="#1b7837",
                    capsize=3, label="PVQAE (lambda_max sweep)")
        for c, v, _, lam in pts:
            ax.annotate(f"{lam:g}", (c, v), fontsize=7, textcoords="offset points", xytext=(4, -10))
    ax.set_xscale("log")
    ax.set_xlabel("codes per image (coarse 1, median 4, fine 16 per patch)")
    ax.set_ylabel(f"{metric.replace('_', ' ')} (%)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
