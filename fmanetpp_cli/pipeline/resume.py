"""Resumable restores: the output is encoded as segments in a hidden work folder, joined at the end.

A single-file restore (without ``--compare``) writes its video as segments of ``SEGMENT_FRAMES`` frames
into ``.<output name>.work/`` beside the output. Each segment is a complete `VideoWriter` file in the
output's own container (a fresh encoder, so it starts on a key frame; source timestamps kept), and it
appears under its final name only once it is complete and verified (temporary file, then rename). So
whatever stops the process (a signal, ``kill -9``, a power cut), the finished segments are a prefix of the
video. At the end `video.concat.join_segments` joins them by stream copy with the source's audio and
subtitles, and the folder is removed.

``manifest.json`` holds the run's fingerprint (the input file: path, size, modification time, a hash of
its first and last MiB; the model: a hash of every tensor; every option that changes the output) and the
plan's sizes (chunk, tile), plus, for each segment, the tile the out-of-memory fallback had reached
(``engine.ChunkRestorer``) when the next segment's first chunk started. ``--resume`` continues only when
the fingerprint matches; the runner then restores with the same sizes, decodes from the start, calls the
model only for chunks that feed an unfinished segment, and so gives the same packets as one run would.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fmanetpp_cli.errors import ResumeError, VideoWriteError
from fmanetpp_cli.pipeline.options import RestoreOptions
from fmanetpp_cli.video import EncodeOptions, VideoInfo, VideoWriter, WriteResult
from fmanetpp_cli.video.concat import join_segments
from fmanetpp_cli.video.verify import NO_ROOM

# Frames per segment: the unit of work a resume keeps (a few seconds of video).
SEGMENT_FRAMES = 120
MANIFEST = "manifest.json"
_FORMAT = 1
_HEAD = 1 << 20  # bytes of the input hashed at each end

TileState = tuple[int, int]  # (tile, tile_overlap) of the restorer


def work_folder(output: Path) -> Path:
    """Where the segments of ``output`` are kept: ``.<name>.work`` beside it."""
    return output.parent / f".{output.name}.work"


def _file_digest(path: Path) -> dict[str, Any]:
    st = path.stat()
    h = hashlib.sha256()
    with path.open("rb") as f:
        h.update(f.read(_HEAD))
        if st.st_size > _HEAD:
            f.seek(max(_HEAD, st.st_size - _HEAD))
            h.update(f.read(_HEAD))
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "sha256": h.hexdigest(),
    }


def _model_digest(model: nn.Module) -> str:
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(input: Path, output: Path, model: nn.Module, options: RestoreOptions) -> dict[str, Any]:
    """What must not change between a run and its resume, as JSON types.

    ``overwrite``, ``resume`` and the background I/O threads (``io_threads``, ``queue_depth``) do not change
    the output, so they are left out.
    """
    same = ("overwrite", "resume", "encode", "io_threads", "queue_depth")
    opts = {k: v for k, v in dataclasses.asdict(options).items() if k not in same}
    encode = dataclasses.asdict(options.encode) if options.encode is not None else None
    return json.loads(
        json.dumps(
            {
                "format": _FORMAT,
                "segment_frames": SEGMENT_FRAMES,
                "input": _file_digest(input),
                "output": output.name,
                "model": _model_digest(model),
                "options": opts,
                "encode": encode,
            },
            default=str,
        )
    )


def _differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed, in the user's words (``--crf``, ``the input file``)."""
    names = {"input": "the input file", "model": "the model weights", "output": "the output name"}
    changed = [names[k] for k in names if old.get(k) != new.get(k)]
    for group in ("options", "encode"):
        a, b = old.get(group) or {}, new.get(group) or {}
        changed += [f"--{k.replace('_', '-')}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if any(old.get(k) != new.get(k) for k in ("format", "segment_frames")):
        changed.append("the work folder's format")
    return changed


def _sync(path: Path) -> None:
    """Flush a file and its folder entry to the disk."""
    for target, flags in ((path, os.O_RDONLY), (path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))):
        fd = os.open(target, flags)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write atomically and durably: a temporary file, flushed to disk, then renamed over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class WorkFolder:
    """The finished segments of one output and their manifest.

    Args:
        output: the user's output file.
        print_: this run's `fingerprint`.
        resume: continue the run the folder holds (refused, `ResumeError`, when the fingerprint differs).
            Without it, a folder holding finished segments is refused; one without any is started afresh.

    Attributes:
        done: finished segments, ``0 .. done - 1`` (the files are the truth, not the manifest).
        sizes: the plan's ``chunk``, ``tile`` and ``tile_overlap`` to restore with when resuming (None on
            a fresh start: the caller plans, then calls `start`).
    """

    def __init__(self, output: Path, print_: dict[str, Any], *, resume: bool) -> None:
        self.output = output
        self.path = work_folder(output)
        self.suffix = output.suffix  # segments in the output's own container: every codec it takes works
        self.done = 0
        self.sizes: dict[str, int] | None = None
        self._print = print_
        self._manifest: dict[str, Any] = {}
        if self.path.is_dir():
            for stray in self.path.glob(".*.part"):  # what a stopped run was writing
                with contextlib.suppress(FileNotFoundError):
                    stray.unlink()
            self.done = self._count()
        if self.done and not resume:
            raise ResumeError(
                f"{output}: an interrupted run kept {self.done} finished segment(s) in {self.path}; "
                "add --resume to continue it, or delete that folder to start again"
            )
        if self.done:
            self._manifest = self._read()
            changed = _differences(self._manifest.get("fingerprint", {}), print_)
            if changed:
                raise ResumeError(
                    f"{output}: cannot resume, {', '.join(changed)} changed since the interrupted run "
                    f"(run it as before, or delete {self.path} to start again)"
                )
            sizes = dict(self._manifest["plan"])
            sizes.update(self._manifest.get("tiles", {}).get(str(self.done - 1), {}))
            self.sizes = sizes

    @property
    def frames_done(self) -> int:
        """Restored frames already in finished segments."""
        return self.done * SEGMENT_FRAMES

    def plan_options(self, options: RestoreOptions) -> RestoreOptions:
        """The options to plan with: ``options``, with the interrupted run's sizes when resuming."""
        if self.sizes is None:
            return options
        sizes = self.sizes
        return dataclasses.replace(
            options, chunk=sizes["chunk"], tile=sizes["tile"], tile_overlap=sizes["tile_overlap"]
        )

    def _read(self) -> dict[str, Any]:
        manifest = self.path / MANIFEST
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            dict(data["plan"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ResumeError(
                f"{manifest}: unreadable manifest ({e}); delete {self.path} to start again"
            ) from e
        return dict(data)

    def _count(self) -> int:
        n = 0
        while self.segment(n).exists():
            n += 1
        return n

    def start(self, chunk: int, tile: int, tile_overlap: int) -> None:
        """A fresh start: (re)create the folder and write the manifest with the plan's sizes."""
        if self.done:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir()
        plan = {"chunk": chunk, "tile": tile, "tile_overlap": tile_overlap}
        self._manifest = {"fingerprint": self._print, "plan": plan, "tiles": {}}
        _write_json(self.path / MANIFEST, self._manifest)

    def segment(self, k: int) -> Path:
        """The file of segment ``k``."""
        return self.path / f"seg{k:06d}{self.suffix}"

    def segments(self) -> list[Path]:
        """Every finished segment, in order."""
        return [self.segment(k) for k in range(self._count())]

    def record_tile(self, k: int, state: TileState) -> None:
        """Before segment ``k`` is committed: the tile in effect when the next segment's first chunk began."""
        self._manifest.setdefault("tiles", {})[str(k)] = {"tile": state[0], "tile_overlap": state[1]}
        try:
            _write_json(self.path / MANIFEST, self._manifest)
        except OSError as e:  # the folder was removed or filled up under a running restore
            raise VideoWriteError(f"{self.output}: cannot update {self.path / MANIFEST} ({e})") from e

    def remove(self) -> None:
        """Delete the folder (after the output is in place, or when nothing in it is worth keeping)."""
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> WorkFolder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """Remove the folder, unless the run stopped (a signal) or ran out of room (full disk, quota, file
        size limit) after finishing a segment: then it stays for ``--resume``. Anything else (a broken
        input, a damaged segment, a bug) removes it, since a resume would meet it again."""
        no_room = isinstance(exc, VideoWriteError) and exc.errno in NO_ROOM
        if not ((isinstance(exc, KeyboardInterrupt) or no_room) and self._count()):
            self.remove()


class SegmentSink:
    """Writes restored frames into the work folder's segments, in order, skipping finished ones, and joins
    them into the output at the end.

    It runs on the encode thread; segment ``k`` holds frames ``k * SEGMENT_FRAMES`` onwards. A segment is
    the video alone, at the source's timestamps (the join applies the time range's shift), with errors
    naming the user's output. Every restore path (one process, split over workers) writes and joins its
    segments through this class, so a run stopped in one mode can be resumed in another.

    Args:
        work: the work folder (its ``done`` segments are skipped).
        info: ``probe`` of the source.
        encode: the encoder settings.
        width, height: the restored frame size.
        end: the time range's end (seconds), or None.
    """

    def __init__(
        self, work: WorkFolder, *, info: VideoInfo, encode: EncodeOptions, width: int, height: int,
        end: float | None,
    ) -> None:  # fmt: skip
        self.work = work
        self.info = info
        self.encode = encode
        self.size = (width, height)
        self.end = end
        self.current: VideoWriter | None = None
        self.current_k = -1
        self.warnings: list[str] = []

    def _open(self, path: Path) -> VideoWriter:
        width, height = self.size
        return VideoWriter(
            path, source=None, info=self.info, options=self.encode, overwrite=False, width=width,
            height=height, start=None, end=self.end, label=self.work.output,
        )  # fmt: skip

    def write(self, index: int, image: np.ndarray, pts: int, state: TileState) -> None:
        """One restored frame; ``index`` counts from the first restored frame, ``state`` is the tile in
        effect when its chunk began."""
        k = index // SEGMENT_FRAMES
        if k < self.work.done:
            return
        if k != self.current_k:
            if self.current is not None:
                self.work.record_tile(self.current_k, state)
                self._commit(next_pts=pts)
            self.current = self._open(self.work.segment(k))
            self.current_k = k
        assert self.current is not None
        self.current.write(image, pts)

    def _commit(self, next_pts: int | None) -> None:
        writer, self.current = self.current, None
        assert writer is not None
        result = writer.commit(next_pts=next_pts)
        _sync(result.path)  # on disk before later work relies on it (a power cut keeps it whole)
        self.warnings += [w for w in result.warnings if w not in self.warnings]
        self.work.done = self.current_k + 1

    def finish(self) -> None:
        """Commit the last segment (its last frame lasts as the source's does)."""
        if self.current is not None:
            self._commit(next_pts=None)

    def join(self, source: Path, *, start: float | None, overwrite: bool, frames: int) -> WriteResult:
        """Commit the last segment, then write the output from every segment and the other streams of
        ``source`` (`video.concat.join_segments`); ``frames`` is how many the segments must hold."""
        self.finish()
        return join_segments(
            self.work.segments(), self.work.output, source=source, info=self.info, options=self.encode,
            overwrite=overwrite, start=start, end=self.end, warnings=self.warnings, frames=frames,
        )  # fmt: skip

    def abort(self) -> None:
        """Delete the segment in progress (finished ones stay)."""
        if self.current is not None:
            self.current.abort()
            self.current = None
