"""Background threads around the model: decoding runs ahead of it and encoding behind it.

``Prefetcher`` iterates the video reader (demux, decode, colour conversion to RGB arrays) on a worker
thread and keeps up to ``depth`` frames ready; ``BackgroundWriter`` runs the encode-and-mux jobs of the
restored frames on another worker, in order, with at most ``depth`` waiting. Both are bounded queues, so
memory does not grow with the video's length. PyAV releases the GIL while FFmpeg decodes and encodes,
so the threads overlap with the model's forward pass even when the model's own torch threads are
busy. With ``depth=0`` each runs its work in the caller's thread instead (the same code path, for
``RestoreOptions(io_threads=False)`` and for comparing the two).

Errors: an exception in a worker is handed to the caller's thread and re-raised there, unchanged (the same
type and one-line message as without threads), at the next frame or job. Shutdown: leaving the ``with``
block, normally, on an error or on Ctrl-C (``KeyboardInterrupt`` only ever reaches the main thread), stops
the worker and joins it before the reader or writers underneath are closed, so no FFmpeg object is used
from two threads at once. The reader's generator is also closed in its own thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")

# Queue entries of the prefetcher: (kind, payload).
_ITEM, _ERROR, _END = 0, 1, 2


@dataclass(frozen=True, slots=True)
class StageTimes:
    """Where a restore's wall time went outside the model, in seconds.

    Attributes:
        startup: from the call to the first decoded frame reaching the model's thread (probe of the file,
            memory probe pass, opening the writers, first decode).
        decode: spent decoding and converting frames (in the decode thread when ``io_threads``).
        decode_wait: the model's thread waiting for a decoded frame, after the first one.
        encode: spent converting and encoding restored frames (in the encode thread when ``io_threads``).
        encode_wait: the model's thread waiting for room in the encode queue, or for it to drain at the end.
        finish: flushing the encoder, copying the rest of the audio and reading the file back (``commit``).
    """

    startup: float = 0.0
    decode: float = 0.0
    decode_wait: float = 0.0
    encode: float = 0.0
    encode_wait: float = 0.0
    finish: float = 0.0


class Prefetcher(Generic[T]):
    """Iterate ``source`` on a worker thread, up to ``depth`` items ahead of the consumer.

    Args:
        source: what to iterate (a ``VideoReader``); it is iterated once, in the worker.
        depth: items kept ready; 0 iterates in the caller's thread.
        name: the worker thread's name.

    Attributes:
        busy: seconds spent producing items (the source's ``__next__``).
        waited: seconds the consumer spent blocked on an item that was not ready (the first included).
        first_wait: the part of ``waited`` spent on the first item (opening the source, seeking).
    """

    def __init__(self, source: Iterable[T], depth: int, name: str = "fmanetpp-decode") -> None:
        if depth < 0:
            raise ValueError(f"queue depth must be >= 0, got {depth}")
        self._source = source
        self._depth = depth
        self._name = name
        self._iter: Iterator[T] | None = None
        self._queue: queue.Queue[tuple[int, Any]] = queue.Queue(maxsize=max(depth, 1))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        self.busy = 0.0
        self.waited = 0.0
        self.first_wait: float | None = None

    @property
    def waited_after_first(self) -> float:
        """``waited`` without the wait for the first item."""
        return self.waited - (self.first_wait or 0.0)

    def _waited(self, seconds: float) -> None:
        self.waited += seconds
        if self.first_wait is None:
            self.first_wait = seconds

    def __iter__(self) -> Iterator[T]:
        if self._depth == 0:
            return self._inline()
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
        return self._threaded()

    def _inline(self) -> Iterator[T]:
        self._iter = iter(self._source)
        while True:
            started = time.perf_counter()
            try:
                item = next(self._iter)
            except StopIteration:
                return
            finally:
                spent = time.perf_counter() - started
                self.busy += spent
                self._waited(spent)
            yield item

    def _threaded(self) -> Iterator[T]:
        while not self._finished:
            started = time.perf_counter()
            kind, payload = self._queue.get()
            self._waited(time.perf_counter() - started)
            if kind == _ITEM:
                yield payload
            else:
                self._finished = True
                if kind == _ERROR:
                    raise payload

    def _work(self) -> None:
        it = iter(self._source)
        try:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    entry: tuple[int, Any] = (_ITEM, next(it))
                except StopIteration:
                    entry = (_END, None)
                except BaseException as e:  # noqa: BLE001 - re-raised in the consumer's thread
                    entry = (_ERROR, e)
                self.busy += time.perf_counter() - started
                self._queue.put(entry)  # the consumer drains the queue before it joins, so this returns
                if entry[0] != _ITEM:
                    return
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # a generator's ``finally`` (the reader closes its file) runs in this thread

    def close(self) -> None:
        """Stop the worker and wait for it (safe to call twice); in-flight items are dropped."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            while thread.is_alive():
                self._drain()
                thread.join(timeout=0.05)
            self._drain()
        if self._iter is not None:
            close = getattr(self._iter, "close", None)
            if close is not None:
                close()
            self._iter = None

    def _drain(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BackgroundWriter:
    """Run encoding jobs in order on one worker thread, at most ``depth`` of them waiting.

    A job's error is re-raised in the caller's next ``submit`` or in ``close``; later jobs are then
    skipped. Leaving the ``with`` block on an error drops the queued jobs and joins the worker; leaving
    it on an interrupt (``KeyboardInterrupt``, which the CLI's signal handlers raise) first runs the jobs
    already queued, at most ``depth`` frames of encoding, so that restored frames reach the segments a
    ``--resume`` keeps.

    Args:
        depth: jobs that may wait; 0 runs each job inside ``submit``, in the caller's thread.
        name: the worker thread's name.

    Attributes:
        busy: seconds spent running jobs.
        waited: seconds the caller spent blocked in ``submit`` (queue full) or ``close`` (draining).
    """

    def __init__(self, depth: int, name: str = "fmanetpp-encode") -> None:
        if depth < 0:
            raise ValueError(f"queue depth must be >= 0, got {depth}")
        self._depth = depth
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=max(depth, 1))
        self._error: BaseException | None = None
        self._cancel = False
        self._thread: threading.Thread | None = None
        if depth:
            self._thread = threading.Thread(target=self._work, name=name, daemon=True)
            self._thread.start()
        self.busy = 0.0
        self.waited = 0.0

    def _run(self, job: Callable[[], None]) -> None:
        started = time.perf_counter()
        try:
            job()
        finally:
            self.busy += time.perf_counter() - started

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            if self._error is None and not self._cancel:
                try:
                    self._run(job)
                except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
                    self._error = e

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def submit(self, job: Callable[[], None]) -> None:
        """Queue one job (blocks while the queue is full); re-raises an earlier job's error."""
        self._check()
        if self._thread is None:
            started = time.perf_counter()
            try:
                self._run(job)
            finally:
                self.waited += time.perf_counter() - started
            return
        started = time.perf_counter()
        self._jobs.put(job)
        self.waited += time.perf_counter() - started

    def _join(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            started = time.perf_counter()
            self._jobs.put(None)
            self._thread.join()
            self.waited += time.perf_counter() - started

    def close(self) -> None:
        """Wait until every queued job has run; re-raise the first error."""
        self._join()
        self._check()

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None and not issubclass(exc_type, KeyboardInterrupt):
            self._cancel = True
        self._join()
