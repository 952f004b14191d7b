"""`gt eval`: quality and lip-sync metrics of a trained run or an exported bundle on an identity's val split.

    from gt_train.eval import EvalConfig, evaluate
    res = evaluate(EvalConfig(model="runs/may", data="data/may", cross="speech.wav", json="eval.json"))

The model is either a run directory (rendered with the torch model of gt_train and the
C++ rasterizer, `gt_train.render`) or a bundle (rendered by gt_runtime's `Player`
pipeline, the code `gt play` runs). Each val frame t is rendered with the dataset's
audio window, blink, camera and background (a bundle uses its own scene, which the
exporter writes from the same dataset: frame t = track frame t).

Metrics (`gt_train.metrics`), averaged over the val frames:

- `psnr`, `ssim` (3DGS window), `lpips` (only with `lpips_weights`, a local LPIPS(alex)
  state dict), `mouth_psnr` (inside the lip box);
- `lmd`: mouth landmark distance (pixels at the working resolution) between the landmarks
  that `gt preprocess`'s detector finds on the render and on the real frame; skipped with a
  note when the detector is unavailable or finds no face (e.g. tiny frames);
- `sync`: the lip-sync proxy: correlation between the rendered mouth opening (1 - mean
  luminance in a box tied to the lip corners, `metrics.mouth_openness`) and the audio energy per frame (mean log-mel),
  at every A/V offset in [-max_offset, max_offset], with the best offset in frames
  (k > 0: the video lags); `sync_of_gt_frames` is the same measure on the real frames;
- `mouth_open_corr` (synthetic identity only): correlation of the rendered mouth opening
  with the ground-truth `mouth_open`, and `mouth_open_corr_of_gt_frames` its ceiling;
- `cross` (with a foreign speech): the sync proxy only, over the speech's frames, the
  head pose / blink / background following the dataset track (ping-pong).

-> {"model", "kind", "data", "frames", "width", "height", "val": {...}, "cross": {...} | None, "notes": [...]}
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gt_runtime.errors import InputError, require
from gt_train import metrics as M


@dataclass
class EvalConfig:
    """Options of `gt eval`."""

    model: Path                       # run directory or bundle (*.gtb)
    data: Path                        # identity dataset
    cross: Path | None = None         # foreign speech for the cross-driven sync proxy
    json: Path | None = None
    lpips_weights: Path | None = None
    lmd: bool = True
    max_offset: int = 5
    max_cross_frames: int = 500       # cap on the cross-driven frames (20 s)
    engine: str = "auto"              # bundle only
    quiet: bool = False


def model_kind(path: Path) -> str:
    """'bundle' (has manifest.json) or 'run' (has checkpoints/) -> else a one-line InputError."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        return "bundle"
    if (p / "checkpoints").is_dir() or p.suffix == ".pt":
        return "run"
    raise InputError(f"{p}: neither a run directory (checkpoints/) nor a bundle (manifest.json) | pass `gt train`'s -o or `gt export`'s -o")


class RunRenderer:
    """Frames of a run's torch model: render(t, window=None, track=None) -> [H, W, 3] float32 in [0, 1]."""

    def __init__(self, run: Path, data: Path):
        torch = require("torch", "gt eval of a run")

        from gt_train.checkpoint import load_model
        from gt_train.dataset import TrainData

        self.torch = torch
        self.model, self.cfg = load_model(run)
        self.data = TrainData(data, self.cfg.resolution, self.cfg.lip_margin, "cpu", quiet=True)
        self.K = self.data.K

    def render(self, t: int, window: np.ndarray | None = None, track: int | None = None) -> np.ndarray:
        """t: dataset frame (pose, blink, background); window [15, 2, D] overrides its audio."""
        from gt_train.render import render

        torch = self.torch
        f = self.data.frame(t if track is None else track)
        audio = f.audio if window is None else torch.from_numpy(np.asarray(window, np.float32))
        with torch.no_grad():
            out = self.model(audio[None], f.blink[None], f.c2w[None])
            img = render(out["means"][0], out["quats"][0], out["log_scales"][0], out["opacity_logits"][0], out["sh"][0],
                         f.viewmat, self.K, self.data.width, self.data.height, f.background, self.cfg.model.sh_degree)
        return img.clamp(0, 1).numpy()

    def close(self):
        pass


