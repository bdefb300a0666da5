"""One table that turns library errors into one-line messages, most specific type first."""

from __future__ import annotations

from collections.abc import Callable

from fmanetpp_cli import errors as E


def _overwritable(e: BaseException) -> bool:
    return bool(getattr(e, "overwritable", True))


ERROR_MESSAGES: list[tuple[type[BaseException], Callable[[BaseException], str]]] = [
    (E.UnsafeCheckpointError, lambda e: f"{e} (nothing was executed)"),
    (E.StateDictMismatchError, lambda e: str(e)),
    (E.ChecksumError, lambda e: f"{e} (the file was not used)"),
    (E.HubError, lambda e: f"download failed: {e}"),
    (E.WeightsNotFoundError, lambda e: f"weights not found: {e}"),
    (E.CheckpointError, lambda e: f"bad weights: {e}"),
    (E.OutputExistsError, lambda e: f"{e} (use --overwrite to replace it)" if _overwritable(e) else str(e)),
    (E.VideoError, lambda e: str(e)),
    (E.InputShapeError, lambda e: f"bad input: {e}"),
    (E.ConfigError, lambda e: f"bad option: {e}"),
    (E.FMANetError, lambda e: str(e)),
    (FileNotFoundError, lambda e: f"{getattr(e, 'filename', None) or ''}: file not found".lstrip()),
    (PermissionError, lambda e: f"{getattr(e, 'filename', None) or ''}: permission denied".lstrip()),
    (MemoryError, lambda e: str(e) or "out of memory: try a smaller --tile or --chunk"),
]


def message_for(exc: BaseException) -> str | None:
    """Return the one-line message for an error we expect, or None for a genuine bug."""
    for kind, render in ERROR_MESSAGES:
        if isinstance(exc, kind):
            return " ".join(render(exc).split())
    return None
