"""`fmanetpp weights push FILE REPO_ID`: publish weights with a generated model card (added to `weights`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from fmanetpp_cli.checkpoints.push import push_weights
from fmanetpp_cli.cli._console import out
from fmanetpp_cli.cli.options import JsonOpt
from fmanetpp_cli.errors import ConfigError


def _json_or_file(value: str | None, flag: str) -> Any:
    if value is None:
        return None
    path = Path(value)
    text = path.read_text(encoding="utf-8") if path.is_file() else value
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        if path.is_file():
            raise ConfigError(f"{flag} {path}: not valid JSON") from None
        return text


def push_command(
    file: Annotated[Path, typer.Argument(help="An fmanetpp .safetensors weights file.", show_default=False)],
    repo_id: Annotated[str, typer.Argument(help="Your Hub repository, owner/name.", show_default=False)],
    path_in_repo: Annotated[
        str | None,
        typer.Option(
            "--path-in-repo", help="Name in the repository (default: the file's name).", show_default=False
        ),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the repository private.", metavar="")
    ] = False,
    revision: Annotated[
        str | None,
        typer.Option("--revision", help="Branch to commit to (default: main).", show_default=False),
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Commit message.", show_default=False)
    ] = None,
    license: Annotated[
        str | None,
        typer.Option(
            "--license", help="Licence for the card (default: the file's metadata).", show_default=False
        ),
    ] = None,
    training: Annotated[
        str | None,
        typer.Option(
            "--training",
            help="Training data: text, JSON, or a JSON file (default: metadata).",
            show_default=False,
        ),
    ] = None,
    metrics: Annotated[
        str | None,
        typer.Option(
            "--metrics",
            help="Metrics: JSON or a JSON file (default: the file's metadata).",
            show_default=False,
        ),
    ] = None,
    no_card: Annotated[
        bool, typer.Option("--no-card", help="Do not upload a README.md model card.", metavar="")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Upload converted or trained weights to your own Hub repository, with a generated model card.

    Uses the token huggingface_hub finds (HF_TOKEN or `hf auth login`); HF_ENDPOINT is honoured. Prints the
    commit and sha256 to pin (e.g. in a zoo entry or `fmanetpp download --revision ... --sha256 ...`).
    """
    result = push_weights(
        file,
        repo_id,
        path_in_repo=path_in_repo,
        private=private,
        revision=revision,
        commit_message=message,
        license=license,
        training=_json_or_file(training, "--training"),
        metrics=_json_or_file(metrics, "--metrics"),
        card=not no_card,
    )
    if as_json:
        typer.echo(json.dumps(result.__dict__, indent=2))
        return
    out.print(f"pushed {result.filename} to {result.url}", highlight=False, soft_wrap=True)
    out.print(f"  commit {result.revision}", highlight=False)
    out.print(f"  sha256 {result.sha256}", highlight=False)
    out.print(
        f"  fetch with: fmanetpp download {result.repo_id} --filename {result.filename} "
        f"--revision {result.revision} --sha256 {result.sha256}",
        highlight=False,
        soft_wrap=True,
    )


def register(app: typer.Typer) -> None:
    """Add `push` to the `weights` command group (which `fmanetpp_cli.cli.weights` registers)."""
    from fmanetpp_cli.cli.weights import weights_app

    weights_app.command("push")(push_command)