class BundleRenderer:
    """Frames of a bundle through gt_runtime's FramePipeline (engines + rasterizer of `gt play`)."""

    def __init__(self, bundle: Path, data: Path, engine: str = "auto"):
        from gt_runtime.playback.player import Player
        from gt_train.dataset import TrainData

        self.player = Player(bundle, engine=engine, overlap=False)
        b = self.player.bundle
        self.data = TrainData(data, max(b.width, b.height), 0.25, "cpu", quiet=True)
        if (self.data.width, self.data.height) != (b.width, b.height):
            raise InputError(f"{data}: frames resize to {self.data.width}x{self.data.height}, the bundle renders {b.width}x{b.height} | evaluate with the dataset the bundle was exported from")
        self.track_len = self.player.pipeline.scene.num_frames
        self.state = self.player.pipeline.new_state(False)
        self.feats = np.asarray(self.data.ds.audio_features, np.float32)

    def render(self, t: int, window: np.ndarray | None = None, track: int | None = None) -> np.ndarray:
        from gt_runtime.model.reference import audio_windows

        pipe = self.player.pipeline
        idx = t if track is None else track
        if window is None:
            window = audio_windows(self.feats, np.array([t]), len(self.feats))[0]
        off, _ = pipe.deform(np.array([idx]), np.asarray(window, np.float32)[None])
        img, _ = pipe.render(self.state, np.array([idx]), off)
        return img[0].astype(np.float32) / 255.0

    def close(self):
        self.state.close()
        self.player.close()


def _detector(notes: list):
    try:
        from gt_train.preprocess.landmarks import make_detector

        return lambda: make_detector("auto")
    except Exception as exc:  # pragma: no cover - import problems
        notes.append(f"LMD skipped: landmark detector unavailable ({exc})")
        return None


def _landmarks(make, frames: list[np.ndarray], notes: list, what: str):
    """-> [T, 68, 2] with NaN rows where no face was found, or None when the detector cannot be created."""
    try:
        det = make()
    except Exception as exc:
        notes.append(f"LMD skipped: landmark detector unavailable ({str(exc).splitlines()[0]})")
        return None
    out = np.full((len(frames), 68, 2), np.nan)
    try:
        for i, f in enumerate(frames):
            p = det.detect(np.ascontiguousarray((np.clip(f, 0, 1) * 255 + 0.5).astype(np.uint8)))
            if p is not None:
                out[i] = p
    finally:
        det.close()
    return out


def evaluate(cfg: EvalConfig) -> dict:
    """Evaluate cfg.model on cfg.data's val split (and cfg.cross) -> result dict; writes cfg.json."""
    kind = model_kind(cfg.model)
    notes: list[str] = []
    r = RunRenderer(cfg.model, cfg.data) if kind == "run" else BundleRenderer(cfg.model, cfg.data, cfg.engine)
    try:
        data = r.data
        if kind == "bundle" and r.track_len != data.num_frames:
            notes.append(f"bundle track has {r.track_len} frames, the dataset {data.num_frames}: poses/backgrounds follow the bundle's track")
        val = [int(t) for t in data.val_idx]
        lp = M.LpipsMetric(cfg.lpips_weights) if cfg.lpips_weights is not None else None
        if lp is None:
            notes.append("LPIPS skipped: no --lpips-weights (a local LPIPS(alex) state dict)")
        renders, gts = [], []
        ps, ss, lps, mps, m_r, m_g = [], [], [], [], [], []
        for t in val:
            img = r.render(t)
            gt = data.images[t].astype(np.float32) / 255.0
            renders.append(img)
            gts.append(gt)
            ps.append(M.psnr(img, gt))
            ss.append(M.ssim(img, gt))
            if lp is not None:
                lps.append(lp(img, gt))
            x0, y0, x1, y1 = data.lip_boxes[t]
            mps.append(M.psnr(img[y0:y1, x0:x1], gt[y0:y1, x0:x1]))
            m_r.append(M.mouth_openness(img, data.mouth_boxes[t]))
            m_g.append(M.mouth_openness(gt, data.mouth_boxes[t]))
        energy = M.audio_energy(data.ds.mel_features())[val]  # loudness from log-mel, whatever the model's front end
        res_val = {"frames": len(val), "psnr": _mean(ps), "ssim": _mean(ss), "lpips": _mean(lps) if lps else None,
                   "mouth_psnr": _mean(mps), "lmd": None,
                   "sync": M.sync_offset(m_r, energy, cfg.max_offset),
                   "sync_of_gt_frames": M.sync_offset(m_g, energy, cfg.max_offset)}
        gt_open = data.ds.ground_truth.get("mouth_open")
        if gt_open is not None:
            g = np.asarray(gt_open, np.float64)[val]
            res_val["mouth_open_corr"] = M.corr(m_r, g)
            res_val["mouth_open_corr_of_gt_frames"] = M.corr(m_g, g)
        if cfg.lmd:
            make = _detector(notes)
            if make is not None:
                lm_r = _landmarks(make, renders, notes, "render")
                lm_g = _landmarks(make, gts, notes, "gt") if lm_r is not None else None
                if lm_r is not None and lm_g is not None:
                    ok = np.isfinite(lm_r[:, 0, 0]) & np.isfinite(lm_g[:, 0, 0])
                    res_val["lmd_frames"] = int(ok.sum())
                    if ok.any():
                        res_val["lmd"] = M.lmd(lm_r, lm_g)
                    else:
                        notes.append(f"LMD skipped: the landmark detector found no face in the {data.width}x{data.height} frames")
        else:
            notes.append("LMD skipped (--no-lmd)")
        res_cross = _cross(r, cfg, notes) if cfg.cross is not None else None
    finally:
        r.close()
    out = {"model": str(cfg.model), "kind": kind, "data": str(cfg.data), "width": data.width, "height": data.height,
           "val": res_val, "cross": res_cross, "notes": notes}
    if cfg.json:
        Path(cfg.json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.json).write_text(json.dumps(_jsonable(out), indent=2) + "\n")
    if not cfg.quiet:
        print_table(out)
    return out


