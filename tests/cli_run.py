"""Run the console-script entry point in-process, as the CLI tests of several files do."""

from __future__ import annotations

import pytest


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Call ``main(argv)``; return (exit code, stdout, stderr). A normal return counts as exit code 0."""
    from fmanetpp_cli.cli.app import main  # at call time, after a test's environment is in place

    with pytest.raises(SystemExit) as exc:
        main(argv)
        raise SystemExit(0)
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out, cap.err
