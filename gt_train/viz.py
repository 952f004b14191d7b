"""`gt viz`: what a trained GaussianTalker attends to (paper supplementary B.1-B.3), and a GT | render video.

    from gt_train.viz import VizConfig, visualize
    res = visualize(VizConfig(run="runs/may", out="out/viz"))

Writes into cfg.out:

- `attention_{audio,eye,view,null}.png`: each Gaussian of the deformed head of one frame
  coloured by its cross-attention weight to that token (mean over the layers and heads,
  `attn [B, L, heads, N, 4]` of the torch model), rendered with the C++ rasterizer
  (`gt_runtime.raster`, backend cpu). A map is the alpha-normalised splat of the per-Gaussian
  weight, so a pixel shows the mean weight of the Gaussians it sees, drawn with a colour map
  over the map's own 1st..99th percentile (the range is in the grid's titles);
- `attention_grid.png`: GT, render and the 4 maps side by side, the mouth box drawn;
- `triplane_pca_s{0,1}_{xy,xz,yz}.png` and `triplane_pca.png`: the first 3 principal
  components of each plane's C-channel features -> RGB, per plane and scale;
- `val_side_by_side.mp4`: GT | render of the val frames, with the val audio.

-> {"frame", "files": [...], "attention": {token: {"map": [H, W], "alpha": [H, W], "mouth_mean",
    "face_mean"}}, "mouth_box": (x0, y0, x1, y1)}: "mouth_mean" / "face_mean" are the mean
    per-pixel weights inside the mouth box and on the rest of the face (alpha > 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gt_runtime.contract import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from gt_runtime.errors import InputError, require

TOKENS = ("audio", "eye", "view", "null")
PLANE_NAMES = ("xy", "xz", "yz")


@dataclass
class VizConfig:
    """Options of `gt viz`."""

    run: Path
    out: Path
    data: Path | None = None     # default: the dataset in RUN/config.json
    frame: int | None = None     # frame of the attention maps (default: the loudest val frame)
    video: bool = True
    scale: int = 4               # upscaling of small images in the PNGs (nearest)


def _save_png(path: Path, rgb: np.ndarray, scale: int = 1) -> Path:
    from PIL import Image

    img = np.clip(np.asarray(rgb, np.float32) * 255 + 0.5, 0, 255).astype(np.uint8)
    im = Image.fromarray(img)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    im.save(path)
    return path


def attention_maps(model, frame, K, width: int, height: int) -> tuple[dict, np.ndarray]:
    """Per-token attention maps of one frame -> ({token: (map [H, W], alpha [H, W])}, render [H, W, 3]).

    frame: a gt_train.dataset.Frame; the deformed Gaussians of that frame carry the weights.
    """
    torch = require("torch", "gt viz")

    from gt_runtime import raster
    from gt_train.render import render

    with torch.no_grad():
        out = model(frame.audio[None], frame.blink[None], frame.c2w[None])
        attn = out["attn"][0].mean(dim=(0, 1)).numpy()  # [N, 4]: mean over layers and heads
        img = render(out["means"][0], out["quats"][0], out["log_scales"][0], out["opacity_logits"][0], out["sh"][0],
                     frame.viewmat, K, width, height, frame.background, model.cfg.sh_degree).clamp(0, 1).numpy()
        means = out["means"][0].numpy().astype(np.float32)
        quats = out["quats"][0].numpy().astype(np.float32)
        scales = torch.exp(out["log_scales"][0]).numpy().astype(np.float32)
        opac = torch.sigmoid(out["opacity_logits"][0]).numpy().astype(np.float32)
    vm = frame.viewmat.numpy().astype(np.float32)
    Kn = np.asarray(K, np.float32)
    backend = "cpu" if "cpu" in raster.available_backends() else "reference"
    n = means.shape[0]
    alpha = raster.rasterize(means, quats, scales, opac, np.ones((n, 3), np.float32), vm, Kn, width, height,
                             background=np.zeros(3, np.float32), backend=backend)[..., 0]
    maps = {}
    for k, name in enumerate(TOKENS):
        col = np.repeat(attn[:, k:k + 1], 3, axis=1).astype(np.float32)
        acc = raster.rasterize(means, quats, scales, opac, col, vm, Kn, width, height,
                               background=np.zeros(3, np.float32), backend=backend)[..., 0]
        maps[name] = (np.where(alpha > 1e-3, acc / np.maximum(alpha, 1e-3), 0.0), alpha)
    return maps, img


def colorize(m: np.ndarray, alpha: np.ndarray, cmap: str = "inferno") -> tuple[np.ndarray, float, float]:
    """Scalar map + alpha -> (RGB [H, W, 3] over white, lo, hi) with the 1st..99th percentile of the covered pixels."""
    matplotlib = require("matplotlib", "gt viz")

    vis = alpha > 0.5
    vals = m[vis] if vis.any() else m.reshape(-1)
    lo, hi = float(np.percentile(vals, 1)), float(np.percentile(vals, 99))
    x = np.clip((m - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = matplotlib.colormaps[cmap](x)[..., :3]
    a = np.clip(alpha, 0, 1)[..., None]
    return rgb * a + (1 - a), lo, hi


def triplane_pca(model) -> dict:
    """-> {(scale, plane name): RGB [R, R, 3]}: first 3 principal components of the plane's features."""
    out = {}
    for s, planes in enumerate(model.triplane.planes):
        for p, plane in zip(PLANE_NAMES, planes):
            f = plane.detach().float().numpy()[0]  # [C, R, R]
            C, R, _ = f.shape
            X = f.reshape(C, -1).T.astype(np.float64)
            X -= X.mean(0)
            _, _, vt = np.linalg.svd(X, full_matrices=False)
            Y = X @ vt[:3].T  # [R*R, 3]
            lo, hi = np.percentile(Y, 1, axis=0), np.percentile(Y, 99, axis=0)
            Y = np.clip((Y - lo) / np.maximum(hi - lo, 1e-12), 0, 1)
            out[(s, p)] = Y.reshape(R, R, 3)
    return out


