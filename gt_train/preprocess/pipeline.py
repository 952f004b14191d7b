"""`preprocess(cfg)`: a talking-head video -> an identity dataset (README: "Identity dataset format").

Passes over the video (each with a progress bar):

1. face track: decode at 25 fps, detect the face on every 5th frame (downscaled to
   <= 640 px) -> one fixed square crop for the clip, centred on the median face and
   `crop_scale` face sizes wide (inside the frame; at most the frame's short side);
2. frames: crop + resize to size x size, write frames/*.jpg, landmarks per frame at the
   working resolution; gaps up to `max_gap_s` are interpolated (with a warning naming
   the frames), longer ones are an error naming the frames;
3. fits: head pose (pose.py), blink (blink.py), background (background.py), points;
4. torso/*.png and preview.mp4 (landmarks and the head's axes over the frames).

Audio features come from the `mel` front end, or with cfg.audio_model from a local
HuBERT / wav2vec 2.0 checkpoint exported to audio_frontend.onnx in the dataset
(gt_train.preprocess.audio_model); audio_frontend.json records which. The checkpoint is
checked (files only) before any video is read.

Everything is written into a hidden sibling directory that is renamed to out_dir at the
end, so a failure leaves nothing half-written.
"""
from __future__ import annotations

import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from gt_runtime.errors import InputError, require
from gt_runtime.util.staging import commit_dir, require_empty_dir, staging_dir
from gt_train.preprocess.config import PreprocessConfig

DETECT_STRIDE = 5  # pass 1 looks at every 5th frame
DETECT_SIDE = 640


def _warn(msg: str) -> None:
    sys.stderr.write(f"gt preprocess: warning: {msg}\n")


def _steps(items, desc: str, total: int | None, show: bool, unit: str = "frame"):
    if not show:
        return items
    from gt_runtime.util.progress import progress

    return progress(items, desc, total=total, unit=unit)


def _ranges(idx: np.ndarray) -> list[tuple[int, int]]:
    """Sorted frame indices -> [(first, last)] runs."""
    runs, start = [], None
    for i, k in enumerate(idx):
        if start is None:
            start = k
        if i + 1 == len(idx) or idx[i + 1] != k + 1:
            runs.append((int(start), int(k)))
            start = None
    return runs


def _fmt(runs: list[tuple[int, int]]) -> str:
    s = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:8])
    return s + (f" and {len(runs) - 8} more" if len(runs) > 8 else "")


def fill_gaps(lms: np.ndarray, found: np.ndarray, max_gap: int, video: Path) -> tuple[np.ndarray, list]:
    """Interpolate landmarks [T, 68, 2] over frames where found [T] is False.

    Runs of missing frames longer than max_gap frames -> InputError naming them.
    -> (filled landmarks, [(first, last)] runs that were interpolated).
    """
    T = len(found)
    if not found.any():
        raise InputError(f"{video}: no face found in any frame | give a video where one face looks toward the camera")
    missing = np.nonzero(~found)[0]
    if missing.size == 0:
        return lms, []
    runs = _ranges(missing)
    long = [r for r in runs if r[1] - r[0] + 1 > max_gap]
    if long:
        raise InputError(f"{video}: face lost for more than {max_gap} frames at frames {_fmt(long)} (25 fps) | "
                         "cut those parts out of the video (the face must stay visible), then run again")
    idx = np.nonzero(found)[0]
    out = lms.copy()
    flat = lms[idx].reshape(len(idx), -1)
    for j in range(flat.shape[1]):
        out.reshape(T, -1)[:, j] = np.interp(np.arange(T), idx, flat[:, j])
    return out, runs


def choose_crop(lms: np.ndarray, W: int, H: int, scale: float) -> tuple[int, int, int]:
    """Landmarks [N, 68, 2] in source pixels -> square crop (x0, y0, side) inside the frame."""
    lo, hi = lms.min(1), lms.max(1)  # [N, 2]
    size = float(np.median(np.maximum(hi[:, 0] - lo[:, 0], hi[:, 1] - lo[:, 1])))
    cx, cy = np.median(0.5 * (lo + hi), 0)
    cy += 0.25 * size  # a little lower: hair above, neck and shoulders below
    side = int(round(min(scale * size, W, H)))
    x0 = int(round(np.clip(cx - side / 2, 0, W - side)))
    y0 = int(round(np.clip(cy - side / 2, 0, H - side)))
    return x0, y0, side


