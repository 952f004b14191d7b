"""The FastAPI app of `gt serve`: the page at /, the WebSocket protocol at /v1/stream, and `serve()`.

    GET  /             the web page (gt_serve/static)
    GET  /v1/avatars   [{"name", "width", "height", "fps", "lookahead_ms", ...}]   (token)
    GET  /healthz      {"status": "ok", "sessions", "max_sessions", "replica", "render": {...}}
    WS   /v1/stream?avatar=NAME[&token=T]                                        (docs/PROTOCOL.md)
    POST /offer        WebRTC: {sdp, type, avatar, token?} -> {sdp, type, session}  (gt_serve/webrtc.py, aiortc)
"""

import asyncio
import hmac
import json
import os
import socket
from pathlib import Path

from gt_runtime.errors import InputError, require
from gt_serve.config import ServeConfig
from gt_serve.protocol import (CLOSE_INTERNAL, CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_TRY_LATER, ProtocolError,
                               error_message, parse_text)

STATIC = Path(__file__).resolve().parent / "static"


def load_avatars(cfg: ServeConfig) -> dict:
    """Each --bundle once -> {name: Avatar}; the name is the bundle directory's stem (default: "default")."""
    from gt_runtime.assets import default_bundle
    from gt_serve.avatar import Avatar

    paths = [Path(b) for b in cfg.bundles] or [default_bundle()]
    avatars = {}
    for p in paths:
        name = "default" if not cfg.bundles else p.name.removesuffix(".gtb")
        if name in avatars:
            raise InputError(f"--bundle {p}: a second avatar named {name!r} | give bundles distinct directory names")
        avatars[name] = Avatar(name, p, cfg.engine, cfg.raster, cfg.max_batch, cfg.jpeg_quality)
    return avatars


def server_modules() -> dict:
    """fastapi and uvicorn, or the one-line MissingDependencyError naming pip install 'gt[serve]'."""
    return {m: require(m, "gt serve") for m in ("fastapi", "uvicorn")}


