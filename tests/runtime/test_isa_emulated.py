"""The AVX-512 kernels of the C++ rasterizer and of the fused deformation network, and the latter's AMX
kernels, on a CPU without them.

tests/isa_emu builds both extensions with their *_avx512.cpp compiled over SIMDe's AVX-512 intrinsics
(on AVX2) and deform_cpu_amx.cpp over those and an emulation of the AMX tiles, and this runs the kernel
test files against that build in a child pytest: every parity test of the amx and avx512 variants (FP32
against the reference, INT8 against the other variants and on the trained bundle, amx == avx512 bit
for bit, the rasterizer forward and backward, the Player end to end) then runs on every CI machine, not
only on those with the instructions. A failure names a bug in a kernel or in the emulation of an
intrinsic (tests/isa_emu/simde_avx512.h replaces SIMDe's where they are missing or wrong; amx_emu.h
aborts, naming it, on what AMX hardware would fault on).
"""

import os
import re
import subprocess
import sys

import pytest

from gt_runtime.engines import fused_cpu
from gt_runtime.raster import _cpu
from tests.isa_emu import ROOT, build, missing

pytestmark = pytest.mark.timeout(600)

# the test files whose avx512 cases skip on a CPU without AVX-512, and those that run the best variant
KERNEL_TESTS = ["tests/runtime/test_raster_cpu_isa.py", "tests/runtime/test_raster_cpu.py",
                "tests/runtime/test_deform_fused.py", "tests/runtime/test_deform_fused_fast.py"]  # fmt: skip


def test_avx512_and_amx_kernels_pass_the_kernel_tests_emulated(tmp_path):
    if "avx512" in _cpu.load().isas() and "amx" in fused_cpu.isas():
        pytest.skip("this CPU runs the AVX-512 and AMX kernels natively (the kernel tests ran them)")
    why = missing()
    if why:
        pytest.skip(f"cannot build the emulated AVX-512 / AMX kernels: {why}")
    ext_dir = build(tmp_path)
    env = dict(os.environ, GT_TEST_EXT_DIR=str(ext_dir))
    env.pop("GT_RASTER_ISA", None)
    env.pop("GT_DEFORM_ISA", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", *KERNEL_TESTS]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=540)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    passed = re.findall(r"^PASSED (\S+)", out, re.M)
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    # the avx512 and amx cases ran: some in each file that has them, and no skip names either
    ran = {t.split("::")[0] for t in passed if "avx512" in t}
    assert ran == set(KERNEL_TESTS) - {"tests/runtime/test_raster_cpu.py"}, passed
    assert {t.split("::")[0] for t in passed if "amx" in t} == set(KERNEL_TESTS[2:]), passed
    assert not [s for s in skipped if "avx512" in s or "amx" in s], skipped
    # and the child's default (best) variants were the emulated ones: avx512 for the raster, amx for deform
    check = "from gt_runtime.raster import _cpu; from gt_runtime.engines import fused_cpu; print(_cpu.load().isa(), fused_cpu.isa())"
    probe = subprocess.run([sys.executable, "-c", f"import tests.conftest; {check}"], cwd=ROOT, env=env,
                           capture_output=True, text=True, check=True)  # fmt: skip
    assert probe.stdout.split() == ["avx512", "amx"], probe.stdout + probe.stderr
