"""Random but valid bundles for tests and benchmarks, without torch.

`make_random_bundle` writes a bundle in the exact docs/MODEL.md layout: random weights
(fc2 of the heads scaled down so that offsets stay small, as the trainer's init does),
a head-shaped cloud of Gaussians in front of the camera, a simple scene (gradient
plate, torso RGBA, a slowly moving camera track with blinks) and the ONNX graphs
built from the same weights with the onnx helper API.

`toy_frontend_onnx` is a stand-in for an exported HuBERT / wav2vec 2.0 front end (same
I/O contract, built without torch): each 20 ms row's receptive field of 400 samples
through a random projection to D, plus the window's mean (so no row is a function of
its own samples alone, as with self-attention). `make_random_bundle(audio_frontend="hubert")`
puts one in the bundle.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gt_runtime.bundle import weight_shapes, write_bundle
from gt_runtime.contract import HIDDEN, sh_bases


def random_weights(num_layers: int = 2, sh_degree: int = 3, seed: int = 0, audio_dim: int = 80) -> dict[str, np.ndarray]:
    """docs/MODEL.md parameter name -> random float32 array (torch-like uniform init)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in weight_shapes(num_layers, sh_degree, audio_dim=audio_dim).items():
        if name.endswith((".norm1.weight", ".norm2.weight")):
            a = 1.0 + 0.1 * rng.standard_normal(shape)
        elif name.endswith((".norm1.bias", ".norm2.bias")) or name == "null":
            a = 0.1 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
            bound = 1.0 / np.sqrt(fan_in)
            a = rng.uniform(-bound, bound, shape)
            if ".heads." in name and ".fc2." in name:
                a *= 0.1  # small output init: the deformation starts near zero
        out[name] = a.astype(np.float32)
    return out


