"""`gt serve --ray`: the same FastAPI app (gt_serve.app) as a Ray Serve deployment, replicated on many processes,
GPUs and machines. docs/DEPLOY.md says how a cluster is laid out; the protocol (docs/PROTOCOL.md) is unchanged.

- Each replica is one `GtAvatars` actor running `create_app` behind `@serve.ingress`; its avatars are opened on
  first use through Ray's model multiplexing (`ReplicaAvatars`: an LRU of `max_avatars` bundles per replica, by
  avatar name), so Ray routes a session to a replica that already holds its avatar.
- `max_ongoing_requests` = sessions per replica (a WebSocket is one request for its whole life); autoscaling
  targets `target_sessions` ongoing sessions per replica.
- `proxy_middlewares` (loaded into Ray's HTTP proxy through RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH) copies
  `?avatar=NAME` into the `serve_multiplexed_model_id` header (browsers cannot set WebSocket headers), and closes
  a session whose replica died with CLOSE_RESTART (1012) after an error message, so its client reconnects (Ray
  starts a replacement) instead of seeing the connection drop.
- A session's messages bypass Ray's calls (gt_serve.ray_relay): the Ray request only holds the session's slot and
  names the replica's own port, and the proxy relays the client's WebSocket to it over one plain WebSocket.

Ray is imported where used: `import gt_serve` and the plain `gt serve` never import it.
"""
from __future__ import annotations

import asyncio
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qs

from gt_runtime.errors import InputError, MissingDependencyError
from gt_serve.config import ServeConfig, is_loopback

APP_NAME = "gt"
DEPLOYMENT = "GtAvatars"
CALLBACK_ENV = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"   # Ray's knob: "module:function" -> proxy middlewares
CALLBACK = "gt_serve.ray_serve:proxy_middlewares"
MULTIPLEX_HEADER = b"serve_multiplexed_model_id"
ARG_KEYS = ("bundles", "max_sessions", "token", "engine", "raster", "max_batch", "max_message_bytes", "max_queued_s",
            "allow_origins", "jpeg_quality", "ice_servers")


@dataclass
class RayOptions:
    """Options of `gt serve --ray` beyond ServeConfig. replicas: a fixed count, or autoscale (min, max)."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    num_cpus: float = 1.0           # per replica (ray_actor_options)
    num_gpus: float = 0.0           # per replica; a fraction packs several replicas on one GPU
    address: str | None = None      # ray://HOST:PORT of an existing cluster (None: a local instance)
    max_avatars: int = 3            # bundles open per replica (the multiplexing LRU)
    target_sessions: float | None = None   # autoscaling target per replica (default: 3/4 of max_sessions)
    object_store_mb: int = 256      # local instance only
    relay: bool = True              # a session's messages over the replica's own port (gt_serve.ray_relay), not Ray calls

    def check(self) -> "RayOptions":
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if not 0 <= lo <= hi or hi < 1:
                raise InputError(f"--autoscale {lo}:{hi}: needs 0 <= MIN <= MAX and MAX >= 1 | e.g. --autoscale 1:4")
        elif self.replicas < 1:
            raise InputError(f"--replicas {self.replicas}: must be at least 1")
        if self.num_cpus < 0 or self.num_gpus < 0:
            raise InputError(f"--num-cpus {self.num_cpus} / --num-gpus {self.num_gpus}: must not be negative")
        if self.address and not self.address.startswith(("ray://", "auto")):
            raise InputError(f"--address {self.address}: expected ray://HOST:PORT (the head's client port, 10001) or auto")
        if self.max_avatars < 1:
            raise InputError(f"--max-avatars {self.max_avatars}: must be at least 1")
        return self

    @property
    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas


def bundle_paths(cfg: ServeConfig) -> dict[str, Path]:
    """{avatar name: bundle directory}: each bundle by its directory stem, or the bundled identity as "default"."""
    from gt_runtime.assets import default_bundle

    if not cfg.bundles:
        return {"default": default_bundle()}
    out = {}
    for b in cfg.bundles:
        p = Path(b).resolve()
        name = p.name.removesuffix(".gtb")
        if name in out:
            raise InputError(f"--bundle {b}: a second avatar named {name!r} | give bundles distinct directory names")
        out[name] = p
    return out


# -- a replica ---------------------------------------------------------------------------------------------------
class _Opened:
    """An avatar held by Ray's multiplexing LRU. Evicted (Ray calls `__del__`) -> closed once no session uses it."""

    def __init__(self, avatar):
        self.avatar = avatar
        self.uses = 0
        self.evicted = False
        self.closed = False

    def close_if_unused(self) -> None:
        if self.evicted and self.uses == 0 and not self.closed:
            self.closed = True
            self.avatar.close()

    def __del__(self):   # Ray's LRU calls this on eviction (in a thread); Python may call it again later: idempotent
        self.evicted = True
        self.close_if_unused()


