"""Every blend-kernel variant of the C++ CPU rasterizer (generic, avx2, avx512; the ones this CPU
runs) against the numpy reference and against each other, forward and backward.
GT_RASTER_ISA=generic|avx2|avx512 caps the variant the extension picks."""

import numpy as np
import pytest

from gt_runtime.raster import _cpu
from gt_runtime.raster._reference import rasterize_reference
from tests.support.raster_scenes import head_scene, random_scene

pytestmark = pytest.mark.skipif(not _cpu.available(), reason="gt_runtime._raster_cpu not built (pip install .)")

ISAS = ["generic", "avx2", "avx512"]


def _runs(isa):
    return isa in _cpu.load().isas()


def _scenes():
    return [
        random_scene(0, 33, 21, None, seed=0, background="color"),
        random_scene(300, 61, 45, 2, seed=1, background="image"),  # partial tiles on both axes
        random_scene(2000, 40, 52, None, seed=2, background="none"),
        random_scene(200, 17, 3, 1, seed=3, background="color"),
        head_scene(3000, 64, 48, sh_degree=3),
    ]


def test_isas_lists_generic_last_and_default_is_best(monkeypatch):
    ext = _cpu.load()
    isas = ext.isas()
    assert isas[-1] == "generic" and set(isas) <= set(ISAS)
    monkeypatch.delenv("GT_RASTER_ISA", raising=False)
    assert ext.isa() == isas[0]
    monkeypatch.setenv("GT_RASTER_ISA", "no-such-isa")  # ignored
    assert ext.isa() == isas[0]
    monkeypatch.setenv("GT_RASTER_ISA", "generic")
    assert ext.isa() == "generic"


@pytest.mark.parametrize("isa", ISAS)
def test_variant_matches_reference(isa, monkeypatch):
    if not _runs(isa):
        pytest.skip(f"this CPU or build has no {isa} kernels")
    monkeypatch.setenv("GT_RASTER_ISA", isa)
    for scene in _scenes():
        img, state = _cpu.forward_with_state(**scene)
        assert state.isa == isa
        assert np.isfinite(img).all()
        assert np.abs(img - rasterize_reference(**scene)).max() <= 1e-4


def _stretched_scene(seed):
    """Splats of every orientation from round to needles 10^4 times longer than wide (thin enough for
    the rounding fallback of the kernels' ellipse test), small and large (across many tiles)."""
    scene = random_scene(400, 96, 80, 2, seed=seed, background="color")
    rng = np.random.default_rng(seed)
    n = len(scene["scales"])
    length = np.exp(rng.uniform(np.log(0.02), np.log(0.6), size=n))
    scene["scales"] = np.stack([length, length * 10.0 ** -rng.uniform(0, 4, size=n), np.full(n, 1e-3)],
                               axis=1).astype(np.float32)
    scene["opacities"] = rng.uniform(0.02, 1.0, size=n).astype(np.float32)
    return scene


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ellipse_tile_selection_keeps_every_contribution(isa, seed, monkeypatch):
    """The kernels visit only the row chunks an alpha-threshold ellipse reaches; a chunk dropped wrongly
    would lose pixels that the reference draws."""
    if not _runs(isa):
        pytest.skip(f"this CPU or build has no {isa} kernels")
    monkeypatch.setenv("GT_RASTER_ISA", isa)
    scene = _stretched_scene(seed)
    img, state = _cpu.forward_with_state(**scene)
    want = rasterize_reference(**scene)
    assert np.abs(img - want).max() <= 1e-4
    bg_only = rasterize_reference(**{**scene, "opacities": np.zeros_like(scene["opacities"])})
    assert (np.abs(want - bg_only).max(axis=-1) > 0.01).mean() > 0.3  # the splats cover the frame
    grads = _cpu.backward(state, np.ones_like(img))
    assert all(g is None or np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("isa", [i for i in ISAS if i != "generic"])
def test_variants_agree_forward_and_backward(isa, monkeypatch):
    if not _runs(isa):
        pytest.skip(f"this CPU or build has no {isa} kernels")
    rng = np.random.default_rng(0)
    for scene in _scenes():
        v = rng.normal(size=(scene["height"], scene["width"], 3)).astype(np.float32)
        out = {}
        for name in ("generic", isa):
            monkeypatch.setenv("GT_RASTER_ISA", name)
            img, state = _cpu.forward_with_state(**scene)
            out[name] = (img, _cpu.backward(state, v))
        (img_a, grads_a), (img_b, grads_b) = out["generic"], out[isa]
        assert np.abs(img_a - img_b).max() <= 1e-5  # FMA vs separate multiply-add rounding only
        for a, b in zip(grads_a, grads_b):
            if a is None:
                assert b is None
                continue
            assert np.isfinite(b).all()
            rel = np.linalg.norm(a - b) / max(np.linalg.norm(a), 1e-12)
            assert rel <= 1e-4, rel


def test_backward_uses_the_forward_variant(monkeypatch):
    isas = _cpu.load().isas()
    scene = random_scene(500, 48, 40, 3, seed=4, background="image")
    v = np.random.default_rng(1).normal(size=(40, 48, 3)).astype(np.float32)
    monkeypatch.setenv("GT_RASTER_ISA", isas[0])
    img, state = _cpu.forward_with_state(**scene)
    want = _cpu.backward(state, v)
    img, state = _cpu.forward_with_state(**scene)
    monkeypatch.setenv("GT_RASTER_ISA", "generic")  # changed between forward and backward
    got = _cpu.backward(state, v)
    assert state.isa == isas[0]
    for a, b in zip(want, got):
        if a is not None:
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
