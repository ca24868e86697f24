"""Normal (defect-free) renderers, one per product.

Each renderer draws a randomised normal image (colour, rotation, scale, position, texture) and
returns a `Scene`: the image plus the geometry defects need (where the part is, its edge, what lies
behind it, where components sit).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from qc_stream.synth.noise import (
    blend,
    colour,
    edge_of,
    fine_noise,
    fractal,
    grid,
    mul,
    rotated_coords,
    shade,
    smooth_noise,
    white_noise,
)

AA = cv2.LINE_AA


@dataclass
class Scene:
    img: np.ndarray  # HxWx3 float32 0..1
    region: np.ndarray  # bool HxW: pixels of the product (all True for textures)
    background: np.ndarray  # HxWx3: what shows where material is missing
    edge: np.ndarray  # bool HxW: boundary band where chips / bends happen
    parts: np.ndarray | None = None  # bool HxW: components (pcb) a "missing" defect removes
    ink: tuple = (0.08, 0.08, 0.1)  # print colour for misprints
    base: np.ndarray | None = None  # mean material colour


def _texture_scene(img, background, edge=None, **kw) -> Scene:
    size = img.shape[0]
    region = np.ones((size, size), bool)
    if edge is None:
        edge = region
    return Scene(np.clip(img, 0, 1), region, background, edge, **kw)


def _dark_backing(rng, size, c=(0.08, 0.07, 0.06)):
    return shade(0.9 + 0.1 * smooth_noise(rng, size, size, 8), colour(rng, c, 0.03))


def carpet(rng, size):
    c = colour(
        rng,
        rng.choice(
            np.array([[0.55, 0.45, 0.35], [0.35, 0.4, 0.55], [0.6, 0.25, 0.2], [0.4, 0.5, 0.35]])
        ),
        0.08,
    )
    n = 0.6 * fractal(rng, size, (8, 16, 32)) + 1.2 * fine_noise(rng, size, 0.8)
    img = shade(0.8 + 0.09 * n, c)
    return _texture_scene(img, _dark_backing(rng, size), base=c)


def wood(rng, size):
    angle = rng.uniform(0, np.pi)
    u, v = rotated_coords(size, angle)
    period = rng.uniform(7, 16) * size / 256
    warp = fractal(rng, size, (3, 6)) * np.float32(period * 1.2)
    rings = 0.5 + 0.5 * np.sin((v + warp) * np.float32(2 * np.pi / period))
    grain = smooth_noise(rng, size, size, 64, 3)
    grain = cv2.warpAffine(
        grain,
        cv2.getRotationMatrix2D((size / 2, size / 2), -np.degrees(angle), 1.0),
        (size, size),
        borderMode=cv2.BORDER_REFLECT,
    )
    light = colour(rng, (0.72, 0.52, 0.32), 0.08)
    dark = light * np.float32(rng.uniform(0.55, 0.75))
    t = (rings**1.5)[..., None]
    img = light * (1 - t) + dark * t
    mul(img, 1 + 0.04 * grain + 0.02 * fine_noise(rng, size))
    return _texture_scene(img, _dark_backing(rng, size, (0.15, 0.1, 0.06)), base=light)


def tile(rng, size):
    angle = rng.uniform(-0.15, 0.15)
    u, v = rotated_coords(size, angle)
    period = rng.uniform(0.3, 0.55) * size
    grout_w = rng.uniform(2, 4) * size / 256
    fu, fv = (u + size) / np.float32(period), (v + size) / np.float32(period)
    du = np.abs(fu - np.round(fu)) * period
    dv = np.abs(fv - np.round(fv)) * period
    grout = (np.minimum(du, dv) < grout_w).astype(np.float32)
    base = colour(
        rng, rng.choice(np.array([[0.85, 0.85, 0.82], [0.75, 0.8, 0.85], [0.85, 0.78, 0.7]])), 0.05
    )
    marble = fractal(rng, size, (4, 8, 16, 32))
    img = shade(0.93 + 0.04 * marble + 0.01 * fine_noise(rng, size), base)
    gc = colour(rng, (0.45, 0.43, 0.4), 0.08)
    g = cv2.GaussianBlur(grout, (0, 0), 0.7)
    blend(img, gc, g)
    edge = (np.minimum(du, dv) < grout_w + 5 * size / 256) & (grout < 0.5)
    body = shade(np.ones((size, size), np.float32), colour(rng, (0.7, 0.62, 0.55), 0.05))
    return _texture_scene(img, body, edge=edge, base=base)


def fabric(rng, size):
    angle = rng.uniform(0, np.pi)
    u, v = rotated_coords(size, angle)
    period = rng.uniform(3.0, 6.0) * size / 256
    f = np.float32(2 * np.pi / period)
    over = (np.floor(u / period) + np.floor(v / period)) % 2
    thread = np.where(over > 0, np.cos(u * f), np.cos(v * f))
    c = colour(
        rng,
        rng.choice(
            np.array([[0.25, 0.3, 0.55], [0.6, 0.6, 0.58], [0.55, 0.2, 0.25], [0.3, 0.45, 0.3]])
        ),
        0.06,
    )
    n = fractal(rng, size, (4, 8))
    # real cloth is uneven: yarns of varying thickness (slubs) and loose lint, normal variation
    # that looks a little like small defects, so a flawless weave is not trivially separable
    iu, iv = np.floor(u / period).astype(np.int32), np.floor(v / period).astype(np.int32)
    lut_u = rng.normal(0, 1, iu.max() - iu.min() + 1).astype(np.float32)
    lut_v = rng.normal(0, 1, iv.max() - iv.min() + 1).astype(np.float32)
    yarn = np.where(over > 0, lut_v[iv - iv.min()], lut_u[iu - iu.min()])
    lint = np.zeros((size, size), np.float32)
    for _ in range(int(rng.integers(0, 7))):
        cy, cx = rng.uniform(0, size, 2)
        cv2.circle(
            lint,
            (int(cx), int(cy)),
            int(rng.integers(1, 3)),
            float(rng.choice([-1.0, 1.0])),
            -1,
            AA,
        )
    img = shade(
        0.82
        + 0.08 * thread
        + 0.025 * yarn
        + 0.06 * n
        + 0.035 * lint
        + 0.03 * fine_noise(rng, size),
        c,
    )
    return _texture_scene(img, _dark_backing(rng, size), base=c)


def leather(rng, size):
    n = fractal(rng, size, (16, 32, 64), 0.7)
    crease = np.exp(-((n / 0.12) ** 2))
    pores = fine_noise(rng, size, 1.0)
    c = colour(
        rng, rng.choice(np.array([[0.35, 0.22, 0.14], [0.12, 0.11, 0.1], [0.55, 0.38, 0.25]])), 0.05
    )
    img = shade(0.88 + 0.05 * pores - 0.12 * crease + 0.04 * fractal(rng, size, (3, 6)), c)
    return _texture_scene(img, _dark_backing(rng, size, (0.6, 0.55, 0.45)), base=c)


def metal_plate(rng, size):
    brushed = cv2.resize(
        rng.standard_normal((size, 6), dtype=np.float32),
        (size, size),
        interpolation=cv2.INTER_LINEAR,
    )
    brushed = cv2.GaussianBlur(brushed, (0, 0), 0.6)
    angle = rng.uniform(0, 180)
    brushed = cv2.warpAffine(
        brushed,
        cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.3),
        (size, size),
        borderMode=cv2.BORDER_REFLECT,
    )
    u, _ = rotated_coords(size, rng.uniform(0, np.pi))
    spec = np.exp(-((u / np.float32(size * rng.uniform(0.2, 0.5))) ** 2))
    c = colour(rng, (0.62, 0.63, 0.65), 0.07)
    img = shade(0.8 + 0.05 * brushed + 0.18 * spec, c)
    return _texture_scene(img, _dark_backing(rng, size), base=c)


def pcb(rng, size):
    board = colour(
        rng, rng.choice(np.array([[0.1, 0.38, 0.16], [0.08, 0.22, 0.4], [0.12, 0.12, 0.12]])), 0.04
    )
    img = shade(0.9 + 0.05 * fractal(rng, size, (8, 16)) + 0.02 * fine_noise(rng, size), board)
    bare = img.copy()
    s = size / 256
    copper = colour(rng, (0.78, 0.6, 0.3), 0.05)
    for _ in range(rng.integers(6, 12)):
        y, x = rng.uniform(0, size, 2)
        pts = [(x, y)]
        for _ in range(rng.integers(2, 4)):
            if rng.random() < 0.5:
                x = rng.uniform(0, size)
            else:
                y = rng.uniform(0, size)
            pts.append((x, y))
        cv2.polylines(
            img, [np.int32(pts)], False, copper.tolist(), max(1, int(rng.uniform(1.5, 3) * s)), AA
        )
    parts = np.zeros((size, size), np.uint8)
    for _ in range(rng.integers(2, 5)):
        w, h = rng.uniform(20, 50, 2) * s
        x, y = rng.uniform(10 * s, size - w - 10 * s), rng.uniform(10 * s, size - h - 10 * s)
        for k in range(int(w // (6 * s))):  # legs
            px = int(x + 3 * s + k * 6 * s)
            cv2.rectangle(
                img,
                (px, int(y - 4 * s)),
                (px + max(1, int(2 * s)), int(y + h + 4 * s)),
                (0.75, 0.75, 0.75),
                -1,
            )
        cv2.rectangle(img, (int(x), int(y)), (int(x + w), int(y + h)), (0.08, 0.08, 0.09), -1)
        cv2.rectangle(
            parts, (int(x - 2 * s), int(y - 5 * s)), (int(x + w + 2 * s), int(y + h + 5 * s)), 1, -1
        )
    for _ in range(rng.integers(4, 10)):
        x, y = rng.uniform(0, size, 2)
        r = int(rng.uniform(2.5, 5) * s) + 1
        cv2.circle(img, (int(x), int(y)), r, (0.85, 0.82, 0.75), -1, AA)
        cv2.circle(parts, (int(x), int(y)), r + 1, 1, -1)
    for _ in range(rng.integers(2, 5)):  # silkscreen labels
        x, y = rng.uniform(0, size - 20 * s, 2)
        cv2.rectangle(
            img,
            (int(x), int(y)),
            (int(x + rng.uniform(8, 20) * s), int(y + 3 * s)),
            (0.92, 0.92, 0.9),
            -1,
        )
    return _texture_scene(img, bare, parts=parts > 0, ink=(0.95, 0.95, 0.92), base=board)


# ---------- objects on a background ----------


def _background(rng, size):
    c = colour(
        rng,
        rng.choice(
            np.array(
                [[0.15, 0.15, 0.16], [0.3, 0.32, 0.35], [0.55, 0.55, 0.52], [0.12, 0.18, 0.25]]
            )
        ),
        0.05,
    )
    return shade(0.92 + 0.05 * fractal(rng, size, (2, 4)) + 0.01 * fine_noise(rng, size), c)


def _compose(rng, size, alpha, obj_img, ink=(0.08, 0.08, 0.1), base=None):
    bg = _background(rng, size)
    img = bg.copy()
    blend(img, obj_img, alpha)
    region = alpha > 0.5
    return Scene(
        np.clip(img, 0, 1), region, bg, edge_of(region, max(2, size // 64)), ink=ink, base=base
    )


def _placement(rng, size, scale=(0.8, 1.1)):
    s = rng.uniform(*scale)
    cx = size / 2 + rng.uniform(-0.06, 0.06) * size
    cy = size / 2 + rng.uniform(-0.06, 0.06) * size
    return s, cx, cy, rng.uniform(0, 2 * np.pi)


def _metal(rng, size, base=(0.62, 0.62, 0.64)):
    c = colour(rng, base, 0.06)
    return c, shade(0.85 + 0.06 * fractal(rng, size, (8, 16, 32)), c)


def _radial_light(size, cx, cy, r, angle):
    yy, xx = grid(size)
    d = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)) / np.float32(r)
    return np.clip(1.0 + 0.2 * d, 0.6, 1.4).astype(np.float32)


def pill(rng, size):
    s, cx, cy, ang = _placement(rng, size)
    ax = (int(0.36 * size * s), int(0.22 * size * s))
    alpha = np.zeros((size, size), np.uint8)
    cv2.ellipse(alpha, (int(cx), int(cy)), ax, np.degrees(ang), 0, 360, 255, -1, AA)
    alpha = alpha.astype(np.float32) / 255
    c = colour(
        rng, rng.choice(np.array([[0.92, 0.9, 0.86], [0.95, 0.85, 0.8], [0.85, 0.88, 0.95]])), 0.03
    )
    u, v = rotated_coords(size, ang, cx, cy)
    dome = 1 - 0.25 * ((u / ax[0]) ** 2 + (v / ax[1]) ** 2)
    g = dome * (0.97 + 0.03 * fine_noise(rng, size))
    obj = shade(g, c)
    speck = (white_noise(rng, size) > 2.65).astype(np.float32)
    obj = obj * (1 - 0.35 * cv2.GaussianBlur(speck, (3, 3), 0.6)[..., None] * np.float32([0, 1, 1]))
    line = np.exp(-((u / 1.5) ** 2)) * (np.abs(v) < ax[1] * 0.8)
    mul(obj, 1 - 0.15 * line)
    return _compose(rng, size, alpha, obj, ink=(0.7, 0.1, 0.1), base=c)


def bottle(rng, size):
    s, cx, cy, ang = _placement(rng, size)
    yy, xx = grid(size)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    R = 0.42 * size * s
    alpha = np.clip(R - d + 0.5, 0, 1)
    c = colour(
        rng, rng.choice(np.array([[0.3, 0.2, 0.1], [0.2, 0.35, 0.2], [0.5, 0.55, 0.55]])), 0.04
    )
    t = d / np.float32(R)
    g = (
        0.55
        + 0.35 * np.exp(-(((t - 0.85) / 0.06) ** 2))
        + 0.15 * np.exp(-(((t - 0.6) / 0.1) ** 2))
        - 0.3 * (t < 0.35)
    )
    g = g * _radial_light(size, cx, cy, R, ang) + 0.03 * fine_noise(rng, size)
    return _compose(rng, size, alpha, shade(g.astype(np.float32), c), base=c)


def _metal_part(rng, size, alpha, cx, cy, R, ang):
    c, obj = _metal(rng, size)
    obj *= _radial_light(size, cx, cy, R, ang)[..., None]
    return c, obj


def hex_nut(rng, size):
    s, cx, cy, ang = _placement(rng, size)
    R = 0.4 * size * s
    pts = [
        (cx + R * np.cos(ang + k * np.pi / 3), cy + R * np.sin(ang + k * np.pi / 3))
        for k in range(6)
    ]
    a = np.zeros((size, size), np.uint8)
    cv2.fillPoly(a, [np.int32(np.round(pts))], 255, AA)
    cv2.circle(a, (int(cx), int(cy)), int(R * 0.45), 0, -1, AA)
    alpha = a.astype(np.float32) / 255
    c, obj = _metal_part(rng, size, alpha, cx, cy, R, ang)
    yy, xx = grid(size)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    threads = 1 - 0.15 * (np.sin(d * np.float32(2 * np.pi / 3.0)) > 0) * (d < R * 0.6)
    chamfer = 1 - 0.15 * (d > R * 0.8)
    mul(obj, threads * chamfer)
    return _compose(rng, size, alpha, obj, base=c)


def gear(rng, size):
    s, cx, cy, ang = _placement(rng, size)
    R = 0.42 * size * s
    teeth = int(rng.integers(10, 18))
    pts = []
    for k in range(teeth):
        for frac, rr in ((0.0, 0.82), (0.15, 1.0), (0.45, 1.0), (0.6, 0.82)):
            th = ang + (k + frac) * 2 * np.pi / teeth
            pts.append((cx + R * rr * np.cos(th), cy + R * rr * np.sin(th)))
    a = np.zeros((size, size), np.uint8)
    cv2.fillPoly(a, [np.int32(np.round(pts))], 255, AA)
    cv2.circle(a, (int(cx), int(cy)), int(R * rng.uniform(0.18, 0.3)), 0, -1, AA)
    alpha = a.astype(np.float32) / 255
    c, obj = _metal_part(rng, size, alpha, cx, cy, R, ang)
    yy, xx = grid(size)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    mul(obj, 1 - 0.12 * ((d > R * 0.55) & (d < R * 0.6)))
    return _compose(rng, size, alpha, obj, base=c)


def washer(rng, size):
    s, cx, cy, ang = _placement(rng, size)
    R = 0.42 * size * s
    yy, xx = grid(size)
    d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    r = R * rng.uniform(0.4, 0.6)
    alpha = np.clip(R - d + 0.5, 0, 1) * np.clip(d - r + 0.5, 0, 1)
    c, obj = _metal_part(rng, size, alpha, cx, cy, R, ang)
    theta = np.arctan2(yy - cy, xx - cx)
    ring = 0.05 * np.sin(theta * 3 + np.float32(ang)) + 0.08 * np.exp(
        -(((d - (R + r) / 2) / (0.2 * (R - r))) ** 2)
    )
    mul(obj, 1 + ring)
    return _compose(rng, size, alpha, obj, base=c)


def capsule(rng, size):
    s, cx, cy, ang = _placement(rng, size)
    L, W = 0.36 * size * s, 0.15 * size * s
    u, v = rotated_coords(size, ang, cx, cy)
    du = np.maximum(np.abs(u) - (L - W), 0)
    d = np.sqrt(du**2 + v**2)
    alpha = np.clip(W - d + 0.5, 0, 1)
    c1 = colour(
        rng,
        rng.choice(
            np.array([[0.8, 0.2, 0.15], [0.2, 0.3, 0.7], [0.9, 0.75, 0.2], [0.3, 0.6, 0.35]])
        ),
        0.05,
    )
    c2 = colour(rng, (0.93, 0.92, 0.9), 0.03)
    half = (u > 0)[..., None]
    body = np.where(half, c1, c2)
    g = 1.05 - 0.4 * (v / np.float32(W)) ** 2 + 0.02 * fine_noise(rng, size)
    obj = body * g[..., None]
    mul(obj, 1 - 0.25 * np.exp(-((u / 1.2) ** 2)))  # seam
    for k in range(int(rng.integers(3, 6))):  # printed code on the white half
        pu = -L * 0.6 + k * L * 0.12
        p = np.array([cx + pu * np.cos(ang), cy + pu * np.sin(ang)])
        cv2.circle(obj, (int(p[0]), int(p[1])), max(1, int(size / 100)), (0.1, 0.1, 0.12), -1, AA)
    return _compose(rng, size, alpha, obj, ink=(0.1, 0.1, 0.12), base=c1)


def screw(rng, size):
    s, cx, cy, ang = _placement(rng, size)
    L, W = 0.4 * size * s, 0.07 * size * s
    u, v = rotated_coords(size, ang, cx, cy)
    shaft = (np.abs(v) < W) & (u > -L * 0.7) & (u < L)
    tip = (u >= L * 0.8) & (np.abs(v) < W * (L - u) / (L * 0.2))
    head = (u > -L) & (u <= -L * 0.7) & (np.abs(v) < W * 2.2)
    m = (shaft & ~(u >= L * 0.8)) | tip | head
    alpha = cv2.GaussianBlur(m.astype(np.float32), (3, 3), 0.6)
    c, obj = _metal(rng, size)
    pitch = np.float32(rng.uniform(5, 8) * size / 256)
    threads = 1 - 0.2 * (np.sin((u + 0.5 * v) * 2 * np.pi / pitch) > 0.3) * (u > -L * 0.5)
    cyl = 1.1 - 0.35 * (v / np.float32(W * 2.2)) ** 2
    mul(obj, threads * cyl)
    return _compose(rng, size, alpha, obj, base=c)


RENDERERS = {
    "carpet": carpet,
    "wood": wood,
    "tile": tile,
    "fabric": fabric,
    "leather": leather,
    "metal_plate": metal_plate,
    "pcb": pcb,
    "pill": pill,
    "bottle": bottle,
    "hex_nut": hex_nut,
    "gear": gear,
    "washer": washer,
    "capsule": capsule,
    "screw": screw,
}
