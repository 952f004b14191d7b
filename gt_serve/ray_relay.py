"""`gt serve --ray`: a session's WebSocket messages go from Ray's HTTP proxy to its replica over one plain WebSocket,
not as Ray actor calls (about 2 ms of CPU each, three per frame at realtime pace).

Ray still picks the replica (placement, avatar multiplexing) and holds the session's slot (`max_ongoing_requests`):
the proxy's Ray request for the session (`SlotApp`, marked by RELAY_HEADER) answers with the replica's direct
address and a one-use ticket in its accept message, then stays open until the session ends. The proxy
(`relay`) connects to that address (`DirectServer`: uvicorn on the node's IP, in the replica's process and event
loop, serving the same app), with the client's path, query and headers, and relays messages both ways. A replica
that dies ends both the Ray request and the TCP connection: the proxy closes its client with CLOSE_RESTART.
"""
from __future__ import annotations

import asyncio
import secrets
import socket

from gt_serve.protocol import CLOSE_RESTART, error_message

RELAY_HEADER = b"x-gt-relay"      # proxy -> replica: "answer with a slot"; replica -> proxy (accept): host:port:ticket
TICKET_HEADER = b"x-gt-ticket"    # proxy -> the replica's direct port
HOST_HEADER = b"x-gt-host"        # proxy -> direct port: the client's Host (the direct connection has its own)
TICKET_TTL_S = 30.0               # a slot whose direct connection never comes is given back after this
DIED = "the replica serving this session stopped | reconnect: another replica (or its replacement) serves you"


class DirectServer:
    """The replica's own WebSocket port: uvicorn on `host`, port chosen by the OS, serving `app` to holders of a
    ticket only (anything else: 403 before the handshake completes). Lifespan off: the app's lifespan is Ray's."""

    def __init__(self, app, host: str, max_size: int):
        import uvicorn

        self.app = app
        self.tickets: dict[str, asyncio.Event] = {}   # ticket -> set when its session ends (or never starts)
        self.sock = socket.create_server((host, 0))
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(self._gate, interface="asgi3", lifespan="off", log_level="warning", ws="websockets-sansio",
                                                    ws_max_size=max_size, ws_per_message_deflate=False, access_log=False))

    async def serve(self) -> None:
        await self.server._serve([self.sock])   # not serve(): it would take the process's signals

    def issue(self) -> tuple[str, asyncio.Event]:
        ticket = secrets.token_urlsafe(18)
        ev = self.tickets[ticket] = asyncio.Event()
        return ticket, ev

    def drop(self, ticket: str) -> None:
        ev = self.tickets.pop(ticket, None)
        if ev is not None:
            ev.set()

    async def _gate(self, scope, receive, send):
        if scope["type"] != "websocket":
            if scope["type"] == "http":
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b""})
            return
        ticket = dict(scope.get("headers") or []).get(TICKET_HEADER, b"").decode()
        ev = self.tickets.pop(ticket, None)
        if ev is None:
            await send({"type": "websocket.close", "code": 1008})   # before accept: the handshake gets 403
            return
        hdrs = [(k, v) for k, v in scope.get("headers") or [] if k not in (b"host", TICKET_HEADER, HOST_HEADER)]
        host = dict(scope["headers"]).get(HOST_HEADER)
        scope = {**scope, "headers": hdrs + ([(b"host", host)] if host else [])}   # the client's headers, as Ray gave them
        try:
            await self.app(scope, receive, send)
        finally:
            ev.set()


