"""Decoding images and masks into arrays, and checking a whole dataset before training.

- :func:`load_image`: ``(C, S, S)`` float32 in [0, 1]; grey images are replicated to 3
  channels; RGBA / P / LA / CMYK / 1 / I;16 / I / F modes are handled.
- :func:`load_mask`: ``(S, S)`` bool; masks must be binary ({0,255} or {0,1}) unless the
  source ships grey-level masks (``threshold``), and must have the image's size.
- :func:`validate_samples`: decode every image and mask once and raise ONE DataError listing
  every problem, so nothing is silently skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pvqae.data.readers import raise_problems
from pvqae.data.records import Sample
from pvqae.errors import DataError

RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
_READ_ERRORS = (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError,
                Image.DecompressionBombError)


def _fix() -> str:
    return "remove or replace this file"


def open_image(path: str | Path, *, load: bool = True) -> Image.Image:
    """Open (and by default fully decode) an image; any failure is a DataError naming it."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image file {path} does not exist; re-run the reader or restore it")
    im = None
    try:
        im = Image.open(path)
        if load:
            im.load()  # a truncated file is an error (unless PIL's LOAD_TRUNCATED_IMAGES)
        else:
            im.close()  # header only: size and mode stay readable
    except _READ_ERRORS as e:
        if im is not None:
            im.close()
        raise DataError(f"cannot read image {path} ({type(e).__name__}: {e}); {_fix()}") from e
    if im.width < 1 or im.height < 1:
        raise DataError(f"image {path} is empty ({im.width}x{im.height}); {_fix()}")
    return im


# EXIF orientations that swap width and height (90 / 270 degrees, with or without a flip)
_TRANSPOSING = {5, 6, 7, 8}


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except (OSError, ValueError, TypeError, SyntaxError):  # an unreadable EXIF block: as stored
        return 1


def _displayed_hw(im: Image.Image) -> tuple[int, int]:
    """(height, width) of an image as displayed (EXIF orientation applied)."""
    return (im.width, im.height) if _orientation(im) in _TRANSPOSING else (im.height, im.width)


def _displayed(im: Image.Image) -> Image.Image:
    """A decoded image turned as it is displayed: a camera JPEG stored sideways is rotated."""
    return ImageOps.exif_transpose(im) if _orientation(im) != 1 else im


def image_size_hw(path: str | Path) -> tuple[int, int]:
    """(height, width) as displayed (EXIF orientation applied), from the file header only."""
    return _displayed_hw(open_image(path, load=False))


def _to_float(im: Image.Image) -> np.ndarray:
    """PIL image -> (H, W, C) float32 in [0, 1], C in {1, 3}."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(im, dtype=np.float32) / 65535.0
        return a[..., None]
    if mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float32)
        hi = float(a.max()) if a.size else 0.0
        scale = 1.0 if (mode == "F" and hi <= 1.0) else (255.0 if hi <= 255 else 65535.0)
        return np.clip(a / scale, 0.0, 1.0)[..., None]
    if mode in ("1", "L", "LA", "La"):
        im = im.convert("L")
    elif mode != "RGB":  # RGBA, RGBa, P, PA, CMYK, YCbCr, LAB, HSV...
        im = im.convert("RGBA").convert("RGB") if mode in ("P", "PA") else im.convert("RGB")
    a = np.asarray(im, dtype=np.float32) / 255.0
    return a[..., None] if a.ndim == 2 else a


def _resize_float(a: np.ndarray, size: int, resample) -> np.ndarray:
    """Resize (H, W, C) float32 with PIL's mode-F resampler, channel by channel."""
    if a.shape[0] == size and a.shape[1] == size:
        return a
    chans = []
    for c in range(a.shape[2]):
        ch = Image.fromarray(np.ascontiguousarray(a[..., c], dtype=np.float32))
        chans.append(np.asarray(ch.resize((size, size), resample)))
    return np.clip(np.stack(chans, axis=-1), 0.0, 1.0)


