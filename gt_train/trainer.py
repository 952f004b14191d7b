"""Two-stage GaussianTalker training (docs/MODEL.md): `train(cfg) -> RUN directory`.

Stage 1 (canonical, cfg.iterations_canonical): triplane + F_can give every Gaussian its
attributes; loss 0.8 L1 + 0.2 D-SSIM on the whole image over the per-frame background;
3DGS densification / pruning (no opacity reset) and SH degree growth.
Stage 2 (deformation, cfg.iterations_deform): condition tokens + cross-attention offsets;
the same loss + 0.8 L1 on the lip box; the canonical model fine-tuned at
cfg.canonical_finetune x its rates (0 = frozen).

Outputs in RUN: checkpoints/it_NNNNNNN.pt, config.json, val/*.png (GT | render | error),
curves.png, metrics.json (final val metrics, canonical-only and full).
"""
from __future__ import annotations

import contextlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gt_runtime import contract
from gt_runtime.errors import InputError, require
from gt_train.checkpoint import checkpoint_dir, checkpoint_path, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from gt_train.config import TrainConfig
from gt_train.dataset import Frame, TrainData
from gt_train.eta import StageEta
from gt_train.losses import LPIPS, dssim, l1, lip_l1, psnr, ssim
from gt_train.metrics import corr, mouth_openness
from gt_train.model import GaussianTalker
from gt_train.render import backend_for, render

KEEP_CHECKPOINTS = 3  # older periodic checkpoints are deleted (the final one always stays)


def with_dataset_audio(cfg: TrainConfig) -> TrainConfig:
    """-> cfg with model.audio_dim = D of the dataset's audio_features.npy [T, 2, D] (80 = mel).

    Only the array header is read; a missing or broken dataset is left for TrainData to report.
    """
    from dataclasses import replace

    path = Path(cfg.data) / "audio_features.npy"
    try:
        feats = np.load(path, mmap_mode="r", allow_pickle=False)
        dim = int(feats.shape[-1]) if feats.ndim == 3 else None
    except (OSError, ValueError):
        dim = None
    if dim is None or dim == cfg.model.audio_dim:
        return cfg
    return replace(cfg, model=replace(cfg.model, audio_dim=dim))


def exp_lr(init: float, final: float, step: int, total: int) -> float:
    """Log-linear decay from init (step 0) to final (step total)."""
    if total <= 0 or init <= 0 or final <= 0:
        return init
    s = min(max(step / total, 0.0), 1.0)
    return math.exp(math.log(init) * (1 - s) + math.log(final) * s)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available to torch | use --device cpu")
    dev = torch.device(name)
    backend_for(dev)
    return dev


