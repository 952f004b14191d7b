"""`gt`: each subcommand parses its options into a config dataclass and calls one library function.

Heavy modules are imported inside the commands, so `gt --help` imports neither
torch nor cupy. Exit codes: 0 success, 2 bad input (one-line message), 1 internal error.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from gt_runtime.contract import DEBUG, QUIET

app = typer.Typer(
    name="gt",
    help="GaussianTalker toolkit: build, export and play real-time audio-driven 3D Gaussian talking heads.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
sample_app = typer.Typer(help="Sample data: a synthetic identity with exact ground truth, and previews.", no_args_is_help=True)
app.add_typer(sample_app, name="sample")


@sample_app.command("synthetic", epilog="Example: gt sample synthetic -o data/synth --seconds 20 --size 256")
def sample_synthetic(
    out: Path = typer.Option(..., "-o", "--out", help="Directory to create (must not exist or be empty)."),
    seconds: float = typer.Option(20.0, help="Clip length in seconds (the speech loops if shorter)."),
    size: int = typer.Option(256, help="Square frame size in pixels."),
    seed: int = typer.Option(0, help="Random seed: same seed, same bytes."),
    speech: Optional[Path] = typer.Option(None, help="Speech file that drives the mouth (default: the bundled training clip)."),
):
    """Render a synthetic talking identity in the dataset format of `gt train`."""
    from gt_train.data.synthetic import SyntheticConfig, make_synthetic_identity

    path = make_synthetic_identity(SyntheticConfig(out_dir=out, seconds=seconds, size=size, seed=seed, speech=speech))
    typer.echo(f"wrote {path}")


@sample_app.command("preview", epilog="Example: gt sample preview data/synth -o out/demo.mp4 --sheet out/demo.png")
def sample_preview(
    dataset: Path = typer.Argument(..., help="Identity dataset directory."),
    out: Path = typer.Option(Path("out/preview.mp4"), "-o", "--out", help="mp4 to write (H.264 + AAC)."),
    sheet: Optional[Path] = typer.Option(None, help="Contact sheet PNG (default: next to the mp4)."),
    landmarks: bool = typer.Option(False, help="Draw the 68 landmarks."),
):
    """Write an mp4 with sound and a contact sheet of an identity dataset."""
    from gt_train.data.preview import PreviewConfig, write_preview

    mp4, png = write_preview(PreviewConfig(dataset=dataset, out=out, sheet=sheet, landmarks=landmarks))
    typer.echo(f"wrote {mp4} and {png}")


@app.command("train", epilog="Example: gt train data/may -o runs/may --preset cpu-small   (continue later with --resume)")
def train_cmd(
    data: Path = typer.Argument(..., help="Identity dataset directory (from `gt preprocess` or `gt sample synthetic`)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run directory: checkpoints/, config.json, val/, curves.png, metrics.json."),
    preset: str = typer.Option("auto", help="auto (paper on a CUDA GPU, cpu-small otherwise), paper (512², 50k Gaussians, 8k + 8k it), cpu-small (256², 20k) or test-tiny (64², 3k)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in RUN (same settings)."),
    iterations_canonical: Optional[int] = typer.Option(None, help="Canonical-stage iterations (schedules scale with it)."),
    iterations_deform: Optional[int] = typer.Option(None, help="Deformation-stage iterations."),
    seed: int = typer.Option(0, help="Random seed: same seed, same run (on CPU)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda (cuda needs gsplat)."),
    threads: int = typer.Option(1, help="CPU threads of torch and the C++ rasterizer. 1 is bit-reproducible; more threads change the backward's summation order."),
):
    """Train a GaussianTalker on an identity: canonical stage, then deformation stage."""
    from gt_runtime.errors import require

    require("torch", "gt train")
    from gt_train.config import TrainConfig, resolve_preset
    from gt_train.trainer import train

    name, why = resolve_preset(preset, device, out if resume else None)
    if why and not QUIET.on():
        typer.echo(f"gt train: preset {name} ({why}; choose with --preset)", err=True)
    over = {k: v for k, v in (("iterations_canonical", iterations_canonical), ("iterations_deform", iterations_deform)) if v is not None}
    cfg = TrainConfig.from_preset(name, data=data, out=out, resume=resume, seed=seed, device=device, threads=threads, **over)
    typer.echo(f"wrote {train(cfg)}")


@app.command("play", epilog="Examples: gt play speech.wav --fps (the bundled identity) | gt play speech.wav --bundle may.gtb -o out.mp4 --fps | gt play speech.wav --bundle may.gtb -o frames/ | gt play speech.wav --bundle may.gtb -o - | ffplay -f rawvideo -pixel_format rgb24 -video_size 512x512 -framerate 25 -")
def play_cmd(
    speech: Path = typer.Argument(..., help="Speech file (wav, flac, ...; any rate, mono or stereo)."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Bundle directory (*.gtb) written by gt export (default: the bundled synthetic identity, 128 px)."),
    out: str = typer.Option("out.mp4", "-o", "--out", help="*.mp4 (H.264 + AAC), a directory (PNG frames), or '-' (raw RGB24 on stdout)."),
    engine: str = typer.Option("auto", help="auto | tensorrt | onnxruntime-cuda | array-cupy | onnxruntime[-int8|-fp32|-fp16] | cpu-fused[-int8|-fp32] | array."),
    raster: str = typer.Option("auto", help="auto | cuda | cpu | reference."),
    fps: bool = typer.Option(False, "--fps", help="Report model FPS (engine + raster) and delivered FPS (everything)."),
    batch: int = typer.Option(1, help="Frames per batch (GPU throughput; adds batch-1 frames of latency)."),
    sheet: Optional[Path] = typer.Option(None, help="Also write a contact sheet PNG of 8 evenly spaced frames."),
):
    """Play a speech with a bundle: audio -> talking-head frames at 25 fps, muxed with the speech."""
    from gt_runtime.apps.play import PlayConfig, play

    res = play(PlayConfig(speech=speech, bundle=bundle, out=out, engine=engine, raster=raster, fps=fps, batch=batch, sheet=sheet))
    typer.echo(f"wrote {res.out}: {res.frames} frames ({res.video_s:.2f} s video, {res.audio_s:.2f} s audio)",
               err=(out == "-"))


@app.command("serve", epilog="Examples: gt serve (the bundled identity on http://127.0.0.1:8010/) | gt serve -b may.gtb -b tom.gtb --max-sessions 8"
             " | gt serve -b may.gtb --host 0.0.0.0 --token SECRET   (protocol: docs/PROTOCOL.md)"
             " | gt serve --ray --replicas 2 | gt serve --ray --autoscale 1:8 --num-gpus 0.25 --write-config gt.yaml   (docs/DEPLOY.md)")
def serve_cmd(
    ctx: typer.Context,
    bundle: Optional[list[Path]] = typer.Option(None, "--bundle", "-b", help="Bundle directory (*.gtb); repeat for several avatars, named by directory (default: the bundled identity, 'default')."),
    host: str = typer.Option("127.0.0.1", help="Address to bind. Any non-loopback address needs --token."),
    port: int = typer.Option(8010, help="TCP port."),
    max_sessions: int = typer.Option(8, help="Concurrent sessions; one more is refused with 'server full' (close 1013)."),
    token: Optional[str] = typer.Option(None, help="Clients must pass ?token=T (the page: open /?token=T)."),
    engine: str = typer.Option("auto", help="Engine (see gt play)."),
    raster: str = typer.Option("auto", help="auto | cuda | cpu | reference."),
    max_batch: int = typer.Option(8, help="Frames of concurrent sessions rendered as one batch (1: no batching)."),
    allow_origin: Optional[list[str]] = typer.Option(None, help="Another page Origin allowed to connect (default: only this server's own)."),
    ice_server: Optional[list[str]] = typer.Option(None, metavar="URL", help="WebRTC (POST /offer): a STUN or TURN server, stun:HOST[:PORT] or "
                                                   "turn:USER:PASS@HOST[:PORT]; repeat for both (default: none, host candidates only; docs/PROTOCOL.md)."),
    ray: bool = typer.Option(False, "--ray", help="Run as a Ray Serve deployment (replicas, autoscaling, clusters; docs/DEPLOY.md). "
                             "--max-sessions is then per replica."),
    replicas: int = typer.Option(1, help="--ray: replicas (processes, each with its own avatars)."),
    autoscale: Optional[str] = typer.Option(None, metavar="MIN:MAX", help="--ray: autoscale between MIN and MAX replicas on ongoing sessions."),
    num_cpus: float = typer.Option(1.0, help="--ray: CPUs per replica."),
    num_gpus: float = typer.Option(0.0, help="--ray: GPUs per replica (0.25: four replicas share a GPU)."),
    address: Optional[str] = typer.Option(None, help="--ray: an existing cluster, ray://HOST:10001 (default: a local Ray instance on 127.0.0.1)."),
    max_avatars: int = typer.Option(3, help="--ray: bundles kept open per replica (least recently used closed first)."),
    write_config: Optional[Path] = typer.Option(None, help="--ray: write a `serve deploy` config file (YAML) and exit."),
):
    """Serve live avatars: a web page at / and a WebSocket protocol at /v1/stream (audio in, frames + audio out)."""
    from gt_serve.config import ServeConfig

    cfg = ServeConfig(bundles=list(bundle or []), host=host, port=port, max_sessions=max_sessions, token=token, engine=engine,
                      raster=raster, max_batch=max_batch, allow_origins=list(allow_origin or []), ice_servers=list(ice_server or []))
    if not ray:
        # Options of the Ray deployment would be silently ignored by the plain server: refuse them.
        from gt_runtime.errors import InputError

        for name in ("replicas", "autoscale", "num_cpus", "num_gpus", "address", "max_avatars", "write_config"):
            source = ctx.get_parameter_source(name)   # (typer may carry its own click: compare the name)
            if source is not None and source.name != "DEFAULT":
                opt = "--" + name.replace("_", "-")
                raise InputError(f"{opt}: the option needs --ray | add --ray (Ray Serve, docs/DEPLOY.md), or drop {opt}")
    if ray:
        from gt_serve.ray_serve import RayOptions, parse_autoscale, serve_ray

        serve_ray(cfg, RayOptions(replicas=replicas, autoscale=parse_autoscale(autoscale), num_cpus=num_cpus, num_gpus=num_gpus,
                                  address=address, max_avatars=max_avatars), write_config)
        return
    from gt_serve.app import serve

    serve(cfg)


@app.command("export", epilog="Examples: gt export runs/may --fp16 -o may.gtb | gt export runs/may --fp16 --int8 -o may-cpu.gtb --no-trt")
def export_cmd(
    run: Path = typer.Argument(..., help="Run directory of gt train (checkpoints/, config.json)."),
    out: Path = typer.Option(..., "-o", "--out", help="Bundle directory to write (NAME.gtb); written atomically."),
    fp16: bool = typer.Option(False, "--fp16", help="Also write deform.fp16.onnx (mixed precision; fails if render PSNR vs torch < 40 dB)."),
    int8: bool = typer.Option(False, "--int8", help="Also write deform.int8.onnx (ONNX Runtime dynamic INT8, CPU) if render PSNR vs torch >= 38 dB."),
    dataset: Optional[Path] = typer.Option(None, help="Identity dataset for the scene and parity frames (default: the one in RUN/config.json)."),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint file to export (default: the run's latest)."),
    trt: Optional[bool] = typer.Option(None, "--trt/--no-trt", help="Build a TensorRT engine (default: when tensorrt imports and a GPU is present)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing bundle at -o."),
    track_frames: Optional[int] = typer.Option(None, "--track-frames", help="Keep only the first N frames of the camera/blink/torso track (it is played ping-pong): a smaller bundle."),
):
    """Export a trained run to a bundle: frozen Gaussians, ONNX graphs (+ TensorRT engine on a GPU), parity table."""
    from gt_export import ExportConfig, export

    path = export(ExportConfig(run=run, out=out, fp16=fp16, int8=int8, dataset=dataset, checkpoint=checkpoint,
                               trt=trt, overwrite=overwrite, track_frames=track_frames))
    typer.echo(f"wrote {path}")


@app.command("preprocess", epilog="Examples: gt preprocess talk.mp4 -o data/may | gt preprocess talk.mov -o data/may --size 256 --detector dlib"
             " | gt preprocess talk.mp4 -o data/may --audio-model ~/models/hubert-base-ls960")
def preprocess_cmd(
    video: Path = typer.Argument(..., help="Video of one person talking to a fixed camera (any container; a few minutes)."),
    out: Path = typer.Option(..., "-o", "--out", help="Dataset directory to create (must not exist or be empty)."),
    size: int = typer.Option(512, help="Square working resolution in pixels."),
    fps: int = typer.Option(25, help="Output frame rate (the dataset format needs 25)."),
    detector: str = typer.Option("auto", help="Landmark detector: auto | dlib | mediapipe."),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="Write preview.mp4 (landmarks and head axes)."),
    audio_model: Optional[Path] = typer.Option(None, "--audio-model", help="Local transformers HubertModel / Wav2Vec2Model checkpoint directory (config.json + weights; never downloaded): hubert / wav2vec2 features at 50 Hz instead of mel. Adds block + right context to the playback lookahead."),
    audio_layer: Optional[int] = typer.Option(None, "--audio-layer", help="With --audio-model: hidden_states[K] (0 = encoder input) instead of the last hidden state."),
    audio_block_ms: float = typer.Option(1000.0, "--audio-block-ms", help="With --audio-model: block core per model call (whole 40 ms frames)."),
    audio_left_ms: float = typer.Option(500.0, "--audio-left-ms", help="With --audio-model: left context of a block."),
    audio_right_ms: float = typer.Option(200.0, "--audio-right-ms", help="With --audio-model: right context of a block (lookahead)."),
):
    """Turn a talking-head video into an identity dataset: frames, audio features, poses, blink, background, torso."""
    from gt_train.preprocess import PreprocessConfig, preprocess

    path = preprocess(PreprocessConfig(video=video, out_dir=out, size=size, fps=fps, detector=detector, preview=preview,
                                       audio_model=audio_model, audio_layer=audio_layer, audio_block_ms=audio_block_ms,
                                       audio_left_ms=audio_left_ms, audio_right_ms=audio_right_ms))
    typer.echo(f"wrote {path}")


@app.command("profile", epilog="Examples: gt profile --bundle may.gtb | gt profile --bundle may.gtb --batch 1,8,32 --frames 100 --json prof.json --png prof.png")
def profile_cmd(
    bundle: Optional[Path] = typer.Option(None, "--bundle", "-b", help="Bundle directory (*.gtb) written by gt export (default: the bundled identity)."),
    engine: str = typer.Option("auto", help="auto | tensorrt | onnxruntime-cuda | array-cupy | onnxruntime[-int8|-fp32|-fp16] | cpu-fused[-int8|-fp32] | array."),
    raster: str = typer.Option("auto", help="auto | cuda | cpu | reference."),
    batch: str = typer.Option("1,8", help="Batch sizes, comma separated: 1 = latency, larger = throughput."),
    frames: int = typer.Option(50, help="Timed frames per batch size (after the warm-up)."),
    warmup: int = typer.Option(3, help="Warm-up iterations excluded from the statistics."),
    speech: Optional[Path] = typer.Option(None, help="Speech to drive the profile (default: a bundled clip)."),
    encode: str = typer.Option("mp4", help="mp4 (H.264, the encode stage) or none."),
    threads: Optional[int] = typer.Option(None, help="Engine CPU threads (default: all usable cores)."),
    overlapped: bool = typer.Option(True, "--overlapped/--no-overlapped", help="Also measure delivered FPS as gt play may run the stages: overlapped and in lanes (CPU)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the report as JSON (schema: gt_runtime.apps.profile)."),
    png: Optional[Path] = typer.Option(None, "--png", help="Write a stacked-bar PNG of the stage times."),
):
    """Per-stage latency (audio front end, audio encoder, deform, raster, composite, encode): p50/p90/p99 and FPS."""
    from gt_runtime.apps.profile import ProfileConfig, profile

    profile(ProfileConfig(bundle=bundle, engine=engine, raster=raster, batch=batch, frames=frames, warmup=warmup,
                          speech=speech, encode=encode, threads=threads, overlapped=overlapped, json=json_out, png=png))


@app.command("eval", epilog="Examples: gt eval runs/may data/may --json eval.json | gt eval may.gtb data/may --cross speech.wav | gt eval runs/may data/may --lpips-weights alex.pth")
def eval_cmd(
    model: Path = typer.Argument(..., help="A run directory of gt train, or a bundle (*.gtb) of gt export."),
    data: Path = typer.Argument(..., help="Identity dataset directory (its val split is evaluated)."),
    cross: Optional[Path] = typer.Option(None, "--cross", help="Foreign speech: also evaluate cross-driven lip sync (sync proxy only)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the metrics as JSON."),
    lpips_weights: Optional[Path] = typer.Option(None, help="Local LPIPS(alex) state dict; LPIPS is skipped without it."),
    lmd: bool = typer.Option(True, "--lmd/--no-lmd", help="Mouth landmark distance (needs the preprocess landmark detector)."),
    max_offset: int = typer.Option(5, help="Largest A/V offset (frames) searched by the lip-sync proxy."),
    engine: str = typer.Option("auto", help="Bundle engine (see gt play)."),
):
    """Evaluate on the val split: PSNR, SSIM, LPIPS, LMD, lip-sync proxy (and cross-driven sync)."""
    from gt_train.eval import EvalConfig, evaluate

    evaluate(EvalConfig(model=model, data=data, cross=cross, json=json_out, lpips_weights=lpips_weights, lmd=lmd,
                        max_offset=max_offset, engine=engine))


@app.command("viz", epilog="Example: gt viz runs/may -o out/viz   (attention maps, triplane PCA, GT | render mp4)")
def viz_cmd(
    run: Path = typer.Argument(..., help="Run directory of gt train."),
    out: Path = typer.Option(..., "-o", "--out", help="Output directory."),
    data: Optional[Path] = typer.Option(None, "--data", help="Identity dataset (default: the one in RUN/config.json)."),
    frame: Optional[int] = typer.Option(None, help="Frame of the attention maps (default: the loudest val frame)."),
    video: bool = typer.Option(True, "--video/--no-video", help="Write the side-by-side GT | render mp4 of the val frames."),
):
    """Attention maps (audio / eye / view / null), triplane PCA images and a GT | render video of the val frames."""
    from gt_train.viz import VizConfig, visualize

    res = visualize(VizConfig(run=run, out=out, data=data, frame=frame, video=video))
    typer.echo(f"wrote {len(res['files'])} files in {out}")


def _command(argv: list[str] | None) -> str:
    """The subcommand as typed, for messages: ['sample', 'synthetic', '-o', 'x'] -> 'gt sample synthetic'."""
    words = []
    for a in (sys.argv[1:] if argv is None else argv):
        if a.startswith("-") or len(words) == (2 if words[:1] == ["sample"] else 1):
            break
        words.append(a)
    return " ".join(["gt", *words])


def main(argv: list[str] | None = None) -> None:
    """Entry point: InputError becomes one line on stderr and exit code 2; usage errors exit 2 (click).

    A missing optional package is an InputError too: `require` raises it at the import, and a
    module-level import of a known optional package (torch in gt_train) is turned into the same line.
    """
    from gt_runtime.errors import InputError, MissingDependencyError, from_import_error

    try:
        app(args=argv)  # standalone: click prints usage errors itself and exits 2
    except MissingDependencyError as exc:
        print(f"gt: {exc}", file=sys.stderr)
        sys.exit(2)
    except InputError as exc:
        print(f"gt: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        dep = from_import_error(exc, _command(argv)) if isinstance(exc, ImportError) else None
        if dep is not None:
            print(f"gt: {dep}", file=sys.stderr)
            sys.exit(2)
        if DEBUG.on():
            raise
        print(f"gt: internal error: {type(exc).__name__}: {exc} (set GT_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
