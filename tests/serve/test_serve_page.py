"""The web page in headless Chromium: a fake microphone (a wav) speaks, frames arrive at 25 FPS, a face is shown;
the screenshot is kept in out/test-artefacts/serve_page.png."""
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.support.cdp import Chromium, chromium_path
from tests.support.serve import live_server
from tests.support.speech import speech

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
ARTEFACTS = Path(__file__).resolve().parents[2] / "out" / "test-artefacts"


@pytest.fixture
def browser_page(avatars, tmp_path):
    from gt_serve import ServeConfig

    if chromium_path() is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run does it)")
    with live_server(ServeConfig(port=0, max_queued_s=120.0), avatars) as (base, _):
        yield from _browser(base, tmp_path)


def _browser(base, tmp_path):
    wav = tmp_path / "mic.wav"
    sf.write(wav, np.concatenate([speech(6.0, 48000, seed=7, gated=True), np.zeros(48000, np.float32)]), 48000, subtype="PCM_16")
    b = Chromium(f"http://{base}/?avatar=default&auto=mic", wav, tmp_path / "profile")
    try:
        t_end = time.time() + 30
        while b.evaluate("typeof window.gtStats") != "object":   # the page and its script are loaded
            assert time.time() < t_end, "the page did not load"
            time.sleep(0.1)
        yield b
    finally:
        b.close()


def _stats(b):
    return json.loads(b.evaluate("JSON.stringify({frames: gtStats.frames, speech: gtStats.speechFrames, "
                                 "error: gtStats.error, spread: gtCanvasSpread(), drawn: gtStats.drawn, "
                                 "latency: gtStats.latencyMs, now: performance.now()})"))


def test_page_shows_a_talking_face(browser_page):
    b = browser_page
    t_end = time.time() + 60
    s = _stats(b)
    while (s["speech"] < 25 or s["drawn"] < 25) and s["error"] is None and time.time() < t_end:
        time.sleep(0.25)
        s = _stats(b)
    assert s["error"] is None and s["speech"] >= 25, s
    time.sleep(0.5)
    s0 = _stats(b)
    time.sleep(6.0)
    s1 = _stats(b)
    fps = (s1["frames"] - s0["frames"]) / ((s1["now"] - s0["now"]) / 1000)
    shot = b.screenshot(ARTEFACTS / "serve_page.png")
    print(f"page: {fps:.2f} FPS, latency {s1['latency']} ms, canvas spread {s1['spread']:.1f}, screenshot {shot}")
    assert fps >= 24.5, fps            # the realtime pace is 25 FPS on the server's clock
    assert s1["spread"] > 10.0, s1     # a face over its background, not a blank canvas
    assert s1["drawn"] > s0["drawn"]   # frames are drawn, not only received
    assert shot.stat().st_size > 10_000


def test_page_stop_and_file_upload(browser_page, tmp_path):
    """Stop interrupts (speech frames stop, idle frames go on); a speech file uploaded through the page plays."""
    b = browser_page
    t_end = time.time() + 60
    while _stats(b)["speech"] < 10 and time.time() < t_end:
        time.sleep(0.25)
    b.evaluate("document.getElementById('stop').click()")
    time.sleep(1.0)
    s0 = _stats(b)
    time.sleep(1.5)
    s1 = _stats(b)
    assert s1["speech"] == s0["speech"] and s1["frames"] > s0["frames"] + 20, (s0, s1)
    assert b.evaluate("document.getElementById('state').textContent") in ("interrupted", "at rest")
    wav = tmp_path / "upload.wav"
    sf.write(wav, speech(1.2, 16000, seed=9, gated=True), 16000, subtype="PCM_16")
    doc = b.call("DOM.getDocument")["root"]["nodeId"]
    node = b.call("DOM.querySelector", nodeId=doc, selector="#file")["nodeId"]
    b.call("DOM.setFileInputFiles", nodeId=node, files=[str(wav)])
    t_end = time.time() + 60
    while _stats(b)["speech"] < s1["speech"] + 30 and time.time() < t_end:
        time.sleep(0.25)
    assert _stats(b)["speech"] == s1["speech"] + 30   # 1.2 s of speech: 30 frames, then the avatar at rest
