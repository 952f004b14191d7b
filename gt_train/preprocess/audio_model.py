"""`gt preprocess --audio-model PATH`: a local HuBERT / wav2vec 2.0 checkpoint -> the dataset's audio front end.

    meta = write_audio_features(dataset_dir, pcm, T, AudioModelConfig(model=PATH))

The checkpoint is a transformers directory (`config.json` + weights, `save_pretrained`
layout) whose `model_type` is `hubert` (HubertModel) or `wav2vec2` (Wav2Vec2Model); it
is loaded with `from_pretrained(PATH, local_files_only=True)`, never downloaded. Its
conv encoder must be the standard one (stride 320 samples = 50 Hz, receptive field 400).

What runs on each block window (gt_runtime.audio.blocks), exported once to
`audio_frontend.onnx` in the dataset (`torch.onnx.export`, dynamo with a TorchScript
fallback, fixed input [1, window_samples]):

1. if the checkpoint's feature extractor normalises (`preprocessor_config.json`
   `do_normalize`, true when the file is absent, as Wav2Vec2FeatureExtractor's default):
   zero mean, unit variance over the window (`(x - mean) / sqrt(var + 1e-7)`): per block,
   where transformers does it per utterance, which would not be chunk-invariant;
2. the model; output `last_hidden_state` (layer None) or `hidden_states[layer]`
   (0 = the encoder input, num_hidden_layers = the last layer before any final norm).

The ONNX graph is checked against torch (the same block windows through both, up to
CHECK_BLOCKS blocks of the clip's audio) and the error is recorded in
`audio_frontend.json`; it must be below CHECK_MAX_ABS x max(1, |features|). The dataset's
`audio_features.npy` is then computed by the ONNX graph through gt_runtime's front end:
the very code and graph `gt play` runs, so training and runtime features agree.
`gt export` copies the graph into the bundle.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gt_runtime.audio.blocks import BlockSpec
from gt_runtime.audio.frontend import MEL_META, META_FORMAT, META_NAME, ONNX_INPUT, ONNX_NAME, ONNX_OUTPUT
from gt_runtime.errors import InputError, require
from gt_train.torch_onnx import export_module, quiet

MODEL_CLASSES = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model"}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
CHECK_BLOCKS = 3
CHECK_MAX_ABS = 1e-3
_FIX = "give the directory of a local transformers HubertModel / Wav2Vec2Model checkpoint (config.json + weights, from save_pretrained)"


@dataclass
class AudioModelConfig:
    """The model front end of `gt preprocess` (PreprocessConfig.audio_* fields)."""

    model: Path                    # local checkpoint directory
    layer: int | None = None       # None: last_hidden_state; k: hidden_states[k]
    block_ms: float = 1000.0       # core of a block (whole 40 ms video frames)
    left_ms: float = 500.0         # left context
    right_ms: float = 200.0        # right context (added to the runtime's lookahead)

    def spec(self) -> BlockSpec:
        try:
            return BlockSpec.from_ms(self.block_ms, self.left_ms, self.right_ms)
        except ValueError as exc:
            raise InputError(f"audio blocks: {exc} | use --audio-block-ms >= 40 and context ms >= 0") from None


def _receptive_field(kernels, strides) -> tuple[int, int]:
    rf, stride = 1, 1
    for k, s in reversed(list(zip(kernels, strides))):
        rf = (rf - 1) * s + k
    for s in strides:
        stride *= s
    return rf, stride


def inspect_checkpoint(path: str | Path, layer: int | None = None) -> dict:
    """Check a checkpoint directory from its files alone (no transformers, no weights loaded) -> its facts.

    -> {"model_type", "class", "hidden_size", "num_hidden_layers", "normalize", "config_sha256"}.
    A missing directory, a non-audio model, a conv encoder that is not 50 Hz, missing weights or a
    layer out of range -> a one-line InputError naming the path and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"--audio-model {path}: no such directory | {_FIX}; it must be a local path (nothing is downloaded)")
    if not path.is_dir():
        raise InputError(f"--audio-model {path}: not a directory | {_FIX}")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise InputError(f"--audio-model {path}: no config.json in it | {_FIX}")
    try:
        raw = cfg_path.read_bytes()
        cfg = json.loads(raw)
    except (OSError, ValueError) as exc:
        raise InputError(f"--audio-model {cfg_path}: not valid JSON ({str(exc).splitlines()[0]}) | {_FIX}") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type not in MODEL_CLASSES:
        raise InputError(f"--audio-model {path}: model_type {model_type!r} is not an audio model gt can use | {_FIX} (model_type hubert or wav2vec2)")
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise InputError(f"--audio-model {path}: no weights ({' / '.join(WEIGHT_FILES[::2])}) | {_FIX}")
    kernels = cfg.get("conv_kernel", [10, 3, 3, 3, 3, 2, 2])
    strides = cfg.get("conv_stride", [5, 2, 2, 2, 2, 2, 2])
    rf, stride = _receptive_field(kernels, strides)
    if (rf, stride) != (BlockSpec().receptive_field, BlockSpec().stride):
        raise InputError(f"--audio-model {path}: conv encoder with stride {stride} and receptive field {rf} samples | "
                         "gt needs the standard 50 Hz encoder (stride 320, receptive field 400: conv_kernel 10,3,3,3,3,2,2, conv_stride 5,2,2,2,2,2,2)")
    n_layers = int(cfg.get("num_hidden_layers", 12))
    if layer is not None and not -(n_layers + 1) <= int(layer) <= n_layers:
        raise InputError(f"--audio-layer {layer}: out of range for {path} ({n_layers} layers) | use 0..{n_layers} (or leave it out for the last hidden state)")
    normalize = True
    pre = path / "preprocessor_config.json"
    if pre.is_file():
        try:
            normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
        except (OSError, ValueError):
            raise InputError(f"--audio-model {pre}: not valid JSON | fix or delete it (without it the input is normalised)") from None
    return {"model_type": model_type, "class": MODEL_CLASSES[model_type], "hidden_size": int(cfg.get("hidden_size", 768)),
            "num_hidden_layers": n_layers, "normalize": normalize, "config_sha256": hashlib.sha256(raw).hexdigest()}


