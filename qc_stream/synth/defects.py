"""Defect painters: each draws one defect into a scene in place and returns its pixel mask.

`strength` in (0, 1] scales contrast (small values give subtle defects); sizes are drawn per call.
Masks cover the pixels the defect visibly changed. Painters may draw past the product's edge (a
scratch that starts near it runs on); `qc_stream.synth.generator` keeps surface defects on the
product, image and mask alike. Only the defects in `OUTLINE_DEFECTS` change pixels off the product.
"""

from __future__ import annotations

import cv2
import numpy as np

from qc_stream.synth.noise import (
    aa_mask,
    blend,
    fine_noise,
    grid,
    mul,
    pick_point,
    shade,
    smooth_noise,
    soft_blob,
)
from qc_stream.synth.products import Scene

AA = cv2.LINE_AA


def _lighter(img, k):
    return img + (1 - img) * np.float32(k)


def _walk(rng, y, x, steps, step_len, turn, angle=None):
    a = rng.uniform(0, 2 * np.pi) if angle is None else angle
    pts = [(x, y)]
    for _ in range(steps):
        a += rng.normal(0, turn)
        x, y = x + step_len * np.cos(a), y + step_len * np.sin(a)
        pts.append((x, y))
    return np.int32(np.round(pts))


def scratch(img, sc: Scene, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    length = size * rng.uniform(0.12, 0.4)
    pts = _walk(rng, y, x, 4, length / 4, 0.12)
    th = int(rng.choice([1, 1, 2])) * max(1, size // 256)
    a = aa_mask(size, lambda c: cv2.polylines(c, [pts], False, 255, th, AA))
    target = _lighter(img, 0.65 * s) if rng.random() < 0.6 else img * np.float32(1 - 0.55 * s)
    blend(img, target, a)
    return a > 0.25


def crack(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    n = int(rng.integers(6, 14))
    pts = _walk(rng, y, x, n, size * rng.uniform(0.015, 0.03), 0.6)
    th = int(rng.choice([1, 2, 2])) * max(1, size // 256)

    def draw(c):
        cv2.polylines(c, [pts], False, 255, th, AA)
        if rng.random() < 0.6:
            j = int(rng.integers(1, len(pts)))
            by, bx = pts[j][1], pts[j][0]
            cv2.polylines(
                c, [_walk(rng, by, bx, n // 2, size * 0.02, 0.6)], False, 255, max(1, th - 1), AA
            )

    a = aa_mask(size, draw)
    blend(img, img * np.float32(1 - 0.75 * s), a)
    return a > 0.25


def hole(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    r = size * rng.uniform(0.025, 0.08)
    axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.6, 1.0))))
    ang = rng.uniform(0, 180)
    a = aa_mask(size, lambda c: cv2.ellipse(c, (int(x), int(y)), axes, ang, 0, 360, 255, -1, AA))
    rim = aa_mask(
        size,
        lambda c: cv2.ellipse(
            c, (int(x), int(y)), (axes[0] + 2, axes[1] + 2), ang, 0, 360, 255, 2, AA
        ),
    )
    blend(img, _lighter(img, 0.25 * s), rim * (1 - a))
    inside = sc.background * np.float32(0.6) * np.float32(s) + img * np.float32(1 - s)
    blend(img, inside, a)
    return (a > 0.5) | (rim > 0.5)  # the lighter rim shows even on faint holes


def stain(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    a = soft_blob(rng, size, y, x, size * rng.uniform(0.04, 0.11), 0.8)
    tint = 1 - np.float32(s) * rng.uniform(0.25, 0.55) * np.float32(
        rng.choice([[1, 1, 1], [0.6, 0.8, 1.0], [0.3, 0.6, 1.0], [1, 0.6, 0.9]])
    )
    a = cv2.GaussianBlur(a, (0, 0), 1.5) * np.float32(rng.uniform(0.7, 1.0))
    blend(img, img * tint.astype(np.float32), a)
    return a > 0.35


def contamination(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    col = rng.choice(
        np.array(
            [
                [0.05, 0.05, 0.05],
                [0.9, 0.9, 0.85],
                [0.2, 0.5, 0.9],
                [0.8, 0.3, 0.1],
                [0.3, 0.25, 0.2],
            ],
            np.float32,
        )
    )
    if rng.random() < 0.5:  # particles
        r = size * rng.uniform(0.02, 0.06)

        def draw(c):
            for _ in range(int(rng.integers(3, 10))):
                px, py = x + rng.normal(0, r), y + rng.normal(0, r)
                cv2.circle(
                    c, (int(px), int(py)), int(rng.uniform(1, 3.5) * size / 256) + 1, 255, -1, AA
                )
    else:  # a fibre or hair
        pts = _walk(rng, y, x, 8, size * rng.uniform(0.015, 0.03), 0.35)

        def draw(c):
            cv2.polylines(c, [pts], False, 255, max(1, size // 256), AA)

    a = aa_mask(size, draw)
    blend(img, img * np.float32(1 - s) + col * np.float32(s), a)
    return a > 0.25


def discoloration(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    a = soft_blob(rng, size, y, x, size * rng.uniform(0.07, 0.16), 0.6)
    a = cv2.GaussianBlur(a, (0, 0), 3.0)
    shift = rng.uniform(-1, 1, 3).astype(np.float32)
    shift /= np.abs(shift).max()
    tint = 1 + np.float32(0.35 * s) * shift
    blend(img, np.clip(img * tint, 0, 1), a)
    return a > 0.4


def cut(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    length = size * rng.uniform(0.08, 0.25)
    ang = rng.uniform(0, 2 * np.pi)
    p0 = (int(x - length / 2 * np.cos(ang)), int(y - length / 2 * np.sin(ang)))
    p1 = (int(x + length / 2 * np.cos(ang)), int(y + length / 2 * np.sin(ang)))
    th = max(2, int(rng.uniform(2, 4) * size / 256))
    off = (int(round(np.sin(ang) * th)), int(round(-np.cos(ang) * th)))
    a = aa_mask(size, lambda c: cv2.line(c, p0, p1, 255, th, AA))
    e = aa_mask(
        size,
        lambda c: cv2.line(
            c, (p0[0] + off[0], p0[1] + off[1]), (p1[0] + off[0], p1[1] + off[1]), 255, 1, AA
        ),
    )
    blend(img, _lighter(img, 0.5 * s), e * (1 - a))
    blend(img, img * np.float32(1 - 0.8 * s), a)
    return (a > 0.25) | (e > 0.5)


def missing(img, sc, rng, s):
    size = img.shape[0]
    where = sc.parts if sc.parts is not None else (sc.edge if rng.random() < 0.7 else sc.region)
    y, x = pick_point(rng, where)
    a = soft_blob(rng, size, y, x, size * rng.uniform(0.06, 0.14), 0.4)
    a = np.clip((a - 0.3) * 3, 0, 1) * sc.region
    blend(img, sc.background, a * np.float32(0.4 + 0.6 * s))
    return a > 0.5


def bent(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.edge)
    r = size * rng.uniform(0.07, 0.14)
    half = int(r * 2)
    y0, y1, x0, x1 = max(0, y - half), min(size, y + half), max(0, x - half), min(size, x + half)
    yy, xx = grid(size)
    dy, dx = yy[y0:y1, x0:x1] - y, xx[y0:y1, x0:x1] - x
    g = np.exp(-(dy * dy + dx * dx) / np.float32(2 * (r / 2) ** 2))
    ang = rng.uniform(0, 2 * np.pi)
    amp = np.float32(r * (0.25 + 0.35 * s))
    mapx = (xx[y0:y1, x0:x1] + amp * g * np.cos(ang)).astype(np.float32)
    mapy = (yy[y0:y1, x0:x1] + amp * g * np.sin(ang)).astype(np.float32)
    before = img[y0:y1, x0:x1].copy()
    img[y0:y1, x0:x1] = cv2.remap(img, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    changed = np.abs(img[y0:y1, x0:x1] - before).max(axis=2) > 0.04 * s + 0.01
    changed = (
        cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8)) > 0
    )
    mask = np.zeros((size, size), bool)
    mask[y0:y1, x0:x1] = changed & (g > 0.05)  # at g 0.15 the edge still moves 1-2 px, visibly
    return mask


def rust(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    a = soft_blob(rng, size, y, x, size * rng.uniform(0.035, 0.1), 1.2)
    n = 0.7 + 0.3 * fine_noise(rng, size, 0.8)
    col = shade(n, np.float32([0.55, 0.27, 0.08]))
    blend(
        img,
        img * np.float32(1 - s) + col * np.float32(s),
        a * np.clip(0.6 + 0.5 * smooth_noise(rng, size, size, 24), 0, 1),
    )
    return a > 0.5


def chip(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.edge)
    r = size * rng.uniform(0.025, 0.06)
    k = int(rng.integers(4, 7))
    th = np.sort(rng.uniform(0, 2 * np.pi, k))
    pts = np.int32(
        np.round(
            [
                (
                    x + r * rng.uniform(0.5, 1.2) * np.cos(t),
                    y + r * rng.uniform(0.5, 1.2) * np.sin(t),
                )
                for t in th
            ]
        )
    )
    a = aa_mask(size, lambda c: cv2.fillPoly(c, [pts], 255, AA)) * sc.region
    if sc.parts is None and sc.region.all():  # texture: exposed lighter body, rough
        target = sc.background.copy()
        mul(target, 0.9 + 0.1 * fine_noise(rng, size))
    else:  # object: the piece is gone, background shows
        target = sc.background
    blend(img, img * np.float32(1 - s) + target * np.float32(s), a)
    return a > 0.5


def misprint(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    r = size * rng.uniform(0.02, 0.05)

    def draw(c):
        for _ in range(int(rng.integers(2, 6))):
            px, py = x + rng.normal(0, r), y + rng.normal(0, r)
            ang = rng.uniform(0, 2 * np.pi)
            ln = size * rng.uniform(0.01, 0.04)
            cv2.line(
                c,
                (int(px), int(py)),
                (int(px + ln * np.cos(ang)), int(py + ln * np.sin(ang))),
                255,
                max(1, int(2 * size / 256)),
                AA,
            )

    a = aa_mask(size, draw)
    a = cv2.GaussianBlur(a, (0, 0), rng.uniform(0.5, 1.5)) * sc.region
    a = np.clip(a * 1.5, 0, 1)
    ink = np.float32(sc.ink)
    blend(img, img * np.float32(1 - s) + ink * np.float32(s), a)
    return a > 0.1  # ink is dark on a light surface: even a tenth of it shows


def dent(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    r = size * rng.uniform(0.05, 0.11)
    yy, xx = grid(size)
    dy, dx = (yy - y) / np.float32(r), (xx - x) / np.float32(r)
    d2 = dy * dy + dx * dx
    ang = rng.uniform(0, 2 * np.pi)
    proj = dx * np.float32(np.cos(ang)) + dy * np.float32(np.sin(ang))
    delta = np.float32(0.45 * s) * proj * np.clip(1 - d2, 0, None)
    mul(img, 1 + delta * sc.region)
    np.clip(img, 0, 1, out=img)
    return (d2 < 0.7) & sc.region


def burn(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    a = soft_blob(rng, size, y, x, size * rng.uniform(0.035, 0.09), 0.9)
    halo = cv2.GaussianBlur(a, (0, 0), 2.5)
    blend(img, img * np.float32([0.55, 0.4, 0.25]), halo * np.float32(s))
    blend(img, np.float32([0.04, 0.03, 0.02]), (a**2) * np.float32(0.3 + 0.7 * s))
    return halo > 0.25  # the halo's faint tail still darkens the surface visibly


def fold(img, sc, rng, s):
    size = img.shape[0]
    y, x = pick_point(rng, sc.region)
    ang = rng.uniform(0, np.pi)
    length = size * rng.uniform(0.25, 0.7)
    w = rng.uniform(2.5, 6) * size / 256
    yy, xx = grid(size)
    along = (xx - x) * np.float32(np.cos(ang)) + (yy - y) * np.float32(np.sin(ang))
    across = (
        -(xx - x) * np.float32(np.sin(ang)) + (yy - y) * np.float32(np.cos(ang))
    ) / np.float32(w)
    taper = np.clip(1 - (np.abs(along) / np.float32(length / 2)) ** 4, 0, 1)
    delta = np.float32(0.8 * s) * across * np.exp(-across * across) * taper
    mul(img, 1 + delta * sc.region)
    np.clip(img, 0, 1, out=img)
    return (np.abs(across) < 1.6) & (taper > 0.2) & sc.region


# These move the product's outline: the part now covers background (or background shows where part
# was), so their masks legitimately leave the product's normal region.
OUTLINE_DEFECTS = frozenset({"bent"})

PAINTERS = {
    "scratch": scratch,
    "crack": crack,
    "hole": hole,
    "stain": stain,
    "contamination": contamination,
    "discoloration": discoloration,
    "cut": cut,
    "missing": missing,
    "bent": bent,
    "rust": rust,
    "chip": chip,
    "misprint": misprint,
    "dent": dent,
    "burn": burn,
    "fold": fold,
}
