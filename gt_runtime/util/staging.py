"""Writing a whole output directory so that a failure never leaves half of it behind.

    tmp = staging_dir(out)        # a fresh hidden sibling: .NAME.partial-PID
    try:
        ...write everything into tmp...
        commit_dir(tmp, out)      # only now does `out` change
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

Used by the synthetic identity, `gt preprocess` and `gt export`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path


def require_empty_dir(out: Path) -> None:
    """Refuse an `out` that exists and is not an empty directory (one-line InputError)."""
    from gt_runtime.errors import InputError

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out}: the output directory exists and is not empty | choose a new directory or delete this one")


def staging_dir(out: Path) -> Path:
    """-> a new, empty hidden directory beside `out` (on the same file system, so the final rename is atomic)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out`, replacing an existing `out` only at this point."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