class Trainer:
    """Holds the model, data, optimizer and logs of one run. `run()` trains to the end (or resumes)."""

    def __init__(self, cfg: TrainConfig, callback: Callable[[dict], None] | None = None):
        cfg = with_dataset_audio(cfg)  # model.audio_dim = D of the dataset's audio features (before the resume check)
        self.cfg = cfg
        self.callback = callback
        self.run_dir = Path(cfg.out)
        self.quiet = contract.QUIET.on()
        self.device = resolve_device(cfg.device)
        ck = self._check_resume()
        seed_everything(cfg.seed)
        self.data = TrainData(cfg.data, cfg.resolution, cfg.lip_margin, self.device, quiet=self.quiet)
        if self.data.audio_dim != cfg.model.audio_dim:  # pragma: no cover - the file changed since with_dataset_audio
            raise InputError(f"{cfg.data}: audio features have width {self.data.audio_dim}, the model {cfg.model.audio_dim} | re-run gt train")
        self.W, self.H = self.data.width, self.data.height
        self.K = self.data.K.to(self.device)
        self.extent = self.data.scene_extent()
        self.lpips = LPIPS(cfg.lpips_weights, self.device) if cfg.lpips_weights is not None else None
        self.history = {"it": [], "loss": [], "psnr": [], "val_it": [], "val_psnr": [], "num": []}
        self.done = 0
        if ck is None:
            self.model = GaussianTalker(cfg.model, self.initial_points()).to(self.device)
            self.opt_stage = None
            self.opt = None
        else:
            self.model = GaussianTalker.from_state_dict(cfg.model, ck["model"]).to(self.device)
            self.done = int(ck["iteration"])
            self.history = {k: list(v) for k, v in ck["history"].items()}
            torch.set_rng_state(ck["torch_rng"])
            g = self.model.gaussians
            if "densify_stats" in ck and ck["densify_stats"][0].shape[0] == g.num:
                g.grad_accum, g.grad_count = (t.to(self.device) for t in ck["densify_stats"])
            self.opt_stage, self.opt = None, None
            self._ensure_optimizer(self.stage_of(self.done))
            if ck.get("opt_stage") == self.opt_stage and ck.get("optimizer") is not None:
                self.opt.load_state_dict(ck["optimizer"])
        self.val_frames = self._pick_val(cfg.num_val_images)

    # ---- setup ------------------------------------------------------------------------
    def _check_resume(self) -> dict | None:
        cfg, ckdir = self.cfg, checkpoint_dir(self.run_dir)
        if not cfg.resume:
            if list_checkpoints(self.run_dir):
                raise InputError(f"{ckdir}: a run already exists here | pass --resume to continue it, or choose another -o")
            return None
        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise InputError(f"{ckdir}: no checkpoint to resume from | drop --resume to start a new run")
        ck = load_checkpoint(path)
        diff = cfg.resume_mismatch(ck.get("config", {}))
        if diff:
            more = f" (+{len(diff) - 3} more)" if len(diff) > 3 else ""
            raise InputError(f"{path}: --resume with a different config ({'; '.join(diff[:3])}{more}) | resume with the saved settings (see {self.run_dir / 'config.json'}) or choose another -o")
        return ck

    def initial_points(self) -> np.ndarray:
        """points_init subsampled (seeded) to min(max_init_points, max_gaussians); the AABB is that of the kept points."""
        pts = self.data.points
        cap = min(self.cfg.max_gaussians, self.cfg.max_init_points or len(pts))
        if len(pts) > cap:
            keep = np.sort(np.random.default_rng([self.cfg.seed, 7]).choice(len(pts), cap, replace=False))
            pts = pts[keep]
        return pts

    def _pick_val(self, n: int) -> list[int]:
        v = self.data.val_idx
        if n >= len(v):
            return list(v)
        return [v[round(i * (len(v) - 1) / max(1, n - 1))] for i in range(n)]

    def stage_of(self, it: int) -> str:
        return "canonical" if it < self.cfg.iterations_canonical else "deform"

    def _ensure_optimizer(self, stage: str) -> None:
        """Adam per stage. Canonical: means, triplane, fcan. Deform: new modules (+ canonical at a low rate)."""
        if self.opt_stage == stage:
            return
        cfg, m = self.cfg, self.model
        can = m.canonical_modules()
        groups = []
        if stage == "canonical" or cfg.canonical_finetune > 0:
            groups += [{"params": can["means"], "name": "means", "eps": 1e-15},
                       {"params": can["triplane"], "name": "triplane"},
                       {"params": can["fcan"], "name": "fcan"}]
        freeze = stage == "deform" and cfg.canonical_finetune <= 0
        for ps in can.values():
            for p in ps:
                p.requires_grad_(not freeze)
        if stage == "deform":
            mu = set(id(p) for p in m.deform.heads["mu"].parameters())
            groups.append({"params": [p for p in m.deform_parameters() if id(p) not in mu], "name": "deform"})
            groups.append({"params": list(m.deform.heads["mu"].parameters()), "name": "deform_mu"})
        for g in groups:
            g["lr"] = 0.0
        self.opt = torch.optim.Adam(groups, lr=0.0, foreach=True)
        self.opt_stage = stage

    def _set_lrs(self, it: int) -> None:
        cfg = self.cfg
        if self.stage_of(it) == "canonical":
            step, total, mult = it, cfg.iterations_canonical, 1.0
        else:
            step, total, mult = it - cfg.iterations_canonical, cfg.iterations_deform, cfg.canonical_finetune
        rates = {
            "means": mult * self.extent * exp_lr(cfg.lr_means_init, cfg.lr_means_final, step, total),
            "triplane": mult * exp_lr(cfg.lr_triplane_init, cfg.lr_triplane_final, step, total),
            "fcan": mult * exp_lr(cfg.lr_fcan_init, cfg.lr_fcan_final, step, total),
            "deform": exp_lr(cfg.lr_deform_init, cfg.lr_deform_final, step, total),
        }
        if self.stage_of(it) == "deform" and cfg.deform_warmup > 0:
            rates["deform"] *= min(1.0, (step + 1) / max(1.0, cfg.deform_warmup * total))
        rates["deform_mu"] = rates["deform"] * self.extent
        for g in self.opt.param_groups:
            g["lr"] = rates[g["name"]]

    def sh_degree_at(self, it: int) -> int:
        if self.stage_of(it) == "deform":
            return self.cfg.model.sh_degree
        return min(self.cfg.model.sh_degree, it // max(1, self.cfg.sh_increase_every))

    def current_sh_degree(self) -> int:
        """SH degree of the model as trained so far (for validation renders)."""
        return self.sh_degree_at(max(0, self.done - 1))

    # ---- forward ------------------------------------------------------------------------
    def render_frame(self, f: Frame, stage: str, sh_degree: int, keep_means_grad: bool = False):
        """-> (image [H, W, 3], means tensor given to the rasterizer)."""
        if stage == "canonical":
            c = self.model.canonical()
            attrs = {k: c[k] for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
        else:
            out = self.model(f.audio[None], f.blink[None], f.c2w[None])
            attrs = {k: out[k][0] for k in ("means", "quats", "log_scales", "opacity_logits", "sh")}
        means = attrs["means"]
        if keep_means_grad:
            means = means * 1.0  # a non-leaf whose .grad is the rasterizer's gradient only
            means.retain_grad()
        img = render(means, attrs["quats"], attrs["log_scales"], attrs["opacity_logits"], attrs["sh"],
                     f.viewmat, self.K, self.W, self.H, f.background, sh_degree)
        return img, means

    def loss(self, img: torch.Tensor, f: Frame, stage: str) -> torch.Tensor:
        cfg = self.cfg
        loss = cfg.lambda_l1 * l1(img, f.image) + cfg.lambda_dssim * dssim(img, f.image)
        if stage == "deform":
            loss = loss + cfg.lambda_lip * lip_l1(img, f.image, f.lip_box)
        if self.lpips is not None:
            loss = loss + cfg.lambda_lpips * self.lpips(img, f.image)
        return loss

    # ---- one iteration ---------------------------------------------------------------------
    def step(self, it: int) -> dict:
        cfg = self.cfg
        stage = self.stage_of(it)
        self._ensure_optimizer(stage)
        self._set_lrs(it)
        self.model.train()
        f = self.data.frame(self.data.train_index(cfg.seed, it))
        local = it if stage == "canonical" else it - cfg.iterations_canonical
        track = stage == "canonical" and local < cfg.densify_until
        img, means = self.render_frame(f, stage, self.sh_degree_at(it), keep_means_grad=track)
        loss = self.loss(img, f, stage)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if track and means.grad is not None:
            self.model.gaussians.add_stats(means.grad, f.viewmat, self.K, self.W, self.H)
        self.opt.step()
        info = {"iteration": it + 1, "stage": stage, "loss": float(loss.detach()), "psnr": psnr(img.detach().clamp(0, 1), f.image)}
        i1 = local + 1  # 1-based within the stage, as 3DGS
        if stage == "canonical" and cfg.densify_from < i1 <= cfg.densify_until and i1 % cfg.densify_every == 0:
            with torch.no_grad():
                c = self.model.canonical()
            info["densify"] = self.model.gaussians.densify_and_prune(
                c["log_scales"], c["quats"], c["opacity_logits"], cfg.densify_grad_threshold, cfg.percent_dense,
                self.extent, cfg.prune_opacity, cfg.max_gaussians, self.opt)
        info["num_gaussians"] = self.model.num_gaussians
        return info

    # ---- validation ----------------------------------------------------------------------------
    @torch.no_grad()
    def render_val(self, t: int, canonical_only: bool = False, audio: torch.Tensor | None = None) -> torch.Tensor:
        """Render frame t (deformed unless canonical_only; audio [15, 2, D] overrides the frame's window) -> [H, W, 3]."""
        self.model.eval()
        f = self.data.frame(t)
        if audio is not None:
            f.audio = audio.to(self.device)
        stage = "canonical" if canonical_only else "deform"
        img, _ = self.render_frame(f, stage, self.current_sh_degree())
        return img.clamp(0, 1)

    def _val_stage(self) -> str:
        return "canonical" if self.done <= self.cfg.iterations_canonical else "deform"

    @torch.no_grad()
    def validate(self, save_images: bool = True) -> float:
        stage = self._val_stage()
        vals, tiles = [], []
        for t in self.val_frames:
            img = self.render_val(t, canonical_only=stage == "canonical")
            gt = self.data.frame(t).image
            vals.append(psnr(img, gt))
            tiles.append(torch.cat([gt, img, (img - gt).abs().clamp(0, 1)], 1))
        p = float(np.mean(vals))
        self.history["val_it"].append(self.done)
        self.history["val_psnr"].append(p)
        if save_images:
            from PIL import Image

            d = self.run_dir / "val"
            d.mkdir(parents=True, exist_ok=True)
            grid = (torch.cat(tiles, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
            Image.fromarray(grid).save(d / f"it_{self.done:07d}_{stage}.png")
        return p

    # ---- checkpoints and logs ----------------------------------------------------------------
    def save(self, final: bool = False) -> Path:
        path = checkpoint_path(self.run_dir, self.done)
        save_checkpoint(path, {
            "iteration": self.done, "stage": self.stage_of(max(0, self.done - 1)),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.opt.state_dict() if self.opt is not None else None, "opt_stage": self.opt_stage,
            "config": self.cfg.to_dict(), "torch_rng": torch.get_rng_state(),
            "audio_frontend": dict(self.data.ds.audio_frontend),  # what made the features (gt export bundles it)
            "densify_stats": [self.model.gaussians.grad_accum.cpu(), self.model.gaussians.grad_count.cpu()],
            "history": self.history,
        })
        for old in list_checkpoints(self.run_dir)[:-KEEP_CHECKPOINTS]:
            old.unlink(missing_ok=True)
        return path

    def plot_curves(self) -> Path:
        require("matplotlib", "gt train (curves.png)").use("Agg")
        plt = require("matplotlib.pyplot", "gt train (curves.png)")

        h = self.history
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        it = np.asarray(h["it"])

        def smooth(x, n=25):
            x = np.asarray(x, float)
            if len(x) < n:
                return x
            return np.convolve(x, np.ones(n) / n, mode="same")

        if len(it):
            a.plot(it, h["loss"], alpha=0.25, lw=0.6)
            a.plot(it, smooth(h["loss"]), lw=1.2, label="train loss")
            b.plot(it, h["psnr"], alpha=0.25, lw=0.6)
            b.plot(it, smooth(h["psnr"]), lw=1.2, label="train PSNR")
        if h["val_it"]:
            b.plot(h["val_it"], h["val_psnr"], "o-", label="val PSNR")
        for ax in (a, b):
            ax.axvline(self.cfg.iterations_canonical, color="gray", ls="--", lw=0.8)
            ax.set_xlabel("iteration")
            ax.legend()
        a.set_yscale("log")
        b.set_ylabel("dB")
        fig.suptitle(f"{self.run_dir.name}: canonical | deformation")
        fig.tight_layout()
        path = self.run_dir / "curves.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    # ---- the loop ------------------------------------------------------------------------------
    def run(self) -> Path:
        cfg = self.cfg
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save_json(self.run_dir / "config.json")
        total = cfg.total_iterations
        bar = _Bar(total, self.done, self.quiet, cfg.iterations_canonical)
        try:
            # the thread count is part of the result: the rasterizer's backward sums per-thread buffers
            with bar, _compute_threads(cfg.threads):
                while self.done < total:
                    info = self.step(self.done)
                    self.done = info["iteration"]
                    self.history["it"].append(self.done)
                    self.history["loss"].append(info["loss"])
                    self.history["psnr"].append(info["psnr"])
                    self.history["num"].append(info["num_gaussians"])
                    if self.done % cfg.val_every == 0 or self.done == cfg.iterations_canonical:
                        info["val_psnr"] = self.validate()
                    if self.done % cfg.checkpoint_every == 0 and self.done < total:
                        self.save()
                    bar.update(info)
                    if self.callback is not None:
                        self.callback(info)
        except KeyboardInterrupt:
            path = self.save()
            self.plot_curves()
            _say(f"interrupted: saved {path} | continue with --resume", self.quiet)
            raise
        if not self.history["val_it"] or self.history["val_it"][-1] != self.done:
            self.validate()
        self.save(final=True)
        self.plot_curves()
        metrics = self.evaluate()
        (self.run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        _say(f"done: {self.run_dir} | val PSNR {metrics.get('full', metrics.get('canonical', {})).get('psnr', float('nan')):.2f} dB", self.quiet)
        return self.run_dir

    @torch.no_grad()
    def evaluate(self) -> dict:
        """Final val metrics: PSNR/SSIM (canonical-only and full), mouth-box PSNR, and, with ground truth, the
        correlation of the rendered mouth opening (`gt_train.metrics.mouth_openness`, as `gt eval`) with the
        ground-truth mouth_open; `mouth_corr_of_gt_frames` is the same measure on the real frames, its ceiling."""
        out = {"iterations": self.done, "num_gaussians": self.model.num_gaussians, "resolution": [self.W, self.H]}
        modes = ["canonical"] + (["full"] if self.done > self.cfg.iterations_canonical else [])
        gt_open = self.data.ds.ground_truth.get("mouth_open")
        for mode in modes:
            ps, ss, mps, open_r, open_g = [], [], [], [], []
            for t in self.data.val_idx:
                img = self.render_val(t, canonical_only=mode == "canonical")
                f = self.data.frame(t)
                ps.append(psnr(img, f.image))
                ss.append(float(ssim(img, f.image)))
                x0, y0, x1, y1 = f.lip_box
                mps.append(psnr(img[y0:y1, x0:x1], f.image[y0:y1, x0:x1]))
                open_r.append(mouth_openness(img.cpu().numpy(), self.data.mouth_boxes[t]))
                open_g.append(mouth_openness(f.image.cpu().numpy(), self.data.mouth_boxes[t]))
            m = {"psnr": float(np.mean(ps)), "ssim": float(np.mean(ss)), "mouth_psnr": float(np.mean(mps))}
            if gt_open is not None:
                g = np.asarray(gt_open)[self.data.val_idx]
                m["mouth_corr"] = corr(open_r, g)
                m["mouth_corr_of_gt_frames"] = corr(open_g, g)  # the measure's own ceiling
            out[mode] = m
        return out


def _say(msg: str, quiet: bool) -> None:
    if not quiet:
        print(msg, file=sys.stderr)


class _Bar:
    """Rich progress bar: stage, loss, PSNR, Gaussian count, the stage's it/s, ETA (gt_train.eta; silent with GT_QUIET=1)."""

    def __init__(self, total: int, start: int, quiet: bool, iterations_canonical: int):
        self.total, self.start, self.quiet = total, start, quiet
        self.eta = StageEta(iterations_canonical, total)
        self.eta.record(start, time.perf_counter())

    def __enter__(self):
        self.plain = not self.quiet and not sys.stderr.isatty()  # a log file: one plain line per 1 % instead
        if self.quiet or self.plain:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.p = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]} psnr {task.fields[psnr]} N {task.fields[num]} {task.fields[rate]}"),
            TimeElapsedColumn(), TextColumn("eta {task.fields[eta]}"),
            console=Console(file=sys.stderr), refresh_per_second=4,
        )
        self.p.__enter__()
        self.task = self.p.add_task("train", total=self.total, completed=self.start, loss="-", psnr="-", num="-", rate="", eta="-")
        return self

    def update(self, info: dict) -> None:
        if self.quiet:
            return
        it = info["iteration"]
        self.eta.record(it, time.perf_counter())
        rate, left = self.eta.rate(it) or 0.0, self.eta.remaining(it)
        eta = "-" if left is None else f"{left / 60:.1f} min"
        if self.plain:
            if it % max(1, self.total // 100) == 0 or it == self.total:
                val = f" val_psnr {info['val_psnr']:.2f}" if "val_psnr" in info else ""
                print(f"{info['stage']} {it}/{self.total} loss {info['loss']:.4f} psnr {info['psnr']:.2f}{val} "
                      f"N {info['num_gaussians']} {rate:.2f} it/s eta {eta}", file=sys.stderr, flush=True)
            return
        self.p.update(self.task, completed=it, description=info["stage"], loss=f"{info['loss']:.4f}",
                      psnr=f"{info['psnr']:.2f}", num=str(info["num_gaussians"]), rate=f"{rate:.1f} it/s", eta=eta)

    def __exit__(self, *exc):
        if not self.quiet and not self.plain:
            self.p.__exit__(*exc)
        return False


def train(cfg: TrainConfig, callback: Callable[[dict], None] | None = None) -> Path:
    """Train (or resume, with cfg.resume) a GaussianTalker -> the run directory cfg.out.

    callback(info) is called after every iteration with {"iteration", "stage", "loss", "psnr",
    "num_gaussians", ...}; raising KeyboardInterrupt from it behaves like Ctrl-C (a checkpoint is saved).
    """
    return Trainer(cfg, callback).run()


@contextlib.contextmanager
def _compute_threads(n: int):
    """torch and the C++ rasterizer's OpenMP on n threads, denormals flushed; restored on exit."""
    threads = torch.get_num_threads()
    flush = torch.set_flush_denormal(True)  # tiny triplane gradients: denormals slow Adam down on CPU
    torch.set_num_threads(max(1, n))
    omp = _raster_omp()
    omp_prev = omp.omp_get_max_threads() if omp is not None else None
    if omp is not None:
        omp.omp_set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if omp is not None:
            omp.omp_set_num_threads(omp_prev)
        if flush:
            torch.set_flush_denormal(False)


def _raster_omp():
    """The OpenMP runtime the C++ rasterizer uses (its thread count is not torch's), or None."""
    try:
        import ctypes

        import gt_runtime._raster_cpu  # noqa: F401  (loads its libgomp)

        return ctypes.CDLL("libgomp.so.1")
    except Exception:
        return None
