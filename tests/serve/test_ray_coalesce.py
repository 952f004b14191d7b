"""CoalesceAudio (gt serve --ray's proxy): audio chunks joined in pairs, nothing lost, reordered or held behind text."""
from __future__ import annotations

import asyncio
import time

from gt_serve.ray_serve import CoalesceAudio


def _feed(script):
    """script: [(delay_s, message)] -> an ASGI receive() that returns each message delay_s after the previous call."""
    items = list(script)

    async def receive():
        delay, msg = items.pop(0)
        await asyncio.sleep(delay)
        return msg
    return receive


def _b(n: int, fill: int) -> dict:
    return {"type": "websocket.receive", "bytes": bytes([fill]) * n}


def _run(script, count: int, **kw) -> list[tuple[float, dict]]:
    async def main():
        c = CoalesceAudio(_feed(script), **kw)
        t0, out = time.perf_counter(), []
        for _ in range(count):
            m = await c()
            out.append((time.perf_counter() - t0, m))
        c.close()
        return out
    return asyncio.run(main())


def test_microphone_chunks_are_joined_in_pairs_in_order():
    script = [(0.0, _b(640, k)) for k in range(1)] + [(0.02, _b(640, k)) for k in range(1, 6)]
    out = _run(script + [(0.0, {"type": "websocket.receive", "text": '{"type": "finish"}'})], 4)
    data = b"".join(m["bytes"] for _, m in out[:3])
    assert [len(m["bytes"]) for _, m in out[:3]] == [1280, 1280, 1280]
    assert data == b"".join(bytes([k]) * 640 for k in range(6))
    assert out[3][1]["text"] == '{"type": "finish"}'


def test_text_and_disconnect_are_not_held_and_keep_their_place():
    script = [(0.0, _b(640, 1)), (0.0, {"type": "websocket.receive", "text": "t"}), (0.0, _b(640, 2)),
              (0.0, {"type": "websocket.disconnect", "code": 1000})]
    out = _run(script, 4, hold_s=1.0)
    assert [m.get("bytes", m.get("text", m["type"])) for _, m in out] == [
        bytes([1]) * 640, "t", bytes([2]) * 640, "websocket.disconnect"]
    assert out[-1][0] < 0.2   # nothing waited for the hold


def test_a_lone_chunk_waits_at_most_the_hold():
    out = _run([(0.0, _b(640, 1)), (0.5, _b(640, 2)), (0.0, {"type": "websocket.receive", "text": "t"})], 2, hold_s=0.05)
    assert len(out[0][1]["bytes"]) == 640 and 0.04 < out[0][0] < 0.3
    assert out[1][1]["bytes"] == bytes([2]) * 640


def test_big_and_partial_sample_chunks_pass_alone():
    big, odd = _b(32000, 1), _b(642, 2)   # a fast client's 1 s chunk; 642 bytes: not whole float32 samples
    out = _run([(0.0, big), (0.0, _b(640, 3)), (0.0, odd), (0.0, _b(640, 4)), (1.0, {"type": "websocket.receive", "text": "t"})], 4, hold_s=0.05)
    assert [len(m["bytes"]) for _, m in out] == [32000, 640, 642, 640]
    assert out[0][0] < 0.03   # a big chunk is not held
