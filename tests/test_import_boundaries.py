"""Dependencies point one way: the model code pulls in no CLI, terminal, video or hub library."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("fmanetpp_cli.models", ["typer", "rich", "av", "huggingface_hub"]),
        ("fmanetpp_cli", ["typer", "rich", "av", "huggingface_hub", "torch"]),
    ],
)
def test_import_does_not_pull_in(module: str, forbidden: list[str]) -> None:
    registry = "import fmanetpp_cli.models; fmanetpp_cli.models.list_models()\n"
    code = (
        f"import sys, {module}\n"
        + (registry if module.endswith("models") else "")
        + f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} pulled in {out.stdout.strip()}"
