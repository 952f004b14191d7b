"""Training checkpoints: `RUN/checkpoints/it_NNNNNNN.pt` (plain tensors + config dict) and `RUN/config.json`.

Checkpoints are loaded with `torch.load(..., weights_only=True)` only: they hold tensors,
numbers, strings, lists and dicts, never pickled objects.

For the exporter:
    model, cfg = load_model(run_or_checkpoint)   # GaussianTalker (eval mode, CPU), TrainConfig
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from gt_runtime.errors import InputError
from gt_train.config import TrainConfig

FORMAT = "gt-train-checkpoint"
VERSION = 1
_NAME = re.compile(r"^it_(\d+)\.pt$")


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def checkpoint_path(run: Path, iteration: int) -> Path:
    return checkpoint_dir(run) / f"it_{iteration:07d}.pt"


def list_checkpoints(run: Path) -> list[Path]:
    """-> checkpoints of a run, oldest first (by iteration)."""
    d = checkpoint_dir(run)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run: Path) -> Path | None:
    ckpts = list_checkpoints(run)
    return ckpts[-1] if ckpts else None


def save_checkpoint(path: Path, payload: dict) -> Path:
    """Atomic write (tmp + rename) of {format, version, ...payload}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path) -> dict:
    """-> the checkpoint dict (weights_only=True), or a one-line InputError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: checkpoint not found | train first with `gt train DATA -o RUN`")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InputError(f"{path}: not a readable gt checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}) | delete it and resume from an earlier one") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise InputError(f"{path}: not a gt training checkpoint | expected a file written by `gt train`")
    if ck.get("version", 0) > VERSION:
        raise InputError(f"{path}: checkpoint version {ck.get('version')} is newer than this gt reads ({VERSION}) | upgrade gt")
    return ck


def resolve_checkpoint(run_or_ckpt: Path) -> Path:
    """A run directory (-> its latest checkpoint) or a checkpoint file -> checkpoint path."""
    p = Path(run_or_ckpt)
    if p.is_dir():
        ck = latest_checkpoint(p)
        if ck is None:
            raise InputError(f"{p}: no checkpoints in {checkpoint_dir(p)} | train first with `gt train DATA -o {p}`")
        return ck
    return p


def load_model(run_or_ckpt: Path):
    """-> (GaussianTalker in eval mode on CPU, TrainConfig) from a run directory or checkpoint file."""
    from gt_train.model import GaussianTalker

    ck = load_checkpoint(resolve_checkpoint(run_or_ckpt))
    cfg = TrainConfig.from_dict(ck["config"])
    model = GaussianTalker.from_state_dict(cfg.model, ck["model"])
    return model.eval(), cfg
