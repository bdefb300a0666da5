"""Temporal chunk planning: which frames each model pass sees, and which outputs it contributes.

The video is cut into *segments*: the whole clip, or the runs of frames between two scene cuts. Each segment
is treated as an independent sequence. Within a segment, a *virtual sequence* is formed by repeating the first
and the last frame ``pad`` times (end padding, only at true segment ends, never at chunk seams). Model passes
("chunks") take up to ``chunk`` consecutive virtual positions; consecutive chunks overlap by ``2 * overlap``
positions, so that every kept output has at least ``overlap`` frames of real context on both sides, unless it
is next to a segment end (where the model, or the end padding, provides the context a single pass would have).

Both model kinds fit this one plan:

* ``"window"`` (FMA-Net v1): ``pad = overlap = num_seq // 2``. A chunk of L positions holds ``L - 2 * pad``
  windows, each giving its centre frame; they are run as one batch.
* ``"sequence"`` (FMA-Net++): ``pad = 0`` (the network handles its own ends), ``overlap >= temporal_radius``
  makes the stitched video equal to one pass over the whole segment.

The planner is online: ``push()`` registers one decoded frame and returns the chunks that became ready, so a
runner holds at most ``chunk`` frames whatever the video's length. ``plan_chunks()`` runs it over a known
frame count (tests, dry runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from fmanetpp_cli.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Chunk:
    """One model pass.

    Attributes:
        frames: global source-frame index fed at each input position (end padding repeats an index).
        keep_start: first global frame index whose output this chunk contributes.
        keep_stop: one past the last contributed global frame index.
        offset: input position of ``keep_start`` inside ``frames``; frame ``keep_start + j`` sits at
            position ``offset + j``.
        segment: index of the segment (scene) this chunk belongs to.
    """

    frames: tuple[int, ...]
    keep_start: int
    keep_stop: int
    offset: int
    segment: int

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def num_kept(self) -> int:
        """Number of output frames this chunk contributes."""
        return self.keep_stop - self.keep_start


class ChunkPlanner:
    """Online planner of overlapping temporal chunks over a stream of frames.

    Args:
        chunk: maximum number of input positions per model pass (padding included).
        overlap: context positions dropped on each side of a chunk seam (``>= pad``).
        pad: copies of the first / last frame added at each segment end.

    Raises:
        ConfigError: ``chunk <= 2 * overlap`` (no progress), negative values, or ``overlap < pad``.
    """

    def __init__(self, *, chunk: int, overlap: int, pad: int = 0) -> None:
        if pad < 0 or overlap < 0:
            raise ConfigError(f"overlap ({overlap}) and padding ({pad}) must be >= 0")
        if overlap < pad:
            raise ConfigError(f"overlap ({overlap}) must be at least the end padding ({pad})")
        if chunk <= 2 * overlap:
            raise ConfigError(
                f"chunk ({chunk}) must be larger than twice the overlap ({overlap}); "
                f"use --chunk {2 * overlap + 1} or more"
            )
        self.chunk = chunk
        self.overlap = overlap
        self.pad = pad
        self._count = 0  # frames pushed so far (the next global index)
        self._segment = -1
        self._seg_first = 0  # global index of the current segment's first frame
        self._start = 0  # virtual position where the next chunk starts (segment-relative)
        self._keep = 0  # virtual position of the next output to emit (segment-relative)

    @property
    def oldest_needed(self) -> int:
        """Smallest global frame index a future chunk can still read; older frames may be dropped."""
        if self._segment < 0:
            return 0
        return self._seg_first + max(0, self._start - self.pad)

    def _source(self, pos: int, seg_len: int) -> int:
        """Global frame index at virtual position ``pos`` of the current segment (clamped = padded)."""
        return self._seg_first + min(max(pos - self.pad, 0), seg_len - 1)

    def _make(self, start: int, stop: int, keep_stop: int, seg_len: int) -> Chunk:
        frames = tuple(self._source(p, seg_len) for p in range(start, stop))
        keep_start = self._keep
        chunk = Chunk(
            frames=frames,
            keep_start=self._seg_first + keep_start - self.pad,
            keep_stop=self._seg_first + keep_stop - self.pad,
            offset=keep_start - start,
            segment=self._segment,
        )
        self._keep = keep_stop
        self._start = keep_stop - self.overlap
        return chunk

    def push(self, new_segment: bool = False) -> list[Chunk]:
        """Register the next frame; ``new_segment`` marks a scene cut just before it.

        Returns:
            The chunks that can run now, in order (the last chunk of the previous segment first).
        """
        ready: list[Chunk] = []
        if self._segment >= 0 and new_segment:
            ready.extend(self._flush())
        if self._segment < 0 or new_segment:
            self._segment += 1
            self._seg_first = self._count
            self._start = 0
            self._keep = self.pad
        self._count += 1
        seg_len = self._count - self._seg_first
        # Positions known so far: the left padding plus every real frame of the segment.
        known = self.pad + seg_len
        if known - self._start >= self.chunk:
            stop = self._start + self.chunk
            ready.append(self._make(self._start, stop, stop - self.overlap, seg_len))
        return ready

    def _flush(self) -> list[Chunk]:
        seg_len = self._count - self._seg_first
        real_stop = self.pad + seg_len
        if seg_len == 0 or self._keep >= real_stop:
            return []
        # The segment's true end: right padding completes the windows of the last frames.
        stop = real_stop + self.pad
        out: list[Chunk] = []
        # push() emits a chunk as soon as one is full, but the right padding can still push the remainder
        # past one chunk: split it then.
        while stop - self._start > self.chunk:
            end = self._start + self.chunk
            out.append(self._make(self._start, end, end - self.overlap, seg_len))
        out.append(self._make(self._start, stop, real_stop, seg_len))
        return out

    def finish(self) -> list[Chunk]:
        """End of the stream: the remaining chunks of the last segment."""
        ready = self._flush() if self._segment >= 0 else []
        self._keep = self.pad + (self._count - self._seg_first)
        return ready


def plan_chunks(
    num_frames: int, *, chunk: int, overlap: int, pad: int = 0, cuts: Iterable[int] = ()
) -> list[Chunk]:
    """Plan every chunk of a clip of known length.

    Args:
        num_frames: frames in the clip.
        chunk: maximum input positions per pass.
        overlap: context positions at each seam.
        pad: end padding per segment end.
        cuts: global indices of frames that start a new scene (0 is ignored).

    Returns:
        The chunks in order; their keep ranges partition ``range(num_frames)``.
    """
    planner = ChunkPlanner(chunk=chunk, overlap=overlap, pad=pad)
    cut_set = {c for c in cuts if c > 0}
    chunks: list[Chunk] = []
    for i in range(num_frames):
        chunks.extend(planner.push(new_segment=i in cut_set))
    chunks.extend(planner.finish())
    return chunks
