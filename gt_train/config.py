"""Training configs (docs/MODEL.md): one dataclass for the model, one for training, named presets.

Every size and rate is a field whose default is the paper's value (the `paper` preset).
`TrainConfig.from_preset(name, data=..., out=...)` builds the `paper`, `cpu-small` or
`test-tiny` config; the schedules (densification window, SH growth, LR decay) of the
smaller presets are the paper's, scaled to their iteration counts. `auto` (the default of
`gt train`) is `paper` on a CUDA GPU and `cpu-small` otherwise.

The config is saved as JSON beside the checkpoints (`RUN/config.json`) and inside
every checkpoint, and `--resume` refuses a config that differs where it matters.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from gt_runtime.errors import InputError

PRESETS = ("paper", "cpu-small", "test-tiny")


def resolve_preset(name: str, device: str = "auto", resume_run: Path | None = None) -> tuple[str, str]:
    """'auto' -> (preset, why): the resumed run's own preset, else 'paper' when training runs on a CUDA GPU,
    else 'cpu-small' (the paper's 512^2 x 50k takes days on a CPU). Any other name -> (name, "")."""
    if name != "auto":
        return name, ""
    saved = Path(resume_run) / "config.json" if resume_run is not None else None
    if saved is not None and saved.is_file():
        try:
            preset = json.loads(saved.read_text()).get("preset")
        except (OSError, ValueError):
            preset = None
        if preset in PRESETS:
            return preset, f"the preset of {resume_run}"
    if device == "cpu":
        return "cpu-small", "--device cpu"
    if device == "cuda":
        return "paper", "--device cuda"
    from gt_runtime.errors import require

    gpu = require("torch", "gt train").cuda.is_available()
    return ("paper", "a CUDA GPU") if gpu else ("cpu-small", "no CUDA GPU")


@dataclass
class ModelConfig:
    """The architecture (docs/MODEL.md). D = 2 * triplane_channels must be 64 for the bundle contract."""

    hidden: int = 64  # D: triplane feature = query = token size
    triplane_channels: int = 32  # per plane; 2 scales concatenated -> hidden
    triplane_resolutions: tuple[int, int] = (64, 128)
    fcan_width: int = 128  # F_can: feature -> 128 -> 128 -> heads
    num_layers: int = 2  # L cross-attention layers (1 = "GaussianTalker*")
    num_heads: int = 2
    ffn_width: int = 128
    head_width: int = 128  # the 5 deformation heads: 64 -> 128 -> k
    sh_degree: int = 3  # final SH degree (K = (deg + 1)^2)
    audio_window: int = 15  # per-frame features t-8 .. t+6 (fixed by MODEL.md)
    audio_dim: int = 80  # D of the audio features [T, 2, D]: 80 = mel; gt train sets it from the dataset
    out_init_gain: float = 0.1  # xavier gain of the last layer of F_can heads and deformation heads
    init_opacity: float = 0.1  # F_can opacity head bias = logit(init_opacity)

    def __post_init__(self):
        self.triplane_resolutions = tuple(int(r) for r in self.triplane_resolutions)
        if self.hidden != 2 * self.triplane_channels or len(self.triplane_resolutions) != 2:
            raise InputError(f"model config: hidden {self.hidden} must be 2 x triplane_channels ({self.triplane_channels}) with 2 triplane scales")
        if self.hidden % self.num_heads or not 0 <= self.sh_degree <= 3 or self.audio_window != 15 or int(self.audio_dim) < 1:
            raise InputError(f"model config: hidden {self.hidden} / heads {self.num_heads}, sh_degree {self.sh_degree} (0..3), audio_window {self.audio_window} (15), audio_dim {self.audio_dim} (>= 1) | see docs/MODEL.md")
        self.audio_dim = int(self.audio_dim)


@dataclass
class TrainConfig:
    """Everything `gt train` needs. Iteration-based fields count within their stage."""

    data: Path = Path("data")
    out: Path = Path("runs/run")
    preset: str = "paper"
    model: ModelConfig = field(default_factory=ModelConfig)
    resolution: int | None = 512  # square working size; the dataset is resampled if it differs (None: as is)
    max_gaussians: int = 50_000
    max_init_points: int | None = None  # subsample points_init to at most this many (None: all, up to max_gaussians)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    # CPU threads of torch and of the C++ rasterizer (OpenMP). 1 is bit-reproducible (the rasterizer's backward
    # sums per-thread buffers in a schedule-dependent order) and the model's small ops gain little from more.
    threads: int = 1
    resume: bool = False
    # stages
    iterations_canonical: int = 8000
    iterations_deform: int = 8000
    # losses
    lambda_l1: float = 0.8
    lambda_dssim: float = 0.2
    lambda_lip: float = 0.8  # deformation stage only
    lambda_lpips: float = 0.01  # used only when lpips_weights is given
    lpips_weights: Path | None = None  # local state dict of lpips.LPIPS(net="alex"); None: no LPIPS
    lip_margin: float = 0.25  # lip box grows by this fraction of its size on every side
    # learning rates (exponential decay from *_init to *_final over the stage)
    lr_triplane_init: float = 1.6e-3
    lr_triplane_final: float = 1.6e-4
    lr_fcan_init: float = 1e-4
    lr_fcan_final: float = 1e-5
    lr_means_init: float = 1.6e-4  # times the scene extent, as 3DGS
    lr_means_final: float = 1.6e-6
    lr_deform_init: float = 1e-4  # audio, eye, view, null, deform (all new modules)
    lr_deform_final: float = 1e-5
    # the dmu head (a position offset, metres) learns at lr_deform x scene extent, as 3DGS scales the position LR
    deform_warmup: float = 0.05  # linear LR warm-up over this fraction of the deformation stage (new modules)
    canonical_finetune: float = 0.1  # deformation stage: canonical LR multiplier (0 = frozen)
    # densification (3DGS, no opacity reset); canonical stage
    densify_from: int = 1000
    densify_until: int = 7000
    densify_every: int = 100
    densify_grad_threshold: float = 2e-4
    percent_dense: float = 0.01  # clone if the Gaussian's largest scale <= this x extent, else split
    prune_opacity: float = 0.005
    sh_increase_every: int = 1000
    # operations
    checkpoint_every: int = 2000
    val_every: int = 1000
    num_val_images: int = 3

    def __post_init__(self):
        if isinstance(self.model, dict):
            self.model = ModelConfig(**self.model)
        self.data = Path(self.data)
        self.out = Path(self.out)
        if self.lpips_weights is not None:
            self.lpips_weights = Path(self.lpips_weights)
        if self.device not in ("auto", "cpu", "cuda"):
            raise InputError(f"--device {self.device!r} | expected auto, cpu or cuda")
        if self.iterations_canonical < 0 or self.iterations_deform < 0 or self.iterations_canonical + self.iterations_deform == 0:
            raise InputError(f"iterations: canonical {self.iterations_canonical}, deform {self.iterations_deform} | expected >= 0, not both 0")
        if self.max_gaussians < 1 or (self.resolution is not None and self.resolution < 16):
            raise InputError(f"max_gaussians {self.max_gaussians}, resolution {self.resolution} | expected >= 1 and >= 16")

    @property
    def total_iterations(self) -> int:
        return self.iterations_canonical + self.iterations_deform

    # ---- presets ------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TrainConfig":
        """-> the named preset ('auto': see `resolve_preset`) with overrides (e.g. data=..., out=..., iterations_canonical=...).

        Overriding the iteration counts rescales the preset's schedules to them.
        """
        if name not in PRESETS and name != "auto":
            raise InputError(f"--preset {name!r} | expected auto or one of {', '.join(PRESETS)}")
        name, _ = resolve_preset(name, overrides.get("device", "auto"), overrides.get("out") if overrides.get("resume") else None)
        base = cls(preset=name)
        if name == "cpu-small":
            base = replace(base, resolution=256, max_gaussians=20_000, max_init_points=10_000,
                           iterations_canonical=4000, iterations_deform=5000,  # ~1.5 h measured on 2 cores (see README)
                           checkpoint_every=1000, val_every=500,
                           lr_fcan_init=5e-4, lr_fcan_final=5e-5, lr_deform_init=5e-4, lr_deform_final=5e-5,
                           model=ModelConfig(sh_degree=2))
        elif name == "test-tiny":
            base = replace(base, resolution=64, max_gaussians=3000, max_init_points=1500,
                           iterations_canonical=500, iterations_deform=400,
                           checkpoint_every=250, val_every=250, num_val_images=2,
                           lr_triplane_init=1e-2, lr_triplane_final=1e-3,
                           lr_fcan_init=3e-3, lr_fcan_final=3e-4, lr_deform_init=2e-3, lr_deform_final=5e-4,
                           canonical_finetune=0.1, model=ModelConfig(sh_degree=1))
        model = overrides.pop("model", None)
        if model is not None:
            base = replace(base, model=model if isinstance(model, ModelConfig) else ModelConfig(**model))
        it_c = overrides.pop("iterations_canonical", None)
        it_d = overrides.pop("iterations_deform", None)
        cfg = replace(base, **overrides)
        cfg = cfg.scaled(it_c if it_c is not None else base.iterations_canonical,
                         it_d if it_d is not None else base.iterations_deform)
        return cfg

    def scaled(self, iterations_canonical: int, iterations_deform: int) -> "TrainConfig":
        """-> a copy whose canonical-stage schedules are the paper's (8000 it) scaled to iterations_canonical."""
        s = iterations_canonical / 8000.0
        return replace(
            self, iterations_canonical=iterations_canonical, iterations_deform=iterations_deform,
            densify_from=max(1, round(1000 * s)), densify_until=round(7000 * s),
            densify_every=max(1, round(100 * s)), sh_increase_every=max(1, round(1000 * s)),
        )

    # ---- (de)serialisation ----------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("data", "out", "lpips_weights"):
            d[k] = None if d[k] is None else str(d[k])
        d["model"]["triplane_resolutions"] = list(d["model"]["triplane_resolutions"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def save_json(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    # Fields that may change between a run and its resume; all others must match.
    RESUMABLE_CHANGES = ("out", "device", "threads", "resume", "checkpoint_every", "val_every", "num_val_images")

    def resume_mismatch(self, saved: dict) -> list[str]:
        """-> ['field: saved -> requested', ...] for differences that forbid resuming."""
        mine = self.to_dict()
        flat = lambda d: {**{k: v for k, v in d.items() if k != "model"}, **{f"model.{k}": v for k, v in (d.get("model") or {}).items()}}
        mine, saved = flat(mine), flat(saved)
        saved.setdefault("model.audio_dim", 80)  # runs from before the key: mel features
        out = []
        for k in sorted(set(mine) | set(saved)):
            if k in self.RESUMABLE_CHANGES:
                continue
            a, b = saved.get(k), mine.get(k)
            if k == "data" and a is not None and b is not None:
                a, b = str(Path(a).resolve()), str(Path(b).resolve())
            if a != b:
                out.append(f"{k}: {a} -> {b}")
        return out
