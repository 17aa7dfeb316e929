"""Tests of the AE-SSIM baseline (Bergmann et al., VISAPP 2019): architecture, 1 - SSIM
score maps, training, determinism, interrupt-and-resume and checkpoints."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import interrupt_at

import pvqae.resumable as resumable
from pvqae.baselines.ae_ssim import AESSIM, AESSIMConfig, load_ae_ssim, train_ae_ssim
from pvqae.baselines.common import BaselineOutput
from pvqae.batches import BatchStream, flip_augment
from pvqae.errors import TrainingError
from pvqae.losses import ssim_loss

SIZE = 32


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """One thread (deterministic, fast) and resume checkpoints under tmp_path."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(resumable, "RESUME_ROOT", tmp_path / "resume")
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, size: int = SIZE, channels: int = 3, **kw) -> AESSIM:
    base = dict(ch=8, latent_dim=16)
    base.update(kw)
    torch.manual_seed(seed)
    return AESSIM(image_size=size, in_channels=channels, **base)


def _images(n: int = 8, seed: int = 0, size: int = SIZE) -> torch.Tensor:
    """Smooth random images (low-frequency noise upsampled), a learnable 'normal' class."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)


def _stream(images=None, batch_size: int = 4, seed: int = 0, augment=flip_augment) -> BatchStream:
    return BatchStream({"image": images if images is not None else _images()}, batch_size, seed, augment=augment)


def _cfg(**kw) -> AESSIMConfig:
    base = dict(ch=8, latent_dim=16, steps=6, batch_size=4, lr=1e-3, log_every=1, ckpt_every=2)
    base.update(kw)
    return AESSIMConfig(**base)


def _read_log(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------ architecture


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_reconstruction_shape_range_and_latent(size, channels):
    model = _model(size=size, channels=channels, latent_dim=20)
    x = torch.rand(2, channels, size, size)
    recon = model(x)
    assert recon.shape == x.shape
    assert recon.min() >= 0 and recon.max() <= 1
    assert model.encode(x).shape == (2, 20)
    assert model.grid == size // 16
    out = model.score(x)
    assert isinstance(out, BaselineOutput)
    assert out.score_map.shape == (2, size, size) and out.image_score.shape == (2,)


def test_layers_are_the_papers_table_1_at_128_px():
    model = AESSIM(image_size=128, in_channels=1)  # defaults: ch 32, latent 100
    x = torch.zeros(1, 1, 128, 128)
    shapes = []
    for layer in model.encoder:
        x = layer(x)
        if isinstance(layer, torch.nn.Conv2d):
            shapes.append((layer.kernel_size[0], layer.stride[0], tuple(x.shape[1:])))
    assert shapes == [(4, 2, (32, 64, 64)), (4, 2, (32, 32, 32)), (3, 1, (32, 32, 32)), (4, 2, (64, 16, 16)),
                      (3, 1, (64, 16, 16)), (4, 2, (128, 8, 8)), (3, 1, (64, 8, 8)), (3, 1, (32, 8, 8)),
                      (8, 1, (100, 1, 1))]
    convs_t = [m for m in model.decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs_t) == 9 and isinstance(model.decoder[-1], torch.nn.Sigmoid)


@pytest.mark.parametrize("size,channels", [(48, 3), (16, 3), (32, 2)])
def test_rejects_unsupported_sizes_and_channels(size, channels):
    with pytest.raises(ValueError):
        AESSIM(image_size=size, in_channels=channels)


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 3, 32, 32\)"):
        _model()(torch.rand(1, 1, 32, 32))


# ------------------------------------------------------------------ 1 - SSIM score


def test_score_of_a_perfect_reconstruction_is_zero(monkeypatch):
    model = _model()
    monkeypatch.setattr(model, "forward", lambda x: x)
    out = model.score(_images(3))
    assert torch.allclose(out.score_map, torch.zeros(3, SIZE, SIZE), atol=1e-5)
    assert torch.allclose(out.image_score, torch.zeros(3), atol=1e-5)


def test_pasted_square_scores_higher_inside(monkeypatch):
    clean = _images(2, seed=1)
    defect = clean.clone()
    defect[:, :, 12:20, 12:20] = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    model = _model()
    monkeypatch.setattr(model, "forward", lambda x: clean)  # reconstructs the normal image
    out = model.score(defect, batch_size=2)
    inside = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    inside[12:20, 12:20] = True
    far = torch.ones(SIZE, SIZE, dtype=torch.bool)
    far[6:26, 6:26] = False  # beyond the window's reach of the square
    for n in range(2):
        assert out.score_map[n][inside].mean() > 0.3
        assert out.score_map[n][far].abs().max() < 1e-5
        assert out.image_score[n] == out.score_map[n].max()


def test_score_chunks_match_one_batch():
    model = _model().eval()
    x = _images(5, seed=3)
    a, b = model.score(x, batch_size=2), model.score(x, batch_size=8)
    assert torch.allclose(a.score_map, b.score_map, atol=1e-4)  # conv kernels differ with the batch size


# ------------------------------------------------------------------ training


def test_training_lowers_the_ssim_loss(tmp_path):
    images = _images(8, seed=4)
    model = _model()
    with torch.no_grad():
        before = ssim_loss(model(images), images).item()
    summary = train_ae_ssim(model, _stream(images, augment=None), _cfg(steps=40, lr=5e-3, ckpt_every=100,
                                                                      log_every=10),
                            tmp_path / "out", "ae_ssim", seed=0, progress=False)
    with torch.no_grad():
        after = ssim_loss(model(images), images).item()
    assert after < before - 0.03, (before, after)  # measured: 0.748 -> 0.691
    assert not model.training
    rows = _read_log(tmp_path / "out" / "ae_ssim_log.csv")
    assert [int(r["step"]) for r in rows] == [0, 10, 20, 30, 39]
    assert float(rows[-1]["ssim"]) == pytest.approx(1 - float(rows[-1]["loss"]), abs=1e-5)
    assert summary["steps"] == 40 and summary["resumed_from"] == 0 and summary["train_seconds"] > 0
    assert summary["train_images_per_second"] > 0 and summary["processes"] == 1
    assert (tmp_path / "out" / "ae_ssim_summary.json").is_file()


def test_same_seed_gives_identical_weights(tmp_path):
    images = _images()
    cfg = _cfg(steps=4, ckpt_every=100)
    a, b = _model(), _model()
    train_ae_ssim(a, _stream(images, seed=5), cfg, tmp_path / "a", "m", seed=5, progress=False)
    train_ae_ssim(b, _stream(images, seed=5), cfg, tmp_path / "b", "m", seed=5, progress=False)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_interrupted_training_resumes_to_identical_weights(tmp_path, monkeypatch, capsys):
    images = _images()
    cfg = _cfg(steps=6, ckpt_every=2)

    model_a = _model()
    train_ae_ssim(model_a, _stream(images), cfg, tmp_path / "a", "ae_ssim", seed=3, progress=False)
    assert not any((tmp_path / "resume").iterdir()), "resume folder removed after a finished run"

    interrupt_at(monkeypatch, 3, train_ae_ssim, _model(), _stream(images), cfg, tmp_path / "b", "ae_ssim", seed=3,
                 progress=False)
    resume_dirs = list((tmp_path / "resume").iterdir())
    assert len(resume_dirs) == 1 and resume_dirs[0].name.startswith("ae_ssim-")
    assert torch.load(resume_dirs[0] / "last.pt", weights_only=True)["step"] == 2
    assert [int(r["step"]) for r in _read_log(tmp_path / "b" / "ae_ssim_log.csv")] == [0, 1]
    assert not (tmp_path / "b" / "ae_ssim.pt").exists()

    capsys.readouterr()
    model_b = _model(seed=123)  # a different init: everything must come from the checkpoint
    summary = train_ae_ssim(model_b, _stream(images), cfg, tmp_path / "b", "ae_ssim", seed=3, progress=False)
    assert "resuming from step 2" in capsys.readouterr().out
    assert summary["resumed_from"] == 2
    for k, v in model_a.state_dict().items():
        assert torch.allclose(v, model_b.state_dict()[k], rtol=1e-5, atol=1e-7), k
    rows_a = _read_log(tmp_path / "a" / "ae_ssim_log.csv")
    rows_b = _read_log(tmp_path / "b" / "ae_ssim_log.csv")
    assert [int(r["step"]) for r in rows_b] == list(range(6))
    for ra, rb in zip(rows_a, rows_b):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=1e-4)
    assert not list((tmp_path / "resume").iterdir())


def test_nan_loss_raises_training_error(tmp_path):
    images = _images(4)
    images[1, 0, 5, 5] = float("nan")
    stream = _stream(images, batch_size=2, augment=None)
    first = next(s for s in range(10) if torch.isnan(stream.batch(s)["image"]).any())
    with pytest.raises(TrainingError, match=rf"loss term 'ssim loss' is not finite at step {first}\b"):
        train_ae_ssim(_model(), stream, _cfg(steps=first + 2, ckpt_every=100), tmp_path / "out", "m", seed=0,
                      progress=False)
    assert not (tmp_path / "out" / "m.pt").exists()


# ------------------------------------------------------------------ checkpoint and config


def test_save_load_round_trip_gives_identical_scores(tmp_path):
    model = _model(channels=1)
    images = _images(4, seed=6)[:, :1]
    cfg = _cfg(steps=2, ckpt_every=100, ssim_window=7)
    model.ssim_window = cfg.ssim_window
    train_ae_ssim(model, _stream(images, batch_size=2), cfg, tmp_path / "out", "m", seed=1, progress=False)
    path = tmp_path / "out" / "m.pt"
    st = torch.load(path, weights_only=True)
    assert st["steps"] == 2 and st["seed"] == 1 and AESSIMConfig.from_dict(st["train"]) == cfg
    loaded = load_ae_ssim(path)
    assert not loaded.training and loaded.config() == model.config() and loaded.ssim_window == 7
    a, b = model.score(images), loaded.score(images)
    assert torch.equal(a.score_map, b.score_map) and torch.equal(a.image_score, b.image_score)


def test_config_from_dict_and_model_from_config():
    with pytest.raises(ValueError, match=r"baselines\.ae_ssim\.unknown: unknown key"):
        AESSIMConfig.from_dict({"ch": 4, "unknown": 1})
    cfg = AESSIMConfig.from_dict({"ch": 4, "latent_dim": 10, "ssim_window": 5})
    assert cfg == AESSIMConfig(ch=4, latent_dim=10, ssim_window=5)
    assert AESSIMConfig().lr == 2e-4 and AESSIMConfig().weight_decay == 1e-5 and AESSIMConfig().latent_dim == 100
    model = AESSIM.from_config(cfg, image_size=64, in_channels=1)
    assert model.config()["ch"] == 4 and model.latent_dim == 10 and model.ssim_window == 5
    assert model.encode(torch.rand(1, 1, 64, 64)).shape == (1, 10)
