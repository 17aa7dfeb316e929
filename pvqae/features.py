"""PVQAE-F's input: the feature map of a frozen ImageNet backbone (an extension of the paper).

With ``input.kind: features`` the PVQAE of the paper (multi-resolution codes, Dynamic Routing
Module, DWT-entropy budget loss, Budget Prior Transformer, CE x reconstruction score) runs
unchanged on a frozen backbone's feature map instead of pixels: the endpoints at
``input.strides`` (EfficientNet-Lite0 stride 8 + 16 at 256 px: a 32 x 32 grid), upsampled to
the finest one's grid, concatenated and standardised per channel with the training split's
statistics. The autoencoder's three code grids are that grid and its halvings (32 / 16 / 8 at
256 px: fine / median / coarse, the paper's 8 x 8 coarse grid), its decoder reconstructs the
feature map, and the reconstruction error per feature position is upsampled to pixels
(:func:`pvqae.scoring.score_batch`). The budget's DWT entropy is computed on the image patch
each coarse code covers.

The features stage computes all of this once per dataset, image size and backbone and caches
it (a DVC output), so training reads features instead of running the backbone. With
``input.kind: pixels`` (the paper) the stage writes only its manifest and every model reads
the prepared images.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from pvqae.backbones import concat_aligned
from pvqae.entropy import batch_patch_entropies
from pvqae.strict_config import Config, ConfigError

KINDS = ("pixels", "features")


@dataclasses.dataclass(frozen=True)
class InputConfig(Config):
    """What the autoencoder reconstructs (params.yaml ``input``)."""

    SECTION = "input"
    kind: str = "pixels"  # pixels (the paper's VQ-GAN) | features (PVQAE-F, an extension)
    backbone: str = "efficientnet-lite0"  # frozen ImageNet backbone of the features
    weights: str | None = None  # a .pth; None = the backbone's weights package
    strides: tuple[int, ...] = (8, 16)  # endpoints, aligned to the first one's grid
    ch: int = 32  # the feature autoencoder's base width (model.ch is the pixel model's)
    ch_mult: tuple[int, ...] = (1, 2, 2)  # three levels: fine grid = feature grid
    embed_dim: int = 64
    num_codes: int = 256
    batch_size: int = 16  # images per backbone pass when caching

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ConfigError(f"input.kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not self.strides:
            raise ConfigError("input.strides: name at least one backbone endpoint, e.g. [8, 16]")


def coarse_grid(grid: int, ch_mult: tuple[int, ...]) -> int:
    """The coarse code grid of a feature autoencoder on a ``grid x grid`` feature map."""
    from pvqae.autoencoder import Encoder

    return Encoder.grid_sizes(grid, len(ch_mult))[0]


@torch.no_grad()
def extract(backbone, images: np.ndarray, strides: tuple[int, ...], batch_size: int = 16,
            progress: bool = True, desc: str = "features") -> np.ndarray:
    """Aligned, concatenated endpoint maps (N, C, g, g) float16 of uint8 images (N, ch, S, S)."""
    out = []
    for i in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, mininterval=5):
        x = torch.from_numpy(images[i:i + batch_size].astype(np.float32) / 255.0)
        out.append(concat_aligned(backbone.features(x, strides), strides).to(torch.float16).numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.float16)


def build_cache(cfg: InputConfig, entropy, prepared_dir: Path, out_dir: Path, progress: bool = True) -> dict:
    """The features stage: ``features.npy`` (features of every prepared image, float16, read
    per split through a memory map), ``features.npz`` (the validation split's defective
    images' features; DWT entropies at the coarse code grid;
    the training split's per-channel mean / std) and ``manifest.json`` under ``out_dir``.
    For ``kind: pixels`` only the manifest. ``entropy`` is the ``data.entropy`` config."""
    from pvqae.backbones import load_backbone

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"kind": cfg.kind}
    if cfg.kind == "features":
        arr = np.load(Path(prepared_dir) / "arrays.npz")
        backbone, status = load_backbone(cfg.backbone, cfg.weights)
        if backbone is None:
            raise ConfigError(f"input.kind: features needs the backbone {cfg.backbone}'s weights: {status}")
        feats = extract(backbone, arr["images"], cfg.strides, cfg.batch_size, progress)
        val_feats = (extract(backbone, arr["val_defect_images"], cfg.strides, cfg.batch_size, progress,
                             desc="features (validation defects)") if len(arr["val_defect_images"])
                     else np.zeros((0, *feats.shape[1:]), np.float16))
        train = feats[arr["split"] == 0].astype(np.float64)
        mean, std = train.mean((0, 2, 3)), train.std((0, 2, 3))
        grid = feats.shape[-1]
        coarse = coarse_grid(grid, cfg.ch_mult)
        if arr["entropy"].shape[-1] == coarse:  # the prepare stage cached it on this grid already
            ent, val_ent = arr["entropy"], arr["val_defect_entropy"]
        else:
            with open(Path(prepared_dir) / "manifest.json") as f:  # prepare's floor (calibrated or fixed)
                floor = json.load(f).get("entropy", {}).get("noise_floor", entropy.noise_floor)
            kw = {"wavelet": entropy.wavelet, "level": entropy.level, "noise_floor": floor}
            ent = batch_patch_entropies(arr["images"].astype(np.float32) / 255.0, coarse, **kw)
            val_ent = batch_patch_entropies(arr["val_defect_images"].astype(np.float32) / 255.0, coarse, **kw)
        # the big array on its own, so that a split reads its rows through a memory map
        np.save(out_dir / "features.npy", feats)
        np.savez(out_dir / "features.npz", val_defect_features=val_feats,
                 entropy=ent.astype(np.float32), val_defect_entropy=val_ent.astype(np.float32),
                 mean=mean.astype(np.float32), std=np.maximum(std, 1e-6).astype(np.float32))
        manifest.update(backbone=cfg.backbone, backbone_status=status, strides=list(cfg.strides),
                        channels=int(feats.shape[1]), grid=int(grid), coarse_grid=int(coarse),
                        image_size=int(arr["images"].shape[-1]), patch_size=int(arr["images"].shape[-1] // coarse))
    with open(out_dir / "manifest.json", "w") as f:
        json.dump(manifest, f, indent=1)
    return manifest


def read_manifest(features_dir: Path) -> dict:
    path = Path(features_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro features`")
    with open(path) as f:
        return json.load(f)


def as_model_input(split: dict, features_dir: Path, validation: bool = False) -> dict:
    """``split`` (from :func:`pvqae.data.prepared.load_prepared` / ``load_validation``) as the
    autoencoder sees it: unchanged for pixels; for features, ``image`` becomes the
    standardised feature map (N, C, g, g) and ``entropy`` the coarse-grid entropy, the images
    stay under ``pixels`` (for figures), masks and labels at image resolution."""
    manifest = read_manifest(features_dir)
    if manifest["kind"] == "pixels":
        return split
    arr = np.load(Path(features_dir) / "features.npz")
    idx = np.asarray(split["index"])
    every = np.load(Path(features_dir) / "features.npy", mmap_mode="r")  # only this split's rows are read
    feats, ent = np.asarray(every[idx]), arr["entropy"][idx]
    if validation:  # the held-out normals, then their defective copies
        feats = np.concatenate([feats, arr["val_defect_features"]])
        ent = np.concatenate([ent, arr["val_defect_entropy"]])
    mean, std = arr["mean"][None, :, None, None], arr["std"][None, :, None, None]
    out = dict(split)
    out["pixels"] = split["image"]
    out["image"] = torch.from_numpy(((feats.astype(np.float32) - mean) / std).astype(np.float32))
    out["entropy"] = torch.from_numpy(ent)
    out["input"] = manifest
    return out
