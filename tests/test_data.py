"""Behaviour tests of pvqae.data: readers, decoding, checks, Dataset, synthetic generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pvqae.data import (
    Sample,
    check_sample,
    generate_synthetic,
    load_image,
    load_mask,
    load_sample,
    parse_name_list,
    read_btad,
    read_dataset,
    read_mtsd,
    read_mvtec,
    render_sample,
    summarize,
    validate_samples,
)
from pvqae.data.images import mask_to_bool, resize_mask
from pvqae.data.synthetic import AREA_RANGE, CLASSES, DEFECTS, MASK_THRESHOLD
from pvqae.errors import DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MTSD = SHARED / "MTSD"
BOTTLE = SHARED / "mvtec_ad" / "bottle"

N_TRAIN, N_GOOD, N_DEF = 4, 2, 2


# --------------------------------------------------------------------------- fixtures


def _png(path: Path, arr, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(arr)).save(path, format=fmt)
    return path


def _img(rng, h=40, w=48, grey=False):
    shape = (h, w) if grey else (h, w, 3)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _mask(h=40, w=48, empty=False):
    m = np.zeros((h, w), np.uint8)
    if not empty:
        m[10:20, 12:30] = 255
    return m


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "data"
    summary = generate_synthetic(out, n_train=N_TRAIN, n_test_good=N_GOOD, n_test_defect=N_DEF,
                                 seed=3)
    return out, summary


def _mvtec_fixture(root: Path, rng, cls="widget") -> Path:
    c = root / cls
    for i in range(3):
        _png(c / "train" / "good" / f"{i:03d}.png", _img(rng))
    _png(c / "test" / "good" / "000.png", _img(rng))
    _png(c / "test" / "dent" / "000.png", _img(rng))
    _png(c / "ground_truth" / "dent" / "000_mask.png", _mask())
    return c


# --------------------------------------------------------------------------- synthetic


def test_synthetic_layout_and_summary(synth):
    out, summary = synth
    assert (out / "README.txt").is_file()
    assert "seed: 3" in (out / "README.txt").read_text()
    assert summary["n_images"] == len(CLASSES) * (N_TRAIN + N_GOOD + N_DEF * len(DEFECTS))
    for cls in CLASSES:
        c = out / cls
        assert len(list((c / "train" / "good").glob("*.png"))) == N_TRAIN
        assert len(list((c / "test" / "good").glob("*.png"))) == N_GOOD
        assert not (c / "ground_truth" / "good").exists()
        for d in DEFECTS:
            imgs = sorted((c / "test" / d).glob("*.png"))
            masks = sorted((c / "ground_truth" / d).glob("*_mask.png"))
            assert [p.stem + "_mask" for p in imgs] == [m.stem for m in masks]
            assert len(imgs) == N_DEF
        with Image.open(c / "train" / "good" / "000.png") as im:
            assert im.mode == "RGB" and im.size == (128, 128)


def test_synthetic_is_deterministic(synth, tmp_path):
    out, _ = synth
    again = tmp_path / "again"
    generate_synthetic(again, n_train=N_TRAIN, n_test_good=N_GOOD, n_test_defect=N_DEF, seed=3)
    assert _hashes(again) == _hashes(out)
    other = tmp_path / "other"
    generate_synthetic(other, n_train=N_TRAIN, n_test_good=N_GOOD, n_test_defect=N_DEF, seed=4)
    h3, h4 = _hashes(out), _hashes(other)
    pngs = [k for k in h3 if k.endswith(".png") and "ground_truth" not in k]
    assert all(h3[k] != h4[k] for k in pngs)


def test_synthetic_refuses_non_empty_folder(synth):
    out, _ = synth
    with pytest.raises(DataError, match="not empty"):
        generate_synthetic(out, n_train=1, n_test_good=0, n_test_defect=0)


def test_synthetic_masks_binary_and_areas(synth):
    out, _ = synth
    lo, hi = AREA_RANGE
    for m in sorted(out.rglob("*_mask.png")):
        a = np.asarray(Image.open(m))
        assert set(np.unique(a).tolist()) == {0, 255}, m
        assert lo <= (a > 0).mean() <= hi, m


@pytest.mark.parametrize("cls", CLASSES)
def test_synthetic_masks_are_exact(cls):
    """Outside the mask the defective image equals its clean twin bit for bit; inside, every
    pixel changed by more than MASK_THRESHOLD; areas stay in bounds for many draws."""
    lo, hi = AREA_RANGE
    for d in DEFECTS:
        for i in range(5):
            clean, img, mask = render_sample(cls, d, seed=11, index=i)
            diff = np.abs(img.astype(int) - clean.astype(int)).max(axis=2)
            assert np.array_equal(diff > 0, mask)
            assert (diff[mask] > MASK_THRESHOLD).all()
            assert lo <= mask.mean() <= hi, (cls, d, i, mask.mean())
    clean, img, mask = render_sample(cls, None, seed=11, index=0)
    assert not mask.any() and np.array_equal(clean, img)


def _block_std(img: np.ndarray, b: int = 16) -> np.ndarray:
    """Detail per b x b block: std of the image minus its gaussian blur (lighting removed)."""
    from scipy import ndimage

    g = img.astype(float).mean(axis=2)
    S = g.shape[0] // b * b
    hp = (g - ndimage.gaussian_filter(g, 3))[:S, :S]
    return hp.reshape(S // b, b, S // b, b).std(axis=(1, 3))


@pytest.mark.parametrize("cls", ["texture", "printed"])
def test_synthetic_has_smooth_and_detailed_regions(cls):
    _, img, _ = render_sample(cls, None, seed=0, index=0, split="train")
    s = _block_std(img)
    assert np.percentile(s, 90) > 3 * np.percentile(s, 10)


def test_synthetic_normals_vary():
    for cls in CLASSES:
        a = render_sample(cls, None, seed=0, index=0, split="train")[1].astype(float)
        b = render_sample(cls, None, seed=0, index=1, split="train")[1].astype(float)
        assert np.abs(a - b).mean() > 2.0, cls  # not one picture plus noise
    s = _block_std(render_sample("surface", None, seed=0, index=0, split="train")[1])
    t = _block_std(render_sample("texture", None, seed=0, index=0, split="train")[1])
    assert np.median(s) < np.median(t) / 3  # the surface is smooth


def test_read_mvtec_on_synthetic(synth):
    out, _ = synth
    samples = read_mvtec(out)
    assert samples == sorted(samples, key=lambda s: (s.cls, s.split != "train", s.label,
                                                     s.defect, s.path.name))
    summ = summarize(samples)
    assert list(summ) == sorted(CLASSES)
    for cls in CLASSES:
        assert summ[cls]["train"] == N_TRAIN and summ[cls]["test_good"] == N_GOOD
        assert summ[cls]["test_defect"] == {d: N_DEF for d in sorted(DEFECTS)}
    for s in samples:
        assert s.path.is_absolute()
        if s.label == 0:
            assert s.defect == "good" and s.mask_path is None
        else:
            assert s.split == "test" and s.defect in DEFECTS
            assert s.mask_path.name == s.path.stem + "_mask.png"
    assert read_mvtec(out, classes=["printed"]) == [s for s in samples if s.cls == "printed"]
    assert read_dataset("folder", out / "surface") == [s for s in samples if s.cls == "surface"]
    validate_samples(samples, progress=False)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "LA", "1"])
def test_load_image_modes(tmp_path, mode):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(_img(rng, 30, 50))
    if mode == "I;16":
        im = Image.fromarray((_img(rng, 30, 50, grey=True).astype(np.uint16) * 257))
        assert im.mode in ("I;16", "I")
    elif mode == "P":
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        im = rgb.convert(mode)
    p = tmp_path / "x.png"
    im.save(p)
    a = load_image(p, 24)
    assert a.shape == (3, 24, 24) and a.dtype == np.float32
    assert 0.0 <= a.min() and a.max() <= 1.0 and a.max() > 0.5
    if mode in ("L", "I;16", "LA", "1"):
        assert np.array_equal(a[0], a[1]) and np.array_equal(a[1], a[2])
    assert load_image(p, 24, channels=1).shape == (1, 24, 24)


def test_load_jpg_grey_and_rgb(tmp_path):
    rng = np.random.default_rng(1)
    g = _png(tmp_path / "g.jpg", _img(rng, grey=True))
    c = _png(tmp_path / "c.JPEG", _img(rng))
    for p in (g, c):
        assert load_image(p, 16).shape == (3, 16, 16)
    s = Sample(g, "x", "test", 0, "good", None)
    img, mask = load_sample(s, 16)
    assert img.shape == (3, 16, 16) and mask.shape == (16, 16) and not mask.any()


def _crack(seed: int, width: int, size: int = 512) -> np.ndarray:
    """A random zig-zag crack ``width`` px wide across a ``size`` px mask."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    im = Image.new("L", (size, size))
    pts = [(20, size // 2)]
    for _ in range(12):
        pts.append((pts[-1][0] + 40, int(np.clip(pts[-1][1] + rng.integers(-60, 61), 20, size - 22))))
    ImageDraw.Draw(im).line(pts, fill=255, width=width)
    return np.asarray(im) > 127


def test_area_resized_masks_keep_thin_structures_connected():
    """A crack one target pixel wide (8 px at 512 -> 64) stays one region when resized by area
    and thresholded at 0.5; nearest neighbour keeps the pixels its grid happens to hit and
    splits it. The defect's area is kept too."""
    from scipy import ndimage

    eight = np.ones((3, 3))
    area_regions, nearest_regions = [], []
    for seed in range(10):
        m = _crack(seed, width=8)
        small = resize_mask(m, 64)
        nearest = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((64, 64), Image.Resampling.NEAREST)) > 127
        area_regions.append(ndimage.label(small, structure=eight)[1])
        nearest_regions.append(ndimage.label(nearest, structure=eight)[1])
        assert small.mean() == pytest.approx(m.mean(), rel=0.2)
    assert sum(r == 1 for r in area_regions) >= 7, area_regions
    assert sum(area_regions) < sum(nearest_regions), (area_regions, nearest_regions)
    blob = np.zeros((100, 100), bool)
    blob[12:32, 40:72] = True  # a block on the 4 px grid: area resize is exact
    assert np.array_equal(resize_mask(blob, 25), blob[::4, ::4])


def test_load_mask(tmp_path):
    m = _png(tmp_path / "m.png", _mask())
    a = load_mask(m, 24, image_size_hw=(40, 48))
    assert a.dtype == np.bool_ and a.shape == (24, 24) and 0 < a.mean() < 0.3
    ones = _png(tmp_path / "ones.png", (_mask() > 0).astype(np.uint8))
    assert np.array_equal(load_mask(ones, 24), a)
    grey = _mask()
    grey[20, 12:30] = 128
    g = _png(tmp_path / "grey_mask.png", grey)
    with pytest.raises(DataError, match=r"grey_mask\.png.*128"):
        load_mask(g, 24)
    assert load_mask(g, 40, threshold=128).sum() > load_mask(g, 40, threshold=200).sum()
    with pytest.raises(DataError, match=r"m\.png is 48x40 but image .*is 50x40"):
        load_mask(m, 24, image_size_hw=(40, 50))


# --------------------------------------------------------------------------- BTAD / MTSD


def test_read_btad(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "BTAD"
    for cls, ext, mext in (("01", "bmp", "png"), ("03", "png", "bmp")):
        c = root / cls
        for i in range(3):
            _png(c / "train" / "ok" / f"{i:04d}.{ext}", _img(rng))
        _png(c / "test" / "ok" / f"0000.{ext}", _img(rng))
        for i in range(2):
            _png(c / "test" / "ko" / f"{i:04d}.{ext}", _img(rng))
            _png(c / "ground_truth" / "ko" / f"{i:04d}.{mext}", _mask())
    samples = read_btad(root)
    assert summarize(samples) == {c: {"train": 3, "test_good": 1, "test_defect": {"ko": 2},
                                      "masks": 2} for c in ("01", "03")}
    assert all(s.defect == ("ko" if s.label else "good") for s in samples)
    assert read_dataset("btad", root, classes=["03"]) == [s for s in samples if s.cls == "03"]
    validate_samples(samples, progress=False)
    (root / "03" / "ground_truth" / "ko" / "0001.bmp").unlink()
    with pytest.raises(DataError, match=r"0001\.png has no mask"):
        read_btad(root)


def _mtsd_fixture(root: Path, rng, n_free=10) -> Path:
    for i in range(n_free):
        _png(root / "MT_Free" / "Imgs" / f"exp1_num_{i}.jpg", _img(rng, grey=True))
        _png(root / "MT_Free" / "Imgs" / f"exp1_num_{i}.png", _mask(empty=True))
    for kind, n in (("Crack", 2), ("Blowhole", 3)):
        for i in range(n):
            _png(root / f"MT_{kind}" / "Imgs" / f"exp2_num_{kind}{i}.jpg", _img(rng, grey=True))
            _png(root / f"MT_{kind}" / "Imgs" / f"exp2_num_{kind}{i}.png", _mask())
    return root


def test_read_mtsd_with_train_list(tmp_path):
    root = _mtsd_fixture(tmp_path / "MTSD", np.random.default_rng(3))
    lst = tmp_path / "train.txt"
    lst.write_bytes(b"\xef\xbb\xbf# published split\r\nexp1_num_0.jpg\r\n\r\n"
                    b"MT_Free/Imgs/exp1_num_3.jpg\r\nexp1_num_5\r\nexp1_num_0.jpg\r\n")
    assert parse_name_list(lst) == ["exp1_num_0", "exp1_num_3", "exp1_num_5"]
    samples = read_mtsd(root, train_list=lst)
    train = sorted(s.path.stem for s in samples if s.split == "train")
    assert train == ["exp1_num_0", "exp1_num_3", "exp1_num_5"]
    summ = summarize(samples)["mtsd"]
    assert summ == {"train": 3, "test_good": 7, "test_defect": {"blowhole": 3, "crack": 2},
                    "masks": 5}
    assert all(s.mask_path is not None and s.mask_path.suffix == ".png" for s in samples)
    assert all(s.mask_threshold == 128 for s in samples)
    validate_samples(samples, progress=False)
    assert read_dataset("mtsd", root, train_list=lst) == samples


def test_read_mtsd_seeded_split(tmp_path):
    root = _mtsd_fixture(tmp_path / "MTSD", np.random.default_rng(4))
    # a list file in the root is NOT used implicitly
    (root / "differnet_mtd_train_filenames.txt").write_text("exp1_num_1.jpg\n")
    splits = []
    for seed in range(4):
        s = read_mtsd(root, seed=seed)
        train = {x.path.stem for x in s if x.split == "train"}
        assert len(train) == 8  # floor(0.8 * 10)
        splits.append(train)
    assert read_mtsd(root, seed=0) == read_mtsd(root, seed=0)
    assert len({frozenset(t) for t in splits}) > 1
    assert len([x for x in read_mtsd(root, train_fraction=0.5) if x.split == "train"]) == 5
    with pytest.raises(DataError, match="train_fraction"):
        read_mtsd(root, train_fraction=1.0)


def test_mtsd_errors(tmp_path):
    rng = np.random.default_rng(5)
    root = _mtsd_fixture(tmp_path / "MTSD", rng)
    bad = tmp_path / "bad.txt"
    bad.write_text("exp1_num_1.jpg\nexp9_num_404.jpg\nexp2_num_Crack0.jpg\n")
    with pytest.raises(DataError, match=r"exp9_num_404.*exp2_num_Crack0 \(in MT_Crack"):
        read_mtsd(root, train_list=bad)
    with pytest.raises(DataError, match="nolist.txt"):
        read_mtsd(root, train_list=tmp_path / "nolist.txt")
    _png(root / "MT_Fray" / "Imgs" / "orphan_mask_only.png", _mask())
    _png(root / "MT_Fray" / "Imgs" / "no_mask_here.jpg", _img(rng, grey=True))
    with pytest.raises(DataError) as e:
        read_mtsd(root)
    assert "orphan_mask_only.png has no image" in str(e.value)
    assert "no_mask_here.jpg has no mask" in str(e.value)
    with pytest.raises(DataError, match="MT_<Kind>"):
        read_mtsd(tmp_path)


# --------------------------------------------------------------------------- errors


def test_missing_folder_and_unknown_kind(tmp_path):
    for fn in (read_mvtec, read_btad, read_mtsd):
        with pytest.raises(DataError, match=r"does_not_exist.*data\.source"):
            fn(tmp_path / "does_not_exist")
    with pytest.raises(DataError, match="unknown dataset kind 'imagenet'"):
        read_dataset("imagenet", tmp_path)
    with pytest.raises(DataError, match="train_list"):
        read_dataset("mvtec", tmp_path, train_list="x.txt")
    with pytest.raises(DataError, match="does_not_exist"):  # None options are dropped
        read_dataset("mvtec", tmp_path / "does_not_exist", train_list=None)
    with pytest.raises(DataError, match="no classes found"):
        read_mvtec(tmp_path)
    with pytest.raises(DataError, match="nosuchclass"):
        read_mvtec(tmp_path, classes=["nosuchclass"])


def test_empty_class(tmp_path):
    rng = np.random.default_rng(6)
    _mvtec_fixture(tmp_path, rng)
    (tmp_path / "hollow" / "train" / "good").mkdir(parents=True)
    with pytest.raises(DataError, match=r"empty class 'hollow'.*hollow/train/good"):
        read_mvtec(tmp_path)
    assert {s.cls for s in read_mvtec(tmp_path, classes=["widget"])} == {"widget"}


def test_layout_errors_list_every_file(tmp_path):
    rng = np.random.default_rng(7)
    c = _mvtec_fixture(tmp_path, rng)
    _png(c / "test" / "dent" / "lonely_image.png", _img(rng))
    _png(c / "ground_truth" / "dent" / "lonely_mask.png", _mask())
    _png(c / "ground_truth" / "scratch" / "007_mask.png", _mask())
    with pytest.raises(DataError) as e:
        read_mvtec(tmp_path)
    msg = str(e.value)
    assert "lonely_image.png has no mask" in msg
    assert "mask " in msg and "lonely_mask.png has no image" in msg
    assert "007_mask.png has no image" in msg
    assert msg.startswith("3 problem(s)")


def test_corrupt_and_mismatched_files(tmp_path):
    rng = np.random.default_rng(8)
    c = _mvtec_fixture(tmp_path, rng)
    broken = c / "train" / "good" / "001.png"
    broken.write_bytes(b"this is not a png at all" * 10)
    truncated = c / "train" / "good" / "002.png"
    truncated.write_bytes(truncated.read_bytes()[:200])
    _png(c / "ground_truth" / "dent" / "000_mask.png", _mask(h=30))  # wrong size
    samples = read_mvtec(tmp_path)  # readers only look at names
    with pytest.raises(DataError, match=r"001\.png.*remove or replace"):
        load_image(broken, 16)
    with pytest.raises(DataError, match=r"002\.png"):
        load_image(truncated, 16)
    dent = next(s for s in samples if s.defect == "dent")
    with pytest.raises(DataError, match=r"000_mask\.png is 48x30 but image .*000\.png is 48x40"):
        check_sample(dent)
    with pytest.raises(DataError, match=r"000_mask\.png is 48x30"):
        load_sample(dent, 16)
    with pytest.raises(DataError) as e:
        validate_samples(samples, progress=False)
    msg = str(e.value)
    assert msg.startswith("3 problem(s)")
    assert "001.png" in msg and "002.png" in msg and "000_mask.png" in msg


def test_validate_flags_non_binary_and_dirty_normal_masks(tmp_path):
    rng = np.random.default_rng(9)
    c = _mvtec_fixture(tmp_path, rng)
    grey = _mask()
    grey[0, 0] = 77
    _png(c / "ground_truth" / "dent" / "000_mask.png", grey)
    _png(c / "ground_truth" / "good" / "000_mask.png", _mask())  # a normal image with defects
    samples = read_mvtec(tmp_path)
    with pytest.raises(DataError) as e:
        validate_samples(samples, progress=False)
    msg = str(e.value)
    assert "dent/000_mask.png is not binary" in msg and "77" in msg
    assert "non-empty mask" in msg and "good/000_mask.png" in msg
    ok = read_mvtec(tmp_path, mask_threshold=128)
    with pytest.raises(DataError, match="non-empty mask"):
        validate_samples(ok, progress=False)


def test_sample_rejects_bad_fields():
    with pytest.raises(DataError):
        Sample(Path("x.png"), "c", "val", 0, "good", None)
    with pytest.raises(DataError):
        Sample(Path("x.png"), "c", "test", 1, "dent", None)


# --------------------------------------------------------------------------- real data


@pytest.mark.skipif(not MTSD.is_dir(), reason="../shared/data/MTSD not present")
def test_real_mtsd_published_split():
    samples = read_mtsd(MTSD, train_list=MTSD / "differnet_mtd_train_filenames.txt")
    train = [s for s in samples if s.split == "train"]
    test = [s for s in samples if s.split == "test"]
    assert len(train) == 761 and all(s.label == 0 for s in train)
    assert sum(s.label == 0 for s in test) == 191
    assert sum(s.label == 1 for s in test) == 392
    assert summarize(samples)["mtsd"]["test_defect"] == {
        "blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    empty = []
    for s in test:
        if s.label == 1:
            a = np.asarray(Image.open(s.mask_path))
            if not mask_to_bool(a, s.mask_path, s.mask_threshold).any():
                empty.append(s)
    assert len(empty) == 4 and {s.defect for s in empty} == {"uneven"}
    validate_samples(samples, progress=False)  # sizes, grey masks read with threshold 128
    seeded = read_mtsd(MTSD, seed=0)
    assert sum(s.split == "train" for s in seeded) == 761
    for s in test[:2] + [s for s in test if s.label == 1][:2]:  # grayscale JPEGs load as 3 channels
        img, mask = load_sample(s, 64)
        assert img.shape == (3, 64, 64) and mask.shape == (64, 64) and mask.dtype == bool
    with pytest.raises(DataError, match="not binary"):  # MTSD masks are anti-aliased
        load_mask(next(s for s in test if s.defect == "crack").mask_path, 64)


@pytest.mark.skipif(not BOTTLE.is_dir(), reason="../shared/data/mvtec_ad/bottle not present")
def test_real_mvtec_bottle():
    samples = read_mvtec(BOTTLE)
    assert read_dataset("mvtec", BOTTLE.parent) == samples
    assert sum(s.split == "train" for s in samples) == 209
    test = [s for s in samples if s.split == "test"]
    assert len(test) == 83 and sum(s.mask_path is not None for s in test) == 63
    assert summarize(samples)["bottle"]["test_defect"] == {
        "broken_large": 20, "broken_small": 22, "contamination": 21}
    validate_samples(samples, progress=False)
