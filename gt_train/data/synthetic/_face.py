"""The synthetic person: a textured 3-D head mesh built from scikit-image's astronaut photo.

Everything here is built once (`head_model()`, cached) and does not depend on the
output size. Units are metres in the head frame (see the package docstring):
x right, y down, z away from the camera (the face looks toward -z), origin near the
centre of the head. Photo coordinates ("px") are astronaut.png pixels, x right, y down,
texel centres at integers; 1 px = `M_PER_PX` metres on the face.

The head is a stack of horizontal elliptical rings, one per photo row, whose width
follows the photo's head silhouette (hair and face, segmented by colour) and whose
front follows a face profile, plus Gaussian relief for the nose, brows, eye sockets,
cheeks, lips and chin. The photo is projected onto it along z. The smiling,
teeth-showing mouth of the photo is repainted as closed lips; the mesh is cut along
the line between the lips, so when the jaw drops a gap opens onto two small
mouth-interior patches (upper teeth and a dark cavity; lower teeth and tongue) that
sit behind the lips. Eyelids are painted into the texture per frame.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from gt_runtime.errors import require
from gt_train.data.synthetic._raster import grid_faces, sample_bilinear

M_PER_PX = 0.00135  # metres per photo pixel on the face (inter-pupil 46 px ~ 62 mm)
X0, Y0 = 225.0, 105.0  # photo px of the head-frame origin (x, y); z = 0 is ~10 cm behind the face
Y_CHIN = 180  # photo row of the chin tip
Y_SLIT = 145  # photo row of the line between the lips (a mesh row: the cut)
MOUTH_L, MOUTH_R = 202.9, 244.1  # mouth corners (px)
MOUTH_XC = 0.5 * (MOUTH_L + MOUTH_R)
MOUTH_W = 0.5 * (MOUTH_R - MOUTH_L)  # half-width (px)
LOWER_SHARE = 0.88  # share of the lip gap made by the lower lip (the rest: upper lip lift)
JAW_DIR = np.array([0.0, 1.0, 0.2]) / np.linalg.norm([0.0, 1.0, 0.2])  # jaw drops down and a little back
DEPTH_K = 1.15  # half-depth / half-width of a ring
N_COLS = 256  # vertices per ring
TEX_H = 512  # photo rows; the mouth-interior textures sit below them in the atlas
INTERIOR_ROWS, INTERIOR_COLS = 32, 128

# Eyes (px): outer/inner corners, upper-lid apex, lower-lid bottom. "left" = image left.
EYES = {
    "left": dict(c0=(192.5, 100.8), c1=(212.3, 100.3), top=97.0, bottom=104.4),
    "right": dict(c0=(236.0, 102.6), c1=(259.0, 103.2), top=99.4, bottom=106.3),
}
LIP_UPPER_RGB = np.array([0.78, 0.47, 0.47], np.float32)
LIP_LOWER_RGB = np.array([0.83, 0.53, 0.52], np.float32)


def smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# ----------------------------------------------------------------------------- photo


def _photo() -> np.ndarray:
    """astronaut.png -> [512, 512, 3] float32 in [0, 1]."""
    data = require("skimage.data", "gt sample synthetic")

    return data.astronaut().astype(np.float32) / 255.0


def _silhouette(photo: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Head silhouette per photo row -> (first row, left [R] px, right [R] px) for rows first..Y_CHIN."""
    ndi = require("scipy.ndimage", "gt sample synthetic")

    a = photo * 255
    chroma = a.max(-1) - a.min(-1)
    bright = a.mean(-1)
    seg = (chroma > 28) | (bright < 140)  # the wall is a light, grey, low-chroma backdrop
    seg[143:] = False  # below: the collar ring touches the jaw; the jaw is an ellipse instead
    seg = ndi.binary_opening(seg, iterations=1)
    seg = ndi.binary_closing(seg, iterations=3)
    seg = ndi.binary_fill_holes(seg)
    lab, n = ndi.label(seg)
    seg = lab == (np.argmax(ndi.sum(seg, lab, range(1, n + 1))) + 1)
    rows = np.nonzero(seg.sum(1) >= 3)[0]
    y_top = int(rows.min())
    ys = np.arange(y_top, Y_CHIN + 1)
    left = np.array([np.nonzero(seg[y])[0].min() if seg[y].any() else X0 for y in ys], np.float64)
    right = np.array([np.nonzero(seg[y])[0].max() if seg[y].any() else X0 for y in ys], np.float64)
    # jaw: an ellipse through the cheeks and the chin, blended in over rows 125..142
    ey = np.clip((ys - 100.0) / (Y_CHIN - 100.0), -1, 1)
    half = 48.0 * np.sqrt(np.clip(1 - ey**2, 0, 1))
    w = np.clip((ys - 125.0) / 17.0, 0, 1)
    w[ys > 142] = 1.0
    left = (1 - w) * left + w * (225.0 - half)
    right = (1 - w) * right + w * (225.0 + half)
    left = ndi.gaussian_filter1d(left, 1.5, mode="nearest")
    right = ndi.gaussian_filter1d(right, 1.5, mode="nearest")
    mid = 0.5 * (left + right)
    left[0] = right[0] = mid[0]  # the crown and the chin close to a point
    left[-1] = right[-1] = 225.0
    return y_top, left, right