def create_app(cfg: ServeConfig, avatars: dict | None = None, pool=None):
    """-> a FastAPI app serving `avatars` (default: load cfg.bundles). The caller closes avatars it passes.

    pool: avatars opened on demand instead (a Ray replica's LRU, gt_serve.ray_serve.ReplicaAvatars):
    `names()`, `opened` {name: Avatar}, `info()`, `await acquire(name)` -> Avatar, `release(avatar)`.
    """
    server_modules()
    from fastapi import FastAPI, HTTPException, Request, WebSocket
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.websockets import WebSocketDisconnect, WebSocketState

    from gt_serve.stream import Stream, check_origin

    cfg.check()
    own = avatars is None and pool is None
    avatars = pool.opened if pool is not None else load_avatars(cfg) if own else avatars
    known = pool.names() if pool is not None else avatars
    replica = cfg.replica or f"{socket.gethostname()}:{os.getpid()}"
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        for a in avatars.values():
            a.idle.prewarm()   # idle frames of the whole track, rendered in the background
        yield
        await app.state.rtc_close_all()
        if own:
            for a in avatars.values():
                a.close()

    app = FastAPI(title="gt serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.avatars = avatars
    app.state.sessions = 0
    app.state.next_session = 0
    app.state.streams = {}

    def token_ok(token: str | None) -> bool:
        return not cfg.token or (token is not None and hmac.compare_digest(token.encode(), cfg.token.encode()))

    def request_token(params, headers) -> str | None:
        auth = headers.get("authorization", "")
        return params.get("token") or (auth[7:] if auth.lower().startswith("bearer ") else None)

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/v1/avatars")
    def list_avatars(request: Request):
        if not token_ok(request_token(request.query_params, request.headers)):
            raise HTTPException(401, "missing or wrong token | pass ?token=T")
        return pool.info() if pool is not None else [a.info() for a in avatars.values()]

    @app.get("/healthz")
    def health():
        return JSONResponse({"status": "ok", "sessions": app.state.sessions, "max_sessions": cfg.max_sessions,
                             "replica": replica, "render": {n: {**a.renderer.stats(), "idle_cached": len(a.idle), "track_frames": a.track_frames}
                                        for n, a in avatars.items()}})

    async def refuse(ws: WebSocket, message: str, code: int) -> None:
        await ws.accept()
        await ws.send_text(error_message(message))
        await ws.close(code)

    @app.websocket("/v1/stream")
    async def stream(ws: WebSocket):
        if not check_origin(ws.headers.get("origin"), ws.headers.get("host"), cfg.allow_origins):
            return await refuse(ws, f"origin {ws.headers.get('origin')} is not allowed | open the page from this server, "
                                    "or start gt serve with --allow-origin", CLOSE_POLICY)
        if not token_ok(request_token(ws.query_params, ws.headers)):
            return await refuse(ws, "missing or wrong token | connect to /v1/stream?avatar=NAME&token=T", CLOSE_POLICY)
        name = ws.query_params.get("avatar") or (next(iter(known)) if len(known) == 1 else None)
        if name not in known:
            return await refuse(ws, f"avatar {name!r}: no such avatar | available: {', '.join(known)}", CLOSE_POLICY)
        if app.state.sessions >= cfg.max_sessions:
            return await refuse(ws, f"server full ({cfg.max_sessions} sessions) | try again later", CLOSE_TRY_LATER)
        app.state.sessions += 1
        sid = f"{replica}/{app.state.next_session}"
        app.state.next_session += 1
        avatar = avatars[name] if pool is None else None
        pump = None
        st = None
        try:
            await ws.accept()
            if pool is not None:
                avatar = await pool.acquire(name)   # opens the bundle if this replica does not hold it
            lock = asyncio.Lock()   # the pump and the receive loop both send

            async def send_bytes(b):
                async with lock:
                    await ws.send_bytes(b)

            async def send_text(t):
                async with lock:
                    await ws.send_text(t)

            st = Stream(avatar, send_bytes, send_text, cfg.max_queued_s)
            app.state.streams[sid] = st
            await ws.send_text(json.dumps({"type": "ready", "session": sid, "avatar": name, "width": avatar.width,
                                           "height": avatar.height, "fps": avatar.fps,
                                           "lookahead_ms": avatar.lookahead_ms, "replica": replica}))
            pump = asyncio.create_task(st.pump())
            recv = None
            while True:
                recv = asyncio.ensure_future(ws.receive())
                done, _ = await asyncio.wait({recv, pump}, return_when=asyncio.FIRST_COMPLETED)
                if pump in done:
                    recv.cancel()
                    pump.result()          # raises the pump's ProtocolError / disconnect
                    break
                msg = recv.result()
                if msg["type"] == "websocket.disconnect":
                    break
                if msg.get("bytes") is not None:
                    data = msg["bytes"]
                    if len(data) > cfg.max_message_bytes:
                        raise ProtocolError(f"binary message of {len(data)} bytes is over the cap of {cfg.max_message_bytes} "
                                            "| send audio in smaller chunks", CLOSE_TOO_BIG)
                    st.handle_binary(data)
                elif msg.get("text") is not None:
                    await st.handle_text(parse_text(msg["text"]))
        except ProtocolError as exc:
            await _close_with(ws, str(exc), exc.code, WebSocketState)
        except (WebSocketDisconnect, ConnectionError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and ws.application_state == WebSocketState.CONNECTED \
                    and ws.client_state == WebSocketState.CONNECTED:
                await _close_with(ws, f"internal error: {exc}", CLOSE_INTERNAL, WebSocketState)
        except InputError as exc:   # the runtime refused the audio (one line)
            await _close_with(ws, str(exc), CLOSE_POLICY, WebSocketState)
        except Exception as exc:    # a vanished client surfaces as the server library's own error; anything else is ours
            await _close_with(ws, f"internal error: {type(exc).__name__}: {exc}", CLOSE_INTERNAL, WebSocketState)
        finally:
            if st is not None:
                st.close()
            if pump is not None and not pump.done():
                pump.cancel()
                try:
                    await pump
                except BaseException:
                    pass
            app.state.streams.pop(sid, None)
            app.state.sessions -= 1
            if pool is not None and avatar is not None:
                pool.release(avatar)
        if ws.application_state == WebSocketState.CONNECTED and ws.client_state == WebSocketState.CONNECTED:
            try:
                await ws.close(CLOSE_NORMAL)
            except Exception:
                pass

    async def acquire(name):
        return avatars[name] if pool is None else await pool.acquire(name)

    from gt_serve.webrtc import add_offer_route   # POST /offer: WebRTC over the same sessions (aiortc, optional)

    add_offer_route(app, cfg, known, acquire, pool.release if pool is not None else (lambda a: None), replica,
                    check_origin, token_ok, request_token)
    return app


async def _close_with(ws, message: str, code: int, WebSocketState) -> None:
    """Send {"type": "error"} and close, unless the client is already gone."""
    if ws.application_state != WebSocketState.CONNECTED or ws.client_state != WebSocketState.CONNECTED:
        return
    try:
        await ws.send_text(error_message(message))
        await ws.close(code)
    except Exception:
        pass


def serve(cfg: ServeConfig) -> None:
    """Load the avatars and serve until interrupted (uvicorn)."""
    cfg.check()
    uvicorn = server_modules()["uvicorn"]
    app = create_app(cfg)
    names = ", ".join(app.state.avatars)
    print(f"gt serve: avatars {names} on http://{cfg.host}:{cfg.port}/ (max {cfg.max_sessions} sessions"
          f"{', token required' if cfg.token else ''})", flush=True)
    # uvicorn's own cap is above ours, so that a message over ours still gets an error message before the close.
    # No permessage-deflate: a frame is mostly JPEG, which deflate cannot shrink (CPU spent on both ends for nothing).
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, ws_max_size=4 * cfg.max_message_bytes,
                ws_ping_interval=20.0, ws_ping_timeout=20.0, ws_per_message_deflate=False)
