"""Audio front ends behind one interface (README: "Audio front end"): `mel`, `hubert`, `wav2vec2`.

    fe = frontend_from_meta(meta, onnx_path)     # or for_bundle(bundle) / for_dataset(dir)
    feats = fe.features(pcm, num_frames=T)       # [T, 2, D] float32, whole file
    s = fe.stream(); s.push(chunk); s.finish(T)  # the same features, chunk by chunk

- `mel` (D = 80): gt_runtime.audio.mel, numpy only.
- `hubert` / `wav2vec2` (D = the model's hidden size): the model exported to ONNX
  (`audio_frontend.onnx`: audio [1, window_samples] -> features [1, window_rows, D]) run
  through ONNX Runtime (CPU EP) on the fixed blocks of gt_runtime.audio.blocks. The
  graph holds everything model-specific (the per-window input normalisation, the chosen
  hidden layer); this side only cuts windows and keeps the core rows.

`meta` is the front end's description, stored as `audio_frontend.json` in a dataset and
as `audio` in a bundle manifest: {"name", "dim", "block": BlockSpec dict, ...}. A
missing description means `mel` (datasets and bundles from before the key existed).
onnxruntime is imported when a model front end is first run.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gt_runtime.audio.blocks import BlockSpec, BlockStream, block_features
from gt_runtime.audio.mel import LOOKAHEAD_SAMPLES, N_MELS, MelStream, mel_features
from gt_runtime.contract import AUDIO_FRONTEND_ONNX, SAMPLE_RATE, FRONTEND_INPUT, FRONTEND_OUTPUT, FRONTENDS, MODEL_FRONTENDS, ROWS_PER_FRAME
from gt_runtime.errors import InputError

ONNX_NAME = AUDIO_FRONTEND_ONNX        # in a dataset directory and in a bundle
META_NAME = "audio_frontend.json"      # in a dataset directory
META_FORMAT = "gt-audio-frontend"
ONNX_INPUT, ONNX_OUTPUT = FRONTEND_INPUT, FRONTEND_OUTPUT
MEL_META = {"format": META_FORMAT, "version": 1, "name": "mel", "dim": N_MELS, "rows_per_frame": ROWS_PER_FRAME, "rate_hz": 50}


def check_meta(meta: dict | None, where: str, fix: str) -> dict:
    """Validate a front-end description (None -> mel) -> the description; one-line InputError naming `where`."""
    if meta is None:
        return dict(MEL_META)
    if not isinstance(meta, dict):
        raise InputError(f"{where}: audio front end description is {type(meta).__name__} | {fix}")
    name = meta.get("name")
    if name not in FRONTENDS:
        raise InputError(f"{where}: unknown audio front end {name!r} (this gt knows {', '.join(FRONTENDS)}) | {fix}, or upgrade gt")
    dim = meta.get("dim")
    if not isinstance(dim, int) or dim < 1 or (name == "mel" and dim != N_MELS):
        raise InputError(f"{where}: audio front end {name} with feature width {dim!r} | expected a positive int ({N_MELS} for mel); {fix}")
    if name in MODEL_FRONTENDS:
        try:
            BlockSpec.from_dict(meta.get("block") or {})
        except (TypeError, ValueError, KeyError) as exc:
            raise InputError(f"{where}: bad block geometry of the {name} front end ({exc}) | {fix}") from None
        if not meta.get("block"):
            raise InputError(f"{where}: the {name} front end has no block geometry | {fix}")
    return meta


class MelFrontend:
    """The `mel` front end (numpy): D = 80, 7.5 ms of lookahead."""

    name = "mel"
    dim = N_MELS
    lookahead_samples = LOOKAHEAD_SAMPLES

    def __init__(self, meta: dict | None = None):
        self.meta = dict(meta or MEL_META)

    def activate(self) -> "MelFrontend":
        return self

    def stream(self) -> MelStream:
        return MelStream()

    def features(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, num_frames: int | None = None) -> np.ndarray:
        """pcm [S] float32 at 16 kHz -> [T, 2, 80]."""
        return mel_features(pcm, sample_rate, num_frames)


class OnnxBlockRunner:
    """One block through the front-end ONNX graph: window [window_samples] -> rows [window_rows, D].

    The ONNX Runtime session (CPU EP) is created on first use and shared (its run() is thread-safe).
    """

    def __init__(self, onnx_path: str | Path, spec: BlockSpec, dim: int, threads: int | None = None):
        self.path, self.spec, self.dim, self.threads = Path(onnx_path), spec, int(dim), threads
        self._sess = None

    def _session(self):
        if self._sess is None:
            from gt_runtime.engines.loaders import SessionFromOnnx

            load = SessionFromOnnx(self.path, threads=self.threads, what="the audio front end", label="the audio front end",
                                   fix="re-run gt preprocess --audio-model, then gt train / gt export")
            if not self.path.is_file():
                raise InputError(f"{self.path}: the audio front-end graph is missing | re-run the step that wrote it (gt preprocess --audio-model, gt export)")
            sess = load()
            ins, outs = sess.get_inputs(), sess.get_outputs()
            want_in = [1, self.spec.window_samples]
            if [i.name for i in ins] != [ONNX_INPUT] or list(ins[0].shape) != want_in or ONNX_OUTPUT not in [o.name for o in outs]:
                got = [(i.name, list(i.shape)) for i in ins]
                raise InputError(f"{self.path}: audio front end inputs {got} | expected {ONNX_INPUT} {want_in} -> {ONNX_OUTPUT} "
                                 f"(block geometry {self.spec.to_dict()}); the graph and its description disagree, re-run gt preprocess --audio-model")
            self._sess = sess
        return self._sess

    def __call__(self, window: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(window, np.float32).reshape(1, -1)
        y = self._session().run([ONNX_OUTPUT], {ONNX_INPUT: x})[0]
        return y.reshape(y.shape[-2], y.shape[-1])


class BlockFrontend:
    """A model front end (`hubert` / `wav2vec2`) on fixed blocks (gt_runtime.audio.blocks)."""

    def __init__(self, name: str, dim: int, spec: BlockSpec, run_block, meta: dict | None = None):
        self.name, self.dim, self.spec, self.run_block = name, int(dim), spec, run_block
        self.meta = dict(meta or {})

    @property
    def lookahead_samples(self) -> int:
        return self.spec.lookahead_samples

    def activate(self) -> "BlockFrontend":
        """Load the graph now (not on the first pushed chunk)."""
        load = getattr(self.run_block, "_session", None)
        if load is not None:
            load()
        return self

    def stream(self) -> BlockStream:
        return BlockStream(self.spec, self.run_block, self.dim)

    def features(self, pcm: np.ndarray, sample_rate: int = SAMPLE_RATE, num_frames: int | None = None) -> np.ndarray:
        """pcm [S] float32 at 16 kHz -> [T, 2, D] (T = num_frames or ceil(S / 640); end zero-padded, then cut)."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"{self.name} front end: sample_rate {sample_rate} | expected 16000; resample first (gt_runtime.audio.resample)")
        return block_features(pcm, self.spec, self.run_block, self.dim, num_frames)


