"""Behaviour tests of pvqae.metrics: agreement with scikit-learn and with a brute-force AUPRO."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from pvqae.errors import DataError
from pvqae.metrics import (
    METRIC_NAMES,
    aupro,
    evaluate,
    evaluate_class,
    f1_max,
    image_auroc,
    image_auroc_by_kind,
    pixel_auroc,
)

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def blob_masks(rng: np.random.Generator, n: int = 4, size: int = 16, empty_every: int = 3):
    """Random blobby binary masks (smoothed noise above a threshold); some are empty."""
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        if i % empty_every == empty_every - 1:
            continue  # an image with an empty mask
        noise = ndimage.gaussian_filter(rng.normal(size=(size, size)), 1.5)
        masks[i] = noise > 0.6 * noise.std()
    return masks


def noisy_maps(rng: np.random.Generator, masks: np.ndarray, quantize: int | None = None):
    """Maps loosely correlated with the masks; ``quantize`` levels create many ties."""
    maps = masks * 0.8 + rng.normal(size=masks.shape)
    if quantize is not None:
        maps = np.round(maps * quantize) / quantize
    return maps.astype(np.float32)


def brute_force_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """Reference AUPRO: every distinct score is a threshold, regions looped over in Python."""
    masks = masks.astype(bool)
    regions = []
    for i, mask in enumerate(masks):
        lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, lab == r) for r in range(1, n + 1)]
    if not regions:
        return math.nan
    normal = ~masks
    points = [(0.0, 0.0)]
    for t in sorted(set(maps.ravel().tolist()), reverse=True):
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = sum(pred[i][region].mean() for i, region in regions) / len(regions)
        points.append((float(fpr), float(pro)))
    area = 0.0
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 >= limit:
            break
        if x1 > limit:  # interpolate exactly at the limit
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def sklearn_f1_max(labels, scores) -> float:
    precision, recall, _ = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    return float(f1.max())


# --------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_image_auroc_equals_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=40)
    labels[:2] = [0, 1]
    scores = rng.normal(size=40) + labels * rng.uniform(-1, 2)
    if seed % 2:
        scores = np.round(scores, 1)  # ties
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_image_auroc_perfect_inverted_and_single_class():
    labels = np.array([0, 0, 1, 1])
    assert image_auroc(labels, [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert image_auroc(labels, [0.9, 0.8, 0.2, 0.1]) == 0.0  # never flipped
    assert image_auroc(labels.astype(bool), [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert math.isnan(image_auroc([0, 0, 0], [0.1, 0.2, 0.3]))
    assert math.isnan(image_auroc([1, 1], [0.1, 0.2]))
    assert isinstance(image_auroc(labels, [0.1, 0.2, 0.8, 0.9]), float)


@pytest.mark.parametrize("seed", range(5))
def test_pixel_auroc_equals_sklearn_on_flattened_pixels(seed):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng)
    maps = noisy_maps(rng, masks, quantize=4 if seed % 2 else None)
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(masks, maps) == pytest.approx(expected, abs=1e-12)
    assert pixel_auroc(masks.astype(np.uint8), maps.astype(np.float64)) == pytest.approx(
        expected, abs=1e-12
    )


def test_pixel_auroc_undefined_and_inverted():
    masks = np.zeros((2, 4, 4), dtype=bool)
    assert math.isnan(pixel_auroc(masks, np.zeros((2, 4, 4))))
    assert math.isnan(pixel_auroc(~masks, np.zeros((2, 4, 4))))
    masks[0, :2, :2] = True
    assert pixel_auroc(masks, masks * 1.0) == 1.0
    assert pixel_auroc(masks, 1.0 - masks) == 0.0
    assert pixel_auroc(masks, np.ones((2, 4, 4))) == 0.5


# --------------------------------------------------------------------------------------------
# AUPRO
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("limit", [0.3, 0.05, 1.0])
def test_aupro_equals_brute_force(seed, limit):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng)
    assert masks.any() and not masks.all(axis=(1, 2)).any()
    assert not masks[2].any()  # the brute force also covers an image with an empty mask
    maps = noisy_maps(rng, masks, quantize=3 if seed % 2 else None)
    expected = brute_force_aupro(masks, maps, limit)
    assert aupro(masks, maps, fpr_limit=limit) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_aupro_quantile_grid_is_close_to_exact(seed):
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, n=6, size=32)
    maps = noisy_maps(rng, masks)
    exact = aupro(masks, maps)
    assert aupro(masks, maps, num_thresholds=200) == pytest.approx(exact, abs=1e-2)


def test_aupro_perfect_map_is_one():
    masks = blob_masks(np.random.default_rng(0))
    maps = masks.astype(np.float32)
    assert aupro(masks, maps) == 1.0
    assert aupro(masks, maps, num_thresholds=200) == 1.0


def test_aupro_inverted_map_is_zero():
    masks = blob_masks(np.random.default_rng(0))
    assert aupro(masks, 1.0 - masks) == 0.0  # never flipped


def test_aupro_constant_map_is_half_the_limit():
    # A constant map has a single threshold that takes every pixel: the curve is the chord
    # from (0, 0) to (1, 1), PRO = FPR, so the area up to L is L**2 / 2, normalised L / 2.
    masks = blob_masks(np.random.default_rng(1))
    const = np.full(masks.shape, 0.7)
    assert aupro(masks, const) == pytest.approx(0.15, abs=1e-12)
    assert aupro(masks, const, fpr_limit=1.0) == pytest.approx(0.5, abs=1e-12)
    assert aupro(masks, const, fpr_limit=0.1) == pytest.approx(0.05, abs=1e-12)


def test_aupro_random_map_is_near_chance_and_always_in_unit_interval():
    rng = np.random.default_rng(2)
    masks = blob_masks(rng, n=8, size=64)
    assert aupro(masks, rng.random(masks.shape)) == pytest.approx(0.15, abs=0.05)
    for seed in range(10):
        r = np.random.default_rng(seed)
        m = blob_masks(r)
        for limit in (0.01, 0.3, 1.0):
            value = aupro(m, r.normal(size=m.shape) * 3, fpr_limit=limit)
            assert 0.0 <= value <= 1.0


def test_aupro_without_any_defective_pixel_is_nan():
    masks = np.zeros((3, 8, 8), dtype=bool)
    assert math.isnan(aupro(masks, np.random.default_rng(0).random((3, 8, 8))))
    assert math.isnan(aupro(np.ones((1, 4, 4)), np.random.default_rng(0).random((1, 4, 4))))


def test_aupro_counts_pixels_of_empty_mask_images_as_normal():
    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :2] = True  # one region of 4 pixels in image 0; image 1 has an empty mask
    maps = masks.astype(np.float32)  # perfect on image 0 alone...
    assert aupro(masks[:1], maps[:1]) == 1.0
    maps[1, 0, :4] = 2.0  # ...but 4 normal pixels of image 1 score above the region
    # 12 + 16 = 28 normal pixels. Curve: (0, 0) -> (4/28, 0) -> (1/7, 1) -> (1, 1), so
    # the area up to 0.3 is (0.3 - 1/7) * 1, normalised: 1 - (1/7) / 0.3 = 11/21.
    assert aupro(masks, maps) == pytest.approx(11 / 21, abs=1e-12)
    assert aupro(masks, maps) == pytest.approx(brute_force_aupro(masks, maps), abs=1e-12)


def test_aupro_regions_are_8_connected():
    # (0, 0) touches (1, 1) diagonally: one region of 3 pixels with 8-connectivity (two
    # regions, of 1 and 2 pixels, with 4-connectivity).
    masks = np.zeros((1, 4, 4), dtype=bool)
    masks[0, 0, 0] = masks[0, 1, 1] = masks[0, 1, 2] = True
    maps = np.zeros((1, 4, 4), dtype=np.float32)
    maps[0, 0, 0] = 3.0
    maps[0, 1, 1] = maps[0, 1, 2] = 1.0
    maps[0, 3, :] = 2.0  # 4 of the 13 normal pixels: FPR 4/13 > 0.3
    # Curve: (0, 0) -> (0, 1/3) -> (4/13, 1/3) -> ...: PRO is 1/3 up to the limit, so the
    # AUPRO is 1/3 (it would be 1/2 with 4-connectivity: mean of 1 and 0).
    assert aupro(masks, maps) == pytest.approx(1 / 3, abs=1e-12)


def test_aupro_handles_a_class_sized_input_quickly():
    import time

    rng = np.random.default_rng(0)
    masks = np.zeros((200, 256, 256), dtype=bool)
    masks[:100, 100:140, 60:90] = True
    masks[:50, 10:20, 200:230] = True
    maps = (masks + rng.standard_normal(masks.shape, dtype=np.float32)).astype(np.float32)
    start = time.perf_counter()
    value = aupro(masks, maps)
    elapsed = time.perf_counter() - start
    assert 0.0 < value < 1.0
    assert elapsed < 10.0, f"aupro took {elapsed:.1f} s on 200 images of 256x256"


# --------------------------------------------------------------------------------------------
# F1-max
# --------------------------------------------------------------------------------------------


def test_f1_max_known_value():
    # Thresholds 0.8 / 0.4 / 0.35 / 0.1 give F1 2/3, 1/2, 4/5, 2/3: the best is 0.8.
    assert f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8, abs=1e-12)
    assert f1_max([0, 1], [0.0, 1.0]) == 1.0
    assert f1_max([1, 1], [0.3, 0.3]) == 1.0
    assert math.isnan(f1_max([0, 0], [0.3, 0.4]))


@pytest.mark.parametrize("seed", range(5))
def test_f1_max_equals_sklearn_curve_maximum(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=60)
    labels[0] = 1
    scores = rng.normal(size=60) + labels
    if seed % 2:
        scores = np.round(scores, 1)
    assert f1_max(labels, scores) == pytest.approx(sklearn_f1_max(labels, scores), abs=1e-12)
    masks = blob_masks(rng)
    maps = noisy_maps(rng, masks, quantize=3 if seed % 2 else None)
    assert f1_max(masks, maps) == pytest.approx(
        sklearn_f1_max(masks.ravel(), maps.ravel()), abs=1e-12
    )


# --------------------------------------------------------------------------------------------
# evaluate_class / evaluate
# --------------------------------------------------------------------------------------------


def make_record(seed: int, with_pixels: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    masks = blob_masks(rng, n=6, empty_every=2)
    labels = masks.any(axis=(1, 2)).astype(int)
    maps = noisy_maps(rng, masks)
    record = {"labels": labels, "image_scores": maps.max(axis=(1, 2))}
    if with_pixels:
        record.update(masks=masks, maps=maps)
    return record


def test_evaluate_class_matches_individual_metrics():
    rec = make_record(0)
    out = evaluate_class(**rec)
    assert list(out) == list(METRIC_NAMES)
    assert all(type(v) is float for v in out.values())
    assert out["image_auroc"] == image_auroc(rec["labels"], rec["image_scores"])
    assert out["image_f1_max"] == f1_max(rec["labels"], rec["image_scores"])
    assert out["pixel_auroc"] == pixel_auroc(rec["masks"], rec["maps"])
    assert out["aupro"] == aupro(rec["masks"], rec["maps"])
    assert out["pixel_f1_max"] == f1_max(rec["masks"], rec["maps"])
    channel = evaluate_class(
        rec["labels"], rec["image_scores"], rec["masks"][:, None], rec["maps"][:, None]
    )
    assert channel == out  # (N, 1, H, W) batches are accepted
    assert all(0.0 <= v <= 1.0 for v in out.values())
    assert evaluate_class(**rec, fpr_limit=0.1)["aupro"] == aupro(rec["masks"], rec["maps"], 0.1)


def test_evaluate_class_without_pixels_gives_nan_pixel_metrics():
    out = evaluate_class(**make_record(1, with_pixels=False))
    assert not math.isnan(out["image_auroc"]) and not math.isnan(out["image_f1_max"])
    assert all(math.isnan(out[k]) for k in ("pixel_auroc", "aupro", "pixel_f1_max"))


def test_evaluate_per_class_and_nan_aware_mean():
    records = {
        "bottle": make_record(0),
        "cable": make_record(1),
        "no_pixels": make_record(2, with_pixels=False),
        "one_class": {"labels": [0, 0, 0], "image_scores": [0.1, 0.2, 0.3]},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" warnings may leak
        out = evaluate(records)
    assert set(out) == {"per_class", "mean"}
    assert list(out["per_class"]) == list(records)
    assert list(out["mean"]) == list(METRIC_NAMES)
    for name in ("bottle", "cable"):
        assert out["per_class"][name] == evaluate_class(**records[name])
    per = out["per_class"]
    assert math.isnan(per["one_class"]["image_auroc"])
    expected_image = np.mean([per[c]["image_auroc"] for c in ("bottle", "cable", "no_pixels")])
    assert out["mean"]["image_auroc"] == pytest.approx(expected_image)
    expected_aupro = (per["bottle"]["aupro"] + per["cable"]["aupro"]) / 2
    assert out["mean"]["aupro"] == pytest.approx(expected_aupro)
    assert all(type(v) is float for v in out["mean"].values())


def test_evaluate_mean_is_nan_when_every_class_is_nan():
    records = {"a": make_record(0, with_pixels=False), "b": make_record(1, with_pixels=False)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = evaluate(records)
    assert math.isnan(out["mean"]["aupro"]) and math.isnan(out["mean"]["pixel_auroc"])
    assert not math.isnan(out["mean"]["image_auroc"])


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(3,\).*\(4,\)"):
        image_auroc([0, 1, 0], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match=r"shape mismatch.*\(2, 4, 4\).*\(2, 4, 5\)"):
        aupro(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))
    with pytest.raises(ValueError, match=r"shape mismatch"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match=r"6 images.*5"):
        rec = make_record(0)
        evaluate_class(rec["labels"][:5], rec["image_scores"][:5], rec["masks"], rec["maps"])


def test_nan_or_inf_scores_are_rejected():
    with pytest.raises(ValueError, match="NaN or inf"):
        image_auroc([0, 1], [0.1, np.nan])
    with pytest.raises(ValueError, match="NaN or inf"):
        f1_max([0, 1], [0.1, np.inf])
    maps = np.zeros((1, 4, 4))
    maps[0, 1, 1] = -np.inf
    with pytest.raises(ValueError, match="maps contain NaN or inf"):
        aupro(np.eye(4)[None], maps)


def test_labels_and_masks_must_be_binary():
    with pytest.raises(ValueError, match="labels must be binary.*2"):
        image_auroc([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="masks must be binary.*0.5"):
        pixel_auroc(np.full((1, 2, 2), 0.5), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="masks must be binary"):
        aupro(np.full((1, 2, 2), 255, dtype=np.uint8), np.zeros((1, 2, 2)))


def test_other_bad_arguments():
    masks = np.eye(4)[None]
    with pytest.raises(ValueError, match=r"masks must have shape \(N, H, W\)"):
        aupro(masks[0], masks[0])
    with pytest.raises(ValueError, match="maps must have 3 dimensions"):
        aupro(masks, masks[0])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(masks, masks, fpr_limit=0.0)
    with pytest.raises(ValueError, match="num_thresholds"):
        aupro(masks, masks, num_thresholds=1)
    with pytest.raises(ValueError, match="only masks was given"):
        evaluate_class([0, 1], [0.1, 0.2], masks=np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="empty"):
        image_auroc([], [])
    with pytest.raises(ValueError, match="records is empty"):
        evaluate({})
    with pytest.raises(ValueError, match="'bad'.*lacks.*image_scores"):
        evaluate({"bad": {"labels": [0, 1]}})
    with pytest.raises(ValueError, match="'bad'.*NaN"):
        evaluate({"bad": {"labels": [0, 1], "image_scores": [0.0, np.nan]}})
    with pytest.raises(DataError):  # the project's own error type, still a ValueError
        image_auroc([0, 1], ["a", "b"])


def test_image_auroc_by_kind_ranks_each_kind_against_the_normal_images():
    labels = [0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.5, 0.6, 0.2, 0.9, 0.3]
    kinds = ["good", "good", "hole", "crack", "hole", "crack"]
    # hole {0.6, 0.9} beats both normals: 1.0; crack {0.2, 0.3} beats 0.1 only: 2 of 4 pairs
    assert image_auroc_by_kind(labels, scores, kinds) == {"crack": 0.5, "hole": 1.0}
    assert np.isnan(image_auroc_by_kind([1, 1], [0.2, 0.3], ["a", "a"])["a"])  # no normal image
    with pytest.raises(ValueError, match="kinds has 2 entries but labels has 6"):
        image_auroc_by_kind(labels, scores, ["a", "b"])