def _cross(r, cfg: EvalConfig, notes: list) -> dict:
    """Foreign speech -> frames (pose/blink/background ping-pong over the dataset track) -> sync proxy."""
    from gt_runtime.audio import load_audio, mel_features
    from gt_runtime.model.reference import audio_windows
    from gt_runtime.playback.scene import pingpong

    pcm, sr = load_audio(cfg.cross)
    feats = r.data.ds.audio_frontend_runner().features(pcm, sr)  # the model's front end (mel or hubert / wav2vec2)
    mel = mel_features(pcm, sr, num_frames=len(feats))
    T = len(feats)
    if T > cfg.max_cross_frames:
        notes.append(f"cross: only the first {cfg.max_cross_frames} of {T} frames are evaluated")
        T = cfg.max_cross_frames
    data = r.data
    n_track = getattr(r, "track_len", data.num_frames)
    mouth = []
    for t in range(T):
        win = audio_windows(feats, np.array([t]), len(feats))[0]
        tr = int(pingpong(t, n_track))
        img = r.render(tr, window=win, track=tr)
        mouth.append(M.mouth_openness(img, data.mouth_boxes[min(tr, data.num_frames - 1)]))
    energy = M.audio_energy(mel[:T])
    return {"speech": str(cfg.cross), "frames": T, "sync": M.sync_offset(mouth, energy, cfg.max_offset)}


def _mean(x) -> float:
    a = np.asarray(x, np.float64)
    fin = a[np.isfinite(a)]
    if a.size and fin.size < a.size and np.all(np.isposinf(a[~np.isfinite(a)])):
        return math.inf if fin.size == 0 else float(np.mean(np.minimum(a, 100.0)))  # identical frames: cap at 100 dB
    return float(fin.mean()) if fin.size else float("nan")


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def print_table(res: dict, file=None) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(file=file or sys.stderr)
    v = res["val"]
    t = Table(title=f"gt eval: {res['model']} ({res['kind']}) on {res['data']} val, {v['frames']} frames, {res['width']}x{res['height']}")
    t.add_column("metric")
    t.add_column("value", justify="right")
    t.add_column("note")

    def f(x, fmt="{:.3f}"):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)

    t.add_row("PSNR (dB)", f(v["psnr"], "{:.2f}"), "")
    t.add_row("SSIM", f(v["ssim"], "{:.4f}"), "")
    t.add_row("LPIPS", f(v["lpips"], "{:.4f}"), "" if v["lpips"] is not None else "needs --lpips-weights")
    t.add_row("mouth PSNR (dB)", f(v["mouth_psnr"], "{:.2f}"), "lip box")
    t.add_row("LMD (px)", f(v["lmd"], "{:.2f}"), f"{v.get('lmd_frames', 0)} frames with a face" if v["lmd"] is not None else "skipped")
    s, sg = v["sync"], v["sync_of_gt_frames"]
    t.add_row("sync: corr(mouth, audio) at 0", f(s["corr_at_0"]), f"real frames: {sg['corr_at_0']:.3f}")
    t.add_row("sync: best A/V offset (frames)", str(s["best_offset"]), f"corr {s['best_corr']:.3f}; real frames: {sg['best_offset']}")
    if "mouth_open_corr" in v:
        t.add_row("corr(mouth, GT mouth_open)", f(v["mouth_open_corr"]), f"real frames: {v['mouth_open_corr_of_gt_frames']:.3f}")
    if res["cross"]:
        c = res["cross"]["sync"]
        t.add_row("cross: corr(mouth, audio) at 0", f(c["corr_at_0"]), f"{res['cross']['frames']} frames of {Path(res['cross']['speech']).name}")
        t.add_row("cross: best A/V offset (frames)", str(c["best_offset"]), f"corr {c['best_corr']:.3f}")
    con.print(t)
    for n in res["notes"]:
        con.print(f"note: {n}")
