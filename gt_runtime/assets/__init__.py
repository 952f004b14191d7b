"""Small data files that ship inside gt_runtime.

The speech clips (``speech/``, see ``speech/README.md`` for their source, the exact
commands and their licences; 16 kHz mono FLAC) and the default identity that
``gt play`` uses without ``--bundle`` (``default.gtb``, rebuilt by
``tools/default_bundle.py``).

>>> from gt_runtime.assets import speech_path
>>> speech_path("cross").name
'cross_8s.flac'
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_BUNDLE", "SPEECH_CLIPS", "default_bundle", "speech_path"]

_SPEECH_DIR = Path(__file__).resolve().parent / "speech"

#: the bundled default identity (a synthetic head at 256 px, 20k Gaussians, the cpu-small preset)
DEFAULT_BUNDLE = Path(__file__).resolve().parent / "default.gtb"

#: short name -> file in ``speech/``
SPEECH_CLIPS: dict[str, str] = {
    "train": "train_24s.flac",  # espeak-ng en-us+f3, 24.6 s, drives the synthetic identity
    "cross": "cross_8s.flac",  # espeak-ng en-gb+m3, 8.2 s, cross-driven playback
    "human": "arctic_a0007_4s.flac",  # CMU ARCTIC a0007, 4.0 s, real recorded speech
}


def speech_path(name: str = "train") -> Path:
    """Path of a bundled speech clip, by short name (``train``, ``cross``, ``human``).

    The file name itself (with or without ``.flac``) is accepted too. Raises
    `gt_runtime.errors.InputError` (one line, listing the names) for an unknown name.
    """
    from gt_runtime.errors import InputError

    key = str(name)
    file = SPEECH_CLIPS.get(key)
    if file is None:
        stem = key[:-5] if key.endswith(".flac") else key
        file = next((f for f in SPEECH_CLIPS.values() if f[:-5] == stem), None)
    if file is None:
        raise InputError(
            f"speech clip {key!r}: unknown name | available: {', '.join(sorted(SPEECH_CLIPS))}"
        )
    path = _SPEECH_DIR / file
    if not path.is_file():
        raise InputError(
            f"{path}: bundled speech clip is missing | reinstall gt (the package data is incomplete)"
        )
    return path


def default_bundle() -> Path:
    """Path of the bundled default identity; `InputError` if the package data lacks it."""
    from gt_runtime.errors import InputError

    if not (DEFAULT_BUNDLE / "manifest.json").is_file():
        raise InputError(
            f"{DEFAULT_BUNDLE}: the default identity is missing | pass --bundle NAME.gtb, or rebuild it with "
            "python tools/default_bundle.py"
        )
    return DEFAULT_BUNDLE
