"""`fmanetpp download NAME|REPO_ID`: fetch weights into the Hugging Face cache, sha256-checked."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from fmanetpp_cli.checkpoints import sha256_file
from fmanetpp_cli.checkpoints.resolve import download_weights
from fmanetpp_cli.cli._console import err
from fmanetpp_cli.cli.options import CacheDirOpt, JsonOpt, OfflineOpt


def download_command(
    model: Annotated[
        str,
        typer.Argument(
            help="A model name from `fmanetpp models`, or a Hub repository id owner/name.", show_default=False
        ),
    ],
    filename: Annotated[
        str | None,
        typer.Option(
            "--filename",
            help="File inside the repository (default: its only *.safetensors, else model.safetensors).",
            show_default=False,
        ),
    ] = None,
    revision: Annotated[
        str | None,
        typer.Option(
            "--revision", help="Branch, tag or commit of the repository (default: main).", show_default=False
        ),
    ] = None,
    sha256: Annotated[
        str | None,
        typer.Option(
            "--sha256", help="Expected sha256 of the file; a different file is refused.", show_default=False
        ),
    ] = None,
    offline: OfflineOpt = False,
    force: Annotated[
        bool, typer.Option("--force", help="Download again even if cached.", metavar="")
    ] = False,
    cache_dir: CacheDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download weights with huggingface_hub into its normal cache and print the local path.

    Known models carry a pinned revision and sha256; a file whose sha256 differs is deleted from the cache
    and refused. HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE are honoured.
    """
    path = download_weights(
        model,
        filename=filename,
        revision=revision,
        sha256=sha256,
        offline=True if offline else None,
        cache_dir=cache_dir,
        force=force,
    )
    if as_json:
        typer.echo(json.dumps({"model": model, "path": str(path), "sha256": sha256_file(path)}))
    else:
        err.print(f"{model}: ready", highlight=False)
        typer.echo(str(path))


def register(app: typer.Typer) -> None:
    """Add `fmanetpp download` to the application."""
    app.command("download")(download_command)
