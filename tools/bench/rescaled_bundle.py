"""A copy of a bundle rendered at another output size: the same trained identity (Gaussians, network,
track), the camera's intrinsics scaled, the background plate and torso frames resampled (bicubic).

    python -m tools.bench.rescaled_bundle SRC.gtb DST.gtb --size 512

For benchmarks that need a trained identity at a size it was not trained at (the bundled default is
256²; the 512² figures of tools/bench/play.py render it at 512²): the deformation network's cost does
not depend on the size, the rasterizer's grows with the pixels the (now larger) splats cover.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


from gt_runtime.bundle.format import _write_manifest, sha256_file


def rescale_bundle(src: str | Path, dst: str | Path, size: int) -> Path:
    """src bundle -> dst at size x size (src must be square) -> dst. An existing dst is replaced."""
    from PIL import Image

    src, dst = Path(src), Path(dst)
    man = json.loads((src / "manifest.json").read_text())
    w, h = int(man["width"]), int(man["height"])
    if w != h:
        raise SystemExit(f"{src}: {w}x{h} is not square | rescale a square bundle")
    s = size / w
    tmp = dst.with_name(dst.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("engines", "manifest.json"))
    for rel in man["files"]:
        if rel.startswith("scene/") and rel.endswith((".jpg", ".png")):
            p = tmp / rel
            with Image.open(p) as im:  # the plate, or a torso frame (whole, or the crop at scene.torso_box)
                im = im.resize((round(im.width * s), round(im.height * s)), Image.BICUBIC)
                im.save(p, quality=95) if p.suffix == ".jpg" else im.save(p)
            man["files"][rel] = sha256_file(p)
    man["width"] = man["height"] = int(size)
    man["intrinsics"] = {k: float(v) * s for k, v in man["intrinsics"].items()}
    if "torso_box" in man["scene"]:
        man["scene"]["torso_box"] = [round(v * s) for v in man["scene"]["torso_box"]]
    man["parity"] = {}  # measured at the old size
    man["rescaled_from"] = {"bundle": str(src), "width": w, "height": h}
    _write_manifest(tmp, man)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    return dst


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--size", type=int, required=True)
    a = ap.parse_args(argv)
    out = rescale_bundle(a.src, a.dst, a.size)
    print(f"wrote {out} ({a.size}x{a.size})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
