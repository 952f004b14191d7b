"""A contact sheet of the synthetic person: mouth closed / half / open, a blink, the head turned.

    python -m gt_train.data.synthetic.preview docs/synthetic_preview.png [size]
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# (label, yaw, pitch, roll, mouth_open in [0, 1], blink)
STATES = [
    ("mouth closed", 0, 0, 0, 0.0, 0.0), ("mouth half open", 0, 0, 0, 0.5, 0.0),
    ("mouth open", 0, 0, 0, 1.0, 0.0), ("blink", 0, 0, 0, 0.0, 1.0),
    ("yaw +7", 7, 0, 0, 0.3, 0.0), ("yaw -7", -7, 0, 0, 0.6, 0.0),
    ("pitch +5, roll 3", 0, 5, 3, 0.8, 0.0), ("pitch -5, half blink", 0, -5, 0, 0.2, 0.5),
]


def render_preview(out_png: str | Path, size: int = 256) -> Path:
    """Render STATES at size x size into a 2 x 4 labelled contact sheet PNG -> its path."""
    from PIL import Image, ImageDraw

    from gt_train.data.synthetic import _scene
    from gt_train.data.synthetic.identity import Renderer

    ren = Renderer(size)
    tiles = []
    for label, yaw, pitch, roll, mouth, blink in STATES:
        R = _scene.euler_to_matrix(np.array([[yaw, pitch, roll]], np.float64))[0]
        t = np.array([0.0, _scene.HEAD_Y, _scene.HEAD_DIST])
        frame, _ = ren.frame(R, t, mouth * _scene.MOUTH_OPEN_MAX_M, blink)
        im = Image.fromarray(frame)
        draw = ImageDraw.Draw(im, "RGBA")
        draw.rectangle([0, 0, 8 + 6 * len(label), 14], fill=(0, 0, 0, 150))
        draw.text((4, 2), label, fill=(255, 255, 255, 255))
        tiles.append(np.asarray(im))
    sheet = np.concatenate([np.concatenate(tiles[:4], 1), np.concatenate(tiles[4:], 1)], 0)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out, optimize=True)
    return out


if __name__ == "__main__":
    render_preview(sys.argv[1] if len(sys.argv) > 1 else "docs/synthetic_preview.png",
                   int(sys.argv[2]) if len(sys.argv) > 2 else 256)
