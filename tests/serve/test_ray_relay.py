"""The relay of `gt serve --ray` (gt_serve.ray_relay) without Ray: ProxyMiddleware in front of a replica's SlotApp,
the replica's DirectServer beside it, all in one uvicorn loop; a small echo app stands for gt's. The session's
messages go over the direct port in order, close codes pass through, the slot is held while the session runs, a
direct port refuses a connection without a ticket, and a replica that vanishes closes its client with 1012."""
import asyncio
import threading
import time

import pytest

pytest.importorskip("uvicorn")
pytest.importorskip("websockets")

from tests.support.serve import free_port  # noqa: E402

from gt_serve.protocol import CLOSE_RESTART  # noqa: E402


def echo_app():
    """/v1/stream: accept, echo every message (text with the Host it saw), "close" -> close 4001."""
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def stream(ws):
        await ws.accept()
        await ws.send_text(f"host={ws.headers.get('host')} q={ws.query_params.get('avatar')}")
        while True:
            msg = await ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") == "close":
                return await ws.close(4001, "asked")
            if msg.get("text") == "die":   # the replica vanishes: its TCP connection drops without a close frame
                ws.scope["gt_transport"].close()
                await asyncio.sleep(3600)
            await (ws.send_bytes(msg["bytes"]) if msg.get("bytes") is not None else ws.send_text(msg["text"]))

    return Starlette(routes=[WebSocketRoute("/v1/stream", stream)])


class Transport:
    """ASGI wrapper that hands the app its connection's transport (so the test can drop it like a dead process)."""

    def __init__(self, app, direct):
        self.app, self.direct = app, direct

    async def __call__(self, scope, receive, send):
        server = self.direct.server
        conns = [c for c in server.server_state.connections if getattr(c, "scope", None) is scope] or \
            list(server.server_state.connections)
        scope["gt_transport"] = conns[-1].transport
        await self.app(scope, receive, send)


@pytest.fixture()
def relayed():
    """Proxy (ProxyMiddleware -> SlotApp) on a free port, the direct port beside it -> (base, direct, slots)."""
    import uvicorn

    from gt_serve.ray_relay import DirectServer, SlotApp
    from gt_serve.ray_serve import ProxyMiddleware

    box, ready = {}, threading.Event()

    async def main():
        inner = echo_app()
        direct = DirectServer(None, "127.0.0.1", 1 << 20)
        direct.app = Transport(inner, direct)
        slots = {"open": 0}
        slot_app = SlotApp(inner, direct)

        async def counted(scope, receive, send):   # stands for Ray: counts the ongoing requests (the slots)
            slots["open"] += 1
            try:
                await slot_app(scope, receive, send)
            finally:
                slots["open"] -= 1

        port = free_port()
        proxy = uvicorn.Server(uvicorn.Config(ProxyMiddleware(counted), host="127.0.0.1", port=port, lifespan="off",
                                              log_level="error"))
        box.update(base=f"127.0.0.1:{port}", direct=direct, slots=slots, proxy=proxy, loop=asyncio.get_running_loop())
        tasks = {asyncio.ensure_future(direct.serve()), asyncio.ensure_future(proxy._serve())}
        while not (proxy.started and direct.server.started):
            await asyncio.sleep(0.02)
        ready.set()
        while not box.get("stop"):
            await asyncio.sleep(0.05)
        proxy.should_exit = direct.server.should_exit = True
        await asyncio.wait(tasks, timeout=5)

    th = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    th.start()
    assert ready.wait(20)
    yield box
    box["stop"] = True
    th.join(10)


def _connect(base):
    from websockets.sync.client import connect

    return connect(f"ws://{base}/v1/stream?avatar=may", open_timeout=10, max_size=None)


def test_messages_in_order_and_close_code(relayed):
    """Text and binary echo in order through the direct port; the client's Host reaches the app; the app's close
    code reaches the client; the slot is held during the session and given back after."""
    from websockets.exceptions import ConnectionClosed

    with _connect(relayed["base"]) as ws:
        assert ws.recv(timeout=10) == f"host={relayed['base']} q=may"
        assert relayed["slots"]["open"] == 1
        sent = [bytes([k]) * (100 + k) if k % 2 else f"t{k}" for k in range(40)]
        for m in sent:
            ws.send(m)
        assert [ws.recv(timeout=10) for _ in sent] == sent
        ws.send("close")
        with pytest.raises(ConnectionClosed) as exc:
            ws.recv(timeout=10)
        assert exc.value.rcvd.code == 4001 and exc.value.rcvd.reason == "asked"
    t_end = time.time() + 5
    while relayed["slots"]["open"] and time.time() < t_end:
        time.sleep(0.02)
    assert relayed["slots"]["open"] == 0 and not relayed["direct"].tickets


def test_client_leaves_gives_slot_back(relayed):
    with _connect(relayed["base"]) as ws:
        ws.recv(timeout=10)
    t_end = time.time() + 5
    while relayed["slots"]["open"] and time.time() < t_end:
        time.sleep(0.02)
    assert relayed["slots"]["open"] == 0


def test_direct_port_needs_ticket(relayed):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    d = relayed["direct"]
    with pytest.raises(InvalidStatus) as exc:
        connect(f"ws://127.0.0.1:{d.port}/v1/stream", additional_headers={"x-gt-ticket": "guess"}, open_timeout=10)
    assert exc.value.response.status_code == 403


def test_replica_vanishes_1012(relayed):
    """The direct connection drops without a close frame (a killed replica): error message, then 1012, at once."""
    import json

    from websockets.exceptions import ConnectionClosed

    with _connect(relayed["base"]) as ws:
        ws.recv(timeout=10)
        t0 = time.perf_counter()
        ws.send("die")
        msg = json.loads(ws.recv(timeout=5))
        assert msg["type"] == "error" and "stopped" in msg["message"]
        with pytest.raises(ConnectionClosed) as exc:
            ws.recv(timeout=5)
        assert exc.value.rcvd.code == CLOSE_RESTART and time.perf_counter() - t0 < 2.0
