"""Evaluation metrics of unsupervised visual defect detection.

One module past ~350 lines on purpose: the metrics share one set of input conventions and
checks (below), and about half the length is the docstrings that pin each metric's reference
convention (AUPRO integration, F1-max thresholds), which a split would repeat.

All functions take numpy arrays (anything ``np.asarray`` accepts, e.g. CPU torch tensors) and
return plain Python floats, as **fractions in [0, 1]** (reporting code formats percentages).

Conventions
-----------
- ``labels``: image-level ground truth, 0 = normal, 1 = defective (bools accepted).
- ``scores`` / ``image_scores``: one anomaly score per image; higher means more anomalous.
- ``masks``: pixel-level ground truth of shape ``(N, H, W)``, binary (bool or 0/1).
- ``maps``: anomaly maps of shape ``(N, H, W)``; higher means more anomalous. They are cast to
  ``float32`` to keep memory reasonable (an MVTec AD class at 256x256 is ~10^7 pixels).
- ``(N, 1, H, W)`` masks and maps (a batch of single-channel torch images) are accepted too;
  the channel axis is dropped.
- A sample (image or pixel) is predicted defective at threshold ``t`` when its score is
  ``>= t``.
- A metric that is undefined for the given ground truth (e.g. an AUROC when only one class is
  present) is returned as ``float('nan')``. Nothing is ever "fixed": in particular an AUROC
  below 0.5 is reported as is, never flipped to ``1 - auroc``.
- Bad inputs (shape mismatch, NaN/inf scores, labels not in {0, 1}, non-binary masks) raise
  :class:`pvqae.errors.DataError`, a subclass of :class:`ValueError`, whose message names the
  problem.

Metrics
-------
- :func:`image_auroc`  -- area under the ROC curve of image scores (scikit-learn).
- :func:`pixel_auroc`  -- area under the ROC curve over all pixels of all images.
- :func:`aupro`        -- normalised area under the per-region-overlap (PRO) curve up to a
  false-positive rate of ``fpr_limit`` (0.3 by default, "AUPRO@0.3"), as defined by
  Bergmann et al. (MVTec AD, IJCV 2021) and computed exactly like their reference code.
- :func:`f1_max`       -- best F1 score over all thresholds (image- or pixel-level).
- :func:`evaluate_class` / :func:`evaluate` -- all of the above for one class / many classes.

Pixel-level computations
------------------------
scikit-learn's ``roc_auc_score`` and ``precision_recall_curve`` argsort and copy the ~10^7
pixels of a class in float64, which is slow. The pixel metrics therefore use exact
sort-and-count formulas that give the same numbers (checked against scikit-learn in
``tests/test_metrics.py``): the normal-pixel scores are sorted once (``np.sort``, not
``argsort``) and every other quantity is a binary search in them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from pvqae.errors import DataError

__all__ = [
    "METRIC_NAMES",
    "REGION_STRUCTURE",
    "aupro",
    "evaluate",
    "evaluate_class",
    "f1_max",
    "image_auroc",
    "pixel_auroc",
]

#: Keys of the dictionary returned by :func:`evaluate_class`, in reporting order.
METRIC_NAMES: tuple[str, ...] = (
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "image_f1_max",
    "pixel_f1_max",
)

#: Connectivity of ground-truth regions in :func:`aupro`: 8-connectivity (3x3 all-ones
#: structuring element), as in the MVTec AD reference evaluation code.
REGION_STRUCTURE: np.ndarray = np.ones((3, 3), dtype=bool)

_NAN = float("nan")


# --------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------


def _check_binary(arr: np.ndarray, name: str) -> np.ndarray:
    """Return ``arr`` as a bool array if it only holds 0 and 1 (or bools), else raise."""
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{name} must be binary (bool or 0/1 numbers), got dtype {arr.dtype}")
    bad = (arr != 0) & (arr != 1)  # NaN compares unequal to both, so it is caught too
    if bad.any():
        found = np.unique(arr[bad])[:5]
        raise DataError(
            f"{name} must be binary (only 0 and 1), found other values such as {found.tolist()}"
        )
    return arr.astype(bool)


def _check_labels(labels: Any, name: str = "labels") -> np.ndarray:
    """Return image labels as a 1-D bool array, or raise DataError."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise DataError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{name} is empty")
    try:
        return _check_binary(arr, name)
    except DataError as exc:
        raise DataError(f"{exc} (labels are 0 = normal, 1 = defective)") from None


