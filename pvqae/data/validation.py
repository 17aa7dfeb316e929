"""A label-free validation split: synthetic defects pasted on held-out normal images.

Model selection may not look at test labels (Sec. IV's protocol, and this study's rule), yet
choosing a budget scale, a score variant or a border rule needs defects to detect. The
held-out normal training images (split ``val``) give them: each gets one synthetic defect,
in turn

- ``scratch``, ``crack``, ``stain``: the project's own defect painters
  (:mod:`pvqae.data.synthetic`), drawn on the real image;
- ``cutpaste``: a rectangle cut from *another* held-out normal image, pasted at a random
  place (Li et al., CutPaste, CVPR 2021).

The mask is exact by construction: a pixel is defective iff the pasted image differs from its
source there by more than ``MASK_THRESHOLD`` 8-bit levels in some channel, and outside the
mask the image equals the source. Everything is a pure function of the seed and the images;
no test image is used (neither as a base nor as a donor).
"""

from __future__ import annotations

import numpy as np

from pvqae.data.synthetic import _DEFECT_FNS, AREA_RANGE, MASK_THRESHOLD

KINDS = ("scratch", "crack", "stain", "cutpaste")
_MAX_TRIES = 60


def _cutpaste(rng: np.random.Generator, S: int, clean: np.ndarray, donor: np.ndarray) -> np.ndarray:
    """``clean`` (S, S, 3) float with a rectangle of ``donor`` pasted in (area 2-8 %, aspect 1/3-3)."""
    area = rng.uniform(0.02, 0.08) * S * S
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3)))
    h = int(np.clip(round(np.sqrt(area * aspect)), 2, S - 1))
    w = int(np.clip(round(np.sqrt(area / aspect)), 2, S - 1))
    sy, sx = rng.integers(0, S - h + 1), rng.integers(0, S - w + 1)
    ty, tx = rng.integers(0, S - h + 1), rng.integers(0, S - w + 1)
    out = clean.copy()
    out[ty:ty + h, tx:tx + w] = donor[sy:sy + h, sx:sx + w]
    return out


def paste_defects(images: np.ndarray, seed: int, kinds: tuple[str, ...] = KINDS) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One synthetic defect per image of ``images`` (N, C, S, S) uint8 (C = 1 or 3).

    Image ``i`` gets ``kinds[i % len(kinds)]`` (CutPaste's donor: another image of the set).

    Returns:
        (defective images (N, C, S, S) uint8, exact masks (N, S, S) bool, kind per image).
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown validation defect kinds {unknown}; choose from {KINDS}")
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 1 or 3, S, S), got {images.dtype} {images.shape}")
    n, c, S = images.shape[0], images.shape[1], images.shape[-1]
    if n < 2 and "cutpaste" in kinds:
        raise ValueError("CutPaste needs at least two held-out normal images (a donor)")
    rgb = np.repeat(images, 3, axis=1) if c == 1 else images
    rgb = rgb.transpose(0, 2, 3, 1).astype(np.float32) / 255.0  # (N, S, S, 3)
    out, masks, used = images.copy(), np.zeros((n, S, S), bool), []
    lo, hi = AREA_RANGE[0], 0.10
    for i in range(n):
        kind = kinds[i % len(kinds)]
        rng = np.random.default_rng([seed, i, KINDS.index(kind)])
        clean = rgb[i]
        for _ in range(_MAX_TRIES):
            if kind == "cutpaste":
                j = (i + 1 + int(rng.integers(n - 1))) % n  # any other image
                bad = _cutpaste(rng, S, clean, rgb[j])
            else:
                bad = _DEFECT_FNS[kind](rng, S, clean, None)
            bad_u8 = np.round(np.clip(bad, 0, 1) * 255).astype(np.uint8).transpose(2, 0, 1)  # (3, S, S)
            if c == 1:  # back to one channel: luma of the painted colour
                bad_u8 = np.round(np.tensordot(np.array([0.299, 0.587, 0.114]), bad_u8.astype(np.float64),
                                               axes=1))[None].clip(0, 255).astype(np.uint8)
            diff = np.abs(bad_u8.astype(np.int16) - images[i].astype(np.int16)).max(axis=0)
            mask = diff > MASK_THRESHOLD
            if lo <= mask.mean() <= hi:
                out[i] = np.where(mask[None], bad_u8, images[i])
                masks[i] = mask
                break
        else:
            raise RuntimeError(f"could not paste a visible {kind} defect on held-out image {i} within "
                               f"{lo:.3f}-{hi:.2f} of its area after {_MAX_TRIES} tries (seed {seed})")
        used.append(kind)
    return out, masks, used
