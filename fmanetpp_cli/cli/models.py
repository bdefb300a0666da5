"""`fmanetpp models`: every known model and whether it is available on this machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fmanetpp_cli.checkpoints import zoo
from fmanetpp_cli.checkpoints.catalog import CatalogEntry, list_models
from fmanetpp_cli.cli._console import out
from fmanetpp_cli.cli.options import CacheDirOpt, JsonOpt


def _where(row: CatalogEntry, folders: list[Path]) -> str:
    """Where the file is: its bare name inside a searched folder (listed under the table), else the path."""
    if row.path is not None:
        return row.path.name if row.path.parent in folders else str(row.path)
    if row.repo_id is not None:
        return f"hub: {row.repo_id}/{row.filename}" + (f" @ {row.revision[:12]}" if row.revision else "")
    return "-"


def _missing(row: CatalogEntry, folders: list[Path]) -> str:
    if row.path is None and row.repo_id is None:
        return "[dim]not here[/]"  # a local-only entry whose file is in no searched folder
    return f"[dim]{_where(row, folders)} (not downloaded)[/]"


def _render(rows: list[CatalogEntry], show_notes: bool) -> None:
    folders = [Path(d) for d in zoo.weights_dirs()]
    table = Table(
        title="Models", title_justify="left", box=None, pad_edge=False, header_style="bold underline"
    )
    table.add_column("name", style="bold", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("preset", no_wrap=True)
    table.add_column("x", justify="right")
    table.add_column("ch")
    table.add_column("location", overflow="fold")
    if show_notes:
        table.add_column("licence", overflow="fold")
        table.add_column("notes", overflow="fold")
    for row in rows:
        preset = row.config if row.config and row.config != "custom" else f"{row.arch or '?'} (custom)"
        cells = [
            row.name,
            row.kind,
            preset,
            str(row.scale) if row.scale else "?",
            row.channel_order or "?",
            _where(row, folders) if row.available else _missing(row, folders),
        ]
        if show_notes:
            cells += [row.license, row.notes]
        table.add_row(*cells)
    out.print(table)
    listing = ", ".join(str(d) for d in folders)
    out.print(f"Weights folders searched: {listing}", highlight=False, soft_wrap=True)


def models_command(
    as_json: JsonOpt = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list unlisted zoo entries.", metavar="")
    ] = False,
    notes: Annotated[
        bool, typer.Option("--notes", help="Show each model's licence and how to obtain it.", metavar="")
    ] = False,
    cache_dir: CacheDirOpt = None,
) -> None:
    """List the known models (bundled, imported, downloaded) and whether each is on this machine.

    A model name from this list goes to `fmanetpp restore --model NAME`. The official FMA-Net REDS weights
    appear as available after `fmanetpp weights import FMA-Net.zip DIR/fmanet-reds.safetensors` with DIR one
    of the weights folders printed below the table (or FMANETPP_WEIGHTS_DIR).
    """
    rows = list_models(cache_dir=cache_dir, include_unlisted=show_all)
    if as_json:
        payload = {
            "models": [r.to_dict() for r in rows],
            "weights_dirs": [str(d) for d in zoo.weights_dirs()],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        _render(rows, notes)


def register(app: typer.Typer) -> None:
    """Add `fmanetpp models` to the application."""
    app.command("models")(models_command)