def _front_depth(ys: np.ndarray, a_m: np.ndarray) -> np.ndarray:
    """Distance (m) of the face front in front of z = 0 per row: a dome above the brows, a face profile below."""
    prof = np.interp(ys, [15, 60, 92, 110, 130, 145, 165, 175, 180],
                     [0.06, 0.092, 0.094, 0.093, 0.091, 0.089, 0.086, 0.082, 0.074])
    return np.where(ys < 100, np.minimum(DEPTH_K * a_m, prof), prof)


def relief(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Face relief (m, negative = toward the camera) at photo px (x, y), before front weighting."""

    def g(cx, cy, sx, sy):
        return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))

    nose_h = np.interp(y, [96, 104, 118, 126, 129, 132, 135], [0.0, 0.005, 0.011, 0.019, 0.016, 0.006, 0.0])
    nose_w = np.interp(y, [96, 126, 135], [3.5, 5.5, 7.0])
    dz = -nose_h * np.exp(-0.5 * ((x - 224.5) / nose_w) ** 2)
    dz -= 0.006 * (g(213.5, 128.5, 4.0, 3.5) + g(235.5, 128.5, 4.0, 3.5))  # nose wings
    for eye in EYES.values():
        ex = 0.5 * (eye["c0"][0] + eye["c1"][0])
        ey = 0.5 * (eye["top"] + eye["bottom"])
        dz += 0.007 * g(ex, ey, 10.0, 7.0) - 0.004 * g(ex, ey, 6.5, 3.5)  # socket, eyeball
    dz -= 0.003 * np.exp(-0.5 * ((y - 91.0) / 4.0) ** 2) * np.exp(-0.5 * ((x - 225.0) / 26.0) ** 2)  # brow ridge
    dz -= 0.004 * (g(197.0, 125.0, 9.0, 9.0) + g(253.0, 125.0, 9.0, 9.0))  # cheeks
    dz -= 0.004 * g(MOUTH_XC, 146.0, 15.0, 5.0)  # lips
    dz -= 0.004 * g(224.5, 169.0, 10.0, 6.0)  # chin
    return dz


# ----------------------------------------------------------------------------- mouth


def lip_heights(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Upper and lower lip heights (px) above/below the slit at t = (x - MOUTH_XC) / MOUTH_W in [-1, 1]."""
    s = np.clip(1 - t**2, 0, 1)
    hu = 0.9 + 4.3 * s**0.7 - 1.0 * np.exp(-((t / 0.13) ** 2))  # cupid's bow dip
    hl = 0.7 + 5.8 * s**0.8
    return hu, hl


def jaw_weight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How much of the lower-lip drop a point below the slit follows (1 at the lip centre)."""
    width = MOUTH_W + (48.0 - MOUTH_W) * np.clip((y - Y_SLIT) / 12.0, 0, 1)
    gx = np.clip(1 - ((x - MOUTH_XC) / width) ** 2, 0, 1) ** 1.5
    gy = 1 + 0.35 * np.clip((y - Y_SLIT) / (Y_CHIN - Y_SLIT), 0, 1)  # the chin swings further
    return gx * gy


def lift_weight(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How much of the upper-lip lift a point at or above the slit follows."""
    gx = np.clip(1 - ((x - MOUTH_XC) / MOUTH_W) ** 2, 0, 1) ** 1.5
    return gx * np.exp(-(((Y_SLIT - y) / 8.0) ** 2))


def _repaint_mouth(tex: np.ndarray, photo: np.ndarray) -> None:
    """Replace the photo's open smile by closed lips, in place (tex [512, 512, 3])."""
    x0, x1, y0, y1 = 193, 255, 132, 161
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    top, bot = photo[y0 - 2:y0 + 1, x0:x1].mean(0), photo[y1 - 1:y1 + 2, x0:x1].mean(0)  # [w, 3]
    ndi = require("scipy.ndimage", "gt sample synthetic")

    top = ndi.uniform_filter1d(top, 7, axis=0)
    bot = ndi.uniform_filter1d(bot, 7, axis=0)
    f = ((ys - (y0 - 1)) / (y1 - y0))[..., None]
    skin = top[None] * (1 - f) + bot[None] * f
    # a little of the photo's shading (smile lines) survives in the skin
    skin = 0.7 * skin + 0.3 * ndi.gaussian_filter(photo[y0:y1, x0:x1], (2, 2, 0))
    t = (xs - MOUTH_XC) / MOUTH_W
    hu, hl = lip_heights(np.clip(t, -1, 1))
    inside_x = smoothstep((1.0 - np.abs(t)) * MOUTH_W / 1.2)
    up = smoothstep((ys - (Y_SLIT - hu) + 0.5) / 1.2) * smoothstep((Y_SLIT - ys + 0.6) / 0.6) * inside_x
    lo = smoothstep(((Y_SLIT + hl) - ys + 0.5) / 1.2) * smoothstep((ys - Y_SLIT + 0.6) / 0.6) * inside_x
    rel_l = np.clip((ys - Y_SLIT) / np.maximum(hl, 1e-3), 0, 1)
    upper_rgb = LIP_UPPER_RGB * (0.88 + 0.08 * np.clip((Y_SLIT - ys) / np.maximum(hu, 1e-3), 0, 1))[..., None]
    lower_rgb = LIP_LOWER_RGB * (0.92 + 0.14 * np.exp(-(((rel_l - 0.45) / 0.25) ** 2)))[..., None]
    out = skin * (1 - up[..., None]) + upper_rgb * up[..., None]
    out = out * (1 - lo[..., None]) + lower_rgb * lo[..., None]
    slit = np.exp(-(((ys - Y_SLIT) / 0.7) ** 2)) * inside_x * (0.55 + 0.3 * np.abs(np.clip(t, -1, 1)))
    out = out * (1 - slit[..., None]) + np.array([0.30, 0.12, 0.12], np.float32) * slit[..., None]
    region = smoothstep((1 - ((xs - MOUTH_XC) / 27.0) ** 2 - ((ys - 146.5) / 12.5) ** 2) / 0.25)
    tex[y0:y1, x0:x1] = photo[y0:y1, x0:x1] * (1 - region[..., None]) + out * region[..., None]


def _interior_textures() -> tuple[np.ndarray, np.ndarray]:
    """Mouth interior -> (upper [32, 128, 3]: upper teeth over a dark cavity, lower [32, 128, 3]: lower teeth, tongue)."""
    r = np.arange(INTERIOR_ROWS, dtype=np.float32)[:, None]
    c = np.arange(INTERIOR_COLS, dtype=np.float32)[None, :]
    xpx = (c / (INTERIOR_COLS - 1) - 0.5) * 2.4 * MOUTH_W  # px from the mouth centre
    t = xpx / MOUTH_W
    side = np.clip(1 - 0.6 * t**2, 0.2, 1)[..., None]
    teeth_rgb = np.array([0.90, 0.87, 0.80], np.float32)
    cavity_rgb = np.array([0.20, 0.07, 0.08], np.float32)
    gaps = np.zeros_like(xpx)
    for edge in (0.0, 6.3, 11.0, 15.0, 18.5, 22.0):  # tooth edges (px from the centre)
        gaps = np.maximum(gaps, np.exp(-(((np.abs(xpx) - edge) / 0.55) ** 2)))
    # upper patch: photo rows Y_SLIT - 6 .. Y_SLIT + 22
    yu = Y_SLIT - 6 + r * (28.0 / (INTERIOR_ROWS - 1)) - Y_SLIT
    teeth_bottom = 4.5 - 1.5 * t**2
    tooth = smoothstep((teeth_bottom - yu) / 0.8)
    teeth = teeth_rgb * (1 - 0.45 * gaps)[..., None] * (1 - 0.12 * smoothstep((yu - 2) / 4))[..., None]
    dark = cavity_rgb * (1 - 0.5 * np.clip((yu - 6) / 14, 0, 1))[..., None]
    upper = (teeth * tooth[..., None] + dark * (1 - tooth[..., None])) * side
    # lower patch: photo rows Y_SLIT - 3.5 .. Y_SLIT + 14 (rest position; it moves with the jaw)
    yl = Y_SLIT - 3.5 + r * (17.5 / (INTERIOR_ROWS - 1)) - Y_SLIT
    ltooth = smoothstep((-1.0 - yl) / 0.6) * smoothstep((yl + 3.5) / 0.5 + 1)
    tongue = np.array([0.55, 0.24, 0.26], np.float32) * (1 - 0.5 * np.clip((yl - 2) / 12, 0, 1))[..., None]
    lteeth = teeth_rgb * 0.92 * (1 - 0.45 * gaps)[..., None]
    lower = (lteeth * ltooth[..., None] + tongue * (1 - ltooth[..., None])) * side
    return upper.astype(np.float32), lower.astype(np.float32)


# ----------------------------------------------------------------------------- eyelids


@dataclass
class _Lid:
    box: tuple[int, int, int, int]  # y0, y1, x0, x1 texel box in the atlas
    upper: np.ndarray  # [h, w] px row of the upper lid per texel column
    lower: np.ndarray  # [h, w]
    inside: np.ndarray  # [h, w] horizontal inside weight
    skin: np.ndarray  # [h, w, 3] eyelid skin colour
    ys: np.ndarray  # [h, w] texel rows


def _lid_curves(eye: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> (upper, lower, t) lid rows (px) at photo x, t in [-1, 1] from corner c0 to c1."""
    (ax, ay), (bx, by) = eye["c0"], eye["c1"]
    t = 2 * (x - ax) / (bx - ax) - 1
    line = ay + (by - ay) * (t + 1) / 2
    mid = 0.5 * (ay + by)
    s = np.clip(1 - t**2, 0, 1)
    return line - (mid - eye["top"]) * s**0.8, line + (eye["bottom"] - mid) * s**0.9, t


def _make_lid(eye: dict, tex: np.ndarray) -> _Lid:
    (ax, _), (bx, _) = eye["c0"], eye["c1"]
    x0, x1 = int(np.floor(min(ax, bx))) - 1, int(np.ceil(max(ax, bx))) + 2
    y0, y1 = int(np.floor(eye["top"])) - 3, int(np.ceil(eye["bottom"])) + 3
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    upper, lower, t = _lid_curves(eye, xs)
    inside = smoothstep((1 - np.abs(t)) * abs(bx - ax) / 2 / 1.0)
    # eyelid skin: the photo's skin just above the eye, per column, shaded toward the lash line
    above = tex[y0 - 6:y0 - 2, x0:x1].mean(0)  # [w, 3]
    skin = np.broadcast_to(above[None], ys.shape + (3,)).copy()
    return _Lid((y0, y1, x0, x1), upper, lower, inside, skin, ys)


def paint_lids(atlas: np.ndarray, lids: list[_Lid], blink: float) -> None:
    """Close the eyelids by `blink` (0 open, 1 closed) in place, in the atlas' eye boxes."""
    if blink <= 1e-4:
        return
    for lid in lids:
        y0, y1, x0, x1 = lid.box
        edge = lid.upper + blink * (lid.lower - lid.upper)
        cover = smoothstep((edge - lid.ys + 0.5) / 1.0) * smoothstep((lid.ys - lid.upper + 2.0) / 1.0) * lid.inside
        shade = 1 - 0.12 * np.clip((lid.ys - lid.upper) / np.maximum(lid.lower - lid.upper, 1e-3), 0, 1)
        lash = np.exp(-(((lid.ys - edge) / 0.8) ** 2)) * lid.inside * min(1.0, 2 * blink)
        patch = atlas[y0:y1, x0:x1]
        lidc = lid.skin * shade[..., None]
        patch = patch * (1 - cover[..., None]) + lidc * cover[..., None]
        patch = patch * (1 - 0.65 * lash[..., None]) + np.array([0.22, 0.14, 0.12], np.float32) * 0.65 * lash[..., None]
        atlas[y0:y1, x0:x1] = patch


# ----------------------------------------------------------------------------- the model


@dataclass
class HeadModel:
    verts: np.ndarray  # [V, 3] float64 rest positions (m, head frame)
    faces: np.ndarray  # [F, 3] int64, front-facing = counter-clockwise on screen (y down)
    uv: np.ndarray  # [V, 2] atlas texel coords (x, y)
    normals: np.ndarray  # [V, 3] rest normals (zero for the mouth interior)
    lit: np.ndarray  # [V] 1 for skin/hair (lit), 0 for the mouth interior (unlit)
    jaw: np.ndarray  # [V] weight of the lower-lip drop (along JAW_DIR)
    lift: np.ndarray  # [V] weight of the upper-lip lift (along -y)
    head_faces: np.ndarray  # [F_head] indices into faces of the head surface (for points_init)
    atlas: np.ndarray  # [TEX_H + 2 * INTERIOR_ROWS, 512, 3] float32 texture atlas
    lids: list[_Lid]
    rows: np.ndarray  # [R] photo rows of the rings
    ring_xc: np.ndarray  # [R] px
    ring_a: np.ndarray  # [R] px half-width
    ring_zc: np.ndarray  # [R] m ring centre z
    ring_c: np.ndarray  # [R] m ring half-depth
    head_mask: np.ndarray  # [512, 512] bool photo pixels covered by the head at rest
    photo: np.ndarray  # [512, 512, 3] float32

    def front_point(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Rest 3-D point (m) on the front of the head at photo px (x, y) -> [..., 3]."""
        xc = np.interp(y, self.rows, self.ring_xc)
        a = np.maximum(np.interp(y, self.rows, self.ring_a), 1e-6)
        zc = np.interp(y, self.rows, self.ring_zc)
        c = np.interp(y, self.rows, self.ring_c)
        s = np.clip((x - xc) / a, -1, 1)
        cosp = np.sqrt(1 - s**2)
        z = zc - c * cosp + relief(x, y) * cosp**2
        return np.stack([(x - X0) * M_PER_PX, (y - Y0) * M_PER_PX, z], -1)

    def deformed(self, open_m: float) -> np.ndarray:
        """Vertices [V, 3] with the lips apart by open_m metres at the centre."""
        v = self.verts.copy()
        if open_m > 0:
            v += (open_m * LOWER_SHARE) * self.jaw[:, None] * JAW_DIR[None]
            v[:, 1] -= open_m * (1 - LOWER_SHARE) * self.lift
        return v


@lru_cache(maxsize=1)
def head_model() -> HeadModel:
    """Build the head (about a second; cached)."""
    ndi = require("scipy.ndimage", "gt sample synthetic")

    photo = _photo()
    y_top, left, right = _silhouette(photo)
    rows = np.arange(y_top, Y_CHIN + 1, dtype=np.float64)
    xc = 0.5 * (left + right)
    a = 0.5 * (right - left)
    a_m = a * M_PER_PX
    c = DEPTH_K * a_m
    front = _front_depth(rows, a_m)
    zc = -front + c

    # head mask in the photo and the texture: outside the head, the nearest head colour
    yy, xx = np.mgrid[0:512, 0:512]
    head_mask = np.zeros((512, 512), bool)
    for i, y in enumerate(rows.astype(int)):
        head_mask[y, int(np.ceil(left[i])):int(np.floor(right[i])) + 1] = True
    inner = ndi.binary_erosion(head_mask, iterations=2)
    _, (iy, ix) = ndi.distance_transform_edt(~inner, return_indices=True)
    tex = photo[iy, ix].copy()
    tex = np.where(inner[..., None], photo, ndi.gaussian_filter(tex, (1.5, 1.5, 0)))
    _repaint_mouth(tex, photo)

    # rings: vertex (row r, column k), phi = 0 is the front
    R = rows.size
    phi = (np.arange(N_COLS) + 0.5) / N_COLS * 2 * np.pi - np.pi
    sinp, cosp = np.sin(phi)[None, :], np.cos(phi)[None, :]
    X = xc[:, None] + a[:, None] * sinp  # px
    Y = np.broadcast_to(rows[:, None], X.shape)
    w_front = np.clip(cosp, 0, 1) ** 2
    Z = zc[:, None] - c[:, None] * cosp + relief(X, Y) * w_front
    verts = np.stack([(X - X0) * M_PER_PX, (Y - Y0) * M_PER_PX, Z], -1).reshape(-1, 3)
    sin_clip = np.sin(np.clip(phi, -0.47 * np.pi, 0.47 * np.pi))[None, :]
    uv = np.stack([np.broadcast_to(xc[:, None] + a[:, None] * sin_clip, X.shape), Y], -1).reshape(-1, 2)
    faces = grid_faces(R, N_COLS, wrap=True)

    # the cut between the lips: front vertices of the slit row inside the mouth get a lower twin
    r_slit = int(np.nonzero(rows == Y_SLIT)[0][0])
    cols = np.nonzero((X[r_slit] > MOUTH_L) & (X[r_slit] < MOUTH_R) & (cosp[0] > 0))[0]
    cut = r_slit * N_COLS + cols
    twin = verts.shape[0] + np.arange(cut.size)
    remap = np.arange(verts.shape[0])
    remap[cut] = twin
    below = np.all((faces // N_COLS) >= r_slit, axis=1)  # the quads between the slit row and the next
    faces[below] = remap[faces[below]]
    verts = np.concatenate([verts, verts[cut]])
    uv = np.concatenate([uv, uv[cut]])
    Xf, Yf = X.reshape(-1), Y.reshape(-1)
    Xf, Yf = np.concatenate([Xf, Xf[cut]]), np.concatenate([Yf, Yf[cut]])
    is_lower = np.concatenate([Yf[: R * N_COLS] > Y_SLIT, np.ones(cut.size, bool)])
    jaw = np.where(is_lower, jaw_weight(Xf, Yf), 0.0)
    lift = np.where(is_lower, 0.0, lift_weight(Xf, Yf))
    # rest normals: area-weighted face normals (outward)
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(verts)
    for k in range(3):
        np.add.at(normals, faces[:, k], fn)
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    # orientation check: the nose tip's normal points at the camera (-z)
    if normals[np.argmin(verts[:, 2]), 2] > 0:
        normals = -normals
    head_faces = np.arange(faces.shape[0])

    # mouth interior patches, in photo px, offset behind the lips
    up_tex, lo_tex = _interior_textures()
    atlas = np.concatenate([tex, np.zeros((2 * INTERIOR_ROWS, 512, 3), np.float32)])
    atlas[TEX_H:TEX_H + INTERIOR_ROWS, :INTERIOR_COLS] = up_tex
    atlas[TEX_H + INTERIOR_ROWS:, :INTERIOR_COLS] = lo_tex
    model = HeadModel(verts, faces, uv, normals, np.ones(verts.shape[0]), jaw, lift, head_faces,
                      atlas, [], rows, xc, a, zc, c, head_mask, photo)
    patches = []
    for k, (ya, yb, nrows, depth) in enumerate([(-6.0, 22.0, 30, None), (-3.5, 14.0, 20, 0.0075)]):
        ncols = 26
        px = MOUTH_XC + np.linspace(-1.2, 1.2, ncols)[None, :] * MOUTH_W
        py = Y_SLIT + np.linspace(ya, yb, nrows)[:, None]
        px, py = np.broadcast_arrays(px, py)
        p = model.front_point(px, py)
        if depth is None:  # upper teeth 5.5 mm behind the lip surface, then the cavity slopes back
            off = 0.0055 + (0.012 - 0.0055) * np.clip((py - Y_SLIT - 4.5) / 2.5, 0, 1)
        else:
            off = np.full(py.shape, depth)
        p[..., 2] += off
        u = np.linspace(0, INTERIOR_COLS - 1, ncols)[None, :] + 0 * py
        v = TEX_H + k * INTERIOR_ROWS + np.linspace(0, INTERIOR_ROWS - 1, nrows)[:, None] + 0 * px
        j = jaw_weight(px, np.full_like(py, Y_SLIT + 1e-6)) if k == 1 else np.zeros_like(px)
        patches.append((p.reshape(-1, 3), np.stack([u, v], -1).reshape(-1, 2), j.reshape(-1), nrows, ncols))
    for p, puv, pj, nrows, ncols in patches:
        off = model.verts.shape[0]
        model.faces = np.concatenate([model.faces, grid_faces(nrows, ncols, wrap=False, offset=off)])
        model.verts = np.concatenate([model.verts, p])
        model.uv = np.concatenate([model.uv, puv])
        model.normals = np.concatenate([model.normals, np.zeros_like(p)])
        model.lit = np.concatenate([model.lit, np.zeros(p.shape[0])])
        model.jaw = np.concatenate([model.jaw, pj])
        model.lift = np.concatenate([model.lift, np.zeros(p.shape[0])])
    model.lids = [_make_lid(e, atlas) for e in EYES.values()]
    return model


# ----------------------------------------------------------------------------- landmarks


def landmarks_px(blink: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """iBUG-68 landmarks on the photo at rest, eyelids closed by `blink`.

    -> (xy [68, 2] px, jaw [68] bool: follows the lower-lip drop, lift [68] bool: follows the upper-lip lift).
    Order follows iBUG: 0-16 jaw from image left to image right, 17-21 / 22-26 brows (image
    left, right), 27-30 nose bridge, 31-35 nostrils, 36-41 image-left eye (outer corner
    first, clockwise), 42-47 image-right eye (inner corner first), 48-59 outer lips from
    the image-left corner clockwise, 60-67 inner lips.
    """
    pts = []
    al = np.pi * (1 - np.arange(17) / 16)
    pts += list(zip(225 + 47 * np.cos(al), 100 + 80 * np.sin(al)))
    pts += [(190.5, 90.5), (195.0, 88.5), (201.0, 88.0), (207.0, 88.7), (213.5, 90.6)]
    pts += [(238.0, 92.5), (244.0, 91.7), (250.0, 91.9), (256.0, 93.0), (262.0, 95.0)]
    pts += [(224.5, 100.0), (224.5, 109.0), (224.5, 118.0), (224.5, 127.5)]
    pts += [(214.0, 130.5), (219.0, 131.5), (224.5, 132.0), (230.0, 131.5), (235.0, 130.5)]
    for name, order in (("left", (-1.0, -1 / 3, 1 / 3, 1.0)), ("right", (-1.0, -1 / 3, 1 / 3, 1.0))):
        eye = EYES[name]
        (ax, _), (bx, _) = eye["c0"], eye["c1"]
        xs = ax + (np.array(order) + 1) / 2 * (bx - ax)  # points at t = -1, -1/3, 1/3, 1
        up, lo, _ = _lid_curves(eye, xs)
        up = up + blink * (lo - up)
        if name == "left":  # 36 outer, 37 38 upper, 39 inner, 40 41 lower (right to left)
            pts += [(xs[0], up[0]), (xs[1], up[1]), (xs[2], up[2]), (xs[3], up[3]), (xs[2], lo[2]), (xs[1], lo[1])]
        else:  # 42 inner, 43 44 upper, 45 outer, 46 47 lower (right to left)
            pts += [(xs[0], up[0]), (xs[1], up[1]), (xs[2], up[2]), (xs[3], up[3]), (xs[2], lo[2]), (xs[1], lo[1])]
    t_up = np.array([-2 / 3, -1 / 3, 0, 1 / 3, 2 / 3])
    hu, _ = lip_heights(t_up)
    _, hl = lip_heights(t_up[::-1])
    pts += [(MOUTH_L, Y_SLIT)]
    pts += [(MOUTH_XC + t * MOUTH_W, Y_SLIT - h) for t, h in zip(t_up, hu)]
    pts += [(MOUTH_R, Y_SLIT)]
    pts += [(MOUTH_XC + t * MOUTH_W, Y_SLIT + h) for t, h in zip(t_up[::-1], hl)]
    t_in = np.array([-0.5, 0.0, 0.5])
    pts += [(MOUTH_L + 0.5, Y_SLIT)] + [(MOUTH_XC + t * MOUTH_W, Y_SLIT) for t in t_in]
    pts += [(MOUTH_R - 0.5, Y_SLIT)] + [(MOUTH_XC + t * MOUTH_W, Y_SLIT) for t in t_in[::-1]]
    xy = np.array(pts, np.float64)
    idx = np.arange(68)
    jaw = ((idx <= 16) & (xy[:, 1] > Y_SLIT)) | ((idx >= 55) & (idx <= 59)) | (idx >= 65)
    lift = ((idx >= 49) & (idx <= 53)) | ((idx >= 61) & (idx <= 63))
    return xy, jaw, lift


def landmarks_3d(model: HeadModel, open_m: float, blink: float) -> np.ndarray:
    """-> [68, 3] head-frame points (m) of the landmarks for this mouth opening and blink."""
    xy, jaw, lift = landmarks_px(blink)
    p = model.front_point(xy[:, 0], xy[:, 1])
    jw = np.where(jaw, jaw_weight(xy[:, 0], np.where(jaw, np.maximum(xy[:, 1], Y_SLIT + 1e-6), xy[:, 1])), 0.0)
    lw = np.where(lift, lift_weight(xy[:, 0], xy[:, 1]), 0.0)
    p = p + (open_m * LOWER_SHARE) * jw[:, None] * JAW_DIR[None]
    p[:, 1] -= open_m * (1 - LOWER_SHARE) * lw
    return p


def sample_points(model: HeadModel, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n points on the head surface (front 3/4, area-weighted, closed mouth) -> (xyz [n, 3] m, rgb [n, 3] uint8)."""
    rng = np.random.default_rng(seed)
    f = model.faces[model.head_faces]
    tri = model.verts[f]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    nz = model.normals[f].mean(1)[:, 2]
    area = area * (nz < 0.35)  # skip the back of the head, which the camera never sees
    pick = rng.choice(area.size, size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    w = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    xyz = np.einsum("nk,nkd->nd", w, tri[pick])
    uv = np.einsum("nk,nkd->nd", w, model.uv[f[pick]])
    rgb = sample_bilinear(model.atlas, uv[:, 0], uv[:, 1])
    return xyz.astype(np.float32), np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
