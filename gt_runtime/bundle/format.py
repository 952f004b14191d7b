"""The gt bundle (README: "Bundle format"): the only input of the runtime.

A bundle is a directory ``NAME.gtb/``::

    manifest.json            format, version, model config, resolution, intrinsics, hashes, parity
    gaussians.npz            means [N,3], quats [N,4], log_scales [N,3], opacity_logits [N],
                             sh [N,K,3], queries [N,64]           (float32, pre-activation)
    weights.npz              audio.*, eye.*, view.*, null, deform.*   (docs/MODEL.md names, torch layouts)
    deform.onnx              tokens [B,4,64], queries [N,64] -> dmu, drot, dscale, dsh, dopacity
    deform.fp16.onnx         (optional) mixed precision, FP32 I/O
    deform.int8.onnx         (optional) ONNX Runtime dynamic INT8
    audio_encoder.onnx       audio_window [B,15,2,D] -> audio_token [B,64]   (D = model.audio_dim, 80 for mel)
    audio_frontend.onnx      (hubert / wav2vec2 bundles) audio [1,W] -> features [1,rows,D], see manifest `audio`
    scene/background.jpg     background plate [H,W,3]
    scene/torso/NNNNN.png    (optional) torso RGBA, one per track frame: [H,W,4], or all [h,w,4] crops at
                             manifest scene.torso_box = [top, left] (the writer crops to where any alpha > 0)
    scene/track.npz          c2w [T,4,4], blink [T]
    engines/<key>.plan+.json TensorRT engines, built on demand (not hashed in the manifest)

`Bundle.open` checks everything once (manifest, format version, path safety, SHA-256
of every listed file, array shapes) and raises a one-line `InputError` naming the file
and what to do. Nothing is unpickled: npz files are read with ``allow_pickle=False``.
`write_bundle` is the writer the exporter (and `gt_runtime.bundle.synthetic`) calls.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from gt_runtime.audio.frontend import MEL_META, check_meta
from gt_runtime.contract import (
    AUDIO_FRONTEND_ONNX,
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    DEFORM_ONNX,
    FRONTENDS,
    GAUSSIAN_KEYS,
    HEADS,
    HIDDEN,
    MODEL_FRONTENDS,
    N_MELS,
    head_dims,
    sh_bases,
)
from gt_runtime.errors import InputError

REQUIRED_FILES = ("gaussians.npz", "weights.npz", "scene/background.jpg", "scene/track.npz")
_REEXPORT = "re-export the bundle with gt export"


def weight_shapes(num_layers: int, sh_degree: int, hidden: int = HIDDEN, audio_dim: int = N_MELS) -> dict[str, tuple[int, ...]]:
    """Every parameter name of docs/MODEL.md -> its torch shape (Linear weight [out, in], Conv1d [out, in, k]).

    audio_dim: width D of the audio features (80 for mel, the model's hidden size for hubert / wav2vec2),
    the in-channels of AudioNet's first conv.
    """
    d = hidden
    s: dict[str, tuple[int, ...]] = {}

    def lin(name, i, o):
        s[f"{name}.weight"], s[f"{name}.bias"] = (o, i), (o,)

    def conv(name, i, o, k=3):
        s[f"{name}.weight"], s[f"{name}.bias"] = (o, i, k), (o,)

    for idx, (i, o) in zip((0, 2, 4, 6), ((int(audio_dim), 32), (32, 32), (32, 64), (64, 64))):
        conv(f"audio.net.conv.{idx}", i, o)
    lin("audio.net.fc.0", 64, 64)
    lin("audio.net.fc.2", 64, 32)
    for idx, (i, o) in zip((0, 2, 4, 6, 8), ((32, 16), (16, 8), (8, 4), (4, 2), (2, 1))):
        conv(f"audio.att.conv.{idx}", i, o)
    lin("audio.att.fc", 8, 8)
    lin("audio.mlp.0", 32, d)
    lin("audio.mlp.2", d, d)
    lin("eye.0", 9, d)
    lin("eye.2", d, d)
    lin("view.0", 12, d)
    lin("view.2", d, d)
    s["null"] = (d,)
    for layer in range(num_layers):
        p = f"deform.layers.{layer}"
        for n in ("q", "k", "v", "o"):
            lin(f"{p}.{n}", d, d)
        for n in ("norm1", "norm2"):
            s[f"{p}.{n}.weight"], s[f"{p}.{n}.bias"] = (d,), (d,)
        lin(f"{p}.ffn1", d, 2 * d)
        lin(f"{p}.ffn2", 2 * d, d)
    for name, k in head_dims(sh_degree).items():
        lin(f"deform.heads.{name}.fc1", d, 2 * d)
        lin(f"deform.heads.{name}.fc2", 2 * d, k)
    return s


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Streaming SHA-256 of a file -> hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _safe_relpath(root: Path, rel: str, where: str) -> Path:
    """rel (a manifest path) -> absolute path inside root, or InputError (absolute, '..', symlink out)."""
    if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise InputError(f"{where}: file path {rel!r} is absolute or empty | {_REEXPORT}; bundle paths are relative")
    parts = rel.replace("\\", "/").split("/")
    if any(p in ("..", "") for p in parts):
        raise InputError(f"{where}: file path {rel!r} leaves the bundle | {_REEXPORT}; bundle paths must stay inside it")
    path = root.joinpath(*parts)
    try:
        resolved = path.resolve()
    except OSError as exc:  # pragma: no cover - symlink loops
        raise InputError(f"{where}: cannot resolve {rel!r} ({exc}) | {_REEXPORT}") from None
    real_root = root.resolve()  # root may be relative (gt export -o out/x.gtb)
    if resolved != real_root and real_root not in resolved.parents:
        raise InputError(f"{where}: {rel!r} points outside the bundle (symlink) | {_REEXPORT}; bundles hold their own files")
    return path


def _load_npz(path: Path, rel: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: np.asarray(z[k]) for k in z.files}
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{path}: {rel} is not a readable npz ({msg}) | {_REEXPORT}") from None


def intrinsics_matrix(intr: Mapping[str, float]) -> np.ndarray:
    """{"fx","fy","cx","cy"} -> K [3, 3] float32."""
    return np.array([[intr["fx"], 0, intr["cx"]], [0, intr["fy"], intr["cy"]], [0, 0, 1]], np.float32)


@dataclass(frozen=True)
class Bundle:
    """An opened, validated bundle. Immutable after `open`; share it between players and sessions."""

    path: Path
    manifest: dict
    gaussians: dict = field(repr=False)   # name -> array (see GAUSSIAN_KEYS)
    weights: dict = field(repr=False)     # MODEL.md name -> array
    track: dict = field(repr=False)       # c2w [T,4,4], blink [T]

    # -- opening ---------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, verify_hashes: bool = True) -> "Bundle":
        """Read and validate a bundle directory -> Bundle (one-line InputError on any problem)."""
        root = Path(path)
        if not root.is_dir():
            raise InputError(f"{root}: no such bundle directory | check the path, or make one with gt export")
        root = root.resolve()
        mpath = root / "manifest.json"
        if not mpath.is_file():
            raise InputError(f"{mpath}: the bundle has no manifest.json | {_REEXPORT}")
        try:
            manifest = json.loads(mpath.read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"{mpath}: not valid JSON ({str(exc).splitlines()[0]}) | {_REEXPORT}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
            raise InputError(f"{mpath}: not a gt bundle manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r}, expected {BUNDLE_FORMAT!r}) | {_REEXPORT}")
        version = manifest.get("version")
        if not isinstance(version, int):
            raise InputError(f"{mpath}: bad format version {version!r} | {_REEXPORT}")
        if version > BUNDLE_VERSION:
            raise InputError(f"{mpath}: bundle format version {version} is newer than this gt reads ({BUNDLE_VERSION}) | upgrade gt (pip install -U gt)")
        if version < 1:
            raise InputError(f"{mpath}: bundle format version {version} is not supported | {_REEXPORT}")
        for key in ("model", "width", "height", "intrinsics", "num_gaussians", "sh_degree", "files", "scene"):
            if key not in manifest:
                raise InputError(f"{mpath}: manifest has no {key!r} | {_REEXPORT}")
        files = manifest["files"]
        if not isinstance(files, dict):
            raise InputError(f"{mpath}: 'files' must map relative paths to sha256 | {_REEXPORT}")
        for rel in REQUIRED_FILES:
            if rel not in files:
                raise InputError(f"{mpath}: manifest does not list {rel} | {_REEXPORT}")
        _check_audio(manifest, mpath)
        for rel, digest in files.items():
            fpath = _safe_relpath(root, rel, str(mpath))
            if not fpath.is_file():
                raise InputError(f"{fpath}: file listed in the manifest is missing | {_REEXPORT}, or copy the whole .gtb directory")
            if verify_hashes and sha256_file(fpath) != digest:
                raise InputError(f"{fpath}: SHA-256 does not match the manifest (truncated or modified) | {_REEXPORT}, or copy it again")
        gaussians = _load_npz(root / "gaussians.npz", "gaussians.npz")
        weights = _load_npz(root / "weights.npz", "weights.npz")
        track = _load_npz(root / "scene" / "track.npz", "scene/track.npz")
        b = cls(path=root, manifest=manifest, gaussians=gaussians, weights=weights, track=track)
        b._check_shapes()
        return b

    def _check_shapes(self) -> None:
        m = self.manifest
        n, deg = int(m["num_gaussians"]), int(m["sh_degree"])
        k = sh_bases(deg)
        expect = {"means": (n, 3), "quats": (n, 4), "log_scales": (n, 3), "opacity_logits": (n,),
                  "sh": (n, k, 3), "queries": (n, HIDDEN)}
        where = self.path / "gaussians.npz"
        for key, shape in expect.items():
            a = self.gaussians.get(key)
            if a is None:
                raise InputError(f"{where}: array {key!r} is missing | {_REEXPORT}")
            if a.shape != shape or a.dtype != np.float32:
                raise InputError(f"{where}: {key} is {a.dtype} {a.shape}, the manifest implies float32 {shape} | {_REEXPORT}")
        where = self.path / "weights.npz"
        for key, shape in weight_shapes(self.num_layers, deg, audio_dim=self.audio_dim).items():
            a = self.weights.get(key)
            if a is None:
                raise InputError(f"{where}: parameter {key!r} is missing | {_REEXPORT}")
            if a.shape != shape or a.dtype != np.float32:
                raise InputError(f"{where}: {key} is {a.dtype} {a.shape}, expected float32 {shape} (docs/MODEL.md) | {_REEXPORT}")
        where = self.path / "scene" / "track.npz"
        t = int(m["scene"].get("num_frames", -1))
        c2w, blink = self.track.get("c2w"), self.track.get("blink")
        if c2w is None or blink is None or c2w.shape != (t, 4, 4) or blink.shape != (t,) or t < 1:
            got = (None if c2w is None else c2w.shape, None if blink is None else blink.shape)
            raise InputError(f"{where}: c2w/blink shapes {got} | expected [{t},4,4] and [{t}] (scene.num_frames); {_REEXPORT}")
        for rel in self.torso_files:
            if rel not in m["files"]:
                raise InputError(f"{self.path / rel}: torso frame not listed in the manifest | {_REEXPORT}")
        box = m["scene"].get("torso_box")
        if box is not None and not (isinstance(box, list) and len(box) == 2 and all(isinstance(v, int) for v in box)
                                    and 0 <= box[0] < self.height and 0 <= box[1] < self.width):
            raise InputError(f"{self.path / 'manifest.json'}: scene.torso_box {box!r} | expected [top, left] inside "
                             f"{self.width}x{self.height}; {_REEXPORT}")

    # -- properties ------------------------------------------------------------------
    @property
    def model(self) -> dict:
        return self.manifest["model"]

    @property
    def num_layers(self) -> int:
        return int(self.manifest["model"].get("num_layers", 2))

    @property
    def sh_degree(self) -> int:
        return int(self.manifest["sh_degree"])

    @property
    def audio_dim(self) -> int:
        """D, the width of the audio features the model reads (80 = mel; absent in old bundles -> 80)."""
        return int(self.manifest["model"].get("audio_dim", N_MELS))

    @property
    def audio_frontend(self) -> str:
        """"mel" | "hubert" | "wav2vec2"."""
        return str(self.manifest.get("audio_frontend", "mel"))

    @property
    def audio_meta(self) -> dict:
        """The front end's description (gt_runtime.audio.frontend): manifest `audio`, or mel's."""
        return dict(self.manifest.get("audio") or MEL_META)

    @property
    def num_gaussians(self) -> int:
        return int(self.manifest["num_gaussians"])

    @property
    def width(self) -> int:
        return int(self.manifest["width"])

    @property
    def height(self) -> int:
        return int(self.manifest["height"])

    @property
    def fps(self) -> int:
        return int(self.manifest.get("fps", 25))

    @property
    def K(self) -> np.ndarray:
        """[3, 3] float32 pinhole intrinsics in pixels."""
        return intrinsics_matrix(self.manifest["intrinsics"])

    @property
    def precisions(self) -> list[str]:
        """Deform ONNX precisions present in the bundle, e.g. ["fp32", "int8"]."""
        return [p for p, rel in DEFORM_ONNX.items() if rel in self.manifest["files"]]

    @property
    def torso_box(self) -> tuple[int, int] | None:
        """(top, left) of the torso frames in the image when they are crops; None: whole frames."""
        box = self.manifest["scene"].get("torso_box")
        return None if box is None else (int(box[0]), int(box[1]))

    @property
    def torso_files(self) -> list[str]:
        """Relative paths of the torso frames (sorted), empty if the scene has none."""
        return sorted(r for r in self.manifest["files"] if r.startswith("scene/torso/") and r.endswith(".png"))

    def file(self, rel: str) -> Path:
        """Relative path -> absolute path of a file the manifest lists (InputError if not in the bundle)."""
        if rel not in self.manifest["files"]:
            raise InputError(f"{self.path}: the bundle has no {rel} | {_REEXPORT} (with the option that writes it)")
        return _safe_relpath(self.path, rel, str(self.path / "manifest.json"))

    def has(self, rel: str) -> bool:
        return rel in self.manifest["files"]

    def onnx_path(self, precision: str = "fp32") -> Path:
        if precision not in DEFORM_ONNX:
            raise InputError(f"precision {precision!r}: unknown | expected one of {', '.join(DEFORM_ONNX)}")
        return self.file(DEFORM_ONNX[precision])

    @property
    def engines_dir(self) -> Path:
        return self.path / "engines"


def _check_audio(manifest: dict, mpath: Path) -> None:
    """The audio front end: a known name, a description that agrees with model.audio_dim, its graph listed."""
    name = manifest.get("audio_frontend", "mel")
    if name not in FRONTENDS:
        raise InputError(f"{mpath}: unknown audio front end {name!r} (this gt knows {', '.join(FRONTENDS)}) | upgrade gt, or {_REEXPORT}")
    model = manifest["model"] if isinstance(manifest["model"], dict) else {}
    dim = model.get("audio_dim", N_MELS)
    meta = check_meta(manifest.get("audio") if name != "mel" or "audio" in manifest else None, str(mpath), _REEXPORT)
    if meta["name"] != name:
        raise InputError(f"{mpath}: audio_frontend {name!r} but the audio description says {meta['name']!r} | {_REEXPORT}")
    if meta["dim"] != dim or manifest.get("audio_dim", dim) != dim:
        raise InputError(f"{mpath}: audio feature width: model.audio_dim {dim}, audio_dim {manifest.get('audio_dim')}, "
                         f"front end {meta['dim']} | {_REEXPORT}; they must agree")
    if name in MODEL_FRONTENDS and AUDIO_FRONTEND_ONNX not in manifest["files"]:
        raise InputError(f"{mpath}: the {name} front end needs {AUDIO_FRONTEND_ONNX}, which the manifest does not list | {_REEXPORT}")


# -- writing --------------------------------------------------------------------------
def _encode_image(img: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        Image.fromarray(img).save(path, quality=95)
    else:
        Image.fromarray(img).save(path)


def alpha_box(frames: list[np.ndarray]) -> tuple[int, int, int, int]:
    """RGBA frames [H, W, 4] -> (top, left, bottom, right): the smallest box holding every alpha > 0 of
    every frame (the whole frame when none is empty or there are no frames). Outside it the torso
    composite is the plate alone, so the bundle keeps only the box: less to store and to decode."""
    if not frames:
        return (0, 0, 0, 0)
    h, w = frames[0].shape[:2]
    seen = np.zeros((h, w), bool)
    for fr in frames:
        seen |= fr[..., 3] > 0
    rows, cols = np.flatnonzero(seen.any(1)), np.flatnonzero(seen.any(0))
    if rows.size == 0:
        return (0, 0, h, w)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


def write_bundle(
    path: str | Path,
    *,
    gaussians: Mapping[str, np.ndarray],
    weights: Mapping[str, np.ndarray],
    model: Mapping,
    width: int,
    height: int,
    intrinsics: Mapping[str, float],
    background: np.ndarray,
    c2w: np.ndarray,
    blink: np.ndarray,
    torso: list[np.ndarray] | None = None,
    onnx: Mapping[str, bytes | str | Path] | None = None,
    exporter_version: str = "0",
    parity: Mapping | None = None,
    fps: int = 25,
    audio_frontend: str = "mel",
    audio: Mapping | None = None,
    extra: Mapping | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle directory and its manifest (written last) -> path.

    gaussians: GAUSSIAN_KEYS arrays (float32, pre-activation); weights: docs/MODEL.md names;
    model: config dict with at least "num_layers" and "sh_degree"; background [H,W,3] uint8;
    c2w [T,4,4], blink [T]; torso: T (or any number) RGBA [H,W,4] uint8 frames (stored cropped to alpha_box);
    onnx: bundle file name ("deform.onnx", "deform.fp16.onnx", "deform.int8.onnx",
    "audio_encoder.onnx", "audio_frontend.onnx") -> serialized bytes or a file to copy.
    audio_frontend: "mel" | "hubert" | "wav2vec2"; audio: the front end's description
    (gt_runtime.audio.frontend; needed for hubert / wav2vec2, whose graph goes in onnx).
    model["audio_dim"] (default 80) is the feature width D.
    """
    root = Path(path)
    if root.exists():
        if not overwrite and any(root.iterdir()):
            raise InputError(f"{root}: exists and is not empty | choose another -o or remove it")
        if overwrite:
            shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    model = dict(model)
    deg = int(model["sh_degree"])
    model.setdefault("hidden", HIDDEN)
    model.setdefault("heads", HEADS)
    model.setdefault("audio_dim", N_MELS)
    n = int(np.asarray(gaussians["means"]).shape[0])
    g = {k: np.ascontiguousarray(gaussians[k], dtype=np.float32) for k in GAUSSIAN_KEYS}
    np.savez(root / "gaussians.npz", **g)
    shapes = weight_shapes(int(model["num_layers"]), deg, audio_dim=int(model["audio_dim"]))
    missing = sorted(set(shapes) - set(weights))
    if missing:
        raise ValueError(f"write_bundle: weights lack {missing[:5]} | expected docs/MODEL.md names")
    np.savez(root / "weights.npz", **{k: np.ascontiguousarray(weights[k], dtype=np.float32) for k in shapes})
    bg = np.asarray(background)
    if bg.shape != (height, width, 3) or bg.dtype != np.uint8:
        raise ValueError(f"write_bundle: background {bg.shape} {bg.dtype} | expected ({height}, {width}, 3) uint8")
    _encode_image(bg, root / "scene" / "background.jpg")
    c2w = np.asarray(c2w, np.float32)
    blink = np.asarray(blink, np.float32)
    np.savez(root / "scene" / "track.npz", c2w=c2w, blink=blink)
    torso = [np.asarray(fr) for fr in (torso if torso is not None else [])]
    for i, fr in enumerate(torso):
        if fr.shape != (height, width, 4) or fr.dtype != np.uint8:
            raise ValueError(f"write_bundle: torso frame {i} {fr.shape} {fr.dtype} | expected ({height}, {width}, 4) uint8")
    box = alpha_box(torso)
    for i, fr in enumerate(torso):
        _encode_image(fr[box[0]:box[2], box[1]:box[3]], root / "scene" / "torso" / f"{i:05d}.png")
    n_torso = len(torso)
    precisions = []
    for name, src in (onnx or {}).items():
        dst = _safe_relpath(root, name, "write_bundle")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(src, (bytes, bytearray)):
            dst.write_bytes(bytes(src))
        else:
            shutil.copyfile(src, dst)
    for p, rel in DEFORM_ONNX.items():
        if (root / rel).is_file():
            precisions.append(p)
    files = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.name != "manifest.json" and "engines" not in f.relative_to(root).parts:
            files[f.relative_to(root).as_posix()] = sha256_file(f)
    manifest = {
        "format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, "exporter_version": str(exporter_version),
        "model": model, "audio_frontend": audio_frontend, "audio_dim": int(model["audio_dim"]), "fps": int(fps),
        "width": int(width), "height": int(height),
        "intrinsics": {k: float(intrinsics[k]) for k in ("fx", "fy", "cx", "cy")},
        "num_gaussians": n, "sh_degree": deg, "precisions": precisions, "files": files,
        "parity": dict(parity or {}), "scene": {"num_frames": int(c2w.shape[0]), "torso": n_torso > 0},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if n_torso and box != (0, 0, height, width):
        manifest["scene"]["torso_box"] = [box[0], box[1]]
    if audio is not None:
        manifest["audio"] = dict(audio)
    if extra:
        manifest.update(extra)
    _check_audio(manifest, root / "manifest.json")
    _write_manifest(root, manifest)
    return root


def _write_manifest(root: Path, manifest: dict) -> None:
    tmp = root / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, root / "manifest.json")


def update_manifest(path: str | Path, *, parity: Mapping | None = None, add_files: list[str] | None = None) -> dict:
    """Merge a parity table and/or hash new files (relative paths) into an existing bundle's manifest -> manifest."""
    root = Path(path)
    manifest = json.loads((root / "manifest.json").read_text())
    if parity:
        manifest.setdefault("parity", {}).update(parity)
    for rel in add_files or []:
        manifest["files"][rel] = sha256_file(_safe_relpath(root, rel, "update_manifest"))
        for p, r in DEFORM_ONNX.items():
            if r == rel and p not in manifest["precisions"]:
                manifest["precisions"].append(p)
    _write_manifest(root, manifest)
    return manifest
