"""What the tests share (no test module imports another; they import from here and from tests.cuda_emu).

    speech.py         the one synthetic speech generator: speech(seconds, sr, seed=, channels=, gated=)
    bundles.py        RandomBundles: make_random_bundle memoised per session (conftest's `random_bundle` fixture)
    frames.py         play / stream_in_chunks / parity on uint8 frame stacks; CPU_RASTER, ODD_SIZE
    raster_scenes.py  random Gaussian scenes for the rasterizer tests (and tools/bench/raster_cpu_quick.py)
    gpu_tolerance.py  the GPU raster tests' tolerances, derived from __expf and flush-to-zero
    runs.py           make_run: a run directory without training, for the export tests (torch)
    audio_models.py   tiny random HuBERT / wav2vec 2.0 checkpoints (transformers, torch)

tests/cuda_emu is the emulation of a GPU on the CPU: raster_cuda.cu's kernels on CPU threads and the
stand-ins for CuPy, ONNX Runtime's CUDA provider and TensorRT. tests/conftest.py turns these into
fixtures, each built once per session: tiny_identity, speech_identity, random_bundle, default_bundle,
emulated_kernels (and gpu, per test).
"""
