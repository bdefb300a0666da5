"""`fmanetpp <command> --help`: docstring paragraphs shown whole (no hard line breaks from the source)."""

from __future__ import annotations

import pytest
from cli_run import run_cli

from fmanetpp_cli.cli.app import flowed_help

WIDTH = 100
# Commands whose help has a second paragraph longer than one line at WIDTH columns.
LONG_HELP = [["restore"], ["models"], ["download"], ["weights", "push"]]
SHORT_HELP = [["weights", "import"], ["weights", "info"]]


def _description(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The text between the usage line and the first panel of ``fmanetpp <argv> --help``."""
    import typer.rich_utils

    monkeypatch.setenv("COLUMNS", str(WIDTH))
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", None)
    code, out, _ = run_cli([*argv, "--help"], capsys)
    assert code == 0
    body = out.split("Usage:", 1)[1].split("\n", 1)[1]
    return body.split("╭", 1)[0]


def _paragraphs(text: str) -> list[list[str]]:
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            paragraphs[-1].append(line.strip())
        elif paragraphs[-1]:
            paragraphs.append([])
    return [p for p in paragraphs if p]


def _command_help(argv: list[str]) -> str:
    """The help text the CLI handed to rich for ``fmanetpp <argv>`` (the docstring after ``flowed_help``).

    Read after a run (``_description``), which registers the commands and flows their docstrings.
    """
    import typer.main

    from fmanetpp_cli.cli.app import app

    command = typer.main.get_command(app)
    for name in argv:
        command = command.commands[name]  # type: ignore[attr-defined]
    return str(command.help)


@pytest.mark.parametrize("argv", LONG_HELP + SHORT_HELP, ids=" ".join)
def test_help_shows_each_docstring_paragraph_whole(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = [" ".join(p) for p in _paragraphs(_description(argv, capsys, monkeypatch))]
    assert shown, "the help shows the command's description"
    given = _command_help(argv).split("\f", 1)[0].strip().split("\n\n")
    # No hard line breaks from the source reach rich (it wraps each paragraph to the terminal itself) ...
    assert all("\n" not in p for p in given)
    doc = [" ".join(p.split()) for p in given if p.strip()]
    # ... and every paragraph of the docstring is shown, in order, word for word.
    assert shown == doc
    if argv in LONG_HELP:
        assert len(shown) >= 2 and len(shown[1]) > WIDTH, "a second paragraph longer than one line"


def test_flowed_help_joins_lines_keeps_paragraphs_lists_and_markers() -> None:
    doc = (
        "First line\n    of the summary.\n\n    A paragraph\n    on two lines.\n\n"
        "    - item one\n      goes on\n    - item two\n    \f\n    hidden\n    lines"
    )
    assert flowed_help(doc) == (
        "First line of the summary.\n\nA paragraph on two lines.\n\n"
        "- item one goes on\n- item two\n\f\nhidden\nlines"
    )
    kept = "Summary.\n\n\b\nkeep\nthese"
    assert flowed_help(kept) == kept


@pytest.mark.parametrize(
    "argv", [["nosuch"], ["restore", "--bogus"], ["restore", "a.mp4", "b.mp4", "--scale", "abc"]]
)
def test_usage_errors_are_one_message_and_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert "Error:" in err and "Traceback" not in err


@pytest.mark.parametrize("argv", [[], ["restore"], ["eval"], ["models"], ["weights", "import"]])
def test_flags_show_no_type_placeholder(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    code, out, _ = run_cli([*argv, "--help"], capsys)
    assert code == 0
    flagged = [line for line in out.splitlines() if "<bool>" in line and "--help" not in line]
    assert flagged == [], flagged