def _check(cfg: PreprocessConfig) -> Path:
    out = Path(cfg.out_dir)
    require_empty_dir(out)
    if cfg.fps != 25:
        raise InputError(f"fps {cfg.fps}: unsupported | the identity format and the mel front end run at 25 fps")
    if not 64 <= int(cfg.size) <= 2048:
        raise InputError(f"size {cfg.size}: out of range | expected 64..2048 pixels")
    check_audio_model(cfg)
    return out


def check_audio_model(cfg: PreprocessConfig) -> None:
    """Refuse a bad --audio-model before any work (torch and transformers must import; files only)."""
    acfg = cfg.audio_config()
    if acfg is None:
        return
    from gt_train.preprocess.audio_model import inspect_checkpoint

    require("torch", "gt preprocess --audio-model")
    require("transformers", "gt preprocess --audio-model")
    acfg.spec()
    inspect_checkpoint(acfg.model, acfg.layer)


def _write_jpg(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(img).save(path, quality=95)


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(img, "RGBA").save(path, compress_level=1)


def sample_points(X: np.ndarray, tri: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Face mesh (X [V, 3], tri [F, 3]) -> [n, 3] points: ~60% on the face, the rest on a head shell.

    The shell is an ellipsoid around the skull (sized from the face mesh) kept where the
    face mesh is not: the sides, top and back of the head, where the hair is.
    """
    rng = np.random.default_rng(seed)
    a, b, c = X[tri[:, 0]], X[tri[:, 1]], X[tri[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    n_face = int(0.6 * n)
    k = rng.choice(len(tri), n_face, p=area / area.sum())
    u, v = rng.random((2, n_face))
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    face = a[k] + u[:, None] * (b[k] - a[k]) + v[:, None] * (c[k] - a[k])
    lo, hi = X.min(0), X.max(0)
    centre = np.array([0.5 * (lo[0] + hi[0]), lo[1] + 0.45 * (hi[1] - lo[1]), hi[2] - 0.02])
    radii = np.array([0.55 * (hi[0] - lo[0]), 0.6 * (hi[1] - lo[1]), 1.1 * (hi[2] - lo[2])])
    shell = []
    while sum(len(s) for s in shell) < n - n_face:
        d = rng.normal(size=(4 * n, 3))
        p = centre + radii * d / np.linalg.norm(d, axis=1, keepdims=True)
        keep = ((p[:, 2] > lo[2] + 0.5 * (hi[2] - lo[2])) | (p[:, 1] < lo[1])) & (p[:, 1] < hi[1] - 0.03)
        shell.append(p[keep])
    return np.concatenate([face, np.concatenate(shell)[: n - n_face]]).astype(np.float32)


def _draw_preview(img: np.ndarray, lm: np.ndarray, R: np.ndarray, t: np.ndarray, f: float, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    from gt_train.preprocess.pose import project

    im = Image.fromarray(img)
    d = ImageDraw.Draw(im)
    r = max(1, size // 256)
    for x, y in lm:
        d.ellipse([x - r, y - r, x + r, y + r], fill=(0, 255, 0))
    axes = np.array([[0, 0, 0], [0.06, 0, 0], [0, 0.06, 0], [0, 0, -0.06]], np.float64)  # z toward the camera
    p = project(axes, R[None], t[None], f, np.array([size / 2, size / 2]))[0]
    for k, col in ((1, (255, 0, 0)), (2, (0, 255, 0)), (3, (0, 128, 255))):
        d.line([tuple(p[0]), tuple(p[k])], fill=col, width=max(1, size // 200))
    return np.asarray(im)


def preprocess(cfg: PreprocessConfig) -> Path:
    """Video -> identity dataset in cfg.out_dir (see the module docstring) -> the directory."""
    from PIL import Image

    from gt_runtime.audio import load_audio, write_wav
    from gt_train.data.format import default_split, frame_name, write_ply_points
    from gt_train.preprocess import background as bgm
    from gt_train.preprocess import pose as posem
    from gt_train.preprocess.blink import blink_track
    from gt_train.preprocess.landmarks import make_detector
    from gt_train.preprocess.video_io import iter_frames, probe, read_audio

    out = _check(cfg)
    video = Path(cfg.video)
    info = probe(video)
    size, fps = int(cfg.size), int(cfg.fps)
    show = cfg.progress
    detector = make_detector(cfg.detector)
    warnings_: list[str] = []

    # -- pass 1: face track on a sample of frames -> the crop --------------------------------
    W, H = info.width, info.height
    s1 = min(1.0, DETECT_SIDE / max(W, H))
    dw, dh = max(2, round(W * s1)), max(2, round(H * s1))
    track, T = [], 0
    est = int(info.duration * fps) or None
    for k, frame in _steps(iter_frames(video, fps), "face track", est, show):
        T = k + 1
        if k % DETECT_STRIDE:
            continue
        rgb = frame.to_ndarray(format="rgb24", width=dw, height=dh) if s1 < 1 else frame.to_ndarray(format="rgb24")
        lm = detector.detect(rgb)
        if lm is not None:
            track.append(lm / s1)
    if T < cfg.min_seconds * fps:
        raise InputError(f"{video}: {T / fps:.2f} s of video | give at least {cfg.min_seconds:g} s of one person talking")
    if not track:
        raise InputError(f"{video}: no face found in any frame | give a video where one face looks toward the camera")
    x0, y0, side = choose_crop(np.stack(track), W, H, cfg.crop_scale)
    sc = size / side

    tmp = staging_dir(out)
    try:
        (tmp / "frames").mkdir()
        (tmp / "torso").mkdir()
        # -- pass 2: frames at the working resolution + landmarks ----------------------------
        detector.reset()  # fresh tracking state
        lms = np.zeros((T, 68, 2), np.float32)
        found = np.zeros(T, bool)
        bg_every = max(1, T // bgm.MAX_BG_FRAMES)
        bg_frames, bg_idx = [], []
        with ThreadPoolExecutor(max_workers=2) as pool:
            pending = []
            for k, frame in _steps(iter_frames(video, fps), "frames + landmarks", T, show):
                if k >= T:
                    break
                rgb = frame.to_ndarray(format="rgb24")[y0:y0 + side, x0:x0 + side]
                if side != size:
                    rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR if sc > 1 else Image.LANCZOS))
                rgb = np.ascontiguousarray(rgb)
                lm = detector.detect(rgb)
                if lm is not None:
                    lms[k], found[k] = lm, True
                if k % bg_every == 0 and len(bg_frames) < bgm.MAX_BG_FRAMES:
                    bg_frames.append(rgb)
                    bg_idx.append(k)
                pending.append(pool.submit(_write_jpg, tmp / "frames" / f"{frame_name(k)}.jpg", rgb))
                if len(pending) > 8:
                    pending.pop(0).result()
            for p in pending:
                p.result()
        detector.close()
        T = min(T, k + 1)
        lms, found = lms[:T], found[:T]
        lms, runs = fill_gaps(lms, found, int(round(cfg.max_gap_s * fps)), video)
        if runs:
            msg = f"{video}: face not found in frames {_fmt(runs)}; landmarks interpolated there"
            _warn(msg)
            warnings_.append(msg)

        # -- fits ----------------------------------------------------------------------------
        fit = posem.fit_poses(lms, size, sigma=cfg.pose_smoothing)
        blink = blink_track(lms)
        background = bgm.estimate_background(np.stack(bg_frames), lms[bg_idx])
        Image.fromarray(np.round(np.clip(background, 0, 1) * 255).astype(np.uint8)).save(tmp / "background.jpg", quality=95)

        n_samples = T * 16000 // fps
        pcm, had_audio = read_audio(video, _first_time(video), n_samples)
        if not had_audio:
            msg = f"{video}: no audio track; audio.wav is silence (the model cannot learn lip sync from it)"
            _warn(msg)
            warnings_.append(msg)
        write_wav(tmp / "audio.wav", pcm, 16000)
        from gt_train.preprocess.audio_model import write_audio_features

        # Features of the audio as stored (16-bit) and read back as gt export reads it, so that
        # audio.wav -> front end reproduces them exactly.
        pcm = load_audio(tmp / "audio.wav", allow_silent=True)[0]

        audio_meta = write_audio_features(tmp, pcm, T, cfg.audio_config(), progress=show)
        np.save(tmp / "blink.npy", blink)
        np.save(tmp / "landmarks.npy", lms.astype(np.float32))

        Xv, tri = posem.face_model()
        pts = sample_points(posem.fit_shape(Xv, lms, fit, size), tri, cfg.n_points)
        write_ply_points(tmp / "points_init.ply", pts, _point_colors(pts, tmp / "frames" / f"{frame_name(0)}.jpg", fit, size))

        # -- pass 3: torso images and the preview ---------------------------------------------
        writer = None
        if cfg.preview:
            from gt_runtime.playback.video import Mp4Writer

            writer = Mp4Writer(tmp / "preview.mp4", size, size, fps, 16000)
            writer.write_audio(pcm)
        try:
            with ThreadPoolExecutor(max_workers=2) as pool:
                pending = []
                for k in _steps(range(T), "torso + preview", T, show):
                    rgb = np.asarray(Image.open(tmp / "frames" / f"{frame_name(k)}.jpg").convert("RGB"))
                    pending.append(pool.submit(_write_png, tmp / "torso" / f"{frame_name(k)}.png", bgm.torso_rgba(rgb, lms[k], background)))
                    if writer is not None:
                        writer.write(_draw_preview(rgb, lms[k], fit["R"][k], fit["t"][k], fit["f"], size))
                    if len(pending) > 8:
                        pending.pop(0).result()
                for p in pending:
                    p.result()
            if writer is not None:
                writer.close()
        except BaseException:
            if writer is not None:
                writer.abort()
            raise

        frames_meta = [{"index": i, "file_path": f"frames/{frame_name(i)}.jpg", "torso_path": f"torso/{frame_name(i)}.png",
                        "transform_matrix": np.round(fit["c2w"][i], 8).tolist()} for i in range(T)]
        transforms = {"format": "gt-identity", "version": 1, "fps": fps, "width": size, "height": size,
                      "fl_x": fit["f"], "fl_y": fit["f"], "cx": size / 2, "cy": size / 2, "convention": "opencv",
                      "landmarks": "ibug68", "frames": frames_meta}
        (tmp / "transforms.json").write_text(json.dumps(transforms, indent=1))
        (tmp / "split.json").write_text(json.dumps(default_split(T)))
        (tmp / "preprocess.json").write_text(json.dumps({
            "config": cfg.to_json(), "detector": detector.name, "source": {"width": W, "height": H, "frames_25fps": T},
            "audio_frontend": {k: audio_meta[k] for k in ("name", "dim") if k in audio_meta},
            "crop": {"x0": x0, "y0": y0, "side": side, "scale": sc}, "focal_px": fit["f"],
            "reprojection_rms_px": float(np.median(fit["rms"])), "interpolated_frames": runs, "warnings": warnings_,
            "head_frame": "metres, x right, y down, z away from the camera, origin ~10 cm behind the face between the eyes (MediaPipe canonical face)",
        }, indent=1))
        commit_dir(tmp, out)  # replaces an empty `out` (checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _first_time(video: Path) -> float:
    from gt_train.preprocess.video_io import start_time

    return start_time(video)


def _point_colors(pts: np.ndarray, frame0: Path, fit: dict, size: int) -> np.ndarray:
    """Colours of the points from frame 0 at their projections (clamped to the image)."""
    from PIL import Image

    from gt_train.preprocess.pose import project

    img = np.asarray(Image.open(frame0).convert("RGB"))
    uv = project(pts.astype(np.float64), fit["R"][:1], fit["t"][:1], fit["f"], np.array([size / 2, size / 2]))[0]
    x = np.clip(uv[:, 0].astype(int), 0, size - 1)
    y = np.clip(uv[:, 1].astype(int), 0, size - 1)
    return img[y, x]
