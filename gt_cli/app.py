"""`gt`: each subcommand parses its options into a config dataclass and calls one library function.

Heavy modules are imported inside the commands, so `gt --help` imports neither
torch nor cupy. Exit codes: 0 success, 2 bad input (one-line message), 1 internal error.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

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


def main(argv: list[str] | None = None) -> None:
    """Entry point: InputError becomes one line on stderr and exit code 2; usage errors exit 2 (click)."""
    from gt_runtime.errors import InputError

    try:
        app(args=argv)  # standalone: click prints usage errors itself and exits 2
    except InputError as exc:
        print(f"gt: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if os.environ.get("GT_DEBUG"):
            raise
        print(f"gt: internal error: {type(exc).__name__}: {exc} (set GT_DEBUG=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
