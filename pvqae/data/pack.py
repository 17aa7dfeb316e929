"""One compact, lossless file for a prepared dataset, to carry it to another machine.

A GPU machine without the raw dataset (or without room for it) gets the prepare stage's
output as a single file: every image PNG-encoded (lossless, a third of MTSD's raw size at
256 px), masks bit-packed, every other array and the manifest as they are. :func:`unpack`
writes back ``arrays.npz`` and ``manifest.json`` equal to the originals, so
:func:`pvqae.data.prepared.load_prepared` reads them unchanged.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from pvqae.errors import DataError

IMAGE_KEYS = ("images", "val_defect_images")  # uint8 (N, C, S, S)
MASK_KEYS = ("masks", "val_defect_masks")  # bool (N, S, S)
FORMAT = "pvqae-prepared-pack/1"


def _encode_images(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, C, S, S) uint8 -> one byte blob of PNGs and the N + 1 offsets into it."""
    blobs = []
    for img in images:
        arr = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)  # grey or RGB
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG", compress_level=9)
        blobs.append(np.frombuffer(buf.getvalue(), np.uint8))
    offsets = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
    return (np.concatenate(blobs) if blobs else np.zeros(0, np.uint8)), offsets


def _decode_images(blob: np.ndarray, offsets: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    for i in range(shape[0]):
        arr = np.asarray(Image.open(io.BytesIO(blob[offsets[i]:offsets[i + 1]].tobytes())))
        out[i] = arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0)
    return out


def pack(prepared_dir: Path, out_file: Path) -> dict:
    """Write ``out_file`` (.npz) from a prepared folder; returns sizes in bytes (raw arrays,
    packed file)."""
    prepared_dir, out_file = Path(prepared_dir), Path(out_file)
    for name in ("arrays.npz", "manifest.json"):
        if not (prepared_dir / name).exists():
            raise DataError(f"{prepared_dir / name} is missing: run the prepare stage first "
                            f"(`python -m pvqae run prepare` or `dvc repro prepare`)")
    arr = np.load(prepared_dir / "arrays.npz")
    payload: dict[str, np.ndarray] = {"format": np.array(FORMAT),
                                      "manifest": np.array((prepared_dir / "manifest.json").read_text())}
    raw = 0
    for key in arr.files:
        a = arr[key]
        raw += a.nbytes
        if key in IMAGE_KEYS:
            payload[f"{key}__png"], payload[f"{key}__offsets"] = _encode_images(a)
            payload[f"{key}__shape"] = np.array(a.shape, np.int64)
        elif key in MASK_KEYS:
            payload[f"{key}__bits"] = np.packbits(a.reshape(-1))
            payload[f"{key}__shape"] = np.array(a.shape, np.int64)
        else:
            payload[key] = a
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **payload)  # the bit-packed masks are mostly zeros
    tmp.replace(out_file)
    return {"raw_bytes": int(raw), "packed_bytes": out_file.stat().st_size}


def unpack(pack_file: Path, prepared_dir: Path) -> Path:
    """Write ``arrays.npz`` and ``manifest.json`` of ``pack_file`` under ``prepared_dir``."""
    pack_file, prepared_dir = Path(pack_file), Path(prepared_dir)
    if not pack_file.exists():
        raise DataError(f"packed dataset {pack_file} does not exist: make it with "
                        f"`python -m pvqae.benchmark.budgeted pack --prepared reports/prepared --out {pack_file}`")
    try:
        src = np.load(pack_file)
        fmt = str(src["format"])
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
        raise DataError(f"{pack_file} is not a readable packed dataset ({e}); make it again") from e
    if fmt != FORMAT:
        raise DataError(f"{pack_file} has format {fmt!r}, this code reads {FORMAT!r}; make it again")
    arrays = {}
    for key in src.files:
        if key in ("format", "manifest") or key.endswith(("__offsets", "__shape")):
            continue
        if key.endswith("__png"):
            name = key[:-len("__png")]
            arrays[name] = _decode_images(src[key], src[f"{name}__offsets"], tuple(src[f"{name}__shape"]))
        elif key.endswith("__bits"):
            name = key[:-len("__bits")]
            shape = tuple(src[f"{name}__shape"])
            arrays[name] = np.unpackbits(src[key], count=int(np.prod(shape))).astype(bool).reshape(shape)
        else:
            arrays[key] = src[key]
    prepared_dir.mkdir(parents=True, exist_ok=True)
    np.savez(prepared_dir / "arrays.npz", **arrays)
    manifest = str(src["manifest"])
    json.loads(manifest)  # a truncated manifest fails here, not in a later stage
    (prepared_dir / "manifest.json").write_text(manifest)
    return prepared_dir
