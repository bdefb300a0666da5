"""`fmanetpp bench`: time per output frame, peak memory and the decode / model / encode split here."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fmanetpp_cli.cli._console import err, out


def bench_command(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="A model name, a weights file or a Hub repository id; a preset name with no weights file "
            "runs with random weights (same cost). Default: the bundled model.",
            show_default=False,
        ),
    ] = None,
    size: Annotated[str, typer.Option("--size", help="Input frame size, WIDTHxHEIGHT.")] = "320x180",
    frames: Annotated[int, typer.Option("--frames", help="Frames in the synthetic clip.", min=1)] = 25,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="Torch CPU threads. Default: the fastest measured by a short probe.",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="fp32, bf16, or fp16 (CUDA only).")] = "fp32",
    tile: Annotated[str, typer.Option("--tile", help="auto, off, or a tile side in pixels.")] = "auto",
    io_threads: Annotated[
        bool,
        typer.Option(
            "--io-threads/--no-io-threads", help="Decode and encode on background threads.", metavar=""
        ),
    ] = True,
    offline: Annotated[bool, typer.Option("--offline", help="Never download weights.", metavar="")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.", metavar="")] = False,
) -> None:
    """Restore a synthetic clip end to end and report how long each part takes on this machine.

    The clip (moving stripes and noise, H.264) is restored as `fmanetpp restore` would, decoding and
    encoding on background threads; the split comes from that run. Times are per output frame, start-up
    in seconds; memory is the process's peak.
    """
    import time

    from fmanetpp_cli.bench import parse_size, process_age, run_bench
    from fmanetpp_cli.cli.restore import parse_tile
    from fmanetpp_cli.pipeline import RestoreOptions
    from fmanetpp_cli.runtime import set_threads, tune_allocator

    imported = process_age()  # before the thread probe
    width, height = parse_size(size)
    tune_allocator()
    choice = set_threads(threads)
    options = RestoreOptions(device=device, precision=precision, tile=parse_tile(tile), io_threads=io_threads)
    loading = time.perf_counter()
    network, name = _load(model, offline)
    loaded = time.perf_counter() - loading
    report = run_bench(
        network, name, width=width, height=height, frames=frames, options=options,
        import_seconds=imported, load_seconds=loaded,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps({**report.to_dict(), "thread_choice": choice.to_dict()}, indent=2))
        return
    probe = ", ".join(f"{n}: {s * 1e3:.1f} ms" for n, s in choice.probe_seconds.items())
    out.print(f"{name} on {width}x{height}, {report.frames} frames, {report.device} {report.precision}")
    out.print(f"  threads       {report.threads}" + (f" (probe: {probe})" if probe else ""))
    started = "" if report.import_seconds is None else f"imports {report.import_seconds:.2f} s, "
    out.print(
        f"  start-up      {started}weights {report.load_seconds:.2f} s, "
        f"first frame {report.startup_seconds:.2f} s"
    )
    where = "background threads" if report.io_threads else "in the model's thread"
    out.print(f"  per frame     {report.seconds_per_frame:.3f} s end to end (decode and encode {where})")
    for part in ("model", "decode", "encode", "wait", "other"):
        value = getattr(report, f"{part}_seconds_per_frame")
        out.print(f"    {part:<10}  {value:.3f} s")
    out.print(f"  overhead      {report.overhead:.1%} of the model time, after start-up")
    out.print(f"  peak memory   {report.peak_rss_mib:,.0f} MiB (process)")
    out.print(f"  machine       {report.machine}", highlight=False)


def _load(model: str | None, offline: bool):  # type: ignore[no-untyped-def]
    """The network and its display name: a weights file when one resolves, else a preset."""
    from fmanetpp_cli.checkpoints import load_model
    from fmanetpp_cli.checkpoints.resolve import resolve_weights
    from fmanetpp_cli.errors import WeightsNotFoundError
    from fmanetpp_cli.models import create_model, list_models

    try:
        path = resolve_weights(model, offline=offline or None)
    except WeightsNotFoundError:
        if model is None or model not in list_models():
            raise
        err.print(f"{model}: no weights file here; timing the preset with random weights")
        return create_model(model).eval(), model
    return load_model(path, device="cpu"), model or path.stem


def register(app: typer.Typer) -> None:
    """Add ``bench`` to the application."""
    app.command("bench")(bench_command)
