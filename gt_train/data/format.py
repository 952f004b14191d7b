"""The identity dataset format (README: "Identity dataset format") and its validator.

One directory per identity, T frames at 25 fps:

    frames/NNNNN.jpg      RGB, W x H
    audio.wav             16 kHz mono PCM, T / 25 s
    audio_features.npy    [T, 2, D] float32 from the dataset's audio front end (gt_runtime.audio):
                          `mel` (D = 80) unless audio_frontend.json says otherwise
    audio_frontend.json   optional: the front end (`mel`, or `hubert` / `wav2vec2` with D = the
                          model's hidden size, its block geometry and source checkpoint)
    audio_frontend.onnx   the hubert / wav2vec2 front end's graph (gt_runtime.audio.frontend)
    transforms.json       intrinsics + per-frame camera-to-world 4x4 (OpenCV axes)
    blink.npy             [T] float32 in [0, 1], 1 = eyes closed
    background.jpg        the scene without the person, W x H
    torso/NNNNN.png       RGBA: the person minus the head, alpha 0 elsewhere
    landmarks.npy         [T, 68, 2] float32 pixel (x, y), iBUG-68 order
    points_init.ply       initial Gaussian centres in the head (world) frame
    split.json            {"train": [...], "val": [...]}: the last 1/11 is val
    ground_truth.npz      optional: exact truth of the synthetic identity

`load_identity(path)` checks every file and raises `InputError` with a one-line
message that names the bad file and what was expected.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gt_runtime.audio import load_audio, mel_features
from gt_runtime.audio.frontend import MEL_META, for_dataset, read_dataset_meta
from gt_runtime.contract import FPS, SAMPLE_RATE
from gt_runtime.errors import InputError

FORMAT = "gt-identity"
VERSION = 1
N_LANDMARKS = 68
FEATURE_ROWS = 2  # audio feature rows per video frame (50 Hz)
# iBUG-68 index ranges used by losses and metrics.
MOUTH = slice(48, 68)
INNER_LIPS = slice(60, 68)
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)


def frame_name(i: int) -> str:
    return f"{i:05d}"


@dataclass
class Intrinsics:
    """Pinhole intrinsics in pixels for a W x H image."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def matrix(self) -> np.ndarray:
        """-> K [3, 3] float32."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1]], np.float32)


@dataclass
class IdentityDataset:
    """A validated identity directory. Arrays are loaded; images stay on disk (paths)."""

    root: Path
    intrinsics: Intrinsics
    c2w: np.ndarray  # [T, 4, 4] float32 camera-to-world, OpenCV axes
    frame_paths: list[Path]
    torso_paths: list[Path]
    audio_features: np.ndarray  # [T, 2, D] float32 (D = audio_frontend["dim"], 80 for mel)
    blink: np.ndarray  # [T] float32
    landmarks: np.ndarray  # [T, 68, 2] float32
    points_init: np.ndarray  # [P, 3] float32
    points_color: np.ndarray | None  # [P, 3] uint8, if the ply has colours
    train_idx: np.ndarray  # [T_train] int64
    val_idx: np.ndarray  # [T_val] int64
    background_path: Path
    audio_path: Path
    ground_truth: dict = field(default_factory=dict)
    audio_frontend: dict = field(default_factory=lambda: dict(MEL_META))  # gt_runtime.audio.frontend description

    @property
    def num_frames(self) -> int:
        return len(self.frame_paths)

    @property
    def audio_dim(self) -> int:
        return int(self.audio_features.shape[-1])

    def mel_features(self) -> np.ndarray:
        """[T, 2, 80] `mel` features of audio.wav (the audio features themselves when the front end is mel).

        Metrics that read loudness from log-mel (gt_train.metrics.audio_energy) use these whatever the front end.
        """
        if self.audio_frontend.get("name", "mel") == "mel":
            return self.audio_features
        if getattr(self, "_mel", None) is None:
            pcm, sr = load_audio(self.audio_path, allow_silent=True)
            self._mel = mel_features(pcm, sr, num_frames=self.num_frames)
        return self._mel

    def audio_frontend_runner(self, threads: int | None = None):
        """The front end that made audio_features.npy (gt_runtime.audio.frontend): features of other speech for this model."""
        return for_dataset(self.root, threads)

    def viewmat(self, t: int) -> np.ndarray:
        """-> [4, 4] world -> camera of frame t."""
        return np.linalg.inv(self.c2w[t]).astype(np.float32)


def working_camera(intr: Intrinsics, resolution: int | None) -> tuple[int, int, dict]:
    """Dataset intrinsics -> (W, H, {fx, fy, cx, cy}) with the longer side scaled to `resolution` (None: as is)."""
    W0, H0 = intr.width, intr.height
    if resolution is None or (resolution == W0 and resolution == H0):
        W, H = W0, H0
    else:
        s = resolution / max(W0, H0)
        W, H = max(16, round(W0 * s)), max(16, round(H0 * s))
    sx, sy = W / W0, H / H0
    return W, H, {"fx": intr.fx * sx, "fy": intr.fy * sy, "cx": intr.cx * sx, "cy": intr.cy * sy}


def _fail(path: Path, what: str, fix: str = "re-run `gt preprocess` (or `gt sample synthetic`) to rebuild the dataset") -> InputError:
    return InputError(f"{path}: {what} | {fix}")


def _load_npy(path: Path, shape_tail: tuple, dtype=np.float32, T: int | None = None) -> np.ndarray:
    if not path.is_file():
        raise _fail(path, "missing")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _fail(path, f"not a readable .npy file ({exc})") from None
    want = ((T,) if T is not None else ()) + shape_tail
    ok_shape = arr.ndim == len(want) and all(w is None or w == a for w, a in zip(want, arr.shape))
    if not ok_shape:
        raise _fail(path, f"shape {arr.shape} | expected {tuple('*' if w is None else w for w in want)}")
    if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)):
        raise _fail(path, f"dtype {arr.dtype} or non-finite values | expected finite {np.dtype(dtype).name}")
    return arr.astype(dtype, copy=False)


def read_ply_points(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """PLY (ascii or binary_little_endian) with float x, y, z [+ uchar red, green, blue] -> (xyz [P, 3], rgb [P, 3] | None)."""
    if not path.is_file():
        raise _fail(path, "missing")
    data = path.read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply") or end < 0:
        raise _fail(path, "not a PLY file (no 'ply' magic or no end_header)")
    header = data[:end].decode("ascii", "replace").splitlines()
    fmt, count, props, in_vertex = None, 0, [], False
    for line in header:
        tok = line.split()
        if not tok:
            continue
        if tok[0] == "format":
            fmt = tok[1]
        elif tok[0] == "element":
            in_vertex = tok[1] == "vertex"
            if in_vertex:
                count = int(tok[2])
        elif tok[0] == "property" and in_vertex:
            props.append((tok[-1], tok[1]))
    types = {"float": "<f4", "float32": "<f4", "double": "<f8", "uchar": "u1", "uint8": "u1", "int": "<i4", "uint": "<u4"}
    names = [p[0] for p in props]
    if not {"x", "y", "z"} <= set(names) or any(t not in types for _, t in props):
        raise _fail(path, f"vertex properties {names} | expected float x, y, z [and uchar red, green, blue]")
    body = data[end + len(b"end_header\n"):]
    dt = np.dtype([(n, types[t]) for n, t in props])
    try:
        if fmt == "binary_little_endian":
            verts = np.frombuffer(body, dtype=dt, count=count)
        elif fmt == "ascii":
            rows = np.loadtxt(body.decode().splitlines()[:count], ndmin=2)
            verts = np.zeros(count, dt)
            for i, n in enumerate(names):
                verts[n] = rows[:, i]
        else:
            raise _fail(path, f"PLY format {fmt} | expected ascii or binary_little_endian")
    except ValueError as exc:
        raise _fail(path, f"truncated or corrupt vertex data ({exc})") from None
    xyz = np.stack([verts["x"], verts["y"], verts["z"]], 1).astype(np.float32)
    rgb = np.stack([verts[c] for c in ("red", "green", "blue")], 1).astype(np.uint8) if {"red", "green", "blue"} <= set(names) else None
    if count == 0 or not np.all(np.isfinite(xyz)):
        raise _fail(path, f"{count} vertices or non-finite coordinates | expected a non-empty point cloud")
    return xyz, rgb


def write_ply_points(path: Path, xyz: np.ndarray, rgb: np.ndarray | None = None) -> None:
    """xyz [P, 3] float, rgb [P, 3] uint8 or None -> binary little-endian PLY."""
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")] + ([("red", "u1"), ("green", "u1"), ("blue", "u1")] if rgb is not None else [])
    verts = np.zeros(len(xyz), dtype=fields)
    for i, c in enumerate("xyz"):
        verts[c] = xyz[:, i]
    if rgb is not None:
        for i, c in enumerate(("red", "green", "blue")):
            verts[c] = rgb[:, i]
    props = "".join(f"property {'float' if t == '<f4' else 'uchar'} {n}\n" for n, t in fields)
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(xyz)}\n{props}end_header\n"
    path.write_bytes(header.encode() + verts.tobytes())


def _image_size(path: Path) -> tuple[int, int, str]:
    from PIL import Image

    if not path.is_file():
        raise _fail(path, "missing")
    try:
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            return im.size[0], im.size[1], im.mode
    except Exception as exc:
        raise _fail(path, f"not a readable image ({type(exc).__name__})") from None


def load_identity(root: str | Path, check_images: str = "sample") -> IdentityDataset:
    """Validate and load an identity directory -> IdentityDataset.

    check_images: "all" opens every frame/torso image, "sample" the first, middle
    and last (fast), "none" only checks they exist.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such dataset directory | make one with `gt preprocess VIDEO -o {root}` or `gt sample synthetic -o {root}`")
    tf_path = root / "transforms.json"
    if not tf_path.is_file():
        raise _fail(tf_path, "missing")
    try:
        tf = json.loads(tf_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(tf_path, f"not valid JSON ({exc})") from None
    if tf.get("format") != FORMAT or not isinstance(tf.get("version"), int):
        raise _fail(tf_path, f"format {tf.get('format')!r} version {tf.get('version')!r} | expected format {FORMAT!r}")
    if tf["version"] > VERSION:
        raise _fail(tf_path, f"format version {tf['version']} is newer than this gt reads ({VERSION})", "upgrade gt")
    if tf.get("fps", FPS) != FPS or tf.get("convention", "opencv") != "opencv":
        raise _fail(tf_path, f"fps {tf.get('fps')} convention {tf.get('convention')} | expected fps {FPS}, convention 'opencv'")
    try:
        intr = Intrinsics(float(tf["fl_x"]), float(tf["fl_y"]), float(tf["cx"]), float(tf["cy"]), int(tf["width"]), int(tf["height"]))
        frames = tf["frames"]
        c2w = np.array([f["transform_matrix"] for f in frames], np.float32).reshape(len(frames), 4, 4)
        frame_paths = [root / f["file_path"] for f in frames]
        torso_paths = [root / f["torso_path"] for f in frames]
    except (KeyError, TypeError, ValueError) as exc:
        raise _fail(tf_path, f"missing or malformed field ({exc}) | expected fl_x, fl_y, cx, cy, width, height and frames[i].file_path, torso_path, transform_matrix 4x4") from None
    T = len(frames)
    if T < 2:
        raise _fail(tf_path, f"{T} frames | expected at least 2")
    if [f.get("index", i) for i, f in enumerate(frames)] != list(range(T)):
        raise _fail(tf_path, "frame indices are not 0..T-1 in order")
    if not np.all(np.isfinite(c2w)) or not np.allclose(c2w[:, 3], [0, 0, 0, 1], atol=1e-5):
        raise _fail(tf_path, "a transform_matrix is not a finite rigid 4x4 with last row 0 0 0 1")
    for p in (*frame_paths, *torso_paths):
        if root.resolve() not in p.resolve().parents:
            raise _fail(tf_path, f"path {p} escapes the dataset directory")
    missing = [p for p in (*frame_paths, *torso_paths) if not p.is_file()]
    if missing:
        raise _fail(missing[0], f"missing ({len(missing)} image file(s) missing in total)")
    picks = {"all": range(T), "sample": sorted({0, T // 2, T - 1}), "none": []}[check_images]
    for i in picks:
        w, h, _ = _image_size(frame_paths[i])
        if (w, h) != (intr.width, intr.height):
            raise _fail(frame_paths[i], f"size {w}x{h} | expected {intr.width}x{intr.height} (transforms.json)")
        w, h, mode = _image_size(torso_paths[i])
        if (w, h) != (intr.width, intr.height) or mode != "RGBA":
            raise _fail(torso_paths[i], f"{mode} {w}x{h} | expected RGBA {intr.width}x{intr.height}")
    bg = root / "background.jpg"
    w, h, _ = _image_size(bg)
    if (w, h) != (intr.width, intr.height):
        raise _fail(bg, f"size {w}x{h} | expected {intr.width}x{intr.height}")

    audio_path = root / "audio.wav"
    _check_audio(audio_path, T)
    frontend = read_dataset_meta(root)
    feats = _load_npy(root / "audio_features.npy", (FEATURE_ROWS, frontend["dim"]), T=T)
    blink = _load_npy(root / "blink.npy", (), T=T)
    if blink.min() < 0 or blink.max() > 1:
        raise _fail(root / "blink.npy", f"values in [{blink.min():.3g}, {blink.max():.3g}] | expected [0, 1]")
    lms = _load_npy(root / "landmarks.npy", (N_LANDMARKS, 2), T=T)
    xyz, rgb = read_ply_points(root / "points_init.ply")
    train_idx, val_idx = _load_split(root / "split.json", T)
    gt = {}
    if (root / "ground_truth.npz").is_file():
        with np.load(root / "ground_truth.npz", allow_pickle=False) as z:
            gt = {k: z[k] for k in z.files}
    return IdentityDataset(root, intr, c2w, frame_paths, torso_paths, feats, blink, lms, xyz, rgb,
                           train_idx, val_idx, bg, audio_path, gt, frontend)


def _check_audio(path: Path, T: int) -> None:
    import soundfile as sf

    if not path.is_file():
        raise _fail(path, "missing")
    try:
        info = sf.info(str(path))
    except Exception as exc:
        raise _fail(path, f"not a readable wav ({str(exc).splitlines()[0]})") from None
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise _fail(path, f"{info.samplerate} Hz, {info.channels} channel(s) | expected 16 kHz mono")
    frames_covered = info.frames * FPS / SAMPLE_RATE
    if abs(frames_covered - T) > 1:
        raise _fail(path, f"{info.frames / SAMPLE_RATE:.3f} s of audio for {T} frames | expected {T / FPS:.3f} s (+-1 frame)")


def _load_split(path: Path, T: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise _fail(path, "missing")
    try:
        split = json.loads(path.read_text())
        train = np.asarray(split["train"], np.int64)
        val = np.asarray(split["val"], np.int64)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise _fail(path, f"malformed ({exc}) | expected {{\"train\": [...], \"val\": [...]}}") from None
    both = np.concatenate([train, val])
    if train.size == 0 or val.size == 0 or both.min() < 0 or both.max() >= T or len(np.unique(both)) != both.size:
        raise _fail(path, f"indices must be disjoint, non-empty and within 0..{T - 1}")
    return train, val


def default_split(T: int) -> dict:
    """The paper's split: the last ceil(T / 11) frames are val."""
    n_val = max(1, -(-T // 11))
    return {"train": list(range(T - n_val)), "val": list(range(T - n_val, T))}
