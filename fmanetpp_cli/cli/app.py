"""The `fmanetpp` application: registers the commands and maps errors to exit codes.

Each command lives in its own module of this package and exposes ``register(app)``. ``main()`` is the
console-script entry point: expected errors (``fmanetpp_cli.errors`` and a few OS errors) become one line
on stderr and exit code 1; a traceback is shown only with ``--debug`` or ``FMANETPP_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import inspect
import os
import signal
import sys
from typing import Any, cast

import typer
from rich.markup import escape

from fmanetpp_cli import __version__
from fmanetpp_cli.cli._console import err
from fmanetpp_cli.cli._errors import message_for
from fmanetpp_cli.cli._signals import Stopped, interrupt_message, stop_on_signals

# Command modules, registered in this order (each defines `register(app: typer.Typer) -> None`).
COMMAND_MODULES: tuple[str, ...] = (
    "fmanetpp_cli.cli.weights",
    "fmanetpp_cli.cli.restore",
    "fmanetpp_cli.cli.models",
    "fmanetpp_cli.cli.download",
    "fmanetpp_cli.cli.push",
    "fmanetpp_cli.cli.degrade",
    "fmanetpp_cli.cli.evaluate",
    "fmanetpp_cli.cli.train",
    "fmanetpp_cli.cli.bench",
)

app = typer.Typer(
    name="fmanetpp",
    help="Restore real-world video: joint super-resolution and deblurring with FMA-Net++ and FMA-Net.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fmanetpp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Show a full traceback on errors.", metavar=""),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit.", metavar=""
    ),
) -> None:
    _state["debug"] = debug or os.environ.get("FMANETPP_DEBUG", "") not in ("", "0")


def flowed_help(doc: str) -> str:
    """A docstring as help text: the lines of each paragraph joined, so that rich wraps it cleanly.

    Typer (rich markup mode) keeps the single newlines of every paragraph after the first, which
    mixed with rich's own wrapping gives ragged lines. A line starting with ``- `` still starts a new
    line (lists); a paragraph starting with ``\\b`` and anything after ``\\f`` are kept as written.
    """
    text, cut, rest = inspect.cleandoc(doc).partition("\f")
    body = text.rstrip()
    paragraphs = []
    for para in body.split("\n\n"):
        if para.startswith("\b"):
            paragraphs.append(para)
            continue
        lines: list[str] = []
        for line in para.splitlines():
            if lines and not line.lstrip().startswith("- "):
                lines[-1] = f"{lines[-1]} {line.strip()}"
            else:
                lines.append(line.strip())
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs) + text[len(body) :] + cut + rest


def _flow_command_help(typer_app: typer.Typer) -> None:
    """Give every command registered so far (sub-groups too) its docstring as :func:`flowed_help`."""
    for info in typer_app.registered_commands:
        doc = inspect.getdoc(info.callback) if info.callback is not None else None
        if info.help is None and doc:
            info.help = flowed_help(doc)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _flow_command_help(group.typer_instance)


for _name in COMMAND_MODULES:
    importlib.import_module(_name).register(app)
_flow_command_help(app)


def _is_usage_error(e: BaseException) -> bool:
    """A click exception, from click itself or from the copy of click that typer >= 0.29 carries."""
    import click

    return isinstance(e, click.ClickException) or (
        isinstance(e, getattr(typer, "TyperException", ())) and hasattr(e, "show") and hasattr(e, "exit_code")
    )


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; expected errors exit with code 1 and one line on stderr."""
    debug_env = os.environ.get("FMANETPP_DEBUG", "") not in ("", "0")
    args = sys.argv[1:] if argv is None else argv
    stopped = Stopped()
    try:
        with stop_on_signals() as stopped:
            rv = app(args=args, standalone_mode=False)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        err.print("Aborted.")
        sys.exit(130)
    except KeyboardInterrupt:
        rv = 130
    except Exception as e:  # noqa: BLE001 - the one place where errors become messages
        if _is_usage_error(e):  # unknown command or option, bad value: click's message and exit code 2
            cast(Any, e).show()
            sys.exit(cast(Any, e).exit_code)
        msg = message_for(e)
        if msg is None or _state["debug"] or debug_env or "--debug" in args:
            raise
        # escape: messages hold "[...]" key lists and paths that rich would take for markup
        err.print(f"[bold red]error:[/] {escape(msg)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    if stopped.signum is not None or rv == 130:
        message = interrupt_message(stopped.signum or signal.SIGINT, args)
        err.print(escape(message), highlight=False, soft_wrap=True)
        sys.exit(stopped.exit_code)
    if isinstance(rv, int) and rv:
        sys.exit(rv)
