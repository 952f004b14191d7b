"""`ServeConfig`: the options of `gt serve`, checked before anything loads."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from gt_runtime.errors import InputError

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeConfig:
    """Options of `gt serve`. bundles: [] = the bundled default identity (avatar "default")."""

    bundles: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8010
    max_sessions: int = 8
    token: str | None = None
    engine: str = "auto"
    raster: str = "auto"
    max_batch: int = 8              # frames per cross-session batch (1: every frame alone)
    max_message_bytes: int = 1 << 20   # one client message (binary PCM chunk or text)
    max_queued_s: float = 60.0      # audio received and not yet sent back as frames, per session
    allow_origins: list[str] = field(default_factory=list)  # extra Origin values besides the server's own
    jpeg_quality: int = 85
    replica: str | None = None      # name in the ready message (default: host:pid)
    log_level: str = "warning"
    ice_servers: list[str] = field(default_factory=list)  # WebRTC /offer: stun:HOST[:PORT], turn:USER:PASS@HOST[:PORT]

    def check(self) -> "ServeConfig":
        """Raise a one-line InputError for an unsafe or impossible setting; returns self."""
        if not is_loopback(self.host) and not self.token:
            raise InputError(f"--host {self.host}: serving beyond this machine needs a token | add --token SECRET "
                             "(clients then pass ?token=SECRET), or keep --host 127.0.0.1")
        if not 0 <= int(self.port) <= 65535:
            raise InputError(f"--port {self.port}: not a TCP port | use 1-65535 (0: any free port)")
        if self.max_sessions < 1:
            raise InputError(f"--max-sessions {self.max_sessions}: must be at least 1")
        if self.max_batch < 1:
            raise InputError(f"--max-batch {self.max_batch}: must be at least 1")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"--jpeg-quality {self.jpeg_quality}: must be 1-100")
        for url in self.ice_servers:
            parse_ice_server(url)
        for b in self.bundles:
            if not Path(b).is_dir():
                raise InputError(f"--bundle {b}: no such bundle directory | give a NAME.gtb written by gt export")
        return self


ICE_SCHEMES = ("stun", "turn", "turns")


def parse_ice_server(url: str) -> dict:
    """--ice-server URL -> {"urls", "username", "credential"} (aiortc's RTCIceServer fields).

    stun:HOST[:PORT] | turn:USER:PASS@HOST[:PORT][?transport=udp|tcp] | turns:USER:PASS@HOST[:PORT][?transport=tcp];
    USER and PASS may be %-escaped (a PASS with '@': %40).
    """
    from urllib.parse import unquote

    fix = "| use stun:HOST[:PORT] or turn:USER:PASS@HOST[:PORT] (docs/PROTOCOL.md, WebRTC)"
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ICE_SCHEMES:
        raise InputError(f"--ice-server {url}: not a stun:, turn: or turns: URL {fix}")
    cred, at, addr = rest.rpartition("@")
    where, _, query = addr.partition("?")
    host, _, port = where.partition(":")
    if not host or ":" in port or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise InputError(f"--ice-server {url}: bad HOST[:PORT] {fix}")
    if query and (scheme == "stun" or query not in ("transport=udp", "transport=tcp")
                  or (scheme == "turns" and query != "transport=tcp")):
        raise InputError(f"--ice-server {url}: ?{query} is not a transport this scheme takes {fix}")
    if scheme == "stun":
        if at:
            raise InputError(f"--ice-server {url}: a STUN server takes no credentials {fix}")
        return {"urls": url, "username": None, "credential": None}
    user, colon, password = cred.partition(":")
    if not (user and colon and password):
        raise InputError(f"--ice-server {url}: a TURN server needs USER:PASS@ {fix}")
    return {"urls": f"{scheme}:{where}{'?' + query if query else ''}", "username": unquote(user), "credential": unquote(password)}
