"""Fixtures of the gt serve tests: the default avatar loaded once, a live server on a free port."""
import pytest

pytest.importorskip("fastapi", reason="gt serve needs the serve extra: pip install 'gt[serve]'")
pytest.importorskip("uvicorn", reason="gt serve needs the serve extra: pip install 'gt[serve]'")
pytest.importorskip("websockets", reason="gt serve needs the serve extra: pip install 'gt[serve]'")


@pytest.fixture(scope="session")
def avatars():
    """{"default": Avatar} of the bundled 256 px identity, shared by every server of the test session.

    cpu-fused (named, whatever the fixed order picks): its INT8 activations are quantised per row, so a
    frame renders the same in any batch; ONNX Runtime's dynamic INT8 takes one scale per batch tensor,
    which moved the default identity's frames by 0.3 / 255 on average between a server batch and Player.play."""
    from gt_serve import ServeConfig
    from gt_serve.app import load_avatars

    av = load_avatars(ServeConfig(engine="cpu-fused"))
    yield av
    for a in av.values():
        a.close()


@pytest.fixture(scope="module")
def server(avatars):
    """A live server (max 6 sessions) -> (base "127.0.0.1:PORT", app)."""
    from gt_serve import ServeConfig
    from tests.support.serve import live_server

    with live_server(ServeConfig(port=0, max_sessions=6, max_queued_s=20.0), avatars) as s:
        yield s
