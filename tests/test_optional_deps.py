"""A missing optional package: the real `gt` command exits 2 with one line naming the pip extra.

Each case runs the CLI in a fresh interpreter where the package cannot be imported
(`sys.modules[name] = None` makes every `import name` raise ModuleNotFoundError, as on a lean install).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gt_runtime.errors import OPTIONAL, MissingDependencyError, install_hint, missing, require

ROOT = Path(__file__).resolve().parents[1]


def run_without(blocked: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess:
    code = ("import sys\n"
            f"for name in {list(blocked)!r}:\n"
            "    sys.modules[name] = None\n"
            "from gt_cli.app import main\n"
            f"main({[str(a) for a in argv]!r})\n")
    env = {**os.environ, "GT_QUIET": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("GT_DEBUG", None)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


# (blocked module, extra named, argv with {tmp} for a temporary directory, what the line names)
CASES = [
    ("scipy", "sample", ["sample", "synthetic", "-o", "{tmp}/synth", "--seconds", "1", "--size", "64"], "gt sample synthetic"),
    ("skimage", "sample", ["sample", "synthetic", "-o", "{tmp}/synth", "--seconds", "1", "--size", "64"], "gt sample synthetic"),
    ("matplotlib", "plot", ["profile", "--png", "{tmp}/p.png", "--frames", "1"], "gt profile --png"),
    ("matplotlib", "plot", ["viz", "{tmp}/run", "-o", "{tmp}/viz"], "gt viz"),
    ("dlib", "preprocess", ["preprocess", "{tmp}/talk.mp4", "-o", "{tmp}/data", "--detector", "dlib"], "gt preprocess --detector dlib"),
    ("transformers", "audio", ["preprocess", "{tmp}/talk.mp4", "-o", "{tmp}/data", "--audio-model", "{tmp}/hubert"],
     "gt preprocess --audio-model"),
    ("onnx", "export", ["export", "{tmp}/run", "-o", "{tmp}/b.gtb"], "gt export"),
    ("onnxconverter_common", "export", ["export", "{tmp}/run", "-o", "{tmp}/b.gtb", "--fp16"], "gt export"),
    ("onnxruntime", "export", ["export", "{tmp}/run", "-o", "{tmp}/b.gtb", "--int8"], "gt export"),
    ("torch", "train", ["train", "{tmp}/data", "-o", "{tmp}/run"], "gt train"),
    ("pytorch_msssim", "train", ["train", "{tmp}/data", "-o", "{tmp}/run"], "gt train (D-SSIM loss)"),
    ("torch", "train", ["export", "{tmp}/run", "-o", "{tmp}/b.gtb"], "gt export"),
]


def _talk_video(path: Path) -> None:
    """A readable 1 s, 64 px mp4 without sound (gt preprocess reads it before it builds the detector)."""
    import numpy as np

    from gt_runtime.playback.video import Mp4Writer

    with Mp4Writer(path, 64, 64, 25, None) as w:
        for i in range(25):
            w.write(np.full((64, 64, 3), 8 * i, np.uint8))


@pytest.mark.parametrize("module,extra,argv,what", CASES, ids=[f"{c[0]}-{c[2][0]}" for c in CASES])
def test_missing_package_is_one_line_exit_2_naming_the_extra(module, extra, argv, what, tmp_path):
    if "preprocess" in argv:
        _talk_video(tmp_path / "talk.mp4")
    r = run_without((module,), [a.format(tmp=tmp_path) for a in argv])
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert lines == [f"gt: {what}: {module} is not installed | pip install 'gt[{extra}]'"], r.stderr


def test_a_top_level_import_that_escapes_require_still_names_the_extra(tmp_path):
    # gt viz imports gt_train.checkpoint, which imports torch at its top
    r = run_without(("torch",), ["viz", tmp_path / "run", "-o", tmp_path / "viz"])
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == ["gt: gt viz: torch is not installed | pip install 'gt[train]'"]


def test_extras_map_agrees_with_pyproject():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {k: {d.split(">")[0].split("=")[0].split("[")[0].strip() for d in v} for k, v in extras.items()}
    for module, (dist, extra) in OPTIONAL.items():
        if extra is not None:
            assert dist in names[extra], f"{module}: {dist} is not in the '{extra}' extra of pyproject.toml"
            smaller = [e for e, ds in names.items() if dist in ds and len(ds) < len(names[extra])]
            assert not smaller, f"{module}: a smaller extra {smaller} holds {dist} | name it in OPTIONAL"


def test_broken_import_keeps_its_reason_and_hint():
    err = missing("onnxruntime", "engine onnxruntime", ImportError("libonnxruntime.so: cannot open shared object file\nmore"))
    assert isinstance(err, MissingDependencyError)
    assert str(err) == ("engine onnxruntime: onnxruntime does not import (libonnxruntime.so: cannot open shared object file)"
                        " | reinstall it: pip install 'gt[export]'")
    assert install_hint("gsplat") == "pip install gsplat"  # no extra holds it


def test_require_imports_present_modules():
    assert require("scipy.ndimage", "test").__name__ == "scipy.ndimage"
    with pytest.raises(MissingDependencyError, match=r"^test: gt_no_such_module is not installed \| pip install gt_no_such_module$"):
        require("gt_no_such_module.sub", "test")
