"""Property-based tests (Hypothesis) of everything that reads a user's image file.

The readers (``load_image``, ``load_mask``) and the score CLI get random bytes, truncated
files, 16-bit, RGBA, palette, CMYK and 1-bit images, EXIF-rotated JPEGs, 1x1 and 10000x10
images and decompression bombs. Each file either loads correctly (the right shape, values in
[0, 1]) or gives a DataError that names the file; nothing else is ever raised, and the score
CLI writes nothing before such an error.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from pvqae.data.images import load_image, load_mask, resize_mask
from pvqae.errors import DataError
from pvqae.score_cli import score_images

pytestmark = pytest.mark.usefixtures("one_thread")

# (mode, file format) pairs PIL writes; every one must load
KINDS = [("L", "PNG"), ("RGB", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("I;16", "PNG"), ("1", "PNG"),
         ("LA", "PNG"), ("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("RGB", "BMP"),
         ("P", "GIF"), ("F", "TIFF"), ("I", "TIFF")]
SIZES = st.sampled_from([(1, 1), (10000, 10), (10, 10000), (3, 7)]) | st.tuples(st.integers(1, 64), st.integers(1, 64))
# derandomize: the same examples on every run (CI stays deterministic); raise max_examples to search wider
FUZZ = settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


def encode(mode: str, fmt: str, size: tuple[int, int], seed: int) -> bytes:
    """A valid file of ``mode`` in ``fmt`` with random content."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode in ("F", "I"):
        im = Image.fromarray(rng.random((h, w), dtype=np.float32) * (1 if mode == "F" else 4000)).convert(mode)
    elif mode == "P":
        im = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    else:
        im = base.convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def damaged(data: bytes, how: str, cut: float, seed: int) -> bytes:
    if how == "truncated":
        return data[:max(1, int(len(data) * cut))]
    if how == "random":
        return np.random.default_rng(seed).integers(0, 256, max(1, int(4096 * cut)), dtype=np.uint8).tobytes()
    if how == "flipped":  # bytes overwritten after the header
        b = bytearray(data)
        rng = np.random.default_rng(seed)
        for i in rng.integers(min(len(b) - 1, 16), len(b), size=8):
            b[i] = int(rng.integers(0, 256))
        return bytes(b)
    return data


DAMAGE = st.sampled_from(["intact", "intact", "truncated", "random", "flipped"])
FILES = st.tuples(st.sampled_from(KINDS), SIZES, st.integers(0, 2 ** 16), DAMAGE, st.floats(0.01, 0.99))
# the score CLI scans folders for its image extensions (pvqae.data.readers.IMAGE_EXTS: no GIF)
CLI_FILES = st.tuples(st.sampled_from([k for k in KINDS if k[1] != "GIF"]), SIZES, st.integers(0, 2 ** 16), DAMAGE,
                      st.floats(0.01, 0.99))


def _expect_loaded_or_named(fn, path: Path):
    try:
        out = fn(path)
    except DataError as e:
        assert path.name in str(e), str(e)
        return None
    return out


@FUZZ
@given(case=FILES, channels=st.sampled_from([1, 3]))
def test_load_image_loads_or_names_the_file(case, channels):
    (mode, fmt), size, seed, how, cut = case
    data = damaged(encode(mode, fmt, size, seed), how, cut, seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"img_{how}.{fmt.lower()}"
        path.write_bytes(data)
        out = _expect_loaded_or_named(lambda p: load_image(p, 16, channels), path)
        if how == "intact":
            assert out is not None, f"an intact {mode} {fmt} {size} file must load"
        if out is not None:
            assert out.shape == (channels, 16, 16) and out.dtype == np.float32
            assert np.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@FUZZ
@given(size=SIZES, seed=st.integers(0, 2 ** 16), how=st.sampled_from(["intact", "truncated", "random", "flipped"]),
       cut=st.floats(0.01, 0.99), mode=st.sampled_from(["L", "1", "I;16", "RGB", "P"]))
def test_load_mask_loads_or_names_the_file(size, seed, how, cut, mode):
    w, h = size
    m = np.random.default_rng(seed).random((h, w)) < 0.3
    im = Image.fromarray(m.astype(np.uint8) * 255)
    im = {"1": im.convert("1"), "I;16": Image.fromarray(m.astype(np.uint16) * 65535), "RGB": im.convert("RGB"),
          "P": im.convert("P")}.get(mode, im)
    buf = io.BytesIO()
    im.save(buf, "PNG")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m_mask.png"
        path.write_bytes(damaged(buf.getvalue(), how, cut, seed))
        out = _expect_loaded_or_named(lambda p: load_mask(p, 16), path)
        if how == "intact":  # every mode decodes to the same mask, resized by area
            assert out is not None and out.dtype == np.bool_
            assert np.array_equal(out, m if m.shape == (16, 16) else resize_mask(m, 16))


def test_exif_rotated_jpeg_loads_as_displayed(tmp_path):
    """A camera JPEG stored sideways (EXIF orientation 6: rotate 90 degrees clockwise to display)
    loads turned, like any image viewer shows it."""
    a = np.zeros((20, 40), np.uint8)  # stored: 40 wide, 20 high, bright left half
    a[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(a).save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = load_image(tmp_path / "rot.jpg", 40, 1)[0]  # displayed: 20 wide, 40 high, bright top half
    assert out[:15].mean() > 0.9 and out[25:].mean() < 0.1
    from pvqae.data.images import image_size_hw

    assert image_size_hw(tmp_path / "rot.jpg") == (40, 20)


def test_decompression_bomb_is_a_named_error(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # a bomb at > 2000 pixels
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    with pytest.raises(DataError, match=r"bomb\.png.*DecompressionBombError"):
        load_image(tmp_path / "bomb.png", 16)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(cases=st.lists(CLI_FILES, min_size=1, max_size=4))
def test_score_cli_scores_good_files_or_names_every_bad_one_before_writing(tiny_reports, cases):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "texture"  # a class of the tiny model
        folder.mkdir()
        names = []
        for i, ((mode, fmt), size, seed, how, cut) in enumerate(cases):
            name = f"f{i}_{how}.{fmt.lower()}"
            (folder / name).write_bytes(damaged(encode(mode, fmt, size, seed), how, cut, seed))
            names.append(name)
        out = Path(tmp) / "out"
        try:
            rows = score_images(tiny_reports / "models", [folder], out, heatmaps=False, progress=False)
        except DataError as e:
            assert not out.exists(), "nothing is written before the error"
            bad = [n for n in names if n in str(e)]
            assert bad, str(e)
            assert all(not n.startswith(tuple(f"f{i}_intact" for i in range(len(names)))) for n in bad), str(e)
            return
        assert sorted(Path(r["file"]).name for r in rows) == sorted(names)
        assert all(np.isfinite(r["image_score"]) for r in rows)