def _check_scores(scores: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """Return scores as a finite float array (float32 for 3-D maps, else float64)."""
    arr = np.asarray(scores)
    if (
        arr.dtype == bool
        or not np.issubdtype(arr.dtype, np.number)
        or np.issubdtype(arr.dtype, np.complexfloating)
    ):
        raise DataError(f"{name} must be a real-valued numeric array, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise DataError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"{name} is empty")
    arr = arr.astype(np.float32 if ndim == 3 else np.float64, copy=False)
    n_bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if n_bad:
        raise DataError(f"{name} contain NaN or inf values ({n_bad} of {arr.size} entries)")
    return arr


def _check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise DataError naming both shapes if ``a`` and ``b`` differ in shape."""
    if a.shape != b.shape:
        raise DataError(
            f"shape mismatch: {name_a} has shape {a.shape} but {name_b} has shape {b.shape}"
        )


def _squeeze_channel(arr: Any) -> np.ndarray:
    """``np.asarray(arr)``, with the singleton channel axis of ``(N, 1, H, W)`` removed."""
    arr = np.asarray(arr)
    return arr[:, 0] if arr.ndim == 4 and arr.shape[1] == 1 else arr


def _check_pixels(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate masks and maps (``(N, H, W)`` or ``(N, 1, H, W)``); return them as
    ``(N, H, W)`` bool masks and float32 maps."""
    m = _squeeze_channel(masks)
    if m.ndim != 3:
        raise DataError(
            f"masks must have shape (N, H, W) or (N, 1, H, W), got shape {np.shape(masks)}"
        )
    s = _check_scores(_squeeze_channel(maps), "maps", ndim=3)
    _check_same_shape(m, s, "masks", "maps")
    return _check_binary(m, "masks"), s


def _check_fpr_limit(fpr_limit: float) -> float:
    """Return ``fpr_limit`` as a float in (0, 1], or raise DataError."""
    try:
        limit = float(fpr_limit)
    except (TypeError, ValueError):
        raise DataError(f"fpr_limit must be a number in (0, 1], got {fpr_limit!r}") from None
    if not 0.0 < limit <= 1.0:
        raise DataError(f"fpr_limit must be in (0, 1], got {fpr_limit!r}")
    return limit


def _check_num_thresholds(num_thresholds: Any) -> int | None:
    """Return ``num_thresholds`` as None or an int >= 2, or raise DataError."""
    if num_thresholds is None:
        return None
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, (int, np.integer)):
        raise DataError(f"num_thresholds must be None or an int, got {num_thresholds!r}")
    if num_thresholds < 2:
        raise DataError(f"num_thresholds must be None or at least 2, got {num_thresholds}")
    return int(num_thresholds)


# --------------------------------------------------------------------------------------------
# Sort-and-count kernels (inputs already validated)
# --------------------------------------------------------------------------------------------


def _split_sorted(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scores of negatives and of positives, each sorted increasingly (flat inputs)."""
    neg = s[~y]
    neg.sort()
    pos = s[y]
    pos.sort()
    return neg, pos


def _auroc_sorted(neg: np.ndarray, pos: np.ndarray) -> float:
    """ROC AUC from sorted negative / positive scores; nan if either is empty.

    AUC = P(positive > negative) + 0.5 P(positive == negative) (Mann-Whitney), which is
    exactly the trapezoidal area under the ROC curve that scikit-learn computes.
    """
    if neg.size == 0 or pos.size == 0:
        return _NAN
    below = np.searchsorted(neg, pos, side="left")  # negatives strictly below each positive
    upto = np.searchsorted(neg, pos, side="right")  # ... below or tied
    twice_u = int(below.sum(dtype=np.int64)) + int(upto.sum(dtype=np.int64))
    return twice_u / (2 * neg.size * pos.size)


def _f1_max_sorted(neg: np.ndarray, pos: np.ndarray) -> float:
    """Best F1 over all thresholds from sorted negative / positive scores; nan if no positive.

    For a fixed number of true positives, F1 is highest with the fewest false positives, so
    the best threshold is always one of the positive scores: only those are tried.
    F1 = 2 TP / (TP + FP + P), which is 0/0-free since P > 0.
    """
    if pos.size == 0:
        return _NAN
    thresholds = np.unique(pos)
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    return float(np.max(2.0 * tp / (tp + fp + pos.size)))


def _region_ids(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the connected regions of every mask with globally unique ids.

    Returns:
        ``(ids, n_regions)``: ``ids`` has the shape of ``masks`` (int32), 0 on normal pixels
        and ``1..n_regions`` on the pixels of each region (8-connectivity,
        :data:`REGION_STRUCTURE`).
    """
    ids = np.zeros(masks.shape, dtype=np.int32)
    n_regions = 0
    for i, mask in enumerate(masks):
        if not mask.any():
            continue
        lab, n = ndimage.label(mask, structure=REGION_STRUCTURE)
        ids[i] = np.where(lab > 0, lab + n_regions, 0)
        n_regions += n
    return ids, n_regions


def _pro_curve(
    neg: np.ndarray,
    region_scores: np.ndarray,
    region_ids: np.ndarray,
    n_regions: int,
    fpr_limit: float,
    num_thresholds: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """FPR and PRO points of the PRO curve, non-decreasing, from (0, 0) to (1, 1).

    Args:
        neg: Scores of all normal pixels, sorted increasingly (non-empty).
        region_scores: Scores of all defective pixels (any order).
        region_ids: Region id (1..n_regions) of each defective pixel.
        n_regions: Number of regions (> 0).
        fpr_limit: Only used to place the thresholds of the quantile grid.
        num_thresholds: None for the exact curve, else the size of the quantile grid.

    A defective pixel of region ``r`` weighs ``1 / (n_regions * |r|)``, so PRO(t) is the sum
    of the weights of defective pixels scoring ``>= t``; FPR(t) is a binary search in ``neg``.

    Exact curve: between two consecutive distinct defective-pixel scores only normal pixels
    cross the threshold, so the curve is horizontal there and only its two ends matter. For
    each distinct defective-pixel score ``u`` the curve therefore has the point just above
    ``u`` (scores ``> u``) and the point at ``u`` (scores ``>= u``); together with (0, 0) and
    (1, 1) these are the corners of the curve over *every* distinct score, so trapezoids and
    interpolation on them are exact.
    """
    n_neg = neg.size
    sizes = np.bincount(region_ids, minlength=n_regions + 1)
    weight = np.zeros(n_regions + 1, dtype=np.float64)
    weight[1:] = 1.0 / (n_regions * sizes[1:])

    order = np.argsort(region_scores)[::-1]  # decreasing score
    r_desc = region_scores[order]
    cum_w = np.cumsum(weight[region_ids[order]])
    cum_w /= cum_w[-1]  # the total is 1 up to rounding: make PRO exactly 1 at the end

    if num_thresholds is None:
        ends = np.flatnonzero(r_desc[:-1] != r_desc[1:])  # last pixel of each group of ties
        ends = np.append(ends, r_desc.size - 1)
        u = r_desc[ends]
        pro_ge = cum_w[ends]
        pro_gt = np.concatenate(([0.0], pro_ge[:-1]))
        fpr_ge = (n_neg - np.searchsorted(neg, u, side="left")) / n_neg
        fpr_gt = (n_neg - np.searchsorted(neg, u, side="right")) / n_neg
        fpr = np.stack([fpr_gt, fpr_ge], axis=1).ravel()
        pro = np.stack([pro_gt, pro_ge], axis=1).ravel()
    else:
        # The threshold of FPR level L is the ceil(L * n_neg)-th highest normal score, so a
        # fraction >= L of normal pixels scores >= it (more with ties). Level 0 uses the next
        # float above the highest normal score (FPR exactly 0).
        levels = np.linspace(0.0, fpr_limit, num_thresholds)
        k = np.ceil(levels * n_neg).astype(np.int64)
        thresholds = neg[np.clip(n_neg - k, 0, n_neg - 1)]
        thresholds[k == 0] = np.nextafter(neg[-1], np.asarray(np.inf, dtype=neg.dtype))
        thresholds = np.unique(thresholds)[::-1]  # decreasing
        fpr = (n_neg - np.searchsorted(neg, thresholds, side="left")) / n_neg
        n_ge = np.searchsorted(-r_desc, -thresholds, side="right")  # defective pixels >= t
        pro = np.where(n_ge > 0, cum_w[np.maximum(n_ge - 1, 0)], 0.0)
    fpr = np.concatenate(([0.0], fpr, [1.0]))
    pro = np.concatenate(([0.0], np.clip(pro, 0.0, 1.0), [1.0]))
    return fpr, pro


def _area_up_to(fpr: np.ndarray, pro: np.ndarray, limit: float) -> float:
    """Trapezoidal area under (fpr, pro) from 0 to ``limit``, divided by ``limit``.

    The point at ``fpr == limit`` is linearly interpolated on the chord that crosses it.
    """
    idx = int(np.searchsorted(fpr, limit, side="right"))  # fpr[:idx] <= limit < fpr[idx]
    x, y = fpr[:idx], pro[:idx]
    if idx < fpr.size and x[-1] < limit:
        x0, x1, y0, y1 = fpr[idx - 1], fpr[idx], pro[idx - 1], pro[idx]
        x = np.append(x, limit)
        y = np.append(y, y0 + (y1 - y0) * (limit - x0) / (x1 - x0))
    return float(np.clip(np.trapezoid(y, x) / limit, 0.0, 1.0))


def _aupro_checked(
    masks: np.ndarray,
    maps: np.ndarray,
    fpr_limit: float,
    num_thresholds: int | None,
    neg: np.ndarray | None = None,
) -> float:
    """AUPRO of validated inputs; ``neg`` (sorted normal-pixel scores) is reused if given."""
    ids, n_regions = _region_ids(masks)
    if n_regions == 0 or masks.all():
        return _NAN
    if neg is None:
        neg = maps[~masks]
        neg.sort()
    fpr, pro = _pro_curve(neg, maps[masks], ids[masks], n_regions, fpr_limit, num_thresholds)
    return _area_up_to(fpr, pro, fpr_limit)


# --------------------------------------------------------------------------------------------
# Public metrics
# --------------------------------------------------------------------------------------------


def image_auroc(labels: Any, scores: Any) -> float:
    """Image-level area under the ROC curve (:func:`sklearn.metrics.roc_auc_score`).

    Args:
        labels: Shape ``(N,)``, 0 = normal, 1 = defective.
        scores: Shape ``(N,)``, anomaly score of each image (higher = more anomalous).

    Returns:
        The AUROC in [0, 1] (0.5 = chance). It is never flipped: a detector that ranks normal
        images above defective ones gets a value below 0.5. ``nan`` if ``labels`` holds only
        one class, where the ROC curve is undefined.

    Raises:
        DataError: (a ``ValueError``) on shape mismatch, labels not in {0, 1}, or NaN/inf
            scores.
    """
    y = _check_labels(labels)
    s = _check_scores(scores, "scores", ndim=1)
    _check_same_shape(y, s, "labels", "scores")
    if y.all() or not y.any():
        return _NAN
    from sklearn.metrics import roc_auc_score  # here, not at import: scikit-learn costs every stage ~2 s to load

    return float(roc_auc_score(y, s))


def image_auroc_by_kind(labels: Any, scores: Any, kinds: Sequence[str]) -> dict[str, float]:
    """Image AUROC of each defect kind against all normal images: which defects a detector
    finds (MTSD: blowhole, break, crack, fray, uneven).

    Args:
        labels: Shape ``(N,)``, 0 = normal, 1 = defective.
        scores: Shape ``(N,)``.
        kinds: ``N`` defect-kind names (those of normal images are ignored).

    Returns:
        ``{kind: AUROC}`` in sorted kind order; ``nan`` for a kind when there is no normal image.
    """
    y = _check_labels(labels)
    s = _check_scores(scores, "scores", ndim=1)
    _check_same_shape(y, s, "labels", "scores")
    k = np.asarray(kinds, dtype=object)
    if k.shape != y.shape:
        raise DataError(f"kinds has {k.shape[0]} entries but labels has {y.shape[0]}")
    normal = y == 0
    return {str(kind): image_auroc(y[normal | (k == kind)], s[normal | (k == kind)])
            for kind in sorted(set(k[~normal]))}


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Pixel-level area under the ROC curve, over all pixels of all images pooled together.

    Computed exactly by sorting and counting (equal to
    :func:`sklearn.metrics.roc_auc_score` on the flattened arrays, ties counting one half).

    Args:
        masks: Shape ``(N, H, W)``, binary ground truth (True/1 = defective pixel).
        maps: Shape ``(N, H, W)``, anomaly maps (cast to float32).

    Returns:
        The AUROC in [0, 1], never flipped; ``nan`` if there is no defective pixel or no
        normal pixel at all.

    Raises:
        DataError: (a ``ValueError``) on shape mismatch, non-binary masks, or NaN/inf maps.
    """
    m, s = _check_pixels(masks, maps)
    return _auroc_sorted(*_split_sorted(m.ravel(), s.ravel()))


def f1_max(labels: Any, scores: Any) -> float:
    """Maximum F1 score over all decision thresholds ("F1-max").

    Equal to the maximum of ``2 P R / (P + R)`` over the curve of
    :func:`sklearn.metrics.precision_recall_curve` (points with P + R = 0 counting as 0),
    computed exactly by sorting and counting. Works on image-level labels/scores as well as
    on pixels: any two arrays of equal shape are accepted and flattened (scores are kept in
    float64 here, whereas :func:`evaluate_class` casts maps to float32).

    Args:
        labels: Binary ground truth (0 = normal, 1 = defective), any shape.
        scores: Anomaly scores of the same shape (higher = more anomalous).

    Returns:
        The best F1 in [0, 1]; ``nan`` if there is no positive label (F1 is then undefined).

    Raises:
        DataError: (a ``ValueError``) on shape mismatch, labels not in {0, 1}, or NaN/inf
            scores.
    """
    y = np.asarray(labels)
    s = _check_scores(scores, "scores")
    _check_same_shape(y, s, "labels", "scores")
    y = _check_labels(y.ravel())
    return _f1_max_sorted(*_split_sorted(y, s.ravel()))


def aupro(
    masks: Any,
    maps: Any,
    fpr_limit: float = 0.3,
    num_thresholds: int | None = None,
) -> float:
    """Normalised area under the per-region-overlap (PRO) curve up to ``fpr_limit``.

    Definition (Bergmann et al., IJCV 2021, and the MVTec AD reference code):

    - *Regions* are the connected components of each ground-truth mask, with 8-connectivity
      (:data:`REGION_STRUCTURE`, the 3x3 all-ones structure of the reference code). An image
      whose mask is empty has no region; its pixels only count as normal pixels.
    - For a threshold ``t``, a pixel is predicted defective when its score is ``>= t``.
      ``FPR(t)`` is the fraction of normal pixels (over all images) predicted defective and
      ``PRO(t)`` is the mean over all regions (of all images) of the fraction of the region's
      pixels predicted defective.
    - The curve starts at (0, 0) (threshold above every score) and ends at (1, 1); the point
      at ``FPR = fpr_limit`` is linearly interpolated, the curve is integrated with the
      trapezoid rule from 0 to ``fpr_limit`` and the area is divided by ``fpr_limit``, so the
      result is in [0, 1] (dividing by the FPR actually reached instead would inflate a curve
      that stops short of the limit).

    Thresholds: by default (``num_thresholds=None``) the curve is **exact**, i.e. as if every
    distinct score value were a threshold (tied scores form one threshold). Only the corners
    of that curve are computed (the points just above and at each distinct defective-pixel
    score: in between, only normal pixels cross the threshold and the curve is horizontal),
    with one ``np.sort`` of the normal-pixel scores and binary searches; 200 images of
    256x256 take about a second. With an integer ``num_thresholds`` the thresholds are
    instead ``num_thresholds`` quantiles of the normal-pixel scores at FPR levels evenly
    spaced in ``[0, fpr_limit]`` (plus the end points), FPR and PRO at them still being
    exact; this coarser curve only exists for comparison with grid-based implementations.

    Args:
        masks: Shape ``(N, H, W)``, binary ground truth (True/1 = defective pixel).
        maps: Shape ``(N, H, W)``, anomaly maps (cast to float32).
        fpr_limit: Upper integration limit of the FPR, in (0, 1]. Default 0.3.
        num_thresholds: ``None`` (default) for the exact curve, or an int >= 2 for a
            quantile grid of thresholds.

    Returns:
        The normalised area in [0, 1]: 1.0 for a perfect map (every defective pixel scores
        above every normal pixel); 0.0 for a map that ranks all normal pixels above all
        defective ones (never flipped); ``fpr_limit / 2`` (0.15 for the default limit) for a
        constant map, whose only threshold takes every pixel, so that its curve is the chord
        from (0, 0) to (1, 1), i.e. PRO = FPR, of area ``fpr_limit**2 / 2`` up to the limit
        (an uninformative random map gives about the same). ``nan`` if the masks contain no
        defective pixel (no region) or no normal pixel.

    Raises:
        DataError: (a ``ValueError``) on shape mismatch, non-binary masks, NaN/inf maps, a
            ``fpr_limit`` outside (0, 1] or a ``num_thresholds`` that is not None or >= 2.
    """
    limit = _check_fpr_limit(fpr_limit)
    n_thr = _check_num_thresholds(num_thresholds)
    m, s = _check_pixels(masks, maps)
    return _aupro_checked(m, s, limit, n_thr)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def evaluate_class(
    labels: Any,
    image_scores: Any,
    masks: Any = None,
    maps: Any = None,
    fpr_limit: float = 0.3,
) -> dict[str, float]:
    """All metrics of one object/texture class.

    Args:
        labels: Shape ``(N,)``, 0 = normal, 1 = defective.
        image_scores: Shape ``(N,)``, anomaly score of each image.
        masks: Optional ``(N, H, W)`` binary ground truth. Give both ``masks`` and ``maps``
            or neither.
        maps: Optional ``(N, H, W)`` anomaly maps (cast to float32).
        fpr_limit: FPR limit of :func:`aupro`.

    Returns:
        ``{"image_auroc", "pixel_auroc", "aupro", "image_f1_max", "pixel_f1_max"}`` (the keys
        of :data:`METRIC_NAMES`, in that order) as plain Python floats, fractions in [0, 1].
        The pixel metrics are ``nan`` when ``masks``/``maps`` are not given; any metric is
        ``nan`` when it is undefined for the ground truth (see the individual functions).

    Raises:
        DataError: (a ``ValueError``) on invalid inputs, only one of masks/maps given, or a
            number of masks/maps different from the number of labels.
    """
    limit = _check_fpr_limit(fpr_limit)
    y = _check_labels(labels)
    s = _check_scores(image_scores, "image_scores", ndim=1)
    _check_same_shape(y, s, "labels", "image_scores")
    result = {
        "image_auroc": image_auroc(y, s),
        "pixel_auroc": _NAN,
        "aupro": _NAN,
        "image_f1_max": _f1_max_sorted(*_split_sorted(y, s)),
        "pixel_f1_max": _NAN,
    }
    if (masks is None) != (maps is None):
        given = "masks" if maps is None else "maps"
        raise DataError(f"give both masks and maps, or neither (only {given} was given)")
    if masks is not None:
        m, pm = _check_pixels(masks, maps)
        if m.shape[0] != y.shape[0]:
            raise DataError(
                f"masks/maps hold {m.shape[0]} images (shape {m.shape}) but labels hold "
                f"{y.shape[0]} (shape {y.shape})"
            )
        neg, pos = _split_sorted(m.ravel(), pm.ravel())  # sorted once, shared by all three
        result["pixel_auroc"] = _auroc_sorted(neg, pos)
        result["pixel_f1_max"] = _f1_max_sorted(neg, pos)
        result["aupro"] = _aupro_checked(m, pm, limit, None, neg=neg)
    return {k: float(v) for k, v in result.items()}


def _nan_mean(values: list[float]) -> float:
    """Mean ignoring nan; nan (without a RuntimeWarning) when every value is nan."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    return float(finite.mean()) if finite.size else _NAN


def evaluate(records: Mapping[str, Mapping[str, Any]], fpr_limit: float = 0.3) -> dict:
    """Metrics of every class and their nan-aware mean over classes.

    Args:
        records: ``{class_name: {"labels": ..., "image_scores": ..., "masks": ...,
            "maps": ...}}``; ``masks`` and ``maps`` may be missing or ``None``.
        fpr_limit: FPR limit of :func:`aupro`.

    Returns:
        ``{"per_class": {class_name: metrics}, "mean": {metric: value}}`` where ``metrics`` is
        the dictionary of :func:`evaluate_class` and each mean (a plain float) ignores the
        classes where the metric is ``nan``; it is ``nan`` only if the metric is ``nan`` for
        every class. No ``RuntimeWarning`` is emitted in that case.

    Raises:
        DataError: (a ``ValueError``) if ``records`` is empty, a record lacks ``labels`` or
            ``image_scores``, or a record is invalid (the message names the class).
    """
    if not records:
        raise DataError("records is empty: give at least one class")
    per_class: dict[str, dict[str, float]] = {}
    for name, rec in records.items():
        missing = [k for k in ("labels", "image_scores") if k not in rec]
        if missing:
            raise DataError(f"class {name!r}: record lacks {missing}")
        try:
            per_class[name] = evaluate_class(
                rec["labels"],
                rec["image_scores"],
                masks=rec.get("masks"),
                maps=rec.get("maps"),
                fpr_limit=fpr_limit,
            )
        except DataError as exc:
            raise DataError(f"class {name!r}: {exc}") from exc
    mean = {k: _nan_mean([metrics[k] for metrics in per_class.values()]) for k in METRIC_NAMES}
    return {"per_class": per_class, "mean": mean}
