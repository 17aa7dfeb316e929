"""A small synthetic defect dataset in MVTec AD layout, for teaching, tests and the default run.

One module past ~350 lines on purpose: the three class generators, the four defect kinds and
the writer form one generator whose parts are only meaningful together.

Three classes, each with smooth AND detailed regions in the same image and variation
between normal samples (shifts, rotation, phase, lighting gradient, colour, sensor noise),
so a model has to learn the class distribution rather than one picture:

- ``texture``: a woven fabric (over/under threads, random phase, period and slight
  rotation) crossed by a smooth, plain band at a random position;
- ``surface``: a smooth metallic tile (like MTSD) with a gentle lighting gradient, vignette,
  low-frequency blotches and faint brushed grain in part of the image;
- ``printed``: a rounded ivory part (random shift/rotation/scale) on a plain background,
  printed with text-like glyphs, a logo and a barcode.

Defects (each 0.5-5 % of the image area, redrawn until it is):

- ``scratch``: a thin bright (or dark) polyline;
- ``crack``: a dark, irregular random-walk line, sometimes branched;
- ``stain``: a blob of another colour with a soft edge;
- ``missing``: part of the pattern gone: print removed from the part (``printed``), threads
  gone showing the backing (``texture``), a chip broken off the tile edge (``surface``).

Masks are exact: a defective image is drawn from its clean twin with the same noise, and the
mask is the set of pixels whose 8-bit value changed by more than ``MASK_THRESHOLD`` (in some
channel); every other pixel is reset to the clean value, so outside the mask the defective
image IS the normal image, bit for bit. Masks are PNG with values 0/255.

Everything is drawn from ``numpy.random.Generator`` s seeded by (seed, class, split, defect,
index): the same seed gives byte-identical files, and changing a count does not change the
other images.
"""

from __future__ import annotations

import functools
import shutil
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from pvqae.errors import DataError
from pvqae.paths import repo_path

CLASSES = ("texture", "surface", "printed")
DEFECTS = ("scratch", "crack", "stain", "missing")
MASK_THRESHOLD = 8  # 8-bit levels: a pixel is defective if it changed by more than this
AREA_RANGE = (0.005, 0.05)  # defect area as a fraction of the image
NOISE_SIGMA = 0.012
_MAX_TRIES = 60


# --------------------------------------------------------------------------- helpers


def _key(k) -> int:
    return zlib.crc32(k.encode("utf-8")) if isinstance(k, str) else int(k) & 0xFFFFFFFF


def _rng(seed: int, *keys) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([_key(seed)] + [_key(k) for k in keys]))


def _grid(S: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    return yy + 0.5, xx + 0.5


def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    n = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma,
                                mode="wrap", truncate=3.0)
    return n / (n.std() + 1e-8)


def _lighting(rng: np.random.Generator, S: int, strength=(0.08, 0.22),
              vignette=(0.04, 0.12)) -> np.ndarray:
    """Multiplicative lighting: linear gradient in a random direction + off-centre vignette."""
    yy, xx = _grid(S)
    t = rng.uniform(0, 2 * np.pi)
    a = rng.uniform(*strength)
    g = 1.0 + a * ((xx / S - 0.5) * np.cos(t) + (yy / S - 0.5) * np.sin(t))
    cy, cx = S * (0.5 + rng.normal(0, 0.12, 2))
    r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / (0.5 * S) ** 2
    return (g * (1.0 - rng.uniform(*vignette) * r2)).astype(np.float32)


def _seg_distance(yy, xx, pts: np.ndarray) -> np.ndarray:
    """Distance from every pixel to the polyline ``pts`` ((n, 2) as (y, x))."""
    d = np.full(yy.shape, np.inf, dtype=np.float32)
    for (ay, ax), (by, bx) in zip(pts[:-1], pts[1:]):
        vy, vx = by - ay, bx - ax
        L2 = vy * vy + vx * vx + 1e-9
        t = np.clip(((yy - ay) * vy + (xx - ax) * vx) / L2, 0.0, 1.0)
        d = np.minimum(d, np.hypot(yy - ay - t * vy, xx - ax - t * vx))
    return d


