"""Fixed blocks with left/right context: the chunk-invariant way to run a speech model (HuBERT, wav2vec 2.0).

Full self-attention over a whole file is not chunk-invariant: every output row depends
on every sample. So the `hubert` / `wav2vec2` front ends (README: "Audio front end") are
*defined* block by block, and the whole-file path and the streaming path run the same
blocks on the same samples, so their outputs are equal by construction.

Rows: the models' conv feature encoder has stride 320 samples (50 Hz) and a receptive
field of 400 samples. Row r describes the 20 ms [320 r, 320 r + 320), like the `mel`
front end's rows; the model frame of row r sees [320 r - 40, 320 r + 360), centred on it.
Video frame t (25 fps) gets rows 2t and 2t+1, i.e. exactly its own 40 ms.

Block k (`BlockSpec`, all counts in rows): core rows [k C, (k+1) C), C = block_rows
(even, so a video frame never straddles two blocks). Its window is the audio of rows
[k C - left_rows, (k+1) C + right_rows) plus the receptive field's 40-sample margins:
samples [320 (k C - L) - 40, 320 ((k+1) C + R) + 40), a fixed length
`window_samples` = 320 (L + C + R) + 80. The model runs on that window alone (one
fixed-shape call per block) and yields L + C + R rows; the C core rows are kept.

Samples before 0 and after the end of the speech are zeros. The whole-file path
(`features`) zero-pads the end so that the blocks cover `num_frames` video frames and
cuts the output to exactly `num_frames`; the streaming path pads the same zeros on
`finish(total_frames)`. Every block therefore sees the same samples on both paths, and
the output is identical for every frame, whatever the chunking. The *edge frames* are
those of the first block (its left context is zeros) and of the last block (its right
context, and the rest of its core past the speech, are zeros): equal between the two
paths, but not what the model would give inside a longer recording, like the first and
last frame of the `mel` front end.

Lookahead: a video frame's features exist once its block's window is complete. The
first frame of a block waits longest: (C/2 - 1) frames of the rest of its core, then
R rows of right context and the 40-sample margin. `BlockSpec.lookahead_samples` is that
worst case, counted past the end of the frame's own 40 ms.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from gt_runtime.audio.mel import SAMPLE_RATE, SAMPLES_PER_FRAME, num_video_frames

STRIDE = 320  # 50 Hz rows
RECEPTIVE_FIELD = 400  # the HuBERT / wav2vec 2.0 conv encoder (kernels 10,3,3,3,3,2,2, strides 5,2,2,2,2,2,2)
ROWS_PER_FRAME = SAMPLES_PER_FRAME // STRIDE  # 2


@dataclass(frozen=True)
class BlockSpec:
    """Block geometry in 20 ms rows: core `block_rows` (even), context `left_rows` before and `right_rows` after."""

    block_rows: int = 50  # 1 s of core per model call
    left_rows: int = 25   # 0.5 s of left context
    right_rows: int = 10  # 0.2 s of right context (this is lookahead)
    stride: int = STRIDE
    receptive_field: int = RECEPTIVE_FIELD

    def __post_init__(self):
        if self.stride != STRIDE or self.receptive_field != RECEPTIVE_FIELD:
            raise ValueError(f"BlockSpec: stride {self.stride}, receptive field {self.receptive_field} | "
                             f"expected {STRIDE} and {RECEPTIVE_FIELD} (a 50 Hz HuBERT / wav2vec 2.0 conv encoder)")
        if self.block_rows < ROWS_PER_FRAME or self.block_rows % ROWS_PER_FRAME or self.left_rows < 0 or self.right_rows < 0:
            raise ValueError(f"BlockSpec: block {self.block_rows}, left {self.left_rows}, right {self.right_rows} rows | "
                             f"expected an even block >= 2 rows (whole 40 ms video frames) and contexts >= 0")

    @classmethod
    def from_ms(cls, block_ms: float, left_ms: float, right_ms: float) -> "BlockSpec":
        """Milliseconds -> rows: the block rounds to whole 40 ms video frames (at least one), contexts to 20 ms rows."""
        frames = max(1, int(round(block_ms / 40.0)))
        return cls(block_rows=ROWS_PER_FRAME * frames, left_rows=max(0, int(round(left_ms / 20.0))),
                   right_rows=max(0, int(round(right_ms / 20.0))))

    @classmethod
    def from_dict(cls, d: dict) -> "BlockSpec":
        keys = ("block_rows", "left_rows", "right_rows", "stride", "receptive_field")
        return cls(**{k: int(d[k]) for k in keys if k in d})

    def to_dict(self) -> dict:
        return asdict(self)

    # -- geometry ------------------------------------------------------------------------
    @property
    def pad_left(self) -> int:
        """Samples of the receptive field before a row's own 20 ms (40)."""
        return (self.receptive_field - self.stride) // 2

    @property
    def pad_right(self) -> int:
        """Samples of the receptive field after a row's own 20 ms (40)."""
        return self.receptive_field - self.stride - self.pad_left

    @property
    def window_rows(self) -> int:
        return self.left_rows + self.block_rows + self.right_rows

    @property
    def window_samples(self) -> int:
        """Samples of one model call: 320 (L + C + R) + 80."""
        return self.stride * self.window_rows + self.receptive_field - self.stride

    @property
    def frames_per_block(self) -> int:
        return self.block_rows // ROWS_PER_FRAME

    def window_start(self, k: int) -> int:
        """First sample (absolute, may be negative) of block k's window."""
        return self.stride * (k * self.block_rows - self.left_rows) - self.pad_left

    def window_end(self, k: int) -> int:
        """One past the last sample of block k's window: the block can run once this many samples have arrived."""
        return self.window_start(k) + self.window_samples

    @property
    def lookahead_samples(self) -> int:
        """Worst-case audio past the end of a video frame before its features exist (the first frame of a block)."""
        return SAMPLES_PER_FRAME * (self.frames_per_block - 1) + self.stride * self.right_rows + self.pad_right

    def describe(self) -> dict:
        return {**self.to_dict(), "window_samples": self.window_samples,
                "frontend_lookahead_ms": self.lookahead_samples / SAMPLE_RATE * 1000.0,
                "block_ms": self.block_rows * 20, "left_ms": self.left_rows * 20, "right_ms": self.right_rows * 20}


