"""The model's one readable reference, in array-API numpy (CuPy runs the same code).

`reference` holds the condition tokens, the deformation network as docs/MODEL.md writes
it, and the offset/activation step; every fast form (torch, ONNX, fused kernels) is tested
against it.
"""
