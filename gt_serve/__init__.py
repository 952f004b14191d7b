"""gt_serve: a live avatar server (`gt serve`): WebSocket protocol, web page, batching across sessions.

    from gt_serve import ServeConfig, serve
    serve(ServeConfig(bundles=["may.gtb"], port=8010))

FastAPI + uvicorn (the `serve` extra: pip install 'gt[serve]'). The protocol is in
docs/PROTOCOL.md; gt_serve.protocol packs and parses its messages. Each bundle loads once
into an `Avatar` (one Player, its immutable pipeline and one render thread); every
WebSocket connection is a `Stream` with its own runtime Session per utterance, and the
render thread batches the frames that concurrent streams need together.
gt_runtime never imports this package.
"""
from gt_serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "serve"]


def __getattr__(name):
    """create_app / serve import FastAPI on first use, so `import gt_serve` stays cheap."""
    if name in ("create_app", "serve"):
        from gt_serve import app

        return getattr(app, name)
    raise AttributeError(f"module 'gt_serve' has no attribute {name!r}")
