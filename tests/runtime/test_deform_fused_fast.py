"""The cpu-fused kernel's vectorised output epilogue (plugins/deform/deform_simd.h `emit`): every variant
this CPU runs writes activated() == reference.apply_offsets(canon, its own offsets), including canonical
values far outside a trained bundle's range (the SIMD exp clamps its input to [-87, 88]).
"""
from __future__ import annotations

import numpy as np
import pytest

from gt_runtime.bundle.synthetic import random_gaussians, random_weights
from gt_runtime.engines import fused_cpu
from gt_runtime.model.reference import apply_offsets

pytestmark = pytest.mark.skipif(not fused_cpu.available(), reason="gt_runtime._deform_cpu not built (pip install .)")

N = 77  # two full 32-row tiles and a partial one


def _isas():
    return fused_cpu.isas() if fused_cpu.available() else []


@pytest.fixture(scope="module")
def case():
    """Random weights (sh degree 1: the sh head has 12 outputs, a 16-wide panel), canon with extreme logits, tokens [2, 4, 64]."""
    w = random_weights(2, 1, seed=11)
    g = random_gaussians(N, 1, seed=12)
    rng = np.random.default_rng(13)
    g["log_scales"] = rng.uniform(-30.0, 30.0, g["log_scales"].shape).astype(np.float32)
    g["opacity_logits"] = rng.uniform(-120.0, 120.0, g["opacity_logits"].shape).astype(np.float32)
    tokens = rng.standard_normal((2, 4, 64)).astype(np.float32)
    return w, g, tokens


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # the reference's sigmoid at -120
@pytest.mark.parametrize("int8", [False, True])
@pytest.mark.parametrize("isa", _isas())
def test_activated_matches_apply_offsets_in_every_variant(case, isa, int8):
    w, g, tokens = case
    with fused_cpu.FusedDeformRunner(w, g["queries"], 2, 1, int8=int8, isa=isa) as r:
        want = apply_offsets(g, r.infer({"tokens": tokens}))
        got = r.activated(tokens, g)
    for key, a in want.items():
        assert got[key].shape == a.shape, key
        np.testing.assert_allclose(got[key], a, rtol=2e-6, atol=1e-7, err_msg=f"{isa} {key}")