def _loudest_val(data) -> int:
    from gt_train.metrics import audio_energy

    val = np.asarray(data.val_idx)
    return int(val[np.argmax(audio_energy(data.ds.mel_features())[val])])


def box_means(m: np.ndarray, alpha: np.ndarray, box) -> tuple[float, float]:
    """-> (mean of m inside box, mean on the rest of the face), over pixels with alpha > 0.5."""
    x0, y0, x1, y1 = box
    face = alpha > 0.5
    inside = np.zeros_like(face)
    inside[y0:y1, x0:x1] = True
    a, b = m[face & inside], m[face & ~inside]
    return (float(a.mean()) if a.size else float("nan"), float(b.mean()) if b.size else float("nan"))


def visualize(cfg: VizConfig) -> dict:
    """Write attention maps, triplane PCA images and the GT | render video -> result dict (module docstring)."""
    require("matplotlib", "gt viz").use("Agg")
    patches = require("matplotlib.patches", "gt viz")
    plt = require("matplotlib.pyplot", "gt viz")

    from gt_train.checkpoint import load_model
    from gt_train.dataset import TrainData

    model, tcfg = load_model(cfg.run)
    data_dir = Path(cfg.data) if cfg.data is not None else Path(tcfg.data)
    if not data_dir.is_dir():
        raise InputError(f"{data_dir}: the run's dataset is not there | pass --data DIR")
    data = TrainData(data_dir, tcfg.resolution, tcfg.lip_margin, "cpu", quiet=True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t = _loudest_val(data) if cfg.frame is None else int(cfg.frame)
    if not 0 <= t < data.num_frames:
        raise InputError(f"--frame {t}: out of range | expected 0..{data.num_frames - 1}")
    files = []
    W, H = data.width, data.height
    frame = data.frame(t)
    maps, img = attention_maps(model, frame, data.K, W, H)
    box = data.mouth_boxes[t]
    result_att = {}
    colored = {}
    for name in TOKENS:
        m, a = maps[name]
        rgb, lo, hi = colorize(m, a)
        colored[name] = (rgb, lo, hi)
        files.append(_save_png(out / f"attention_{name}.png", rgb, cfg.scale))
        mm, fm = box_means(m, a, box)
        result_att[name] = {"map": m, "alpha": a, "mouth_mean": mm, "face_mean": fm}
    # grid: GT | render | audio | eye | view | null
    fig, axes = plt.subplots(1, 6, figsize=(15, 3.1))
    panels = [("ground truth", data.images[t] / 255.0), ("render", img)] + [
        (f"{n} [{colored[n][1]:.3f}, {colored[n][2]:.3f}]", colored[n][0]) for n in TOKENS]
    for ax, (title, im) in zip(axes, panels):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        x0, y0, x1, y1 = box
        ax.add_patch(patches.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=0.8))
    fig.suptitle(f"cross-attention weight per Gaussian (mean over layers and heads), frame {t}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "attention_grid.png", dpi=100)
    plt.close(fig)
    files.append(out / "attention_grid.png")
    # triplane PCA
    pcs = triplane_pca(model)
    for (s, p), rgb in pcs.items():
        files.append(_save_png(out / f"triplane_pca_s{s}_{p}.png", rgb, max(1, 256 // rgb.shape[0])))
    n_s = len(model.triplane.planes)
    fig, axes = plt.subplots(n_s, 3, figsize=(9, 3 * n_s), squeeze=False)
    for (s, p), rgb in pcs.items():
        ax = axes[s][PLANE_NAMES.index(p)]
        ax.imshow(rgb, interpolation="nearest", origin="lower")
        ax.set_title(f"scale {s} ({rgb.shape[0]}²), plane {p}", fontsize=9)
        ax.axis("off")
    fig.suptitle("triplane features: first 3 principal components -> RGB", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "triplane_pca.png", dpi=100)
    plt.close(fig)
    files.append(out / "triplane_pca.png")
    if cfg.video:
        files.append(_val_video(model, tcfg, data, out / "val_side_by_side.mp4"))
    return {"frame": t, "files": [str(f) for f in files], "attention": result_att, "mouth_box": tuple(int(v) for v in box)}


def _val_video(model, tcfg, data, path: Path) -> Path:
    """GT | render of the val frames, with the val audio -> mp4."""
    torch = require("torch", "gt viz")

    from gt_runtime.audio import load_audio
    from gt_runtime.playback.video import Mp4Writer
    from gt_train.render import render

    val = [int(v) for v in data.val_idx]
    pcm, _ = load_audio(data.ds.audio_path)
    W, H = data.width, data.height
    with Mp4Writer(path, 2 * W, H, fps=FPS, sample_rate=SAMPLE_RATE) as wr:
        wr.write_audio(pcm[val[0] * SAMPLES_PER_FRAME:(val[-1] + 1) * SAMPLES_PER_FRAME])
        for t in val:
            f = data.frame(t)
            with torch.no_grad():
                o = model(f.audio[None], f.blink[None], f.c2w[None])
                img = render(o["means"][0], o["quats"][0], o["log_scales"][0], o["opacity_logits"][0], o["sh"][0],
                             f.viewmat, data.K, W, H, f.background, tcfg.model.sh_degree).clamp(0, 1).numpy()
            side = np.concatenate([data.images[t], (img * 255 + 0.5).astype(np.uint8)], 1)
            wr.write(side)
    return path
