"""The GaussianTalker model (docs/MODEL.md): triplane, F_can, condition tokens, cross-attention deformation."""
from gt_train.model.talker import GaussianTalker, apply_offsets

__all__ = ["GaussianTalker", "apply_offsets"]
