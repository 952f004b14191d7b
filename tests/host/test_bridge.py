"""gt_runtime.host.bridge, the Python half of libgt_host.so, called directly (no C compiler needed).

- A session opened through the bridge streams the same frames as `Player.play`, and the
  per-frame stage seconds and the stats come back in the layout the C side unpacks.
- Sessions of one bundle share one Player, closed with the last session.
- GT_ENGINE / GT_RASTER (via gt_runtime.contract) apply when the C caller gives no engine.
- Exceptions become (kind, one line) as the status codes of gt_host.h expect.
- The stage mapping agrees with gt_host.h's struct fields and gt_runtime.contract.STAGES.
"""
import math
import re
from pathlib import Path

import numpy as np
import pytest

from gt_runtime import contract
from gt_runtime.errors import InputError
from gt_runtime.host import bridge
from gt_runtime.playback.player import Player
from tests.support.speech import speech

ROOT = Path(__file__).resolve().parents[2]
HOST = ROOT / "plugins" / "host"
W, H = 48, 32


@pytest.fixture(scope="module")
def bundle(random_bundle):
    return random_bundle(n_gaussians=300, sh_degree=1, num_layers=1, width=W, height=H, n_track_frames=4, seed=2, onnx=False)


def opened(bundle, engine="array", raster="", threads=0, batch=1):
    return bridge.open_session(str(bundle), engine, raster, threads, batch)


def stream(session, pcm: np.ndarray, chunk: int = 320):
    """Push pcm in chunks through the bridge as gt_host_api.c does -> (frames, per-frame stage seconds)."""
    frames, seconds = [], []

    def drain():
        it = bridge.frames(session)
        while (got := bridge.pull(it, session)) is not None:
            frames.append(got[0])
            seconds.append(got[1])

    for i in range(0, pcm.size, chunk):
        bridge.push(session, memoryview(pcm[i:i + chunk].tobytes()), 16000)
        drain()
    bridge.finish(session)
    drain()
    return frames, seconds


# -- the layout shared with the C side -------------------------------------------------------


def test_stage_names_match_contract_and_header():
    contract_names = [stage for _, stage in bridge.FRAME_STAGES]
    assert set(contract_names) <= set(contract.STAGES), contract_names
    c_names = [field for field, _ in bridge.FRAME_STAGES]
    header = (HOST / "gt_host.h").read_text()
    info = re.search(r"typedef struct gt_frame_info \{(.*?)\} gt_frame_info;", header, re.S).group(1)
    assert re.findall(r"double ms_(\w+);", info) == c_names + ["wall"]
    stats = re.search(r"struct gt_stats \{(.*?)\};", header, re.S).group(1)
    line = re.search(r"gt_stage_stats ([\w, ]+);", stats).group(1)
    assert [s.strip() for s in line.split(",")] == c_names
    for field, stage in bridge.FRAME_STAGES:  # the header documents each field's contract stage
        if field != stage:
            assert re.search(rf"ms_{field};.*\"{stage}\"", info), f"gt_host.h: ms_{field} does not name its stage {stage!r}"
    api = (HOST / "gt_host_api.c").read_text()
    n = int(re.search(r"#define STATS_LEN \(2 \+ 4 \* (\d+)\)", api).group(1))
    assert bridge.STATS_LEN == 2 + 4 * n == 2 + 4 * len(bridge.FRAME_STAGES)


def test_import_hint_is_the_one_the_c_side_writes():
    assert f'"{bridge.IMPORT_HINT}"' in (HOST / "gt_host_python.c").read_text()


# -- sessions ------------------------------------------------------------------------------


def test_stream_matches_player(bundle):
    key, s, width, height, fps, lookahead, engine, raster = opened(bundle)
    try:
        assert (width, height, fps) == (W, H, contract.FPS)
        assert lookahead == pytest.approx(247.5)
        assert engine.startswith("array") and raster in ("cpu", "reference")
        pcm = speech(1.3)
        frames, seconds = stream(s, pcm)
    finally:
        bridge.close_session(key, s)
    assert len(frames) == math.ceil(pcm.size / contract.SAMPLES_PER_FRAME)
    player = Player(bundle, engine="array", raster=raster)
    try:
        ref = list(player.play(pcm, 16000))
    finally:
        player.close()
    np.testing.assert_array_equal(np.stack(frames), np.stack(ref))
    assert all(len(st) == len(bridge.FRAME_STAGES) for st in seconds)
    per_stage = np.array(seconds)  # [T, 5] seconds
    assert np.all(per_stage >= 0) and np.all(per_stage[:, 1:] > 0), per_stage  # every stage ran for every frame


