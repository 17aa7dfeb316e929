"""The label-free validation split (``pvqae.data.validation``, built by the prepare stage):
synthetic defects on held-out normal images with exact masks, deterministic, no test image."""

from __future__ import annotations

import numpy as np
import pytest

from pvqae.data import prepared
from pvqae.data.synthetic import MASK_THRESHOLD
from pvqae.data.validation import KINDS, paste_defects


def _images(n: int, c: int, seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    base = 0.5 + 0.2 * np.sin(xx / 4.0)[None] + 0.1 * rng.random((n, 1, size, size))
    return np.round(np.clip(np.repeat(base, c, axis=1), 0, 1) * 255).astype(np.uint8)


@pytest.mark.parametrize("channels", [1, 3])
def test_masks_are_exact_and_every_kind_is_used(channels):
    x = _images(8, channels)
    out, masks, kinds = paste_defects(x, seed=3)
    assert kinds == list(KINDS) * 2 and out.shape == x.shape and out.dtype == np.uint8
    for i in range(len(x)):
        diff = np.abs(out[i].astype(int) - x[i].astype(int)).max(0)
        assert np.array_equal(masks[i], diff > MASK_THRESHOLD)  # defective exactly where it changed
        assert np.array_equal(out[i][:, ~masks[i]], x[i][:, ~masks[i]])  # untouched outside the mask
        assert 0.005 <= masks[i].mean() <= 0.10


def test_deterministic_from_the_seed():
    x = _images(6, 3)
    a, b, c = paste_defects(x, 1), paste_defects(x, 1), paste_defects(x, 2)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_cutpaste_copies_a_rectangle_of_another_image_and_errors():
    x = np.stack([np.full((3, 64, 64), 20 + 40 * j, np.uint8) for j in range(4)])  # one grey level each
    out, masks, kinds = paste_defects(x, 0, kinds=("cutpaste",))
    for i in range(4):
        ys, xs = np.nonzero(masks[i])
        assert masks[i].sum() == (np.ptp(ys) + 1) * (np.ptp(xs) + 1)  # a filled rectangle
        donor_level = np.unique(out[i][:, masks[i]])
        assert len(donor_level) == 1 and donor_level[0] != x[i, 0, 0, 0]  # from one other image
        assert donor_level[0] in x[:, 0, 0, 0]
    with pytest.raises(ValueError, match="unknown validation defect kinds"):
        paste_defects(x, 0, kinds=("perlin",))
    with pytest.raises(ValueError, match="donor"):
        paste_defects(x[:1], 0)


def test_prepare_builds_it_from_held_out_normals_only(tmp_path):
    from conftest import tiny_data_params

    data = tiny_data_params()
    data.update(image_size=64, patch_size=8, val_fraction=0.5)
    data["synthetic"].update(n_train=6)
    prep = tmp_path / "prepared"
    prepared.prepare(data, prep, seed=0, progress=False)
    val = prepared.load_validation(prep)
    arr = np.load(prep / "arrays.npz")
    src = arr["val_defect_source"]
    split_val = prepared.SPLIT_CODES["val"]
    assert len(src) and (arr["split"][src] == split_val).all()  # bases: held-out normal images only
    assert (arr["labels"][src] == 0).all()
    # a pure function of the held-out images: recomputed from them alone, identical
    again = prepared.validation_defects(arr["images"], arr["class_index"], arr["split"],
                                        val["manifest"]["seed"])
    assert np.array_equal(again["images"], arr["val_defect_images"])
    assert np.array_equal(again["masks"], arr["val_defect_masks"])
    n_val = int((arr["split"] == split_val).sum())
    assert val["label"].tolist() == [0] * n_val + [1] * len(src)
    assert val["image"].shape[0] == n_val + len(src) and not val["mask"][:n_val].any()
    assert all(m["defect"] in KINDS for m in val["meta"][n_val:])