class ReplicaAvatars:
    """A replica's avatars for create_app(pool=...): every configured name is known; a bundle opens on the first
    session that asks for it (`@serve.multiplexed`: at most max_avatars per replica, least recently used evicted)."""

    def __init__(self, cfg: ServeConfig, max_avatars: int):
        from ray import serve

        self.paths = bundle_paths(cfg)
        self.opened: dict = {}                # name -> Avatar the LRU holds (create_app's /healthz reads it)
        self._held: dict[int, _Opened] = {}   # id(avatar) -> its _Opened, while held or in use
        self._info: dict[str, dict] = {}

        async def open_avatar(name: str) -> _Opened:   # Ray's multiplexing wrapper calls it on a miss
            from gt_serve.avatar import Avatar

            av = await asyncio.to_thread(Avatar, name, self.paths[name], cfg.engine, cfg.raster, cfg.max_batch,
                                         cfg.jpeg_quality)
            av.idle.prewarm()   # idle frames of the whole track, rendered in the background
            self._info[name] = av.info()
            return _Opened(av)

        self._load = serve.multiplexed(max_num_models_per_replica=max_avatars)(open_avatar)

    def names(self) -> dict[str, Path]:
        return self.paths

    def info(self) -> list[dict]:
        """Every avatar: its full info once this replica has opened it, else its name."""
        return [self._info.get(n, {"name": n}) for n in self.paths]

    async def acquire(self, name: str):
        """The open Avatar of `name` (opened now on a miss); the session calls release(avatar) when it ends."""
        h = await self._load(name)
        h.uses += 1
        self._held[id(h.avatar)] = h
        self._sync()
        return h.avatar

    def release(self, avatar) -> None:
        h = self._held.get(id(avatar))
        if h is not None:
            h.uses -= 1
            h.close_if_unused()
        self._sync()

    def _sync(self) -> None:
        for k in [k for k, h in self._held.items() if h.closed]:
            del self._held[k]
        self.opened.clear()
        self.opened.update({h.avatar.name: h.avatar for h in self._held.values() if not h.evicted})

    async def preload(self, name: str) -> None:
        self.release(await self.acquire(name))


def config_from_args(args: dict) -> ServeConfig:
    """A replica's ServeConfig from the application args (the config file's `args`)."""
    unknown = set(args) - set(ARG_KEYS) - {"max_avatars", "preload", "relay"}
    if unknown:
        raise InputError(f"gt serve --ray args: unknown {', '.join(sorted(unknown))} | expected some of {', '.join(ARG_KEYS)}")
    cfg = ServeConfig(**{k: v for k, v in args.items() if k in ARG_KEYS})
    cfg.bundles = [Path(b) for b in cfg.bundles]
    cfg.host = "127.0.0.1"   # a replica binds nothing: Ray's proxy does (its address is checked by `gt serve --ray`)
    return cfg.check()


def _replica_app(args: dict):
    """The ASGI app of one replica (Ray calls it on the replica as it starts, on the replica's event loop)."""
    from ray import serve

    from gt_serve.app import create_app

    cfg = config_from_args(args)
    cfg.replica = serve.get_replica_context().replica_id.to_full_id_str()   # the ready message's "replica"
    pool = ReplicaAvatars(cfg, int(args.get("max_avatars", 3)))
    app = create_app(cfg, pool=pool)
    loop = asyncio.get_running_loop()
    if args.get("preload", True):   # the first avatar opens at start-up, so the first session does not wait for it
        loop.create_task(pool.preload(next(iter(pool.paths))))
    if not args.get("relay", True):
        return app
    import ray

    from gt_serve.ray_relay import DirectServer, SlotApp

    # the session's messages on this node's IP (every proxy of the cluster reaches it), not through Ray's calls
    direct = DirectServer(app, ray.util.get_node_ip_address(), max(16 << 20, 2 * cfg.max_message_bytes))
    loop.create_task(direct.serve())
    return SlotApp(app, direct)


