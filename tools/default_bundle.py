"""Rebuild the default identity that `gt play` uses without --bundle (gt_runtime/assets/default.gtb).

    python tools/default_bundle.py [--work DIR]

Steps (about 1.5 h on 2 cores): a 24 s synthetic identity at 256 px (seed 0), the `cpu-small` preset
(256 px, <= 20k Gaussians, 4000 + 5000 iterations, SH degree 2), then `gt export --fp16 --int8`
keeping the first 250 frames (10 s) of the camera/torso track, which the player ping-pongs, so the
bundle stays small enough to live in the repository.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from gt_export import ExportConfig, export
from gt_runtime.assets import DEFAULT_BUNDLE
from gt_train.config import TrainConfig
from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity
from gt_train.trainer import train

SIZE, SECONDS, TRACK_FRAMES = 256, 24.0, 250


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="keep the dataset and the run here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=DEFAULT_BUNDLE, help=f"bundle to write (default: {DEFAULT_BUNDLE})")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gt-default-"))
    data = make_synthetic_identity(SyntheticConfig(out_dir=work / "data", seconds=SECONDS, size=SIZE, seed=0))
    cfg = TrainConfig.from_preset("cpu-small", data=data, out=work / "run")
    run = train(cfg)
    export(ExportConfig(run=run, out=args.out, fp16=True, int8=True, trt=False, overwrite=True,
                        track_frames=TRACK_FRAMES))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
