"""Errors that reach the user as one line.

`InputError` is for anything the user can fix: a bad file, a wrong option, a
missing optional package. The CLI prints its message alone (no traceback) and
exits with code 2. Messages say what is wrong, where, and what to do:
``"speech.wav: not a readable audio file (...) | re-encode it: ffmpeg -i speech.wav -ar 16000 -ac 1 out.wav"``.
"""


class InputError(Exception):
    """A problem with the user's input (file, option, environment) that they can fix."""


class MissingDependencyError(InputError):
    """An optional package is needed for this path and is not installed."""


def require(module: str, extra: str):
    """Import an optional heavy module, or raise a one-line error that says what to install.

    >>> np = require("numpy", "base")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependencyError(
            f"{module} is not installed ({exc}) | install it with: pip install 'gt[{extra}]'"
        ) from None