def _deployment(args: dict, **options):
    """The bound GtAvatars deployment: `@serve.ingress` of the app each replica builds at start-up."""
    from ray import serve

    def asgi_app():   # Ray's ingress builder form: evaluated on the replica
        return _replica_app(args)

    @serve.deployment(name=DEPLOYMENT, graceful_shutdown_timeout_s=60, **options)
    @serve.ingress(asgi_app)
    class GtAvatars:
        """One replica: the gt serve app on this actor's avatars."""

    return GtAvatars.bind()


def build_app(args: dict):
    """Ray Serve application builder (the config file's import_path `gt_serve.ray_serve:build_app`; the file's
    `deployments` entry sets replicas, sessions and resources)."""
    return _deployment(args)


def deployment_options(cfg: ServeConfig, ro: RayOptions) -> dict:
    """Ray Serve deployment options: sessions per replica, replicas or autoscaling, CPUs/GPUs per replica."""
    opts = {"max_ongoing_requests": cfg.max_sessions,
            "ray_actor_options": {"num_cpus": ro.num_cpus, "num_gpus": ro.num_gpus}}
    if ro.autoscale:
        opts["autoscaling_config"] = {"min_replicas": ro.autoscale[0], "max_replicas": ro.autoscale[1],
                                      "target_ongoing_requests": ro.target_sessions or max(1.0, 0.75 * cfg.max_sessions)}
    else:
        opts["num_replicas"] = ro.replicas
    return opts


def app_args(cfg: ServeConfig, ro: RayOptions) -> dict:
    """The application args every replica rebuilds cfg from (bundle paths absolute: every node must see them)."""
    d = asdict(cfg)
    out = {k: d[k] for k in ARG_KEYS if k != "bundles"}
    out["bundles"] = [str(Path(b).resolve()) for b in cfg.bundles]
    out["max_avatars"] = ro.max_avatars
    if not ro.relay:
        out["relay"] = False
    return out


def write_config(path: Path, cfg: ServeConfig, ro: RayOptions) -> dict:
    """Write a `serve deploy`-able config file (YAML) -> the config as a dict."""
    import yaml

    conf = {"proxy_location": "EveryNode", "http_options": {"host": cfg.host, "port": cfg.port},
            "applications": [{"name": APP_NAME, "route_prefix": "/", "import_path": "gt_serve.ray_serve:build_app",
                              "args": app_args(cfg, ro), "deployments": [{"name": DEPLOYMENT, **deployment_options(cfg, ro)}]}]}
    Path(path).write_text(
        f"# gt serve --ray: `serve deploy {Path(path).name}` on a cluster whose nodes were started with\n"
        f"# {CALLBACK_ENV}={CALLBACK} (docs/DEPLOY.md); every node must see the bundle paths.\n"
        + yaml.safe_dump(conf, sort_keys=False))
    return conf


# -- Ray's HTTP proxy ----------------------------------------------------------------------------------------------
class CoalesceAudio:
    """The proxy's `receive` of one WebSocket, with consecutive small binary (audio) messages joined into one.

    Every message the replica receives costs a Ray actor call (the replica polls the proxy), about as much CPU as a
    frame's deformation here; a microphone sends 20 ms chunks, two per 40 ms frame. A binary message is held up to
    `hold_s` for the next one, and the two are passed on as one as soon as it comes: audio is a byte stream (PCM,
    whole samples: chunks of a multiple of 4 bytes only), so the replica sees the same samples in the same order,
    and a frame's audio ends on its second chunk, which is never held. Text and disconnect messages are never held
    and go after what is held; chunks over `max_bytes` pass alone (the app's size cap still sees them whole)."""

    def __init__(self, receive, hold_s: float = 0.03, max_bytes: int = 8192):
        self.receive = receive
        self.hold_s = hold_s
        self.max_bytes = max_bytes
        self._next = None     # the read-ahead receive() task, kept across calls (never cancelled: no message lost)

    def _joinable(self, msg: dict) -> bool:
        b = msg.get("bytes") if msg.get("type") == "websocket.receive" else None
        return b is not None and len(b) % 4 == 0 and len(b) <= self.max_bytes

    async def __call__(self) -> dict:
        msg = await self._take()
        if not self._joinable(msg):
            return msg
        if self._next is None:
            self._next = asyncio.ensure_future(self.receive())
        done, _ = await asyncio.wait({self._next}, timeout=self.hold_s)
        if done and self._joinable(self._next.result()) and \
                len(msg["bytes"]) + len(self._next.result()["bytes"]) <= self.max_bytes:
            nxt = await self._take()
            return {"type": "websocket.receive", "bytes": msg["bytes"] + nxt["bytes"]}
        return msg   # what came next (text, a disconnect, a big chunk) or nothing yet: the next call takes it

    def close(self) -> None:
        if self._next is not None:
            self._next.cancel()

    async def _take(self) -> dict:
        if self._next is None:
            return await self.receive()
        task, self._next = self._next, None
        return await task