def random_gaussians(n: int, sh_degree: int = 3, seed: int = 0) -> dict[str, np.ndarray]:
    """A head-shaped (ellipsoid shell + face plane) cloud of n Gaussians around the origin, metres."""
    rng = np.random.default_rng(seed + 1)
    d = rng.standard_normal((n, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    r = 1.0 - 0.15 * rng.random((n, 1)) ** 2
    means = d * r * np.array([0.075, 0.1, 0.09])
    quats = rng.standard_normal((n, 4))
    log_scales = np.log(rng.uniform(0.002, 0.008, (n, 3)) * np.sqrt(5000.0 / max(n, 1)))
    opacity_logits = rng.normal(1.5, 1.0, n)
    k = sh_bases(sh_degree)
    sh = 0.1 * rng.standard_normal((n, k, 3))
    skin = np.array([0.85, 0.62, 0.5])
    sh[:, 0, :] = (skin - 0.5) / 0.28209479 + 0.3 * rng.standard_normal((n, 3))
    mouth = (means[:, 1] > 0.03) & (means[:, 2] < -0.05)
    sh[mouth, 0, :] = (np.array([0.6, 0.2, 0.2]) - 0.5) / 0.28209479
    queries = rng.uniform(0.1, 0.5, (n, HIDDEN)) ** 2 * 4.0 - 0.3
    f = lambda a: np.ascontiguousarray(a, np.float32)  # noqa: E731
    return {"means": f(means), "quats": f(quats), "log_scales": f(log_scales),
            "opacity_logits": f(opacity_logits), "sh": f(sh), "queries": f(queries)}


def random_scene(width: int, height: int, n_frames: int, seed: int = 0, torso: bool = True):
    """-> (background [H,W,3] uint8, torso list of [H,W,4] uint8, c2w [T,4,4], blink [T])."""
    rng = np.random.default_rng(seed + 2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    bg = np.stack([40 + 120 * xx / max(width - 1, 1), 60 + 80 * yy / max(height - 1, 1),
                   np.full_like(xx, 140.0)], axis=-1).astype(np.uint8)
    frames = []
    if torso:
        for t in range(n_frames):
            cx = width / 2 + 2 * np.sin(t / 5.0)
            inside = ((xx - cx) / (0.45 * width)) ** 2 + ((yy - 1.15 * height) / (0.4 * height)) ** 2 < 1.0
            rgba = np.zeros((height, width, 4), np.uint8)
            rgba[..., 0], rgba[..., 1], rgba[..., 2] = 50, 70 + (t * 7) % 50, 110
            rgba[..., 3] = np.where(inside, 255, 0)
            frames.append(rgba)
    c2w = np.tile(np.eye(4, dtype=np.float32), (n_frames, 1, 1))
    for t in range(n_frames):
        a = 0.05 * np.sin(t / 7.0) + 0.01 * rng.standard_normal()
        c, s = np.cos(a), np.sin(a)
        rot = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], np.float32)   # yaw around the head
        pos = rot @ np.array([0.0, 0.0, -0.45], np.float32)               # camera looks along +z at the origin
        c2w[t, :3, :3], c2w[t, :3, 3] = rot, pos
    blink = np.clip(np.sin(np.arange(n_frames) / 3.0) ** 8 + 0.05 * rng.random(n_frames), 0, 1).astype(np.float32)
    return bg, frames, c2w, blink


def toy_frontend_onnx(spec=None, dim: int = 16, seed: int = 0) -> bytes:
    """A serialized ONNX graph with the front-end contract: audio [1, W] -> features [1, window_rows, dim].

    Row j = tanh(window[320 j : 320 j + 400] @ P + 0.5 mean(window)), P [400, dim] random.
    """
    from gt_runtime.audio.blocks import BlockSpec
    from gt_runtime.audio.frontend import ONNX_INPUT, ONNX_OUTPUT
    from gt_runtime.errors import require

    onnx = require("onnx", "a synthetic bundle")
    from onnx import TensorProto, helper, numpy_helper

    spec = spec or BlockSpec()
    n, w = spec.window_rows, spec.window_samples
    rng = np.random.default_rng(seed + 7)
    proj = (rng.standard_normal((spec.receptive_field, dim)) / np.sqrt(spec.receptive_field)).astype(np.float32)
    idx = (np.arange(n)[:, None] * spec.stride + np.arange(spec.receptive_field)[None, :]).astype(np.int64)
    inits = [numpy_helper.from_array(idx, "idx"), numpy_helper.from_array(proj, "proj"),
             numpy_helper.from_array(np.float32(0.5).reshape(()), "half")]
    nodes = [
        helper.make_node("Gather", [ONNX_INPUT, "idx"], ["frames"], axis=1),          # [1, n, 400]
        helper.make_node("MatMul", ["frames", "proj"], ["local"]),                    # [1, n, dim]
        helper.make_node("ReduceMean", [ONNX_INPUT], ["mean"], keepdims=1),           # [1, 1]
        helper.make_node("Mul", ["mean", "half"], ["shift"]),
        helper.make_node("Unsqueeze", ["shift", "ax"], ["shift3"]),                   # [1, 1, 1]
        helper.make_node("Add", ["local", "shift3"], ["pre"]),
        helper.make_node("Tanh", ["pre"], [ONNX_OUTPUT]),
    ]
    inits.append(numpy_helper.from_array(np.array([2], np.int64), "ax"))
    graph = helper.make_graph(nodes, "toy_audio_frontend", [helper.make_tensor_value_info(ONNX_INPUT, TensorProto.FLOAT, [1, w])],
                              [helper.make_tensor_value_info(ONNX_OUTPUT, TensorProto.FLOAT, [1, n, dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="gt_runtime.bundle.synthetic")
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


def toy_frontend_meta(spec=None, dim: int = 16, name: str = "hubert") -> dict:
    """The description (gt_runtime.audio.frontend) of a `toy_frontend_onnx` graph."""
    from gt_runtime.audio.blocks import BlockSpec
    from gt_runtime.audio.frontend import META_FORMAT, ONNX_NAME

    spec = spec or BlockSpec()
    return {"format": META_FORMAT, "version": 1, "name": name, "dim": int(dim), "rows_per_frame": 2, "rate_hz": 50,
            "onnx": ONNX_NAME, "block": spec.to_dict(), "frontend_lookahead_ms": spec.lookahead_samples / 16.0,
            "source": {"model_type": "toy (gt_runtime.bundle.synthetic)"}}


def make_random_bundle(path, n_gaussians: int = 2000, sh_degree: int = 3, num_layers: int = 2,
                       width: int = 64, height: int = 64, n_track_frames: int = 8, seed: int = 0,
                       onnx: bool = True, fp16: bool = False, int8: bool = False, torso: bool = True,
                       audio_frontend: str = "mel", audio_dim: int = 80, audio_block=None) -> Path:
    """Write a valid random bundle -> its path (see the module docstring).

    onnx: also write deform.onnx + audio_encoder.onnx (needs the `onnx` package);
    fp16 / int8: also write deform.fp16.onnx (onnxconverter-common) / deform.int8.onnx (ORT quantization);
    audio_frontend "hubert" / "wav2vec2": a `toy_frontend_onnx` front end of width audio_dim on the blocks
    audio_block (a BlockSpec; default BlockSpec()) -> audio_frontend.onnx (needs `onnx`).
    """
    weights = random_weights(num_layers, sh_degree, seed, audio_dim)
    g = random_gaussians(n_gaussians, sh_degree, seed)
    bg, torso_frames, c2w, blink = random_scene(width, height, n_track_frames, seed, torso)
    files = {}
    audio = None
    if audio_frontend != "mel":
        files["audio_frontend.onnx"] = toy_frontend_onnx(audio_block, audio_dim, seed)
        audio = toy_frontend_meta(audio_block, audio_dim, audio_frontend)
    if onnx:
        from gt_runtime.engines import onnx_graphs

        deform = onnx_graphs.build_deform_onnx(weights, num_layers, sh_degree)
        files["deform.onnx"] = deform.SerializeToString()
        files["audio_encoder.onnx"] = onnx_graphs.build_audio_onnx(weights).SerializeToString()
        if fp16:
            files["deform.fp16.onnx"] = onnx_graphs.fp16_model(deform).SerializeToString()
        if int8:
            files["deform.int8.onnx"] = onnx_graphs.int8_model_bytes(deform)
    f = 1.4 * max(width, height)
    return write_bundle(
        path, gaussians=g, weights=weights,
        model={"num_layers": num_layers, "sh_degree": sh_degree, "hidden": HIDDEN, "heads": 2, "preset": "random",
               "audio_dim": audio_dim},
        width=width, height=height, intrinsics={"fx": f, "fy": f, "cx": width / 2, "cy": height / 2},
        background=bg, c2w=c2w, blink=blink, torso=torso_frames, onnx=files,
        exporter_version="testing", audio_frontend=audio_frontend, audio=audio, extra={"random": {"seed": seed}})