def load_torch_model(path: str | Path, info: dict):
    """-> the transformers model in eval mode, loaded from the local directory only."""
    require("torch", "gt preprocess --audio-model")
    transformers = require("transformers", "gt preprocess --audio-model")
    with quiet():
        try:
            transformers.utils.logging.disable_progress_bar()
        except AttributeError:  # pragma: no cover - older transformers
            pass
        cls = getattr(transformers, info["class"])
        try:
            model = cls.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:
            msg = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise InputError(f"--audio-model {path}: transformers cannot load it as {info['class']} ({type(exc).__name__}: {msg}) | {_FIX}") from None
    return model.eval()


def _module(model, layer: int | None, normalize: bool):
    torch = require("torch", "gt preprocess --audio-model")
    nn = torch.nn

    class Frontend(nn.Module):
        """audio [1, W] -> features [1, rows, D]: per-window normalisation, the model, one hidden state."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, audio: torch.Tensor) -> torch.Tensor:
            x = audio
            if normalize:
                mean = x.mean(dim=-1, keepdim=True)
                var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
                x = (x - mean) / torch.sqrt(var + 1e-7)
            if layer is None:
                return self.model(x).last_hidden_state
            return self.model(x, output_hidden_states=True).hidden_states[layer]

    return Frontend().eval()


def export_onnx(module, spec: BlockSpec, dst: Path) -> str:
    """torch module -> dst (ONNX, opset 18, input audio [1, window_samples], output features) -> exporter used."""
    torch = require("torch", "gt preprocess --audio-model")
    onnx = require("onnx", "gt preprocess --audio-model")
    x = torch.randn(1, spec.window_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    try:
        model, used = export_module(module, (x,), [ONNX_INPUT], [ONNX_OUTPUT], opset=18)
    except RuntimeError as exc:
        raise InputError(f"audio front end: {exc} | report it with the checkpoint's config.json") from None
    model.producer_name = "gt_train.preprocess.audio_model"
    for k, v in {"gt.graph": "audio_frontend", "gt.exporter": used}.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    onnx.checker.check_model(model)
    dst.write_bytes(model.SerializeToString())
    return used


def torch_runner(module, spec: BlockSpec):
    """The torch module as a block runner (window [W] -> rows [window_rows, D]) for gt_runtime.audio.blocks."""
    torch = require("torch", "gt preprocess --audio-model")

    def run(window: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = module(torch.from_numpy(np.ascontiguousarray(window, np.float32)).reshape(1, -1))
        return y[0].float().numpy()

    return run


def build_frontend(cfg: AudioModelConfig, out_dir: Path, check_pcm: np.ndarray | None = None):
    """Checkpoint -> out_dir/audio_frontend.onnx (+ the check against torch) -> (meta, BlockFrontend on that graph).

    check_pcm: 16 kHz audio for the check (its first CHECK_BLOCKS blocks; default: 3 s of a chirp with noise).
    The meta is not written here (write_audio_features writes it with the features).
    """
    from gt_runtime.audio.blocks import BlockStream
    from gt_runtime.audio.frontend import frontend_from_meta

    spec = cfg.spec()
    info = inspect_checkpoint(cfg.model, cfg.layer)
    t0 = time.perf_counter()
    model = load_torch_model(cfg.model, info)
    module = _module(model, cfg.layer, info["normalize"])
    dst = Path(out_dir) / ONNX_NAME
    used = export_onnx(module, spec, dst)
    t_export = time.perf_counter() - t0
    dim = info["hidden_size"]
    meta = {"format": META_FORMAT, "version": 1, "name": info["model_type"], "dim": dim, "rows_per_frame": 2, "rate_hz": 50,
            "onnx": ONNX_NAME, "onnx_sha256": hashlib.sha256(dst.read_bytes()).hexdigest(), "block": spec.describe(),
            "frontend_lookahead_ms": spec.lookahead_samples / 16.0,  # past a frame's end; the Session adds 6 frames (240 ms)
            "layer": cfg.layer, "output": "last_hidden_state" if cfg.layer is None else f"hidden_states[{cfg.layer}]",
            "normalize": info["normalize"], "exporter": used, "export_s": round(t_export, 2),
            "source": {"path": str(Path(cfg.model).resolve()), "model_type": info["model_type"], "class": info["class"],
                       "hidden_size": dim, "num_hidden_layers": info["num_hidden_layers"], "config_sha256": info["config_sha256"]}}
    fe = frontend_from_meta(meta, dst)
    # The check: the same windows through torch and through ONNX Runtime.
    if check_pcm is None or np.asarray(check_pcm).size == 0:
        t = np.arange(3 * 16000) / 16000.0
        check_pcm = (0.3 * np.sin(2 * np.pi * (100 + 300 * t) * t) + 0.02 * np.random.default_rng(0).standard_normal(t.size))
    pcm = np.asarray(check_pcm, np.float32).reshape(-1)[: spec.window_end(CHECK_BLOCKS - 1)]
    ref = BlockStream(spec, torch_runner(module, spec), dim)
    got = fe.stream()
    a = np.concatenate([ref.push(pcm), ref.finish()])
    b = np.concatenate([got.push(pcm), got.finish()])
    err = np.abs(a.astype(np.float64) - b)
    scale = float(np.abs(a).max()) if a.size else 0.0
    meta["onnx_vs_torch"] = {"max_abs": float(err.max()) if err.size else 0.0, "mean_abs": float(err.mean()) if err.size else 0.0,
                             "feature_max_abs": scale, "frames": int(len(a)), "gate_max_abs": CHECK_MAX_ABS * max(1.0, scale)}
    if meta["onnx_vs_torch"]["max_abs"] > meta["onnx_vs_torch"]["gate_max_abs"]:
        raise InputError(f"--audio-model {cfg.model}: the exported ONNX front end differs from torch (max abs "
                         f"{meta['onnx_vs_torch']['max_abs']:.3g} > {meta['onnx_vs_torch']['gate_max_abs']:.3g}) | report it with the checkpoint's config.json")
    return meta, fe


def write_audio_features(out_dir: Path, pcm: np.ndarray, num_frames: int, cfg: AudioModelConfig | None = None,
                         progress: bool = False) -> dict:
    """audio_features.npy [T, 2, D] + audio_frontend.json (+ audio_frontend.onnx) into out_dir -> the meta.

    cfg None: the `mel` front end (D = 80). Otherwise the checkpoint's front end (see the module docstring).
    Overwrites those files (out_dir is a staging directory or a copy of a dataset).
    """
    from gt_runtime.audio import mel_features

    out_dir = Path(out_dir)
    pcm = np.asarray(pcm, np.float32).reshape(-1)
    if cfg is None:
        feats, meta = mel_features(pcm, 16000, num_frames=num_frames), dict(MEL_META)
        (out_dir / ONNX_NAME).unlink(missing_ok=True)
    else:
        meta, fe = build_frontend(cfg, out_dir, pcm)
        t0 = time.perf_counter()
        stream, parts = fe.stream(), []
        step = 16000 * 4
        chunks = range(0, pcm.size, step)
        if progress:
            from gt_runtime.util.progress import progress as bar

            chunks = bar(chunks, f"audio features ({meta['name']})", total=len(chunks), unit="4 s")
        for i in chunks:
            parts.append(stream.push(pcm[i:i + step]))
        parts.append(stream.finish(num_frames))
        feats = np.concatenate(parts)[:num_frames]
        meta["features_s"] = round(time.perf_counter() - t0, 2)
    feats = np.ascontiguousarray(feats, np.float32)
    assert feats.shape == (num_frames, 2, meta["dim"]), feats.shape
    np.save(out_dir / "audio_features.npy", feats)
    (out_dir / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
    return meta
