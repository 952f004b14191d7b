"""The avatar's render lanes: every job delivered once, the same JPEG whatever lane or batch renders it."""
import threading

import numpy as np

from gt_serve.renderer import Job, Renderer


def _render_all(avatar, lanes: int, frames, raster_threads=None, cancel=(), max_batch=4):
    """Submit one job per frame (speech-like windows), wait for all -> ({frame: [jpeg, ...]}, stats)."""
    rng = np.random.default_rng(0)
    windows = {f: (avatar.idle_window + 0.5 * rng.standard_normal(avatar.idle_window.shape)).astype(np.float32)
               for f in frames}
    got: dict[int, list] = {}
    lock = threading.Lock()
    done = threading.Semaphore(0)

    def deliverer(f):
        def deliver(jpeg, err):
            assert err is None, err
            with lock:
                got.setdefault(f, []).append(jpeg)
            done.release()
        return deliver

    r = Renderer(avatar.pipeline, max_batch=max_batch, name="test", lanes=lanes, raster_threads=raster_threads)
    try:
        jobs = [Job(f, windows[f], deliverer(f)) for f in frames]
        for j in jobs:
            j.cancelled = j.frame in cancel
        r.submit(jobs)
        for _ in range(len(frames) - len(cancel)):
            assert done.acquire(timeout=120), "a job was never delivered"
        return got, r.stats()
    finally:
        r.close()


def test_lanes_deliver_each_job_once_and_equal_to_one_lane(avatars):
    """Frame by frame (max_batch 1: an INT8 ONNX graph quantises a whole batch at once, so a frame's pixels may
    depend on its batch mates), two lanes give every job its own frame, as one lane does."""
    avatar = avatars["default"]
    frames = list(range(8))
    one, s1 = _render_all(avatar, 1, frames, raster_threads=1, max_batch=1)
    two, s2 = _render_all(avatar, 2, frames, raster_threads=1, cancel={3}, max_batch=1)
    assert sorted(one) == frames and all(len(v) == 1 for v in one.values())
    assert sorted(two) == [f for f in frames if f != 3] and all(len(v) == 1 for v in two.values())
    assert all(two[f] == one[f] for f in two), "a frame's JPEG differs between lanes"
    assert len({one[f][0] for f in frames}) > 1, "the windows should give different frames"
    assert s1["frames"] == 8 and s2["frames"] == 7 and s2["lanes"] == 2 and s2["batch_sizes"] == {1: 7}


def test_lanes_share_the_queue_in_batches(avatars):
    avatar = avatars["default"]
    got, st = _render_all(avatar, 2, list(range(12)), raster_threads=1, max_batch=4)
    assert sorted(got) == list(range(12)) and all(len(v) == 1 for v in got.values())
    assert st["frames"] == 12 and max(st["batch_sizes"]) <= 4 and st["batches"] >= 3
    assert {"deform", "raster", "encode"} <= set(st["ms_per_frame"]) and st["ms_per_frame"]["deform"] > 0


def test_background_job_rides_along_and_close_stops_every_lane(avatars):
    avatar = avatars["default"]
    r = Renderer(avatar.pipeline, max_batch=8, name="test", lanes=2, raster_threads=1)
    order = []
    done = threading.Semaphore(0)

    def deliver(tag):
        def f(jpeg, err):
            order.append(tag)
            done.release()
        return f
    r.submit([Job(5, avatar.idle_window, deliver("bg"), urgent=False)] + [Job(k, avatar.idle_window, deliver(k)) for k in range(2)])
    for _ in range(3):
        assert done.acquire(timeout=120)
    assert sorted(map(str, order)) == ["0", "1", "bg"]
    r.close()
    assert not any(t.is_alive() for t in r._threads)
