"""The exception hierarchy of fmanetpp.

Library code raises these (with ``from e`` when translating a third-party error); the CLI turns each
into one line of text in ``fmanetpp_cli.cli._errors`` and exits non-zero. Each subclass also inherits
the matching standard-library base, so a generic ``except FileNotFoundError`` keeps working.
"""

from __future__ import annotations


class FMANetError(Exception):
    """Base class of every error the tool raises on purpose."""


class ConfigError(FMANetError, ValueError):
    """A bad configuration, option value or combination of flags."""


class InputShapeError(FMANetError, ValueError):
    """A tensor with the wrong number of dimensions or a size the model cannot take."""


class CheckpointError(FMANetError):
    """A weights file that cannot be read, trusted or loaded."""


class WeightsNotFoundError(CheckpointError, FileNotFoundError):
    """An unknown model name, a missing file, or a file not cached while offline."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that holds more than tensors and plain containers (refused, nothing executed)."""

    def __init__(self, path: str, globals_: list[str], detail: str = "") -> None:
        self.path = path
        self.globals = globals_
        names = ", ".join(globals_) if globals_ else "unknown"
        msg = f"{path}: refused to load, the checkpoint references non-tensor globals: {names}"
        super().__init__(msg + (f" ({detail})" if detail and not globals_ else ""))


class StateDictMismatchError(CheckpointError):
    """Missing, unexpected or mis-shaped keys when loading a state dict strictly."""

    def __init__(
        self,
        missing: list[str],
        unexpected: list[str],
        mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]],
        source: str = "",
    ) -> None:
        self.missing = missing
        self.unexpected = unexpected
        self.mismatched = mismatched

        def head(items: list[str]) -> str:
            shown = ", ".join(items[:5])
            return shown + (f", ... ({len(items)} in all)" if len(items) > 5 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing [{head(missing)}]")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected [{head(unexpected)}]")
        if mismatched:
            shapes = [f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in mismatched]
            parts.append(f"{len(mismatched)} mis-shaped [{head(shapes)}]")
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "weights do not match the architecture: " + "; ".join(parts))


class ChecksumError(CheckpointError):
    """A file whose sha256 differs from the one recorded for it."""


class HubError(CheckpointError):
    """A download from the Hugging Face Hub failed (HTTP error, dropped connection, no such repo)."""


class OutputExistsError(FMANetError, FileExistsError):
    """An output (video, weights file, frame folder) that exists without ``overwrite``, is a folder where
    a file is wanted, or is the input itself. Nothing has been written when it is raised.

    ``overwritable`` says whether ``--overwrite`` would help (not for the input itself, nor a folder)."""

    def __init__(self, message: str, *, overwritable: bool = True) -> None:
        super().__init__(message)
        self.overwritable = overwritable


class VideoError(FMANetError):
    """Base class of video input/output problems."""


class VideoOpenError(VideoError, OSError):
    """A file that is missing, empty, unreadable or not a video container."""


class UnsupportedVideoError(VideoError):
    """A container without a video stream, or a codec / pixel format we cannot handle."""


class VideoDecodeError(VideoError):
    """Decoding failed part way, or produced fewer frames than the container declares."""


class VideoWriteError(VideoError, OSError):
    """The output cannot be written (unwritable folder, encoder failure, failed verification)."""


class MissingExtraError(FMANetError, ImportError):
    """An optional feature used without its extra installed (the message names the ``pip install``)."""


class ClusterError(FMANetError, ConnectionError):
    """A distributed run could not reach, or start, its cluster (Ray)."""


class ResumeError(FMANetError):
    """A restore's work folder that cannot be used as asked: it holds an interrupted run that a run
    without ``--resume`` would throw away, or it belongs to another input, model or option set."""
