"""`fmanetpp <command> --help`: docstring paragraphs wrap cleanly (no hard line breaks from the source)."""

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


@pytest.mark.parametrize("argv", LONG_HELP + SHORT_HELP, ids=" ".join)
def test_help_paragraphs_fill_the_width(
    argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    paragraphs = _paragraphs(_description(argv, capsys, monkeypatch))
    assert paragraphs, "the help shows the command's description"
    for para in paragraphs:
        # rich fills a line while the next word fits; a ragged break leaves room for it inside a paragraph
        for line, following in zip(para, para[1:], strict=False):
            assert len(line) + 1 + len(following.split()[0]) > WIDTH - 4, (
                f"short line inside a paragraph of `{' '.join(argv)} --help`: {line!r}"
            )
    if argv in LONG_HELP:
        assert len(paragraphs) >= 2 and len(paragraphs[1]) >= 2, "the second paragraph spans lines"


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