class ProxyMiddleware:
    """ASGI middleware of Ray's proxy: ?avatar= -> the multiplexing header; the session relayed to the replica's
    own port when the replica answers its Ray request with a slot (gt_serve.ray_relay), else every message a Ray
    call; audio chunks joined in pairs (CoalesceAudio); CLOSE_RESTART (after an error message) when the replica's
    side of an accepted WebSocket ends without a close (the replica died)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "websocket":
            return await self.app(scope, receive, send)
        from gt_serve.ray_relay import RELAY_HEADER, relay, relay_address, send_restart

        headers = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != RELAY_HEADER]
        avatar = parse_qs(scope.get("query_string", b"").decode()).get("avatar", [None])[0]
        if avatar and not any(k.lower().replace(b"-", b"_") == MULTIPLEX_HEADER for k, _ in headers):
            headers.append((MULTIPLEX_HEADER, avatar.encode()))
        scope = {**scope, "headers": headers}
        state = {"accepted": False, "closed": False, "gone": False}
        coalesced = CoalesceAudio(receive)

        async def recv():
            msg = await coalesced()
            if msg["type"] == "websocket.disconnect":
                state["gone"] = True
            return msg

        async def snd(msg):
            if msg["type"] == "websocket.accept":
                state["accepted"] = True
            elif msg["type"] in ("websocket.close", "websocket.http.response.start"):
                state["closed"] = True
            await send(msg)

        # The Ray request (the session's slot): it sees the client's connect; what it sends first says whether the
        # replica relays (a slot: the messages then go over the replica's direct port, `relay`) or serves the
        # session through Ray's messages (passed on as they come).
        to_ray: asyncio.Queue = asyncio.Queue()
        to_ray.put_nowait(await recv())   # websocket.connect
        mode: asyncio.Future = asyncio.get_running_loop().create_future()

        async def ray_send(msg):
            if not mode.done():
                mode.set_result(relay_address(msg))
                if mode.result() is not None:
                    return
            if mode.result() is None:
                await snd(msg)   # relaying: the slot's own close is not the client's

        slot = asyncio.ensure_future(self.app({**scope, "headers": headers + [(RELAY_HEADER, b"1")]}, to_ray.get, ray_send))
        await asyncio.wait({mode, slot}, return_when=asyncio.FIRST_COMPLETED)
        if mode.done() and mode.result() is not None:
            try:
                if await relay(scope, recv, send, mode.result(), slot):
                    await send_restart(send)
            finally:
                coalesced.close()
                to_ray.put_nowait({"type": "websocket.disconnect", "code": 1000})   # gives the slot back
                await asyncio.wait({slot}, timeout=2.0)
                if not slot.done():
                    slot.cancel()
                elif not slot.cancelled():
                    slot.exception()   # retrieved: a dead replica's error is the 1012 already sent
            return

        async def pump():   # the client's messages to the Ray request
            while True:
                msg = await recv()
                await to_ray.put(msg)
                if msg["type"] == "websocket.disconnect":
                    return

        pumping = asyncio.ensure_future(pump())
        try:
            await slot
        finally:
            pumping.cancel()
            coalesced.close()
            if state["accepted"] and not state["closed"] and not state["gone"]:
                await send_restart(send)


def proxy_middlewares() -> list:
    """Ray's proxy callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=gt_serve.ray_serve:proxy_middlewares)."""
    from starlette.middleware import Middleware

    return [Middleware(ProxyMiddleware)]


