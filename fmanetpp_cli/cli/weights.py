"""`fmanetpp weights ...`: import official FMA-Net checkpoints and describe weights files.

The sub-app ``weights_app`` is public so other command modules can add sub-commands to it
(e.g. ``weights push``) with ``@weights_app.command(...)`` before ``register`` runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fmanetpp_cli.checkpoints import ImportResult, WeightsInfo, import_official, read_weights_info
from fmanetpp_cli.cli._console import out
from fmanetpp_cli.cli.options import JsonOpt, OverwriteOpt

weights_app = typer.Typer(
    name="weights",
    help="Import official FMA-Net checkpoints and inspect weights files.",
    no_args_is_help=True,
)


@weights_app.command("import")
def import_command(
    src: Annotated[
        Path,
        typer.Argument(
            help="The released FMA-Net zip, or a folder holding model_D_best.pt and model_R_best.pt "
            "at any depth.",
            show_default=False,
        ),
    ],
    output: Annotated[Path, typer.Argument(help="The .safetensors file to write.", show_default=False)],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="The official experiment.cfg (INI) or a JSON of its network fields. "
            "Default: the released full-size configuration.",
            show_default=False,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Convert the official FMA-Net checkpoints into one safetensors weights file."""
    result = import_official(src, output, config=config, overwrite=overwrite)
    _render_import(result)


def _render_import(result: ImportResult) -> None:
    out.print(
        f"wrote {result.output} (fmanet, {result.num_params:,} parameters, "
        f"channel order {result.channel_order})",
        highlight=False,
        soft_wrap=True,
    )
    for name, digest in result.sources.items():
        out.print(f"  source {name}  sha256 {digest}", highlight=False, soft_wrap=True)


@weights_app.command("info")
def info_command(
    file: Annotated[Path, typer.Argument(help="A .safetensors weights file.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Describe a weights file: architecture, config, channel order, parameter count, sources."""
    info = read_weights_info(file)
    if as_json:
        typer.echo(json.dumps(_info_dict(info), indent=2, sort_keys=True))
    else:
        _render_info(info)


def _info_dict(info: WeightsInfo) -> dict[str, object]:
    return {
        "path": str(info.path),
        "arch": info.arch,
        "config": info.config,
        "channel_order": info.channel_order,
        "num_params": info.num_params,
        "num_tensors": info.num_tensors,
        "sources": info.sources,
        "metadata": info.extra,
    }


def _render_info(info: WeightsInfo) -> None:
    table = Table(title=str(info.path), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("architecture", info.arch)
    table.add_row("channel order", info.channel_order)
    table.add_row("parameters", f"{info.num_params:,} in {info.num_tensors} tensors")
    table.add_row("config", ", ".join(f"{k}={v}" for k, v in info.config.items()))
    for name, digest in info.sources.items():
        table.add_row("source", f"{name}  sha256 {digest}")
    for key, value in info.extra.items():
        table.add_row(key, value)
    out.print(table)


def register(app: typer.Typer) -> None:
    """Add the ``weights`` command group to the application."""
    app.add_typer(weights_app, name="weights")
