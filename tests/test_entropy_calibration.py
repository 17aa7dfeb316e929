"""The calibrated entropy gate (issue 13, cause 1): a noise floor from the data's own noise
level means the same on any dataset, where a fixed floor follows contrast."""

from __future__ import annotations

import numpy as np
import pytest

from pvqae.data import prepared
from pvqae.entropy import EntropyConfig, batch_patch_entropies, estimate_noise_std
from pvqae.strict_config import ConfigError


def _texture(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Zero-mean structure: a few sinusoid stripes with random phases per image, (N, H, W)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        ph = rng.uniform(0, 2 * np.pi, 3)
        out.append(np.sin(xx / 2.5 + ph[0]) * (yy > size // 2) + 0.5 * np.sin((xx + yy) / 4.0 + ph[1]))
    return np.stack(out)


def _entropies(images: np.ndarray, cfg: EntropyConfig) -> np.ndarray:
    floor, _ = cfg.calibrated(images)
    return batch_patch_entropies(images, 8, wavelet=cfg.wavelet, level=cfg.level, noise_floor=floor)


def test_noise_std_estimate_is_robust_to_structure():
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 0.02, (16, 64, 64))
    assert estimate_noise_std(0.5 + noise) == pytest.approx(0.02, rel=0.05)
    # smooth structure on top barely moves it: the finest diagonal band is mostly noise
    smooth = 0.1 * np.sin(np.mgrid[0:64, 0:64][1] / 9.0)
    assert estimate_noise_std(0.5 + smooth + noise) == pytest.approx(0.02, rel=0.1)
    assert estimate_noise_std(np.repeat((0.5 + noise)[:, None], 3, 1)) == pytest.approx(0.02, rel=0.05)
    with pytest.raises(ValueError, match="non-empty"):
        estimate_noise_std(np.zeros((0, 8, 8)))


def test_same_normalised_entropy_on_two_datasets_of_different_noise():
    """Dataset B is dataset A with 4x the contrast and 4x the noise (another sensor gain). A
    calibrated floor gives both the same entropy distribution; the fixed floor does not."""
    rng = np.random.default_rng(0)
    a = 0.5 + 0.03 * _texture(12) + rng.normal(0, 0.005, (12, 64, 64))
    b = 0.5 + 4 * (a - 0.5)
    assert estimate_noise_std(b) == pytest.approx(4 * estimate_noise_std(a), rel=1e-9)
    cal = EntropyConfig(noise_scale=1.0)
    ea, eb = _entropies(a, cal), _entropies(b, cal)
    np.testing.assert_allclose(np.sort(ea.ravel()), np.sort(eb.ravel()), atol=1e-9)
    fixed = EntropyConfig()  # noise_floor 0.05: follows contrast
    fa, fb = _entropies(a, fixed), _entropies(b, fixed)
    assert np.median(fb) - np.median(fa) > 0.2
    # pure sensor noise of two amplitudes: the same gate when calibrated
    na, nb = 0.5 + rng.normal(0, 0.004, (8, 64, 64)), 0.5 + rng.normal(0, 0.03, (8, 64, 64))
    assert abs(np.median(_entropies(na, cal)) - np.median(_entropies(nb, cal))) < 0.02
    assert np.median(_entropies(nb, fixed)) - np.median(_entropies(na, fixed)) > 0.2


def test_prepare_calibrates_on_training_normals_and_records_it(tmp_path):
    from conftest import tiny_data_params

    data = tiny_data_params()
    data["entropy"] = {**data["entropy"], "noise_scale": 2.0}
    m = prepared.prepare(data, tmp_path / "p", seed=0, progress=False)
    info = m["entropy"]
    assert info["calibrated"] and info["noise_floor"] == pytest.approx(2.0 * info["noise_std"])
    arr = np.load(tmp_path / "p" / "arrays.npz")
    train = arr["images"][arr["split"] == 0].astype(np.float32) / 255.0
    assert info["noise_std"] == pytest.approx(estimate_noise_std(train))
    want = batch_patch_entropies(arr["images"].astype(np.float32) / 255.0, 8, noise_floor=info["noise_floor"])
    np.testing.assert_allclose(arr["entropy"], want, rtol=1e-6)
    fixed = prepared.prepare(tiny_data_params(), tmp_path / "q", seed=0, progress=False)["entropy"]
    assert fixed == {"noise_floor": 0.05, "calibrated": False}
    with pytest.raises(ConfigError, match="noise_scale must be > 0"):
        EntropyConfig(noise_scale=0.0)