# -- gt serve --ray --------------------------------------------------------------------------------------------
# Ray's idle pollers, slowed down on a local instance (measured on 2 cores: 8 % of a core idle -> 5 %): the Serve
# controller's loop (0.1 s: replica health, autoscaling, replacing a dead replica; 1 s is soon enough), Ray's
# metrics (exported to a dashboard agent that no dashboard reads) and Serve's metrics flush (0.1 s). Ray reads
# them from the environment of every process it starts; a value already set wins.
LOCAL_RAY_ENV = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1", "RAY_enable_metrics_collection": "0",
                 "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000"}


def start_local_ray(ro: RayOptions) -> None:
    """A local Ray instance bounded to this run: max replicas x num_cpus CPUs, no dashboard, no metrics, on 127.0.0.1."""
    import ray

    os.environ[CALLBACK_ENV] = CALLBACK   # inherited by the proxy actor's process
    for k, v in LOCAL_RAY_ENV.items():
        os.environ.setdefault(k, v)
    ray.init(num_cpus=max(1, math.ceil(ro.max_replicas * ro.num_cpus)), num_gpus=math.ceil(ro.max_replicas * ro.num_gpus),
             include_dashboard=False, _node_ip_address="127.0.0.1", object_store_memory=ro.object_store_mb << 20,
             log_to_driver=False, logging_level="warning")


def deploy(cfg: ServeConfig, ro: RayOptions):
    """Start Serve's proxies on cfg.host:cfg.port (one per node on a cluster, one locally) and run the app (Ray
    initialised) -> its DeploymentHandle."""
    from ray import serve

    serve.start(http_options={"host": cfg.host, "port": cfg.port}, proxy_location="EveryNode" if ro.address else "HeadOnly")
    return serve.run(_deployment(app_args(cfg, ro), **deployment_options(cfg, ro)), name=APP_NAME, route_prefix="/")


def check(cfg: ServeConfig, ro: RayOptions) -> None:
    """The plain server's rules (a token beyond loopback) for Ray's proxy address, and the Ray options."""
    if not is_loopback(cfg.host) and not cfg.token:
        raise InputError(f"--host {cfg.host}: serving beyond this machine needs a token | add --token SECRET "
                         "(clients then pass ?token=SECRET), or keep --host 127.0.0.1")
    ro.check()
    ServeConfig(**{**asdict(cfg), "host": "127.0.0.1"}).check()


def serve_ray(cfg: ServeConfig, ro: RayOptions, write: Path | None = None) -> None:
    """`gt serve --ray`: write the config file, or run on a local instance / an existing cluster until interrupted."""
    check(cfg, ro)
    if write is not None:
        write_config(write, cfg, ro)
        print(f"wrote {write}: deploy it with `serve deploy {write}` (docs/DEPLOY.md)", flush=True)
        return
    try:
        import ray
        from ray import serve
    except ImportError as exc:
        raise MissingDependencyError(f"gt serve --ray: ray[serve] does not import ({exc}) | pip install 'gt[ray]'") from None

    if ro.address:
        ray.init(address=ro.address, logging_level="warning")
    else:
        start_local_ray(ro)
    try:
        deploy(cfg, ro)
        reps = f"{ro.autoscale[0]}-{ro.autoscale[1]} replicas (autoscaling)" if ro.autoscale else f"{ro.replicas} replicas"
        print(f"gt serve --ray: avatars {', '.join(bundle_paths(cfg))} on http://{cfg.host}:{cfg.port}/ ({reps}, "
              f"{cfg.max_sessions} sessions each, {ro.num_cpus:g} CPU / {ro.num_gpus:g} GPU per replica)", flush=True)
        import time

        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    """"MIN:MAX" -> (MIN, MAX); None -> None."""
    if text is None:
        return None
    try:
        lo, hi = (int(x) for x in text.split(":"))
    except ValueError:
        raise InputError(f"--autoscale {text}: expected MIN:MAX replicas, e.g. 1:4") from None
    return lo, hi


__all__ = ["CoalesceAudio", "RayOptions", "ReplicaAvatars", "ProxyMiddleware", "build_app", "deploy", "parse_autoscale", "proxy_middlewares",
           "serve_ray", "write_config"]
