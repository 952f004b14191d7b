"""A training run directory without training (needs torch): what the export tests export."""

from __future__ import annotations

import numpy as np

N_GAUSSIANS = 1500


def make_run(identity, run, n=N_GAUSSIANS, head_scale=3.0, seed=0):
    """A test-tiny run directory without training: the model built on the identity's points
    (n of them), deformation heads scaled up so that the offsets matter, saved through the
    trainer's own checkpoint writer -> the model (eval mode)."""
    import torch

    from gt_train.checkpoint import checkpoint_path, save_checkpoint
    from gt_train.config import TrainConfig
    from gt_train.data.format import load_identity
    from gt_train.model import GaussianTalker

    ds = load_identity(identity)
    cfg = TrainConfig.from_preset("test-tiny", data=identity, out=run)
    rng = np.random.default_rng(seed)
    pts = ds.points_init[rng.choice(len(ds.points_init), size=min(n, len(ds.points_init)), replace=False)]
    torch.manual_seed(seed)
    model = GaussianTalker(cfg.model, pts)
    with torch.no_grad():
        for head in model.deform.heads.values():
            head.fc2.weight.mul_(head_scale)
            head.fc2.bias.normal_(0.0, 0.02)
    run.mkdir(parents=True, exist_ok=True)
    cfg.save_json(run / "config.json")
    save_checkpoint(checkpoint_path(run, 1), {"iteration": 1, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                                              "config": cfg.to_dict()})
    return model.eval()
