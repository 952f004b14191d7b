"""Rebuild the default identity that `gt play` uses without --bundle (gt_runtime/assets/default.gtb).

    python tools/default_bundle.py [--work DIR]

Steps (54 min measured on 2 cores that a second training shared): a 24 s synthetic identity at 128 px (seed 0), the `test-tiny` preset
scaled up (128 px, <= 6000 Gaussians, 1500 + 2500 iterations), then `gt export --fp16 --int8` keeping
the first 250 frames (10 s) of the camera/torso track, which the player ping-pongs. The bundle stays
small (a few MB) so that it can live in the repository.
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

SIZE, SECONDS, TRACK_FRAMES = 128, 24.0, 250
ITERATIONS = (1500, 2500)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="keep the dataset and the run here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=DEFAULT_BUNDLE, help=f"bundle to write (default: {DEFAULT_BUNDLE})")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="gt-default-"))
    data = make_synthetic_identity(SyntheticConfig(out_dir=work / "data", seconds=SECONDS, size=SIZE, seed=0))
    cfg = TrainConfig.from_preset("test-tiny", data=data, out=work / "run", resolution=SIZE, max_gaussians=6000,
                                  max_init_points=3000, iterations_canonical=ITERATIONS[0],
                                  iterations_deform=ITERATIONS[1], checkpoint_every=1000, val_every=500)
    run = train(cfg)
    export(ExportConfig(run=run, out=args.out, fp16=True, int8=True, trt=False, overwrite=True,
                        track_frames=TRACK_FRAMES))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