def _check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise DataError(f"image size must be a positive int, got {size!r}; fix "
                        f"data.image_size in params.yaml")
    return int(size)


def decode_image(im: Image.Image, size: int, channels: int = 3,
                 resample: str = "bicubic") -> np.ndarray:
    """PIL image -> ``(channels, size, size)`` float32 in [0, 1]."""
    size = _check_size(size)
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}; fix data.channels")
    rs = RESAMPLE[resample]
    if im.mode in ("RGB", "L"):  # fast path: uint8 resize in PIL
        small = im.resize((size, size), rs) if im.size != (size, size) else im
        a = np.asarray(small, dtype=np.float32) / 255.0
        a = a[..., None] if a.ndim == 2 else a
    else:
        a = _resize_float(_to_float(im), size, rs)
    if a.shape[2] == 1 and channels == 3:
        a = np.repeat(a, 3, axis=2)
    elif a.shape[2] == 3 and channels == 1:
        a = (a @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    return np.ascontiguousarray(a.transpose(2, 0, 1), dtype=np.float32)


def load_image(path: str | Path, size: int, channels: int = 3,
               resample: str = "bicubic") -> np.ndarray:
    """Read an image as ``(channels, size, size)`` float32 in [0, 1].

    Grey images are replicated to 3 channels (``channels=1`` turns colour into luma).
    A corrupt or unreadable file raises DataError naming the file.
    """
    path = Path(path)
    im = open_image(path)
    try:
        return decode_image(_displayed(im), size, channels, resample)
    except DataError:
        raise
    except _READ_ERRORS as e:
        raise DataError(f"cannot decode image {path} ({type(e).__name__}: {e}); "
                        f"{_fix()}") from e


def mask_to_bool(a: np.ndarray, path: str | Path, threshold: int | None = None) -> np.ndarray:
    """Binary mask array from raw values; non-binary values are a DataError unless
    ``threshold`` is given (then ``value >= threshold`` on the 0..255 scale)."""
    values = np.unique(a)
    if values.size <= 2 and (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        return a > 0
    if threshold is not None:
        return a >= threshold
    shown = values.tolist()
    shown = shown if len(shown) <= 12 else shown[:6] + ["..."] + shown[-5:]
    raise DataError(
        f"mask {path} is not binary: it holds {values.size} distinct values {shown}; masks "
        f"must hold only 0 and 255 (or 0 and 1). Fix the mask file (e.g. threshold it at "
        f"128), or, for a source whose masks are grey-level by design, read it with "
        f"mask_threshold=128")


def _mask_array(im: Image.Image, path: Path) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(im)
        hi = float(a.max()) if a.size else 0.0
        if hi > 255:  # 16-bit: rescale to 0..255 so 65535 counts as 255
            a = np.round(a.astype(np.float64) * 255.0 / 65535.0)
        return a.astype(np.int64)
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    if im.mode == "P":
        im = im.convert("RGB")
    if im.mode not in ("L",):
        if im.mode in ("LA", "La"):
            im = im.convert("L")
        else:
            rgb = np.asarray(im.convert("RGB"))
            return rgb.max(axis=2)
    return np.asarray(im)


def load_mask(path: str | Path, size: int, image_size_hw: tuple[int, int] | None = None, *,
              threshold: int | None = None, image_path: str | Path | None = None) -> np.ndarray:
    """Read a mask as ``(size, size)`` bool: resized by area (each target pixel the fraction
    of its source footprint that is defect), then thresholded at 0.5. Unlike nearest
    neighbour, this keeps a thin structure connected when it covers at least half of the
    target pixels it crosses, instead of keeping whichever source pixels the sampling grid hits.

    The file must be binary ({0,255} or {0,1}); grey masks raise DataError naming the file
    and its distinct values unless ``threshold`` is given. If ``image_size_hw`` (the image's
    original (H, W)) is given and differs from the mask's, raise DataError.
    """
    size = _check_size(size)
    path = Path(path)
    im = open_image(path)
    if image_size_hw is not None and (im.height, im.width) != tuple(image_size_hw):
        h, w = image_size_hw
        raise DataError(f"mask {path} is {im.width}x{im.height} but image "
                        f"{image_path if image_path is not None else '(its image)'} is {w}x{h}; "
                        f"fix or replace the mask")
    try:
        m = mask_to_bool(_mask_array(im, path), path, threshold)
    except DataError:
        raise
    except _READ_ERRORS as e:
        raise DataError(f"cannot decode mask {path} ({type(e).__name__}: {e}); "
                        f"{_fix()}") from e
    if m.shape != (size, size):
        m = resize_mask(m, size)
    return m


def resize_mask(m: np.ndarray, size: int) -> np.ndarray:
    """(H, W) bool -> (size, size) bool: area (box-filter) resize of the 0/1 mask, then >= 0.5."""
    frac = Image.fromarray(m.astype(np.float32), mode="F").resize((size, size), Image.Resampling.BOX)
    return np.asarray(frac) >= 0.5


def load_sample(sample: Sample, size: int, channels: int = 3,
                resample: str = "bicubic") -> tuple[np.ndarray, np.ndarray]:
    """(image ``(C,S,S)`` float32, mask ``(S,S)`` bool) of one sample; the mask is all False
    for a sample without mask file, and is checked to match the image's size."""
    im = open_image(sample.path)
    try:
        img = decode_image(_displayed(im), size, channels, resample)
    except DataError:
        raise
    except _READ_ERRORS as e:
        raise DataError(f"cannot decode image {sample.path} ({type(e).__name__}: {e}); "
                        f"{_fix()}") from e
    if sample.mask_path is None:
        mask = np.zeros((size, size), dtype=bool)
    else:
        mask = load_mask(sample.mask_path, size, _displayed_hw(im),
                         threshold=sample.mask_threshold, image_path=sample.path)
    return img, mask


def check_sample(sample: Sample, decode: bool = True) -> None:
    """Check one sample; raise DataError naming the file on the first problem.

    Opens the image and mask (headers always; the full data when ``decode``, which also
    catches truncated files and non-binary masks) and checks that the sizes agree and that a
    normal image's mask is empty.
    """
    im = open_image(sample.path, load=decode)
    if sample.mask_path is None:
        if sample.label == 1:
            raise DataError(f"defective image {sample.path} has no mask; add one")
        return
    mk = open_image(sample.mask_path, load=decode)
    h, w = _displayed_hw(im)
    if (mk.height, mk.width) != (h, w):
        raise DataError(f"mask {sample.mask_path} is {mk.width}x{mk.height} but image "
                        f"{sample.path} is {w}x{h}; fix or replace the mask")
    if decode:
        m = mask_to_bool(_mask_array(mk, Path(sample.mask_path)), sample.mask_path,
                         sample.mask_threshold)
        if sample.label == 0 and m.any():
            raise DataError(f"normal image {sample.path} has a non-empty mask "
                            f"{sample.mask_path} ({int(m.sum())} pixels); move the image to its "
                            f"defect folder or clear the mask")


def validate_samples(samples: Sequence[Sample], progress: bool = True,
                     decode: bool = True) -> int:
    """Check every sample (see :func:`check_sample`); collect ALL problems and raise one
    DataError listing them. Returns the number of samples checked."""
    from tqdm.auto import tqdm

    if len(samples) == 0:
        raise DataError("no samples to validate; check data.source and data.classes in "
                        "params.yaml")
    problems = []
    for s in tqdm(samples, desc="checking images", unit="img", disable=not progress,
                  leave=False):
        try:
            check_sample(s, decode=decode)
        except DataError as e:
            problems.append(str(e))
    raise_problems(problems, f"{len(samples)} images")
    return len(samples)