class BlockStream:
    """Chunked block front end: push any number of samples, get the features of every complete block.

    run_block: window [window_samples] float32 -> rows [window_rows, D] float32 (the model on one block).
    `push` returns features [n, 2, D] of the video frames of blocks whose windows are complete;
    `finish(T)` zero-pads the end and returns the rest up to T frames in total.
    """

    def __init__(self, spec: BlockSpec, run_block: Callable[[np.ndarray], np.ndarray], dim: int):
        self.spec = spec
        self.dim = int(dim)
        self._run = run_block
        self._buf = np.zeros(0, np.float32)
        self._offset = 0        # absolute sample index of _buf[0]
        self._received = 0
        self._block = 0         # next block to run
        self._next = 0          # video frames emitted

    @property
    def frames_emitted(self) -> int:
        return self._next

    @property
    def samples_received(self) -> int:
        return self._received

    def _empty(self) -> np.ndarray:
        return np.zeros((0, ROWS_PER_FRAME, self.dim), np.float32)

    def _window(self, k: int) -> np.ndarray:
        """Block k's samples; zeros before sample 0 and past what is buffered (only reached after finish)."""
        sp = self.spec
        start, n = sp.window_start(k), sp.window_samples
        out = np.zeros(n, np.float32)
        lo, hi = max(start, self._offset), min(start + n, self._offset + self._buf.size)
        if hi > lo:
            out[lo - start:hi - start] = self._buf[lo - self._offset:hi - self._offset]
        return out

    def _run_block(self, k: int) -> np.ndarray:
        sp = self.spec
        rows = np.asarray(self._run(self._window(k)), np.float32)
        if rows.shape != (sp.window_rows, self.dim):
            raise ValueError(f"audio front end: block output {rows.shape} | expected [{sp.window_rows}, {self.dim}] (rows, features)")
        core = rows[sp.left_rows:sp.left_rows + sp.block_rows]
        return core.reshape(sp.frames_per_block, ROWS_PER_FRAME, self.dim)

    def _emit(self, n_blocks: int) -> list[np.ndarray]:
        out = []
        while self._block < n_blocks:
            out.append(self._run_block(self._block))
            self._block += 1
            self._next += self.spec.frames_per_block
        # Drop samples that no later block needs.
        keep_from = max(0, self.spec.window_start(self._block))
        if keep_from > self._offset:
            self._buf = self._buf[keep_from - self._offset:]
            self._offset = keep_from
        return out

    def push(self, pcm: np.ndarray) -> np.ndarray:
        """pcm [S] float32 at 16 kHz -> features [n, 2, D] of the frames of the blocks now complete."""
        pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
        self._buf = np.concatenate([self._buf, pcm])
        self._received += pcm.size
        k = self._block
        while self.spec.window_end(k) <= self._received:
            k += 1
        out = self._emit(k)
        return np.concatenate(out) if out else self._empty()

    def finish(self, total_frames: int | None = None) -> np.ndarray:
        """End of speech: zeros past it -> features [n, 2, D] of the remaining frames (up to total_frames in all)."""
        total = num_video_frames(self._received) if total_frames is None else int(total_frames)
        before = self._next  # frames already returned by push
        out = self._emit(-(-total // self.spec.frames_per_block))
        feats = np.concatenate(out) if out else self._empty()
        feats = feats[:max(0, total - before)]  # the last block's frames past T are cut
        self._next = before + len(feats)
        return feats


def block_features(pcm: np.ndarray, spec: BlockSpec, run_block: Callable[[np.ndarray], np.ndarray], dim: int,
                   num_frames: int | None = None) -> np.ndarray:
    """Whole-file path: pcm [S] float32 at 16 kHz -> features [T, 2, D], T = num_frames or ceil(S / 640).

    The same blocks as `BlockStream` (it is one): the end is zero-padded to cover T frames
    and the output cut to exactly T.
    """
    pcm = np.asarray(pcm, dtype=np.float32).reshape(-1)
    stream = BlockStream(spec, run_block, dim)
    head = stream.push(pcm)
    total = num_frames if num_frames is not None else num_video_frames(pcm.size)
    tail = stream.finish(total)
    feats = np.concatenate([head, tail]) if len(tail) else head
    return feats[:total]