def _line_alpha(dist: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased coverage of a line of ``width`` pixels from a distance field."""
    return np.clip(width / 2.0 + 0.5 - dist, 0.0, 1.0).astype(np.float32)


def _blob_alpha(rng, yy, xx, cy, cx, radius, edge) -> np.ndarray:
    """A lumpy blob: r(theta) = radius * (1 + sum a_k cos(k theta + phi_k)); soft edge."""
    dy, dx = yy - cy, xx - cx
    th = np.arctan2(dy, dx)
    r = np.ones_like(th)
    for k in (2, 3, 5):
        r += rng.uniform(0.0, 0.14) * np.cos(k * th + rng.uniform(0, 2 * np.pi))
    return np.clip((radius * r - np.hypot(dy, dx)) / edge + 0.5, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- classes


class _Texture:
    """Woven fabric with a plain band; ``missing`` shows the dark backing."""

    def __init__(self, S: int, rng: np.random.Generator):
        self.S = S
        self.period = S / rng.uniform(13.0, 16.0)
        self.angle = rng.uniform(-0.3, 0.3)
        self.colour = np.array([0.66, 0.55, 0.40]) + rng.normal(0, 0.03, 3)
        self.band_colour = self.colour * np.array([0.86, 0.92, 1.06])
        self.backing = np.array([0.16, 0.17, 0.22])

    def render(self, rng):
        S = self.S
        yy, xx = _grid(S)
        th = self.angle + rng.normal(0, 0.05)
        p = self.period * rng.uniform(0.96, 1.04)
        u = (xx * np.cos(th) + yy * np.sin(th)) / p + rng.uniform(0, 2)
        v = (-xx * np.sin(th) + yy * np.cos(th)) / p + rng.uniform(0, 2)
        fu, fv = u - np.floor(u), v - np.floor(v)
        over = ((np.floor(u) + np.floor(v)) % 2) == 0
        su, sv = np.sin(np.pi * fu), np.sin(np.pi * fv)
        warp = su ** 0.7 * (0.75 + 0.25 * sv)
        weft = sv ** 0.7 * (0.75 + 0.25 * su)
        T = np.where(over, np.maximum(warp, 0.6 * weft), np.maximum(weft, 0.6 * warp))
        T = T + 0.08 * _smooth_noise(rng, (S, S), 0.7)  # fibres
        T = T - T.mean()
        # a plain band at a random position and angle: detail varies within the image
        phi = rng.uniform(-0.35, 0.35) + (np.pi / 2 if rng.random() < 0.5 else 0.0)
        c = rng.uniform(0.25, 0.75) * S
        w = rng.uniform(0.09, 0.14) * S
        dist = np.abs((xx - S / 2) * np.sin(phi) - (yy - c) * np.cos(phi))
        band = np.clip((w + 0.04 * S - dist) / (0.04 * S), 0.0, 1.0)
        amp = 1.0 - 0.88 * band
        lum = 1.0 + 0.55 * amp * T + 0.03 * _smooth_noise(rng, (S, S), S / 8)
        colour = self.colour * (1 + rng.normal(0, 0.02, 3))
        base = (colour * (1 - band[..., None]) + self.band_colour * band[..., None])
        light = _lighting(rng, S)
        img = base * lum[..., None] * light[..., None]
        self._light = light
        return img.astype(np.float32)

    def missing(self, rng, clean):
        S = self.S
        yy, xx = _grid(S)
        cy, cx = rng.uniform(0.15, 0.85, 2) * S
        a = _blob_alpha(rng, yy, xx, cy, cx, rng.uniform(0.05, 0.09) * S, 1.0)
        fill = self.backing * (0.8 + 0.2 * self._light[..., None])
        return clean * (1 - a[..., None]) + fill * a[..., None]


class _Surface:
    """Smooth metallic tile; ``missing`` is a chip broken off an edge."""

    def __init__(self, S: int, rng: np.random.Generator):
        self.S = S
        self.colour = np.array([0.50, 0.52, 0.55]) + rng.normal(0, 0.02, 3)
        self.background = np.array([0.06, 0.06, 0.07])

    def render(self, rng):
        S = self.S
        yy, xx = _grid(S)
        light = _lighting(rng, S, strength=(0.15, 0.35), vignette=(0.08, 0.2))
        blot = 0.025 * _smooth_noise(rng, (S, S), S / 10)
        sig = (0.4, S / 10) if rng.random() < 0.5 else (S / 10, 0.4)  # brushed grain
        grain = _smooth_noise(rng, (S, S), sig)
        t = rng.uniform(0, 2 * np.pi)
        side = (xx / S - 0.5) * np.cos(t) + (yy / S - 0.5) * np.sin(t)
        gw = np.clip(0.5 + 3.0 * side, 0.0, 1.0)  # grain only on one side
        lum = 1.0 + blot + 0.03 * gw * grain + 0.006 * _smooth_noise(rng, (S, S), 0.6)
        colour = self.colour * (1 + rng.normal(0, 0.02, 3))
        return (colour * (lum * light)[..., None]).astype(np.float32)

    def missing(self, rng, clean):
        S = self.S
        yy, xx = _grid(S)
        side = rng.integers(4)
        pos = rng.uniform(0.2, 0.8) * S
        cy, cx = [(0.0, pos), (S, pos), (pos, 0.0), (pos, S)][side]
        a = _blob_alpha(rng, yy, xx, cy, cx, rng.uniform(0.09, 0.15) * S, 1.0)
        return clean * (1 - a[..., None]) + self.background * a[..., None]


# 5x7 strokes that glyphs are made of (rows, cols of the cell)
_STROKES = [
    [(r, 0) for r in range(7)], [(r, 4) for r in range(7)], [(r, 2) for r in range(7)],
    [(0, c) for c in range(5)], [(3, c) for c in range(5)], [(6, c) for c in range(5)],
    [(r, round(r * 4 / 6)) for r in range(7)], [(r, 4 - round(r * 4 / 6)) for r in range(7)],
    [(r, 0) for r in range(4)], [(r, 4) for r in range(3, 7)], [(0, c) for c in range(3)],
]


class _Printed:
    """A rounded part with printed glyphs, logo and barcode on a plain background."""

    RES = 4  # template pixels per image pixel

    def __init__(self, S: int, rng: np.random.Generator):
        self.S = S
        self.W, self.H = 0.66 * S, 0.46 * S
        self.radius = 0.07 * S
        self.part_colour = np.array([0.88, 0.85, 0.76])
        self.ink = np.array([0.10, 0.13, 0.30])
        self.bg = np.array([0.26, 0.33, 0.30])
        self.template = self._template(rng)

    def _template(self, rng):
        r = self.RES
        W, H = self.W, self.H
        t = np.zeros((int(np.ceil(H * r)), int(np.ceil(W * r))), dtype=np.float32)
        ty, tx = np.mgrid[0:t.shape[0], 0:t.shape[1]].astype(np.float32) / r

        def glyphs(y0, x0, x1, gh):
            cell = gh / 7
            x = x0
            while x + 5 * cell <= x1:
                g = np.zeros((7, 5), dtype=bool)
                for k in rng.choice(len(_STROKES), size=rng.integers(2, 4), replace=False):
                    for rr, cc in _STROKES[k]:
                        g[rr, cc] = True
                iy0, ix0 = int(y0 * r), int(x * r)
                big = np.kron(g, np.ones((max(1, round(cell * r)),) * 2, dtype=bool))
                hh = min(big.shape[0], t.shape[0] - iy0)
                ww = min(big.shape[1], t.shape[1] - ix0)
                t[iy0:iy0 + hh, ix0:ix0 + ww] = np.maximum(t[iy0:iy0 + hh, ix0:ix0 + ww],
                                                           big[:hh, :ww])
                x += 6.5 * cell

        glyphs(0.12 * H, 0.33 * W, 0.93 * W, 0.27 * H)
        glyphs(0.48 * H, 0.33 * W, 0.93 * W, 0.15 * H)
        # logo: ring with a 3x3 dot grid inside
        cy, cx, R = 0.36 * H, 0.16 * W, 0.2 * H
        d = np.hypot(ty - cy, tx - cx)
        t = np.maximum(t, ((d < R) & (d > 0.72 * R)).astype(np.float32))
        for i in (-1, 0, 1):
            for j in (-1, 0, 1):
                t = np.maximum(t, (np.hypot(ty - cy - 0.3 * R * i, tx - cx - 0.3 * R * j)
                                   < 0.11 * R).astype(np.float32))
        # barcode
        x, x1 = 0.08 * W, 0.92 * W
        unit = max(W / 90, 0.8)
        while x < x1:
            bw = unit * rng.integers(1, 4)
            if rng.random() < 0.55:
                t[int(0.76 * H * r):int(0.9 * H * r), int(x * r):int(min(x + bw, x1) * r)] = 1
            x += bw
        return ndimage.gaussian_filter(t, 0.5 * r)

    def render(self, rng, print_on: bool = True):
        S = self.S
        yy, xx = _grid(S)
        cy, cx = S / 2 + np.clip(rng.normal(0, 0.03 * S, 2), -0.06 * S, 0.06 * S)
        ang = np.clip(rng.normal(0, 0.07), -0.14, 0.14)
        sc = rng.uniform(0.97, 1.03)
        ca, sa = np.cos(ang), np.sin(ang)
        pu = ((xx - cx) * ca + (yy - cy) * sa) / sc  # part coordinates, centred
        pv = (-(xx - cx) * sa + (yy - cy) * ca) / sc
        hw, hh, rr = self.W / 2, self.H / 2, self.radius
        qx, qy = np.abs(pu) - (hw - rr), np.abs(pv) - (hh - rr)
        sdf = (np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
               + np.minimum(np.maximum(qx, qy), 0) - rr) * sc
        part = np.clip(0.5 - sdf, 0.0, 1.0)
        bevel = 1.0 - 0.18 * np.clip(1.0 + sdf / (0.05 * S), 0.0, 1.0)
        off = rng.normal(0, 0.3, 2)  # print registration
        coords = [(pv + hh + off[0]) * self.RES - 0.5, (pu + hw + off[1]) * self.RES - 0.5]
        ink = ndimage.map_coordinates(self.template, coords, order=1, cval=0.0)
        ink = np.clip(ink * rng.uniform(0.9, 1.0), 0, 1)
        shadow = ndimage.shift(part, (0.03 * S, 0.03 * S), order=1, cval=0.0)
        shadow = ndimage.gaussian_filter(shadow, 0.025 * S)
        light = _lighting(rng, S)
        bg = self.bg * (1 + rng.normal(0, 0.03, 3)) * (1 - 0.35 * shadow)[..., None]
        pc = self.part_colour * (1 + rng.normal(0, 0.015, 3))
        surf = pc * (1 - ink[..., None]) + self.ink * ink[..., None]
        plain = pc * np.ones_like(surf)
        img = lambda s: (bg * (1 - part[..., None]) + s * (part * bevel)[..., None]
                         ) * light[..., None]
        self._plain = img(plain).astype(np.float32)
        self._ink = ink * part
        self._part = part
        return img(surf).astype(np.float32)

    def missing(self, rng, clean):
        S = self.S
        yy, xx = _grid(S)
        ys, xs = np.nonzero(self._ink > 0.5)
        k = rng.integers(len(ys))
        a = _blob_alpha(rng, yy, xx, ys[k] + 0.5, xs[k] + 0.5, rng.uniform(0.07, 0.12) * S,
                        1.0)
        return clean * (1 - a[..., None]) + self._plain * a[..., None]

    def stain_centre(self, rng):
        ys, xs = np.nonzero(self._part > 0.99)
        k = rng.integers(len(ys))
        return ys[k] + 0.5, xs[k] + 0.5


_RENDERERS = {"texture": _Texture, "surface": _Surface, "printed": _Printed}


@functools.lru_cache(maxsize=16)
def _painter(cls: str, seed: int, S: int):
    """The class's fixed design for a seed (cached: the printed template takes ~15 ms).
    Painters keep the last sample's layers between render() and a defect: not thread-safe."""
    return _RENDERERS[cls](S, _rng(seed, cls, "template", S))


# --------------------------------------------------------------------------- defects


def _scratch(rng, S, clean, painter):
    yy, xx = _grid(S)
    s = S / 128
    n = rng.integers(1, 4)
    L = rng.uniform(35, 70) * s
    p = rng.uniform(0.15, 0.85, 2) * S
    th = rng.uniform(0, 2 * np.pi)
    pts = [p.copy()]
    for _ in range(n):
        th += rng.normal(0, 0.3)
        p = p + (L / n) * np.array([np.sin(th), np.cos(th)])
        pts.append(p.copy())
    a = _line_alpha(_seg_distance(yy, xx, np.array(pts)), rng.uniform(1.3, 2.2) * s)
    delta = rng.uniform(0.28, 0.45) * (1 if rng.random() < 0.7 else -1)
    return clean + delta * a[..., None]


def _crack(rng, S, clean, painter):
    s = S / 128
    grid = np.zeros((S, S), dtype=bool)

    def walk(p, th, n):
        pts = []
        dth = 0.0
        for _ in range(int(n)):
            dth = 0.6 * dth + rng.normal(0, 0.35)
            th += dth * 0.5
            p = p + 0.7 * np.array([np.sin(th), np.cos(th)])
            pts.append(p.copy())
        return pts

    pts = walk(rng.uniform(0.2, 0.8, 2) * S, rng.uniform(0, 2 * np.pi), rng.uniform(60, 110) * s)
    if rng.random() < 0.5:
        q = pts[rng.integers(len(pts) // 4, 3 * len(pts) // 4)]
        pts += walk(q, rng.uniform(0, 2 * np.pi), rng.uniform(20, 40) * s)
    ij = np.round(np.array(pts) - 0.5).astype(int)
    ok = (ij >= 0).all(1) & (ij < S).all(1)
    grid[ij[ok, 0], ij[ok, 1]] = True
    d = ndimage.distance_transform_edt(~grid).astype(np.float32)
    a = _line_alpha(d, rng.uniform(1.2, 2.0) * s)
    return clean * (1 - rng.uniform(0.55, 0.75) * a[..., None])


_STAIN_COLOURS = np.array([[0.35, 0.22, 0.10], [0.55, 0.30, 0.12], [0.14, 0.14, 0.12],
                           [0.30, 0.40, 0.20], [0.85, 0.80, 0.55]])


def _stain(rng, S, clean, painter):
    yy, xx = _grid(S)
    s = S / 128
    if hasattr(painter, "stain_centre") and rng.random() < 0.8:
        cy, cx = painter.stain_centre(rng)
    else:
        cy, cx = rng.uniform(0.15, 0.85, 2) * S
    a = _blob_alpha(rng, yy, xx, cy, cx, rng.uniform(5, 11) * s, rng.uniform(1.5, 3.0) * s)
    a *= rng.uniform(0.6, 0.85)
    # of 3 random stain colours, the one farthest from the local colour: always visible
    local = (clean * a[..., None]).sum(axis=(0, 1)) / (a.sum() + 1e-6)
    cands = _STAIN_COLOURS[rng.choice(len(_STAIN_COLOURS), size=3, replace=False)]
    col = cands[np.argmax(np.abs(cands - local).sum(axis=1))]
    col = col * (0.8 + 0.4 * clean.mean(axis=2, keepdims=True))  # keeps the lighting
    return clean * (1 - a[..., None]) + col * a[..., None]


def _missing(rng, S, clean, painter):
    return painter.missing(rng, clean)


_DEFECT_FNS = {"scratch": _scratch, "crack": _crack, "stain": _stain, "spot": _stain,
               "missing": _missing}


# --------------------------------------------------------------------------- rendering


def _quantize(x: np.ndarray) -> np.ndarray:
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def render_sample(cls: str, defect: str | None, seed: int = 0, index: int = 0,
                  split: str = "test", image_size: int = 128):
    """Render one image of ``cls`` (and its defective twin).

    Returns ``(clean, image, mask)``: uint8 ``(S, S, 3)`` arrays and a bool ``(S, S)`` mask.
    For ``defect=None`` image is clean and the mask empty. Outside the mask, image == clean.
    """
    if cls not in _RENDERERS:
        raise DataError(f"unknown synthetic class {cls!r}; use some of {list(_RENDERERS)}")
    if defect is not None and defect not in _DEFECT_FNS:
        raise DataError(f"unknown synthetic defect {defect!r}; use some of {list(_DEFECT_FNS)}")
    S = int(image_size)
    painter = _painter(cls, int(seed), S)
    rng = _rng(seed, cls, split, defect or "good", index, S)
    clean_f = painter.render(rng)
    noise = (NOISE_SIGMA * rng.standard_normal((S, S, 1))
             + 0.4 * NOISE_SIGMA * rng.standard_normal((S, S, 3))).astype(np.float32)
    clean = _quantize(clean_f + noise)
    if defect is None:
        return clean, clean.copy(), np.zeros((S, S), dtype=bool)
    lo, hi = AREA_RANGE
    for _ in range(_MAX_TRIES):
        img = _quantize(_DEFECT_FNS[defect](rng, S, clean_f, painter) + noise)
        diff = np.abs(img.astype(np.int16) - clean.astype(np.int16)).max(axis=2)
        mask = diff > MASK_THRESHOLD
        if lo <= mask.mean() <= hi:
            img = np.where(mask[..., None], img, clean)
            return clean, img, mask
    raise RuntimeError(f"could not draw a {defect} on {cls} within {AREA_RANGE} of the area "
                       f"after {_MAX_TRIES} tries (seed {seed}, index {index})")


def _save_png(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", compress_level=1)


def generate_synthetic(out_dir: str | Path, classes: Sequence[str] = CLASSES, n_train: int = 64,
                       n_test_good: int = 16, n_test_defect: int = 8, image_size: int = 128,
                       defects: Sequence[str] = DEFECTS, seed: int = 0,
                       overwrite: bool = False) -> dict:
    """Write the synthetic dataset to ``out_dir`` in MVTec AD layout; return a summary.

    ``<class>/train/good/000.png``, ``<class>/test/good/000.png``,
    ``<class>/test/<defect>/000.png`` and ``<class>/ground_truth/<defect>/000_mask.png``
    (0/255), plus ``README.txt``. ``n_test_defect`` is per defect kind. ``out_dir`` must be
    empty or missing unless ``overwrite`` (which replaces only the class folders and README).
    """
    out = repo_path(Path(out_dir).expanduser())
    classes = [classes] if isinstance(classes, str) else list(classes)
    defects = [defects] if isinstance(defects, str) else list(defects)
    bad = [c for c in classes if c not in _RENDERERS] + [d for d in defects if d not in _DEFECT_FNS]
    if bad or not classes:
        raise DataError(f"unknown synthetic class/defect {bad or classes}; classes: "
                        f"{list(_RENDERERS)}, defects: {list(_DEFECT_FNS)}; fix data.synthetic "
                        f"in params.yaml")
    if int(image_size) < 32:
        raise DataError(f"synthetic image_size must be >= 32, got {image_size}")
    if min(n_train, n_test_good, n_test_defect) < 0 or n_train < 1:
        raise DataError("synthetic counts must be >= 0 and n_train >= 1")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise DataError(f"synthetic output folder {out} is not empty; delete it or pass "
                            f"overwrite=True")
        for c in classes:
            if (out / c).is_dir():
                shutil.rmtree(out / c)
        (out / "README.txt").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    summary = {"out_dir": str(out), "seed": int(seed), "image_size": int(image_size),
               "classes": {}, "defects": defects, "n_images": 0, "n_masks": 0}
    areas = []
    for cls in classes:
        c = out / cls
        for i in range(n_train):
            _, img, _ = render_sample(cls, None, seed, i, "train", image_size)
            _save_png(img, c / "train" / "good" / f"{i:03d}.png")
        for i in range(n_test_good):
            _, img, _ = render_sample(cls, None, seed, i, "test", image_size)
            _save_png(img, c / "test" / "good" / f"{i:03d}.png")
        per = {}
        for d in defects:
            a = []
            for i in range(n_test_defect):
                _, img, mask = render_sample(cls, d, seed, i, "test", image_size)
                _save_png(img, c / "test" / d / f"{i:03d}.png")
                _save_png(mask.astype(np.uint8) * 255, c / "ground_truth" / d / f"{i:03d}_mask.png")
                a.append(float(mask.mean()))
            per[d] = {"n": n_test_defect, "area_min": min(a, default=0.0),
                      "area_max": max(a, default=0.0)}
            areas += a
        summary["classes"][cls] = {"train": n_train, "test_good": n_test_good,
                                   "test_defect": per}
        summary["n_images"] += n_train + n_test_good + n_test_defect * len(defects)
        summary["n_masks"] += n_test_defect * len(defects)
    summary["defect_area"] = {"min": min(areas, default=0.0), "max": max(areas, default=0.0),
                              "mean": float(np.mean(areas)) if areas else 0.0}
    write_synthetic_readme(out, summary)
    return summary


def write_synthetic_readme(out_dir: str | Path, summary: dict) -> Path:
    """Write ``README.txt`` describing the layout, seed and counts (no timestamps, so the
    folder stays byte-identical for a seed)."""
    out = Path(out_dir)
    lines = [
        "Synthetic defect dataset (pvqae.data.synthetic) -- MVTec AD layout",
        "",
        f"seed: {summary['seed']}    image size: {summary['image_size']} px (RGB PNG)",
        f"defects: {', '.join(summary['defects'])}",
        "",
        "layout:",
        "  <class>/train/good/NNN.png              normal training images",
        "  <class>/test/good/NNN.png               normal test images",
        "  <class>/test/<defect>/NNN.png           defective test images",
        "  <class>/ground_truth/<defect>/NNN_mask.png   masks, 0 = normal, 255 = defect",
        "",
        "classes:",
        "  texture: woven fabric (random phase/period/rotation) crossed by a plain band",
        "  surface: smooth metallic tile, lighting gradient, vignette, faint brushed grain",
        "  printed: rounded part with glyphs, logo and barcode on a plain background",
        "",
        "defects: scratch (thin bright/dark polyline), crack (dark random-walk line),",
        "  stain (soft-edged blob of another colour), missing (print removed / threads gone /",
        "  chip broken off the edge). Each covers 0.5-5 % of the image.",
        "masks are exact: the pixels whose 8-bit value differs from the clean twin by more than",
        f"  {MASK_THRESHOLD} levels; all other pixels equal the clean image.",
        "",
        "counts:",
    ]
    for cls, c in summary["classes"].items():
        kinds = ", ".join(f"{d} {v['n']}" for d, v in c["test_defect"].items())
        lines.append(f"  {cls}: train {c['train']}, test good {c['test_good']}, {kinds}")
    lines += ["", "regenerate: python -c \"from pvqae.data import generate_synthetic; "
              f"generate_synthetic('<out>', seed={summary['seed']}, "
              f"image_size={summary['image_size']})\"", ""]
    path = out / "README.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
