"""gt_runtime.contract is the one home of the model's constants and GT_* settings."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gt_runtime import contract

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [p for pkg in ("gt_runtime", "gt_train", "gt_export", "gt_cli", "gt_serve", "tools")
           for p in (ROOT / pkg).rglob("*.py") if (ROOT / pkg).is_dir()]


def _header_defines(path: Path) -> dict[str, str]:
    return dict(re.findall(r"^#define (GT_[A-Z0-9_]+) (\S+)", path.read_text(), re.MULTILINE))


@pytest.mark.parametrize("macro,value", [
    ("GT_TILE", contract.TILE), ("GT_NEAR", contract.NEAR), ("GT_FAR", contract.FAR),
    ("GT_EPS2D", contract.EPS2D), ("GT_MAX_ALPHA", contract.MAX_ALPHA), ("GT_T_THRESHOLD", contract.T_THRESHOLD),
])
def test_raster_header_mirrors_the_contract(macro, value):
    defines = _header_defines(ROOT / "plugins" / "raster" / "gt_raster_math.h")
    assert float(defines[macro].rstrip("f")) == pytest.approx(value, rel=1e-7)


def test_alpha_threshold_mirrored():
    text = (ROOT / "plugins" / "raster" / "gt_raster_math.h").read_text()
    assert "#define GT_ALPHA_THRESHOLD (1.f / 255.f)" in text and contract.ALPHA_THRESHOLD == 1.0 / 255.0


def test_derived_values():
    assert contract.SAMPLES_PER_FRAME * contract.FPS == contract.SAMPLE_RATE
    assert contract.WINDOW == 15 and contract.HIDDEN % contract.HEADS == 0
    assert len(contract.HEAD_NAMES) == len(contract.OFFSET_NAMES) == 5
    assert tuple(contract.DEFORM_OUTPUTS) == contract.OFFSET_NAMES
    assert sum(contract.head_dims(3).values()) == 3 + 4 + 3 + 48 + 1
    assert set(contract.MODEL_STAGES) <= set(contract.STAGES)


def test_settings_are_declared_once():
    """No Python source outside contract.py reads a GT_* variable from the environment."""
    reads = re.compile(r"""(os\.environ\.get\(\s*|os\.getenv\(\s*)["']GT_|os\.environ\[["']GT_\w+["']\](?!\s*=)""")
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES
                 if p.name != "contract.py" and reads.search(p.read_text())]
    assert offenders == []
    names = [s.name for s in contract.SETTINGS]
    assert len(names) == len(set(names)) and all(n.startswith("GT_") for n in names)


def test_setting_values(monkeypatch):
    monkeypatch.setenv("GT_QUIET", "0")
    assert not contract.QUIET.on()
    monkeypatch.setenv("GT_QUIET", "1")
    assert contract.QUIET.on()
    monkeypatch.setenv("GT_RASTER_ISA", "")
    assert contract.RASTER_ISA.get() == ""


def test_constants_are_not_redefined():
    """SAMPLE_RATE, SAMPLES_PER_FRAME, TILE and STAGES are assigned only in the contract."""
    assign = re.compile(r"^(SAMPLE_RATE|SAMPLES_PER_FRAME|TILE|STAGES|HIDDEN|N_MELS|FPS)\s*=", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in SOURCES if p.name != "contract.py" and assign.search(p.read_text())]
    assert offenders == []
