"""Shared rich consoles: results go to stdout, progress and messages to stderr."""

from __future__ import annotations

from rich.console import Console

out = Console()
err = Console(stderr=True)
