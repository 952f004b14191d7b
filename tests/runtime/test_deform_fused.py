"""The cpu-fused engine (gt_runtime._deform_cpu, plugins/deform) against the numpy reference.

FP32: every kernel variant this CPU runs (amx, avx512, avx2, generic; forced with isa=, and GT_DEFORM_ISA in a subprocess)
within 1e-4 of `deform_plain` per output. INT8: bounded error and a render >= 40 dB PSNR against
the FP32 render on the bundled trained model. The runner inside Player.play, end to end.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import gt_runtime
from gt_runtime.assets import default_bundle
from gt_runtime.bundle.format import Bundle
from gt_runtime.bundle.synthetic import random_gaussians, random_weights
from gt_runtime.contract import OFFSET_NAMES
from gt_runtime.engines import fused_cpu, resolve_engine_name, select_engine
from gt_runtime.errors import MissingDependencyError
from gt_runtime.model.reference import apply_offsets, deform_plain
from gt_runtime.playback.player import Player
from tests.support.frames import play
from tests.support.speech import speech

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="gt_runtime._deform_cpu not built (pip install .)")

N = 2003  # not a multiple of the 32-row tile: the last tile is partial


def _isas():
    return fused_cpu.isas() if fused_cpu.available() else []


@pytest.fixture(scope="module")
def net():
    """Random weights (sh degree 3, 2 layers), queries [N, 64], tokens [3, 4, 64], the reference offsets."""
    w = random_weights(2, 3, seed=3)
    q = random_gaussians(N, 3, seed=4)["queries"].astype(np.float32)
    tokens = np.random.default_rng(5).standard_normal((3, 4, 64)).astype(np.float32)
    return w, q, tokens, deform_plain(tokens, q, w, 2, 3)


@pytest.fixture(scope="module")
def trained():
    """The bundled trained model, its tokens for 3 frames of speech-like conditions, the reference offsets."""
    b = Bundle.open(default_bundle())
    rng = np.random.default_rng(6)
    # tokens of real frames: the bundle's own encoders on track entries and a random audio token
    from gt_runtime.model.reference import TokenEncoder

    enc = TokenEncoder(b.weights)
    audio = rng.standard_normal((3, 64)).astype(np.float32)
    c2w = np.repeat(np.eye(4, dtype=np.float32)[None], 3, axis=0)
    tokens = np.ascontiguousarray(enc.tokens(audio, np.array([0.0, 0.5, 1.0], np.float32), c2w), np.float32)
    q = b.gaussians["queries"]
    return b, tokens, deform_plain(tokens, q, b.weights, b.num_layers, b.sh_degree)


@pytest.mark.parametrize("isa", _isas())
@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_matches_reference(net, isa, batch):
    w, q, tokens, ref = net
    with fused_cpu.FusedDeformRunner(w, q, 2, 3, int8=False, isa=isa) as r:
        out = r.infer({"tokens": tokens[:batch]})
    for key in OFFSET_NAMES:
        assert out[key].shape == ref[key][:batch].shape and out[key].dtype == np.float32
        err = float(np.abs(out[key] - ref[key][:batch]).max())
        assert err <= 1e-4, f"{isa} B={batch} {key}: max abs {err:.2e}"


def test_isa_setting_caps_the_variant_in_a_subprocess():
    """GT_DEFORM_ISA=generic, set before the process starts: the extension picks the generic kernels."""
    code = "from gt_runtime import _deform_cpu as d; print(d.isa())"
    env = dict(os.environ, GT_DEFORM_ISA="generic")
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "generic"
    assert fused_cpu.isas()[-1] == "generic"


def test_isa_setting_in_process(net, monkeypatch):
    w, q, tokens, _ = net
    monkeypatch.setenv("GT_DEFORM_ISA", "generic")
    assert fused_cpu.isa() == "generic"
    m = fused_cpu.load().Model(w, q, 2, 3, False)
    np.testing.assert_array_equal(m.offsets(tokens)[3], m.offsets(tokens, "generic")[3])
    if "amx" in fused_cpu.isas():
        monkeypatch.setenv("GT_DEFORM_ISA", "avx512")  # the AVX-512 kernels without AMX
        assert fused_cpu.isa() == "avx512"
    monkeypatch.setenv("GT_DEFORM_ISA", "no-such-isa")  # ignored: the best variant
    assert fused_cpu.isa() == fused_cpu.isas()[0]


def test_unknown_isa_is_one_line_error(net):
    w, q, tokens, _ = net
    m = fused_cpu.load().Model(w, q, 2, 3, False)
    with pytest.raises(ValueError, match="isa avx9000: this CPU or build cannot run it"):
        m.offsets(tokens, "avx9000")


def test_int8_variants_agree(net):
    """INT8 products are exact integers; the variants differ by the float rounding of the dequantisation, which
    now and then moves a requantised activation by one step: rare, small differences."""
    w, q, tokens, ref = net
    m = fused_cpu.load().Model(w, q, 2, 3, True)
    outs = {isa: m.offsets(tokens, isa) for isa in fused_cpu.isas()}
    base = outs["generic"]
    for isa, out in outs.items():
        for key, a, b in zip(OFFSET_NAMES, out, base):
            scale = float(np.abs(ref[key]).max())
            d = np.abs(a - b)
            assert float(d.max()) <= 1e-2 * scale and float(d.mean()) <= 1e-4 * scale, f"{isa} vs generic INT8 {key}"


def test_amx_int8_equals_avx512_vnni(net):
    """AMX (tdpbusd on tiles) and AVX-512 VNNI (vpdpbusd) sum the same exact int32 products and share the
    rest of the kernel: the same bits."""
    if not {"amx", "avx512"} <= set(fused_cpu.isas()):
        pytest.skip("this CPU or build has no amx kernels")
    w, q, tokens, _ = net
    m = fused_cpu.load().Model(w, q, 2, 3, True)
    for key, a, b in zip(OFFSET_NAMES, m.offsets(tokens, "amx"), m.offsets(tokens, "avx512")):
        np.testing.assert_array_equal(a, b, err_msg=key)


def test_int8_error_is_bounded_on_the_trained_bundle(trained):
    b, tokens, ref = trained
    with fused_cpu.FusedDeformRunner(b.weights, b.gaussians["queries"], b.num_layers, b.sh_degree, int8=True) as r:
        out = r.infer({"tokens": tokens})
    for key in OFFSET_NAMES:
        scale = float(np.abs(ref[key]).max())
        err = np.abs(out[key] - ref[key])
        # per-row activation and per-channel weight quantisation: a few % of the output's range at worst,
        # well under 1 % on average
        assert float(err.max()) <= 0.05 * scale, f"{key}: max abs {float(err.max()):.3g} vs range {scale:.3g}"
        assert float(err.mean()) <= 0.005 * scale, f"{key}: mean abs {float(err.mean()):.3g} vs range {scale:.3g}"


@pytest.mark.parametrize("int8", [False, True])
def test_activated_writes_the_rasterizer_inputs(trained, int8):
    """activated() == reference.apply_offsets(canon, the same runner's offsets), into caller-given arrays."""
    b, tokens, _ = trained
    g = b.gaussians
    with fused_cpu.FusedDeformRunner(b.weights, g["queries"], b.num_layers, b.sh_degree, int8=int8) as r:
        want = apply_offsets(g, r.infer({"tokens": tokens}))
        buf = {"means": np.empty((3, len(g["means"]), 3), np.float32)}
        got = r.activated(tokens, g, out=buf)
    assert got["means"] is buf["means"]
    for key, a in want.items():
        assert got[key].shape == a.shape and got[key].dtype == np.float32
        np.testing.assert_allclose(got[key], a, rtol=2e-6, atol=1e-7, err_msg=key)


def test_other_queries_use_their_own_model(net):
    w, q, tokens, _ = net
    q2 = np.ascontiguousarray(q[::7] * 0.5)
    ref = deform_plain(tokens, q2, w, 2, 3)
    with fused_cpu.FusedDeformRunner(w, q, 2, 3, int8=False) as r:
        out = r.infer({"tokens": tokens, "queries": q2})
    for key in OFFSET_NAMES:
        assert float(np.abs(out[key] - ref[key]).max()) <= 1e-4, key


def test_kernel_header_mirrors_the_contract():
    """plugins/deform/deform_kernels.h's widths are the contract's."""
    import re
    from pathlib import Path

    from gt_runtime.contract import HEAD_HIDDEN, HEAD_NAMES, HEADS, HIDDEN, NUM_TOKENS

    text = (Path(__file__).resolve().parents[2] / "plugins" / "deform" / "deform_kernels.h").read_text()
    const = {m.group(1): int(m.group(2)) for m in re.finditer(r"constexpr int (k\w+) = (\d+);", text)}
    assert (const["kD"], const["kHid"], const["kAtt"], const["kHeads"]) == (HIDDEN, HEAD_HIDDEN, HEADS * NUM_TOKENS, len(HEAD_NAMES))


def test_engine_names():
    b = Bundle.open(default_bundle())
    assert resolve_engine_name(b, "cpu-fused") == "cpu-fused-int8"
    assert resolve_engine_name(b, "cpu-fused-fp32") == "cpu-fused-fp32"
    es = select_engine(b, "cpu-fused-fp32")
    assert es.name == "cpu-fused-fp32" and isinstance(es.deform, fused_cpu.FusedDeformRunner) and not es.deform.int8


def test_missing_extension_is_one_line_error(monkeypatch):
    monkeypatch.setattr(fused_cpu._EXT, "_module", None)
    monkeypatch.setitem(sys.modules, "gt_runtime._deform_cpu", None)  # import fails
    monkeypatch.delattr(gt_runtime, "_deform_cpu", raising=False)
    with pytest.raises(MissingDependencyError) as exc:
        select_engine(Bundle.open(default_bundle()), "cpu-fused")
    msg = str(exc.value)
    assert "\n" not in msg and "pip install ." in msg and "cpu-fused" in msg


def test_player_plays_with_the_fused_engine():
    """Player.play end to end: FP32 frames equal the array engine's; the INT8 render >= 40 dB against FP32."""
    pcm = speech(0.6)
    frames = {e: play(Player(default_bundle(), engine=e, raster="cpu"), pcm, batch=2)
              for e in ("array", "cpu-fused-fp32", "cpu-fused")}
    assert len(frames["cpu-fused"]) == len(frames["array"]) > 0
    diff = np.abs(frames["cpu-fused-fp32"].astype(np.int16) - frames["array"]).max()
    assert diff <= 1, f"cpu-fused-fp32 vs array: max |diff| {diff}"
    mse = np.mean((frames["cpu-fused"].astype(np.float64) - frames["cpu-fused-fp32"]) ** 2)
    psnr = np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)
    assert psnr >= 40.0, f"INT8 render vs FP32 render: {psnr:.1f} dB"
