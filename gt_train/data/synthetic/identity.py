"""`make_synthetic_identity`: render the synthetic person and write an identity dataset."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gt_runtime.contract import SAMPLE_RATE
from gt_runtime.errors import InputError, require
from gt_runtime.util.staging import commit_dir, require_empty_dir, staging_dir
from gt_train.data.synthetic import _face, _scene
from gt_train.data.synthetic._raster import rasterize, sample_bilinear

GENERATOR_VERSION = 1
N_POINTS = 20000
# light direction (camera coords, from the surface toward the light): upper left, in front
_LIGHT = np.array([-0.45, -0.55, -0.70]) / np.linalg.norm([-0.45, -0.55, -0.70])


@dataclass
class SyntheticConfig:
    """What `make_synthetic_identity` renders. Saved in ground_truth.json (without out_dir)."""

    out_dir: Path
    seconds: float = 20.0
    size: int = 256  # frames are size x size
    seed: int = 0
    speech: Path | None = None  # None -> the bundled `train` clip, looped / cut to `seconds`
    fps: int = 25
    progress: bool = True  # a rich progress bar on stderr


class Renderer:
    """Renders frames of the synthetic person at one size. Holds only per-size static data."""

    def __init__(self, size: int):
        self.model = _face.head_model()
        self.cam = _scene.Camera.for_size(size)
        self.atlas = _scene._gauss_prefilter(self.model.atlas, self.cam.texels_per_pixel)
        self.plate = _scene.background_plate(self.cam)
        self.torso_rgb, self.torso_alpha = _scene.torso_layer(self.model, self.cam)
        a = self.torso_alpha[..., None]
        self.under = (self.plate * (1 - a) + self.torso_rgb * a).astype(np.float32)
        self.torso_mask = self.torso_alpha >= 0.5

    def head(self, R: np.ndarray, t: np.ndarray, open_m: float, blink: float) -> tuple[np.ndarray, np.ndarray]:
        """-> (covered [H, W] bool, rgb [H, W, 3] float32) of the head alone."""
        m, cam = self.model, self.cam
        vc = m.deformed(open_m) @ R.T + t
        uvpx = cam.project(vc)
        ndl = np.clip((m.normals @ R.T) @ _LIGHT, 0, 1)
        shade = np.where(m.lit > 0, 0.70 + 0.38 * ndl, 1.0)
        xyz = np.concatenate([uvpx, vc[:, 2:3]], 1)
        attrs = np.concatenate([m.uv, shade[:, None]], 1).astype(np.float32)
        covered, img = rasterize(xyz, m.faces, attrs, cam.height, cam.width)
        boxes = [lid.box for lid in m.lids]
        saved = [self.atlas[y0:y1, x0:x1].copy() for y0, y1, x0, x1 in boxes]
        _face.paint_lids(self.atlas, m.lids, blink)
        sel = img[covered]
        rgb = np.zeros((cam.height, cam.width, 3), np.float32)
        rgb[covered] = sample_bilinear(self.atlas, sel[:, 0], sel[:, 1]) * sel[:, 2:3]
        for (y0, y1, x0, x1), patch in zip(boxes, saved):
            self.atlas[y0:y1, x0:x1] = patch
        return covered, rgb

    def frame(self, R: np.ndarray, t: np.ndarray, open_m: float, blink: float) -> tuple[np.ndarray, np.ndarray]:
        """-> (frame [H, W, 3] uint8, torso [H, W, 4] uint8 RGBA)."""
        ndi = require("scipy.ndimage", "gt sample synthetic")

        covered, rgb = self.head(R, t, open_m, blink)
        ys, xs = np.nonzero(covered)
        out = self.under.copy()
        if ys.size:
            y0, y1 = max(ys.min() - 3, 0), min(ys.max() + 4, covered.shape[0])
            x0, x1 = max(xs.min() - 3, 0), min(xs.max() + 4, covered.shape[1])
            cov = covered[y0:y1, x0:x1].astype(np.float32)
            col = rgb[y0:y1, x0:x1]
            # anti-aliased silhouette: a half-pixel blur of the coverage, the head colour extended outward
            alpha = ndi.gaussian_filter(cov, 0.55)
            num = ndi.gaussian_filter(col, (0.8, 0.8, 0))
            den = ndi.gaussian_filter(cov, 0.8)[..., None]
            col = np.where(cov[..., None] > 0, col, num / np.maximum(den, 1e-6))
            a = alpha[..., None]
            out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a) + np.clip(col, 0, 1) * a
        frame = np.round(np.clip(out, 0, 1) * 255).astype(np.uint8)
        keep = self.torso_mask & ~covered
        torso = np.zeros(frame.shape[:2] + (4,), np.uint8)
        torso[keep, :3] = frame[keep]
        torso[keep, 3] = 255
        return frame, torso

    def landmarks(self, R: np.ndarray, t: np.ndarray, open_m: float, blink: float) -> np.ndarray:
        """-> [68, 2] float32 pixel (x, y) of the iBUG-68 landmarks."""
        p = _face.landmarks_3d(self.model, open_m, blink)
        return self.cam.project(p @ R.T + t).astype(np.float32)


# ----------------------------------------------------------------------------- helpers


def _savez_fixed(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez (a zip of .npy, no pickle), but with fixed zip timestamps so the bytes are reproducible."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def _speech(cfg: SyntheticConfig, n_samples: int) -> tuple[np.ndarray, dict]:
    """Load the driving speech, loop it (with 0.3 s pauses) or cut it to n_samples -> (pcm [n] float32, info)."""
    from gt_runtime.assets import speech_path
    from gt_runtime.audio import load_audio

    path = Path(cfg.speech) if cfg.speech is not None else speech_path("train")
    pcm, _ = load_audio(path, SAMPLE_RATE)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    loops = 1
    if pcm.size < n_samples:
        gap = np.zeros(int(0.3 * SAMPLE_RATE), np.float32)
        loops = int(np.ceil(n_samples / (pcm.size + gap.size)))
        pcm = np.concatenate([np.concatenate([pcm, gap])] * loops)
    info = {"file": path.name if cfg.speech is None else str(cfg.speech), "bundled": cfg.speech is None,
            "sha256": digest, "source_seconds": round(float(pcm.size / loops / SAMPLE_RATE), 4), "loops": loops}
    return pcm[:n_samples].astype(np.float32), info


def _check(cfg: SyntheticConfig) -> Path:
    out = Path(cfg.out_dir)
    require_empty_dir(out)
    if cfg.fps != 25:
        raise InputError(f"fps {cfg.fps}: unsupported | the identity format and the mel front end run at 25 fps")
    if not (cfg.seconds > 0) or round(cfg.seconds * cfg.fps) < 2:
        raise InputError(f"seconds {cfg.seconds}: too short | give at least 0.08 s (2 frames)")
    if not 32 <= int(cfg.size) <= 2048:
        raise InputError(f"size {cfg.size}: out of range | expected 32..2048 pixels")
    return out


# ----------------------------------------------------------------------------- the entry point


def make_synthetic_identity(cfg: SyntheticConfig) -> Path:
    """Render the synthetic identity described by cfg into cfg.out_dir (README: "Identity dataset format") -> the directory.

    The directory appears only when everything is written (files go to a hidden
    sibling first). Same config -> byte-identical files.
    """
    from PIL import Image

    from gt_runtime.audio import mel_features, write_wav
    from gt_runtime.util.progress import progress
    from gt_train.data.format import default_split, write_ply_points

    out = _check(cfg)
    T = int(round(cfg.seconds * cfg.fps))
    spf = SAMPLE_RATE // cfg.fps
    size = int(cfg.size)
    pcm, speech_info = _speech(cfg, T * spf)
    seeds = np.random.SeedSequence(int(cfg.seed)).spawn(3)
    loud = _scene.loudness_envelope(pcm, T, spf)
    mouth = _scene.mouth_from_loudness(loud)
    mouth_m = (mouth * _scene.MOUTH_OPEN_MAX_M).astype(np.float32)
    blink, blink_events = _scene.blink_track(T, cfg.fps, np.random.default_rng(seeds[0]))
    euler, Rs, ts = _scene.head_motion(T, cfg.fps, np.random.default_rng(seeds[1]))
    feats = mel_features(pcm, SAMPLE_RATE, num_frames=T)

    ren = Renderer(size)
    tmp = staging_dir(out)
    try:
        (tmp / "frames").mkdir()
        (tmp / "torso").mkdir()
        lms = np.zeros((T, 68, 2), np.float32)
        frames_meta = []
        Rs64, ts64 = Rs.astype(np.float64), ts.astype(np.float64)
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = []
            steps = progress(range(T), "synthetic identity", total=T, unit="frame") if cfg.progress else range(T)
            for i in steps:
                R, t = Rs64[i], ts64[i]
                frame, torso = ren.frame(R, t, float(mouth_m[i]), float(blink[i]))
                lms[i] = ren.landmarks(R, t, float(mouth_m[i]), float(blink[i]))
                name = f"{i:05d}"
                pending.append(pool.submit(_write_pair, tmp, name, frame, torso))
                if len(pending) > 4:
                    pending.pop(0).result()
                c2w = np.eye(4)
                c2w[:3, :3] = R.T
                c2w[:3, 3] = -R.T @ t
                frames_meta.append({"index": i, "file_path": f"frames/{name}.jpg", "torso_path": f"torso/{name}.png",
                                    "transform_matrix": np.round(c2w, 8).tolist()})
            for p in pending:
                p.result()

        Image.fromarray(np.round(np.clip(ren.plate, 0, 1) * 255).astype(np.uint8)).save(tmp / "background.jpg", quality=95)
        write_wav(tmp / "audio.wav", pcm, SAMPLE_RATE)
        np.save(tmp / "audio_features.npy", feats.astype(np.float32))
        np.save(tmp / "blink.npy", blink.astype(np.float32))
        np.save(tmp / "landmarks.npy", lms)
        xyz, rgb = _face.sample_points(ren.model, N_POINTS, int(seeds[2].generate_state(1)[0]))
        write_ply_points(tmp / "points_init.ply", xyz, rgb)
        cam = ren.cam
        transforms = {"format": "gt-identity", "version": 1, "fps": cfg.fps, "width": size, "height": size,
                      "fl_x": cam.fl, "fl_y": cam.fl, "cx": cam.cx, "cy": cam.cy, "convention": "opencv",
                      "landmarks": "ibug68", "frames": frames_meta}
        (tmp / "transforms.json").write_text(json.dumps(transforms, indent=1))
        (tmp / "split.json").write_text(json.dumps(default_split(T)))
        _savez_fixed(tmp / "ground_truth.npz", {
            "mouth_open": mouth, "mouth_open_m": mouth_m, "blink": blink.astype(np.float32),
            "head_rotation": Rs.astype(np.float32), "head_translation": ts.astype(np.float32),
            "head_euler_deg": euler.astype(np.float32), "landmarks": lms, "loudness": loud})
        (tmp / "ground_truth.json").write_text(json.dumps(_describe(cfg, T, speech_info, blink_events, cam), indent=1))
        commit_dir(tmp, out)  # replaces an empty `out` (checked above)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_pair(root: Path, name: str, frame: np.ndarray, torso: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(frame).save(root / "frames" / f"{name}.jpg", quality=95)
    Image.fromarray(torso, "RGBA").save(root / "torso" / f"{name}.png", compress_level=1)


def _describe(cfg: SyntheticConfig, T: int, speech: dict, blinks: list, cam) -> dict:
    conf = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items() if k not in ("out_dir", "progress")}
    return {
        "generator": "gt_train.data.synthetic", "generator_version": GENERATOR_VERSION,
        "config": conf, "seed": cfg.seed, "frames": T, "fps": cfg.fps, "source_audio": speech,
        "person": "texture from scikit-image's astronaut.png (Eileen Collins, NASA, public domain), mapped on a parametric 3-D head",
        "background": "scikit-image's motorcycle_left.png, blurred",
        "world_frame": "the head's canonical frame: metres, x right, y down, z away from the camera (the face looks toward -z), origin ~10 cm behind the face between the eyes",
        "camera": {"convention": "opencv (x right, y down, z forward)", "fl": cam.fl, "cx": cam.cx, "cy": cam.cy,
                   "pixel_centres": "pixel j covers [j, j+1), its centre is j + 0.5",
                   "rest_head_translation_m": [0.0, _scene.HEAD_Y, _scene.HEAD_DIST]},
        "units": {
            "mouth_open": "lip gap at the mouth centre / mouth_open_max_m, in [0, 1]",
            "mouth_open_m": "lip gap at the mouth centre, metres",
            "mouth_open_max_m": _scene.MOUTH_OPEN_MAX_M,
            "blink": "eyelid closure in [0, 1], 1 = closed",
            "head_rotation": "R [T, 3, 3]: head frame -> real camera (x_cam = R x_head + t); transform_matrix = inverse",
            "head_translation": "t [T, 3] metres, real camera coords",
            "head_euler_deg": "[T, 3] yaw (about y), pitch (about x), roll (about z), R = Ry Rx Rz",
            "landmarks": "[T, 68, 2] pixel (x, y), iBUG-68 order, exact projections of the model's 3-D points",
            "loudness": "[T] RMS of each frame's own 40 ms of audio (full scale = 1); drives mouth_open",
        },
        "mouth_mapping": "mouth_open = gaussian_smooth(clip((dB - (p95 dB - 30)) / 30, 0, 1) ** 1.6, sigma 0.7 frames)",
        "blink_events": blinks,
        "head_motion_std": _scene.HEAD_MOTION_STD,
    }