class SlotApp:
    """A replica's ASGI app as Ray calls it: a WebSocket marked by the proxy (RELAY_HEADER) is a session slot (accept
    with the direct address and a ticket, held until that session ends or the proxy goes); the rest is `app`."""

    def __init__(self, app, direct: DirectServer):
        self.app = app
        self.direct = direct

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket" or RELAY_HEADER not in dict(scope.get("headers") or []):
            return await self.app(scope, receive, send)
        await receive()   # websocket.connect
        ticket, ended = self.direct.issue()
        addr = f"{self.direct.host}:{self.direct.port}:{ticket}".encode()
        await send({"type": "websocket.accept", "headers": [(RELAY_HEADER, addr)]})
        gone = asyncio.ensure_future(receive())   # the proxy's disconnect: its client left
        done = asyncio.ensure_future(ended.wait())
        try:
            finished, _ = await asyncio.wait({gone, done}, timeout=TICKET_TTL_S, return_when=asyncio.FIRST_COMPLETED)
            if not finished and ticket not in self.direct.tickets:   # the session runs: hold the slot until it ends
                finished, _ = await asyncio.wait({gone, done}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.direct.drop(ticket)   # unclaimed: no longer valid
            gone.cancel()
            done.cancel()
        if gone not in finished:
            await send({"type": "websocket.close", "code": 1000})


def relay_address(msg: dict) -> tuple[str, int, str] | None:
    """(host, port, ticket) from a replica's slot accept message; None for any other message."""
    if msg.get("type") != "websocket.accept":
        return None
    value = dict(msg.get("headers") or []).get(RELAY_HEADER)
    if value is None:
        return None
    host, port, ticket = value.decode().rsplit(":", 2)
    return host, int(port), ticket


def _client_code(code) -> int:
    """A close code the proxy may send to the replica for its client's disconnect."""
    return code if isinstance(code, int) and 1000 <= code <= 4999 and code not in (1004, 1005, 1006, 1015) else 1000


async def relay(scope, receive, send, addr: tuple[str, int, str], slot: asyncio.Future) -> bool:
    """One session, the proxy's side: connect to the replica at addr (host, port, ticket) with the client's path,
    query and headers, accept the client once the replica's app has, and relay until either side closes; `slot`
    (the Ray request) ending first means the replica died. receive: the client's messages (its connect already
    taken). -> True when the replica went away without a close (the caller sends the client CLOSE_RESTART)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    host, port, ticket = addr
    path = scope.get("raw_path") or scope["path"].encode()
    qs = scope.get("query_string", b"")
    uri = f"ws://{host}:{port}{path.decode()}" + (f"?{qs.decode()}" if qs else "")
    skip = {b"host", b"connection", b"upgrade", b"sec-websocket-key", b"sec-websocket-version",
            b"sec-websocket-extensions", b"sec-websocket-protocol", RELAY_HEADER, TICKET_HEADER}
    headers = [(k.decode(), v.decode()) for k, v in scope.get("headers") or [] if k.lower() not in skip]
    host_h = dict(scope.get("headers") or []).get(b"host", b"")   # the app's origin check compares Origin with it
    try:
        ws = await connect(uri, additional_headers=headers + [(TICKET_HEADER.decode(), ticket),
                                                              (HOST_HEADER.decode(), host_h.decode())],
                           compression=None, max_size=None, ping_interval=None, open_timeout=10,
                           user_agent_header=None, proxy=None)
    except (OSError, InvalidStatus, asyncio.TimeoutError):   # the replica went between its slot and now
        await send({"type": "websocket.accept"})
        return True
    await send({"type": "websocket.accept"})

    async def up():   # client -> replica
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                await ws.close(_client_code(msg.get("code")))
                return
            if msg.get("bytes") is not None:
                await ws.send(msg["bytes"])
            elif msg.get("text") is not None:
                await ws.send(msg["text"])

    async def down():   # replica -> client; -> True when the replica vanished without a close frame
        try:
            while True:
                m = await ws.recv()
                await send({"type": "websocket.send", "bytes": m} if isinstance(m, bytes) else
                           {"type": "websocket.send", "text": m})
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return True
            await send({"type": "websocket.close", "code": exc.rcvd.code, "reason": exc.rcvd.reason})
            return False

    ups, downs = asyncio.ensure_future(up()), asyncio.ensure_future(down())
    try:
        done, _ = await asyncio.wait({ups, downs, slot}, return_when=asyncio.FIRST_COMPLETED)
        if downs in done:
            return downs.result()
        if ups in done:   # the client left (or its socket failed): nothing more to tell it
            ups.result()
            return False
        # the Ray request ended first: the session's close frame may still be on its way (a normal end), or the
        # replica died (its TCP connection then ends at once as well)
        await asyncio.wait({downs}, timeout=0.5)
        return downs.result() if downs.done() else True
    finally:
        for t in (ups, downs):
            t.cancel()
        try:
            await ws.close()
        except Exception:
            pass


async def send_restart(send) -> None:
    """The client's error message and CLOSE_RESTART: its replica died; it reconnects."""
    try:
        await send({"type": "websocket.send", "text": error_message(DIED)})
        await send({"type": "websocket.close", "code": CLOSE_RESTART, "reason": "replica restarted"})
    except Exception:   # the client went away meanwhile
        pass


__all__ = ["DirectServer", "SlotApp", "relay", "relay_address", "send_restart", "RELAY_HEADER"]