def frontend_from_meta(meta: dict | None, onnx_path: str | Path | None = None, threads: int | None = None):
    """A checked description (see check_meta) + the graph of a model front end -> MelFrontend | BlockFrontend."""
    meta = check_meta(meta, str(onnx_path or "audio front end"), "re-run gt preprocess")
    if meta["name"] == "mel":
        return MelFrontend(meta)
    if onnx_path is None:
        raise InputError(f"the {meta['name']} front end needs its ONNX graph ({ONNX_NAME}) | re-run gt preprocess --audio-model")
    spec = BlockSpec.from_dict(meta["block"])
    return BlockFrontend(meta["name"], meta["dim"], spec, OnnxBlockRunner(onnx_path, spec, meta["dim"], threads), meta)


def read_dataset_meta(root: str | Path) -> dict:
    """A dataset's front-end description (`audio_frontend.json`; absent -> mel), checked."""
    root = Path(root)
    path = root / META_NAME
    if not path.is_file():
        return dict(MEL_META)
    fix = "re-run gt preprocess to rebuild the dataset"
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not valid JSON ({str(exc).splitlines()[0]}) | {fix}") from None
    meta = check_meta(meta, str(path), fix)
    if meta["name"] in MODEL_FRONTENDS and not (root / meta.get("onnx", ONNX_NAME)).is_file():
        raise InputError(f"{root / meta.get('onnx', ONNX_NAME)}: the {meta['name']} front-end graph named in {path.name} is missing | {fix} --audio-model")
    return meta


def for_dataset(root: str | Path, threads: int | None = None):
    """The front end a dataset's audio_features.npy was made with."""
    meta = read_dataset_meta(root)
    onnx = Path(root) / meta.get("onnx", ONNX_NAME) if meta["name"] in MODEL_FRONTENDS else None
    return frontend_from_meta(meta, onnx, threads)


def for_bundle(bundle, threads: int | None = None):
    """The front end a bundle was trained with (manifest `audio`; absent -> mel)."""
    meta = bundle.audio_meta
    onnx = bundle.file(ONNX_NAME) if meta["name"] in MODEL_FRONTENDS else None
    return frontend_from_meta(meta, onnx, threads)
