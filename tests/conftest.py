"""Shared fixtures: a tiny trained-model folder laid out like the pipeline's ``reports/``.

Built directly in Python (no ``dvc repro``) in about a second: ``prepared.prepare`` on a
2-class synthetic set at 32 px, an untrained tiny PVQAE saved the way ``train_autoencoder``
saves it, and a per-class Budget Prior Transformer trained for a few steps by ``train_prior``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_CLASSES = ("printed", "texture")  # sorted, as the manifest lists them


def textures(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) defect-free "normal" images: two sinusoids with random phases."""
    import math

    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(n):
        ph = torch.rand(2, generator=g) * 2 * math.pi
        out.append((0.5 + 0.25 * torch.sin(xx / 3.0 + ph[0]) + 0.2 * torch.sin(yy / 5.0 + ph[1])).expand(3, -1, -1))
    return torch.stack(out).clamp(0, 1)


@pytest.fixture(scope="session")
def lite0():
    """The ImageNet EfficientNet-Lite0 from its installed weights package (frozen)."""
    from pvqae.backbones import load_backbone

    return load_backbone("efficientnet-lite0")[0]


@pytest.fixture
def resume_in_tmp(monkeypatch, tmp_path):
    """Training loops' resume checkpoints under tmp_path."""
    import pvqae.resumable as resumable

    monkeypatch.setattr(resumable, "RESUME_ROOT", tmp_path / "resume")


@pytest.fixture
def isolated_training(monkeypatch, tmp_path):
    """A training test's setting: one torch thread (deterministic, fast on busy cores) and
    resume checkpoints under tmp_path."""
    import pvqae.resumable as resumable

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(resumable, "RESUME_ROOT", tmp_path / "resume")
    yield
    torch.set_num_threads(before)


def tiny_data_params() -> dict:
    """The ``data`` section of params.yaml for a tiny synthetic set (2 classes, 32 px)."""
    return {
        "dataset": "synthetic", "source": "pvqae/data/synthetic.py", "classes": None, "train_list": None,
        "image_size": 32, "channels": 3, "patch_size": 4, "val_fraction": 0.0,
        "entropy": {"wavelet": "haar", "level": 2, "noise_floor": 0.05},
        "synthetic": {"classes": list(TINY_CLASSES), "defects": ["scratch"], "n_train": 3, "n_test_good": 2,
                      "n_test_defect": 2},
    }


def build_tiny_reports(root: Path, prior_mode: str = "per-class") -> Path:
    """Write ``root/prepared`` (arrays.npz, manifest.json, synthetic/) and ``root/models``
    (``budget/pvqae.pt``, ``prior/prior.pt``) in the pipeline's formats; return ``root``."""
    from pvqae.checkpoint import save_checkpoint
    from pvqae.data import prepared
    from pvqae.model import PVQAE, ModelConfig, routed_levels
    from pvqae.prior import PriorConfig
    from pvqae.train import train_prior

    root = Path(root)
    prepared.prepare(tiny_data_params(), root / "prepared", seed=0, progress=False)
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=32, ch=8, ch_mult=(1, 1, 2), embed_dim=8, num_codes=16, router_hidden=16, groups=8)
    model = PVQAE(cfg).eval()
    save_checkpoint(root / "models" / "budget" / "pvqae.pt",
                    {"model": model.state_dict(), "config": cfg.to_dict(), "train": {}, "steps": 0, "seed": 0})
    train = prepared.load_prepared(root / "prepared", "train")
    levels = routed_levels(model, train["image"])
    train_prior(levels, train["class_index"], len(train["classes"]),
                PriorConfig(mode=prior_mode, steps=4, batch_size=4, dim=16, heads=2),
                root / "models" / "prior" / "prior.pt", seed=0, progress=False)
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny models on one torch thread (and its kernels, via OMP_NUM_THREADS):
    with the cores busy, several threads on 32 px images are ten times slower, not faster."""
    import os

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="session")
def tiny_reports(tmp_path_factory) -> Path:
    """A ``reports``-like folder with ``prepared/`` and ``models/`` of a tiny per-class model."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_tiny_reports(tmp_path_factory.mktemp("tiny") / "reports")
    finally:
        torch.set_num_threads(before)


def interrupt_at(monkeypatch, step: int, train, *args, **kwargs) -> None:
    """Run ``train(*args, **kwargs)`` with the batch stream raising KeyboardInterrupt at
    ``step`` (a simulated kill); asserts that it was interrupted."""
    from pvqae.batches import BatchStream

    original = BatchStream.batch

    def interrupting(self, s):
        if s == step:
            raise KeyboardInterrupt
        return original(self, s)

    with monkeypatch.context() as m:
        m.setattr(BatchStream, "batch", interrupting)
        with pytest.raises(KeyboardInterrupt):
            train(*args, **kwargs)


def pytest_collection_modifyitems(config, items):
    """The end-to-end files (``pytest.mark.slow``) first: under ``scripts/test.sh``'s two xdist
    workers (``--dist loadfile``, one file per worker at a time) the longest file then starts at
    once and the unit tests fill the other worker, instead of it starting last."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable: file order kept otherwise
