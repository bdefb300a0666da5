"""`fmanetpp train CONFIG`: run the FMA-Net++ training stages of a TOML config (``--resume`` to continue).

Several GPUs: ``torchrun --nproc_per_node=N -m fmanetpp_cli train CONFIG`` (one process per GPU).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import TaskID, TextColumn

from fmanetpp_cli.cli._console import out, progress_bars
from fmanetpp_cli.train import StepInfo, load_config, train


def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (TOML).", show_default=False)],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from OUT_DIR/checkpoint.pt.", metavar="")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Override the config's out_dir.", show_default=False)
    ] = None,
    device: Annotated[str | None, typer.Option(help="Override the device (auto, cpu, cuda, ...).")] = None,
    max_minutes: Annotated[
        float | None, typer.Option(help="Override the wall-time cap (0 = none).", show_default=False)
    ] = None,
) -> None:
    """Train FMA-Net++: ETE pre-training, then Net_D, then Net_D + Net_R jointly."""
    from fmanetpp_cli.runtime import tune_allocator

    tune_allocator()
    cfg = load_config(config)
    changes: dict[str, Any] = {}
    if out_dir is not None:
        changes["out_dir"] = str(out_dir.resolve())
    if device is not None:
        changes["device"] = device
    if max_minutes is not None:
        changes["max_minutes"] = max_minutes
    cfg = dataclasses.replace(cfg, **changes)
    tasks: dict[str, TaskID] = {}
    bars = progress_bars(
        TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
        label="{task.description}", eta=TextColumn("ETA {task.fields[eta]}"),
    )  # fmt: skip
    with bars as progress:

        def on_step(info: StepInfo) -> None:
            if info.stage not in tasks:
                tasks[info.stage] = progress.add_task(info.stage, total=info.total, info="", eta="?")
            text = f"loss {info.loss:.4f}"
            if info.psnr is not None:
                text += f"  psnr {info.psnr:.2f}"
            if info.val:
                text += "  val " + " ".join(f"{k} {v:.3f}" for k, v in info.val.items())
            minutes, seconds = divmod(int(info.eta), 60)
            progress.update(tasks[info.stage], completed=info.step, info=text, eta=f"{minutes}:{seconds:02d}")

        result = train(cfg, resume=resume, on_step=on_step)
    note = " (stopped at the wall-time cap)" if result.stopped_early else ""
    out.print(f"steps {result.steps}{note}", highlight=False)
    out.print(
        f"weights: {result.weights}\ncheckpoint: {result.checkpoint}\nlog: {result.out_dir / 'train.log'}"
    )


def register(app: typer.Typer) -> None:
    """Add the ``train`` command."""
    app.command("train")(train_command)
