"""Errors that reach the user as one line, and the one way to import an optional package.

`InputError` is for anything the user can fix: a bad file, a wrong option, a
missing optional package. The CLI prints its message alone (no traceback) and
exits with code 2. Messages say what is wrong, where, and what to do:
``"speech.wav: not a readable audio file (...) | re-encode it: ffmpeg -i speech.wav -ar 16000 -ac 1 out.wav"``.

Optional packages are imported with `require(module, what)`, never with a bare
import, so a lean install says which pip extra to add:
``"gt sample synthetic: scipy is not installed | pip install 'gt[sample]'"``.
"""
from __future__ import annotations

# Import name -> (distribution, extra of pyproject.toml that installs it, or None when no extra does).
# The one place that says which extra brings which module; tests/test_optional_deps.py checks it
# against pyproject.toml. The extra named is the smallest one that holds the package.
OPTIONAL: dict[str, tuple[str, str | None]] = {
    "scipy": ("scipy", "sample"),
    "skimage": ("scikit-image", "sample"),
    "matplotlib": ("matplotlib", "plot"),
    "torch": ("torch", "train"),
    "pytorch_msssim": ("pytorch-msssim", "train"),
    "onnx": ("onnx", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxconverter_common": ("onnxconverter-common", "export"),
    "dlib": ("dlib-bin", "preprocess"),
    "transformers": ("transformers", "audio"),
    "cupy": ("cupy-cuda13x", "gpu"),
    "tensorrt": ("tensorrt", "gpu"),
    "fastapi": ("fastapi", "serve"),
    "uvicorn": ("uvicorn", "serve"),
    "websockets": ("websockets", "serve"),
    "aiortc": ("aiortc", "webrtc"),
    "mediapipe": ("mediapipe", None),
    "gsplat": ("gsplat", None),
    "lpips": ("lpips", None),
}


class InputError(Exception):
    """A problem with the user's input (file, option, environment) that they can fix."""


class MissingDependencyError(InputError):
    """An optional package is needed for this path and is not installed (one line: what needs it, how to install)."""


def install_hint(module: str) -> str:
    """'scipy' -> "pip install 'gt[sample]'" (or 'pip install <dist>' for a package no extra holds)."""
    top = module.split(".")[0]
    dist, extra = OPTIONAL.get(top, (top, None))
    return f"pip install 'gt[{extra}]'" if extra else f"pip install {dist}"


def missing(module: str, what: str, exc: BaseException | None = None) -> MissingDependencyError:
    """The one-line error for `module` (an import name) missing or broken, needed by `what`.

    A ModuleNotFoundError for the module itself reads "is not installed"; any other import
    failure (a broken wheel, a missing shared library) keeps the first line of its reason.
    """
    top = module.split(".")[0]
    gone = exc is None or (isinstance(exc, ModuleNotFoundError) and (exc.name or top).split(".")[0] == top)
    if gone:
        return MissingDependencyError(f"{what}: {top} is not installed | {install_hint(top)}")
    reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
    return MissingDependencyError(f"{what}: {top} does not import ({reason}) | reinstall it: {install_hint(top)}")


def from_import_error(exc: ImportError, what: str) -> MissingDependencyError | None:
    """An ImportError of a known optional module (a top-level import that escaped `require`) -> its one-line error, else None."""
    name = getattr(exc, "name", None)
    if not name or name.split(".")[0] not in OPTIONAL:
        return None
    return missing(name, what, exc)


def require(module: str, what: str):
    """Import an optional module (a key of OPTIONAL, or a submodule of one), or raise a one-line MissingDependencyError.

    `what` names what needs it, as the user knows it: ``require("matplotlib.pyplot", "gt profile --png")``.
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing(module, what, exc) from None