def test_stats_layout(bundle):
    key, s, *_ = opened(bundle)
    try:
        before = bridge.stats(s)
        assert bridge.stats(s) == before  # reading stats twice before any frame works and changes nothing
        assert len(before) == bridge.STATS_LEN and before[:2] == (0.0, 0.0)
        pcm = speech(0.8)
        frames, _ = stream(s, pcm)
        st = bridge.stats(s)
    finally:
        bridge.close_session(key, s)
    assert len(st) == bridge.STATS_LEN and all(isinstance(x, float) for x in st)
    assert st[0] == pytest.approx(pcm.size / 16000) and st[1] > 0
    by_stage = {stage: st[2 + 4 * k: 6 + 4 * k] for k, (_, stage) in enumerate(bridge.FRAME_STAGES)}
    for stage, (mean, p50, p99, total) in by_stage.items():
        assert total > 0 and mean > 0 and 0 <= p50 <= p99, (stage, by_stage[stage])
        if stage != "audio_frontend":  # the front end runs per push, the others per frame
            assert mean == pytest.approx(total / len(frames))


def test_sessions_share_a_player(bundle):
    assert bridge.open_players() == 0
    a = opened(bundle)
    b = opened(bundle)
    c = opened(bundle, batch=2)
    try:
        assert a[0] == b[0] != c[0] and bridge.open_players() == 2
        bridge.close_session(*a[:2])
        assert bridge.open_players() == 2  # b still uses it
        frames, _ = stream(b[1], speech(0.3))
        assert len(frames) == 8
    finally:
        bridge.close_session(*b[:2])
        bridge.close_session(*c[:2])
    assert bridge.open_players() == 0


def test_engine_and_raster_settings(bundle, monkeypatch):
    monkeypatch.setenv(contract.ENGINE.name, "array")
    monkeypatch.setenv(contract.RASTER.name, "reference")
    key, s, *_, engine, raster = opened(bundle, engine="", raster="")
    bridge.close_session(key, s)
    assert engine.startswith("array") and raster == "reference"
    monkeypatch.setenv(contract.ENGINE.name, "warp-drive")  # the caller's engine wins over the setting
    key, s, *_, engine, raster = opened(bundle, engine="array", raster="")
    bridge.close_session(key, s)
    assert engine.startswith("array") and raster == "reference"
    with pytest.raises(InputError, match="warp-drive"):
        opened(bundle, engine="")


def test_push_validates_audio(bundle):
    key, s, *_ = opened(bundle)
    try:
        with pytest.raises(InputError, match="NaN"):
            bridge.push(s, memoryview(np.array([0.0, np.nan], np.float32).tobytes()), 16000)
        buf = bytearray(speech(0.2).tobytes())
        bridge.push(s, memoryview(buf), 16000)
        buf[:] = bytes(len(buf))  # the caller reuses its buffer: the session kept a copy
        assert bridge.stats(s)[0] == pytest.approx(0.2)
    finally:
        bridge.close_session(key, s)


# -- errors -> (kind, one line) -------------------------------------------------------------------


def describe(exc: BaseException):
    return bridge.describe_error(type(exc), exc, exc.__traceback__)


def test_describe_error(bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(contract.DEBUG.name, raising=False)
    with pytest.raises(InputError) as missing:
        opened(tmp_path / "nope.gtb")
    kind, msg = describe(missing.value)
    assert kind == "input" and "nope.gtb" in msg and "\n" not in msg
    assert describe(MemoryError("numpy array of 10 GiB")) == ("memory", "out of memory: numpy array of 10 GiB")
    kind, msg = describe(ModuleNotFoundError("No module named 'soxr'"))
    assert kind == "python" and msg.startswith("ModuleNotFoundError: No module named 'soxr' | ") and bridge.IMPORT_HINT in msg
    kind, msg = describe(ValueError("two\n  lines"))
    assert (kind, msg) == ("internal", "ValueError: two lines | set GT_DEBUG=1 for the traceback")
    assert "Traceback" not in capsys.readouterr().err
    monkeypatch.setenv(contract.DEBUG.name, "1")
    try:
        raise KeyError("deform")
    except KeyError as exc:
        assert describe(exc)[0] == "internal"
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err


def test_bridge_uses_only_public_api():
    """The bridge reads no private attribute of Player / Session / Timings, and no GT_* variable directly."""
    src = (ROOT / "gt_runtime" / "host" / "bridge.py").read_text()
    assert re.findall(r"\w\._[a-z]\w*", src) == []
    assert "os.environ" not in src and "getenv" not in src
