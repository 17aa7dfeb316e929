"""Context richness of a coarse patch (paper Sec. III-B2): the normalised Shannon entropy
``H`` of its discrete wavelet transform (DWT) coefficients, computed with PyWavelets.

The budget's base cost is ``1 / (H + eps)`` (:mod:`pvqae.budget`): a patch rich in context
makes finer codes cheaper. ``H`` depends only on the image, so the prepare stage computes
it once per coarse patch and caches it (:func:`batch_patch_entropies`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pywt
import torch

from pvqae.strict_config import Config, ConfigError

__all__ = ["EntropyConfig", "batch_patch_entropies", "dwt_entropy", "estimate_noise_std", "patch_entropies"]


@dataclasses.dataclass(frozen=True)
class EntropyConfig(Config):
    """The entropy's settings (params.yaml ``data.entropy``); its defaults are the functions'."""

    SECTION = "data.entropy"
    wavelet: str = "haar"  # any PyWavelets discrete wavelet
    level: int = 2  # DWT levels
    noise_floor: float = 0.05  # detail coefficients below this count as noise, not context
    noise_scale: float | None = None  # set: noise_floor = this x the training normals' own noise std (calibrated)

    def __post_init__(self):
        if self.noise_scale is not None and self.noise_scale <= 0:
            raise ConfigError(f"data.entropy.noise_scale must be > 0 or null, got {self.noise_scale}")

    def calibrated(self, normal_images: Any) -> tuple[float, dict]:
        """The noise floor to use and what it came from: the fixed ``noise_floor``, or with
        ``noise_scale`` that multiple of :func:`estimate_noise_std` of ``normal_images``, so the
        gate means the same on any dataset (a patch of the data's own noise gets the same
        gate whatever its amplitude)."""
        if self.noise_scale is None:
            return self.noise_floor, {"noise_floor": self.noise_floor, "calibrated": False}
        sigma = estimate_noise_std(normal_images, self.wavelet)
        floor = self.noise_scale * sigma
        return floor, {"noise_floor": floor, "calibrated": True, "noise_std": sigma, "noise_scale": self.noise_scale}



def _check_entropy_args(
    patch_h: int, patch_w: int, wavelet: str, level: int, noise_floor: float, min_energy: float
) -> None:
    """Validate the shared arguments of the entropy functions (clear errors, no pywt warnings)."""
    if noise_floor < 0:
        raise ValueError(f"noise_floor must be >= 0 (0 disables the energy gate), got {noise_floor}")
    if min_energy < 0:
        raise ValueError(f"min_energy must be >= 0, got {min_energy}")
    if not isinstance(level, (int, np.integer)) or level < 1:
        raise ValueError(f"level must be an integer >= 1, got {level!r}")
    try:
        dec_len = pywt.Wavelet(wavelet).dec_len
    except ValueError as exc:  # unknown wavelet name
        raise ValueError(
            f"unknown discrete wavelet {wavelet!r}; see pywt.wavelist(kind='discrete')"
        ) from exc
    max_level = pywt.dwt_max_level(min(patch_h, patch_w), dec_len)
    if level > max_level:
        raise ValueError(
            f"level={level} is too deep for {patch_h}x{patch_w} patches with wavelet "
            f"{wavelet!r} (at most {max_level}); use a smaller level or larger patches"
        )


def _entropy_of_patches(
    patches: np.ndarray,
    wavelet: str,
    level: int,
    noise_floor: float,
    mode: str,
    min_energy: float,
) -> np.ndarray:
    """Vectorised core of :func:`dwt_entropy` over leading axes of ``patches (..., h, w)``.

    One ``pywt.wavedec2`` call transforms all patches at once (``axes=(-2, -1)``).
    """
    x = np.asarray(patches, dtype=np.float64)
    lead = x.shape[:-2]
    x = x - x.mean(axis=(-2, -1), keepdims=True)

    coeffs = pywt.wavedec2(x, wavelet, mode=mode, level=level, axes=(-2, -1))
    bands = [coeffs[0]] + [band for level_bands in coeffs[1:] for band in level_bands]
    allc = np.concatenate([band.reshape(*lead, -1) for band in bands], axis=-1)

    energy = allc**2
    total = energy.sum(axis=-1, keepdims=True)
    n_coeffs = allc.shape[-1]
    # p_i = c_i^2 / sum_j c_j^2, with 0 * log 0 = 0 (and 0 / 0 -> p = 0 for zero-energy patches).
    p = np.divide(energy, total, out=np.zeros_like(energy), where=total > 0)
    plogp = p * np.log(np.where(p > 0, p, 1.0))
    entropy = -plogp.sum(axis=-1) / math.log(n_coeffs)

    # Flat patch: zero (or floating-point-residue) variance -> H = 0 exactly.
    variance = (x**2).mean(axis=(-2, -1))
    entropy = np.where(variance > min_energy, entropy, 0.0)

    if noise_floor > 0:
        coeff_energy = energy.mean(axis=-1)  # = variance for an orthonormal transform
        entropy = entropy * coeff_energy / (coeff_energy + noise_floor**2)
    return np.clip(entropy, 0.0, 1.0)


def dwt_entropy(
    patch: Any,
    wavelet: str = EntropyConfig.wavelet,
    level: int = EntropyConfig.level,
    noise_floor: float = EntropyConfig.noise_floor,
    mode: str = "periodization",
    min_energy: float = 1e-20,
) -> float:
    """Context richness of one grayscale patch: gated normalised entropy of its DWT (Sec. III-B2).

    The paper estimates context richness as "the normalized entropy of the DWT coefficients"
    of each coarsest-level patch. Precisely:

    1. ``x = patch - mean(patch)`` (the DC level carries no context);
    2. ``c = wavedec2(x, wavelet, level, mode)``: **all** coefficients, i.e. the level-``L``
       approximation plus every detail subband, flattened into ``N`` numbers;
    3. ``p_i = c_i^2 / sum_j c_j^2`` and ``H = -sum_i p_i log p_i / log N`` in ``[0, 1]``
       (``0 log 0 = 0``). A flat patch (variance ``<= min_energy``) has ``H = 0``.

    **Method decision: energy gate.** Entropy is scale-free, so sensor noise of tiny amplitude on
    a smooth surface would look maximally "rich" (white noise spreads energy evenly over all
    coefficients, ``H ~ 1``). We therefore return ``H * g`` with

        ``g = E / (E + noise_floor^2)``,  ``E = mean_i(c_i^2)`` over **all** ``N`` coefficients.

    With the default orthonormal transform (Haar, ``mode="periodization"``) Parseval gives
    ``E = var(patch)``, so ``noise_floor`` is an intensity std: a patch that is noise of std
    ``sigma << noise_floor`` gets ``g ~ (sigma / noise_floor)^2 ~ 0``, while visible structure
    (std ``>> noise_floor``) is untouched (``g ~ 1``). All coefficients, not only the detail
    subbands, enter ``E`` because structure aligned with the level-``L`` blocks (e.g. 4-pixel
    Haar-aligned stripes at ``level=2``) has *all* its energy in the approximation band and
    would wrongly be gated to zero. ``noise_floor=0`` disables the gate (``g = 1``, the
    paper's plain normalised entropy).

    Args:
        patch: 2-D array ``(h, w)`` of intensities in ``[0, 1]``.
        wavelet: PyWavelets discrete wavelet name.
        level: DWT decomposition depth (``>= 1`` and at most ``pywt.dwt_max_level``).
        noise_floor: Intensity std below which detail is treated as noise (energy gate);
            ``0`` disables the gate.
        mode: PyWavelets signal-extension mode; ``"periodization"`` keeps the transform
            orthonormal with exactly ``h * w`` coefficients.
        min_energy: Patches whose variance (mean squared deviation from the patch mean) is at
            most this are flat (``H = 0``); guards against floating-point residue of the mean
            subtraction, which would otherwise have an arbitrary entropy.

    Returns:
        ``H * g`` in ``[0, 1]``: 0 for flat patches, low for smooth gradients and sub-noise-floor
        noise, high for fine texture.

    Raises:
        ValueError: If ``patch`` is not 2-D or an argument is out of range.
    """
    arr = np.asarray(patch, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"dwt_entropy expects a 2-D (h, w) patch, got shape {arr.shape}")
    _check_entropy_args(arr.shape[0], arr.shape[1], wavelet, level, noise_floor, min_energy)
    return float(_entropy_of_patches(arr, wavelet, level, noise_floor, mode, min_energy))


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _patch_size(h: int, w: int, grid: int, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """Side lengths of the ``grid x grid`` patches of an ``H x W`` image (validated).

    ``input_shape`` is the caller's original image shape, named in error messages.
    """
    if not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    if h % grid or w % grid:
        raise ValueError(
            f"image of shape {tuple(input_shape)} (H={h}, W={w}) cannot be split into a "
            f"{grid}x{grid} grid of equal patches: H and W must be divisible by grid={grid}"
        )
    return h // grid, w // grid


def _split_patches(gray: np.ndarray, grid: int) -> np.ndarray:
    """``(N, H, W)`` -> ``(N, grid, grid, H // grid, W // grid)`` non-overlapping patches."""
    n, h, w = gray.shape
    ph, pw = h // grid, w // grid
    return gray.reshape(n, grid, ph, grid, pw).transpose(0, 1, 3, 2, 4)


def batch_patch_entropies(
    images: Any,
    grid: int,
    wavelet: str = EntropyConfig.wavelet,
    level: int = EntropyConfig.level,
    noise_floor: float = EntropyConfig.noise_floor,
    mode: str = "periodization",
    min_energy: float = 1e-20,
    chunk_size: int = 16,
    input_shape: tuple[int, ...] | None = None,
) -> np.ndarray:
    """Per-patch context richness for a batch of images (Sec. III-B2), vectorised.

    Args:
        images: ``(N, C, H, W)`` or grayscale ``(N, H, W)`` intensities in ``[0, 1]`` (NumPy
            array or tensor). Colour is reduced to gray by the channel mean.
        grid: Number of coarse patches per side (the coarsest routing grid ``G``).
        wavelet: See :func:`dwt_entropy`.
        level: See :func:`dwt_entropy`.
        noise_floor: See :func:`dwt_entropy`.
        mode: See :func:`dwt_entropy`.
        min_energy: See :func:`dwt_entropy`.
        chunk_size: Images transformed per ``wavedec2`` call (bounds the float64 working
            memory for large datasets; does not change the result).
        input_shape: Shape to name in error messages (default: ``images.shape``); used by
            :func:`patch_entropies`.

    Returns:
        ``(N, grid, grid)`` float64 array; entry ``[n, i, j]`` is :func:`dwt_entropy` of the
        patch in row ``i``, column ``j`` of image ``n``.

    Raises:
        ValueError: On a bad shape, a size not divisible by ``grid``, or a bad argument.
    """
    arr = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"batch_patch_entropies expects (N, C, H, W) or (N, H, W) images, got shape {arr.shape}"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    ph, pw = _patch_size(*arr.shape[-2:], grid, input_shape if input_shape is not None else arr.shape)
    _check_entropy_args(ph, pw, wavelet, level, noise_floor, min_energy)
    out = np.zeros((arr.shape[0], grid, grid), dtype=np.float64)
    for start in range(0, arr.shape[0], chunk_size):
        chunk = arr[start : start + chunk_size].astype(np.float64)
        gray = chunk.mean(axis=1) if chunk.ndim == 4 else chunk
        out[start : start + chunk_size] = _entropy_of_patches(
            _split_patches(gray, grid), wavelet, level, noise_floor, mode, min_energy
        )
    return out


def patch_entropies(image: Any, grid: int, **kwargs) -> np.ndarray:
    """Per-patch context richness ``H`` of one image on the coarse ``grid x grid`` (Sec. III-B2).

    Args:
        image: ``(C, H, W)`` or ``(H, W)`` intensities in ``[0, 1]`` (NumPy array or tensor);
            colour is reduced to gray by the channel mean.
        grid: Number of non-overlapping coarse patches per side; ``H`` and ``W`` must be
            divisible by it.
        **kwargs: ``wavelet``, ``level``, ``noise_floor``, ``mode``, ``min_energy`` of
            :func:`dwt_entropy`.

    Returns:
        ``(grid, grid)`` float64 array of :func:`dwt_entropy` values.

    Raises:
        ValueError: On a bad shape, a size not divisible by ``grid``, or a bad argument.
    """
    arr = _to_numpy(image)
    if arr.ndim == 3:
        gray = arr.mean(axis=0)
    elif arr.ndim == 2:
        gray = arr
    else:
        raise ValueError(f"patch_entropies expects a (C, H, W) or (H, W) image, got shape {arr.shape}")
    return batch_patch_entropies(gray[None], grid, input_shape=arr.shape, **kwargs)[0]


def estimate_noise_std(images: Any, wavelet: str = EntropyConfig.wavelet) -> float:
    """Noise std of a set of images, robustly: ``median(|HH_1|) / 0.6745`` over the finest
    diagonal detail band of every image (Donoho & Johnstone's estimator; structure is sparse
    there, so the median sees the noise). ``images``: ``(N, C, H, W)`` or ``(N, H, W)`` in
    ``[0, 1]``, colour reduced to gray by the channel mean, as for the entropy."""
    arr = np.asarray(images.detach().cpu() if isinstance(images, torch.Tensor) else images, dtype=np.float64)
    if arr.ndim == 4:
        arr = arr.mean(axis=1)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ValueError(f"estimate_noise_std expects a non-empty (N, C, H, W) or (N, H, W) array, got {arr.shape}")
    _, (_, _, hh) = pywt.dwt2(arr, wavelet, mode="periodization", axes=(-2, -1))
    return float(np.median(np.abs(hh)) / 0.6745)
