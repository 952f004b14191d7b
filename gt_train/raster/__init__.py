"""Differentiable Gaussian rasterization for training on CPU.

`rasterize_torch` (autograd over the C++ extension) is the training path;
`rasterize_torch_impl` (pure torch, slow) is the reference its gradients are tested against.
Importing this subpackage imports torch; `import gt_train` alone does not.
"""

from gt_train.raster._torch_impl import rasterize_torch_impl
from gt_train.raster.autograd import rasterize_torch

__all__ = ["rasterize_torch", "rasterize_torch_impl"]
