"""Scale-out with Ray (the optional ``[ray]`` extra): a folder, or one long video, over a cluster's workers.

``restore_folder_ray(in_dir, out_dir, options, model, cluster=RayCluster(...))`` is ``restore_folder`` with
the files spread over Ray actors; ``restore_video_ray(input, output, options, model, cluster=...)`` splits
one video into segments (``pipeline/segments.py``) restored by the actors and encoded once by the driver.

- **Workers.** One actor per GPU of the cluster, or one per ``cpus_per_worker`` CPU cores on a CPU
  cluster (torch runs that many threads in it). Each actor receives the loaded model once, through Ray's
  object store, and keeps it for every task it runs.
- **What travels.** Folder mode sends paths: inputs and outputs must lie on a file system that every node
  sees at the same path (the driver plans, the workers read and write). Split mode sends decoded input
  frames to the workers and restored frames back (the object store), so only the driver touches files.
- **Failures.** A worker that dies (killed process, lost node) is restarted by Ray and its task run again
  (``max_task_retries``); folder outputs are atomic (hidden temp file, rename when verified), so a retried
  file is written once, and segments are pure functions of their frames. A file that fails for a reason of
  its own (unreadable, bad codec) fails alone, with its reason, as in one-process mode; a file that keeps
  killing its worker fails once the retries are spent.
- **Progress.** Workers report frames done to a small counter actor, keyed by task, so a retried task
  counts its frames once; the driver polls it and calls ``on_progress(done, total)`` for the whole job.

Ray is imported lazily: without the extra, everything else works and these calls raise
:class:`~fmanetpp_cli.errors.MissingExtraError`.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from fmanetpp_cli.errors import ClusterError, ConfigError, MissingExtraError
from fmanetpp_cli.pipeline.batch import (
    FAILED,
    BatchCallbacks,
    BatchItem,
    BatchReport,
    BatchTask,
    _plan_tasks,
    _process,
    validate_folder_run,
    write_report,
)
from fmanetpp_cli.pipeline.options import RestoreOptions
from fmanetpp_cli.pipeline.plan import RestorePlan
from fmanetpp_cli.pipeline.resume import work_folder
from fmanetpp_cli.pipeline.runner import ProgressFn, RestoreReport
from fmanetpp_cli.pipeline.segments import SegmentResult, plan_for, restore_split
from fmanetpp_cli.video import VideoInfo, probe

_logger = logging.getLogger(__name__)

# The release the extra pins (pyproject.toml); named in the error when ray is missing.
RAY_REQUIREMENT = "ray==2.60.0"
# CPU cores per worker on a CPU cluster: torch's convolutions scale well to a few threads and poorly
# beyond, so several small workers restore more frames per second than one wide one.
DEFAULT_CPUS_PER_WORKER = 2
# Ray's environment switch that keeps a local instance on the loopback interface (read when ray is imported).
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Ray's configuration of its workers' niceness, read from the environment when an instance starts.
_NICENESS_ENV = "RAY_worker_niceness"


@dataclass(frozen=True)
class RayCluster:
    """Where and how a distributed restore runs.

    Attributes:
        address: ``"auto"`` joins the cluster ``RAY_ADDRESS`` or ``ray start`` names on this machine, else
            starts a local instance (on 127.0.0.1, stopped at the end); anything else is the address of a
            running cluster's head (``HOST:PORT`` or ``ray://HOST:PORT``). When the calling process is
            already connected (``ray.init`` done), that connection is used and left open.
        cpus_per_worker: CPU cores each worker takes on a cluster without GPUs.
        num_workers: at most this many workers (default: as many as the cluster holds).
        retries: times a task is run again after its worker died.
        local_cpus: CPUs a locally started instance offers (default: every core of this machine).
        segment_frames: split mode: output frames per segment (default: two segments per worker).
    """

    address: str = "auto"
    cpus_per_worker: int = DEFAULT_CPUS_PER_WORKER
    num_workers: int | None = None
    retries: int = 2
    local_cpus: int | None = None
    segment_frames: int | None = None

    def __post_init__(self) -> None:
        if not self.address.strip():
            raise ConfigError("--ray needs 'auto' or the address of a Ray cluster's head (HOST:PORT)")
        if self.cpus_per_worker < 1:
            raise ConfigError(f"--ray-cpus must be >= 1, got {self.cpus_per_worker}")
        if self.num_workers is not None and self.num_workers < 1:
            raise ConfigError(f"--ray-workers must be >= 1, got {self.num_workers}")
        if self.segment_frames is not None and self.segment_frames < 1:
            raise ConfigError(f"segment_frames must be >= 1, got {self.segment_frames}")
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0, got {self.retries}")


def import_ray(*, loopback: bool = False) -> ModuleType:
    """``import ray``, or :class:`MissingExtraError` naming the install command.

    ``loopback``: a local instance started by this process binds to 127.0.0.1 (only effective when ray is
    imported for the first time here).
    """
    if loopback and "RAY_ADDRESS" not in os.environ:
        os.environ.setdefault(_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError as e:
        raise MissingExtraError(
            f"--ray needs the optional Ray extra, which is not installed: pip install -e '.[ray]' "
            f"(or pip install '{RAY_REQUIREMENT}') ({e})"
        ) from e
    return ray


@contextlib.contextmanager
def ray_session(cluster: RayCluster) -> Iterator[ModuleType]:
    """Connect to (or start) the cluster for the duration of the block; yield the ``ray`` module.

    Raises:
        MissingExtraError: ray is not installed.
        ClusterError: the address cannot be reached.
    """
    ray = import_ray(loopback=cluster.address == "auto")
    if ray.is_initialized():
        yield ray  # the caller's connection: used, not closed
        return
    quiet: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    named = os.environ.get("RAY_ADDRESS") if cluster.address == "auto" else cluster.address
    try:
        if cluster.address == "auto" and not named:
            try:
                ray.init(address="auto", **quiet)  # a cluster `ray start` left on this machine
            except ConnectionError:
                # Ray runs its workers at niceness 15, so on a machine doing anything else they get a
                # sliver of the CPU (with two busy processes on 2 cores, importing torch in a worker took
                # 49 s instead of 1.8 s). Workers of a local instance started for this restore run at the
                # user's priority instead; a cluster keeps its own setting (`RAY_worker_niceness`).
                os.environ.setdefault(_NICENESS_ENV, "0")
                ray.init(num_cpus=cluster.local_cpus, include_dashboard=False, **quiet)
        else:
            ray.init(address=named, **quiet)  # never a local instance instead of the one asked for
    except ConnectionError as e:
        raise ClusterError(f"--ray {named}: cannot connect to a Ray cluster there ({e})") from e
    try:
        yield ray
    finally:
        ray.shutdown()  # stops the local instance when this process started it


class _Progress:
    """Frames done per task, overwritten by each report (a retried task restarts its count)."""

    def __init__(self) -> None:
        self.done: dict[int, int] = {}

    def update(self, key: int, done: int) -> None:
        self.done[key] = done

    def snapshot(self) -> dict[int, int]:
        return dict(self.done)


class _Worker:
    """One Ray actor: holds the model and restores what it is given (files, or segments of a video)."""

    def __init__(self, model_ref: list[Any], threads: int | None) -> None:
        import ray

        if threads is not None:
            torch.set_num_threads(threads)
        # The model comes wrapped in a list: Ray then leaves the reference alone (no automatic fetch) and
        # this worker fetches it, here, on every (re)start, while the driver keeps the reference alive.
        self.model: nn.Module = ray.get(model_ref[0])

    def restore_file(
        self, task: BatchTask, options: RestoreOptions, skip_existing: bool, key: int, progress: Any
    ) -> BatchItem:
        """Restore one planned file (``batch._process``); progress goes to the counter actor."""
        _remove_stale_parts(task.output)

        def on_progress(done: int, total: int | None) -> None:
            progress.update.remote(key, done)

        return _process(task, options, self.model, skip_existing, on_progress)

    def run(self, job: Callable[[nn.Module], Any]) -> Any:
        """Run ``job(model)`` (split mode: one segment)."""
        return job(self.model)


def _remove_stale_parts(output: Path) -> None:
    """Delete temp files of ``output`` that an earlier, killed attempt left (``.NAME.xxxx.part``).

    A folder run gives each output to one task, so such a file can only come from a dead attempt of this one.
    """
    with contextlib.suppress(OSError):
        for stale in output.parent.glob(f".{output.name}.*.part"):
            stale.unlink(missing_ok=True)


def check_ray_device(options: RestoreOptions) -> None:
    """``--device cuda:N`` names a GPU of this machine; under Ray each worker is given its own GPU (Ray sets
    its ``CUDA_VISIBLE_DEVICES``), so the index would be wrong on every worker. Refused before Ray starts.

    Raises:
        ConfigError: the device names a CUDA index.
    """
    if options.device.startswith("cuda:"):
        raise ConfigError(
            f"--device {options.device} cannot be used with --ray: Ray gives each worker a GPU of its own; "
            "use --device cuda (every worker on its GPU) or auto"
        )


def start_workers(
    ray: ModuleType, cluster: RayCluster, model: nn.Module, options: RestoreOptions, wanted: int
) -> _Pool:
    """Create the actors: one per GPU (unless ``options.device`` is ``cpu``), else one per
    ``cluster.cpus_per_worker`` cores; never more than ``wanted`` or ``cluster.num_workers``."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0)) if options.device != "cpu" else 0
    if gpus:
        count, per_worker = gpus, {"num_gpus": 1, "num_cpus": 1}
        threads: int | None = None
    else:
        cpus = int(resources.get("CPU", 1))
        per = min(cluster.cpus_per_worker, max(cpus, 1))
        count, per_worker, threads = max(1, cpus // per), {"num_cpus": per}, per
    count = max(1, min(count, wanted, cluster.num_workers or count))
    actor = ray.remote(_Worker).options(
        max_restarts=-1, max_task_retries=cluster.retries, **per_worker
    )  # a restart re-runs __init__ with the same (stored) model
    shared = ray.put(model.cpu())
    return _Pool([actor.remote([shared], threads) for _ in range(count)], shared)


@dataclass
class _Pool:
    """The workers, and the model's object-store reference: Ray restarts an actor from its constructor
    arguments, so the reference stays alive as long as the workers do."""

    actors: list[Any]
    model_ref: Any


def _stop(ray: ModuleType, actors: list[Any]) -> None:
    for actor in actors:
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)


def restore_folder_ray(
    in_dir: str | Path,
    out_dir: str | Path,
    options: RestoreOptions | None = None,
    model: nn.Module | Callable[[], nn.Module] | None = None,
    *,
    cluster: RayCluster | None = None,
    glob: str | None = None,
    skip_existing: bool = False,
    extension: str | None = None,
    report_path: str | Path | None = None,
    callbacks: BatchCallbacks | None = None,
    poll_seconds: float = 0.25,
) -> BatchReport:
    """``restore_folder`` with one Ray task per file: the same checks, plan, report and exit code.

    The arguments are :func:`~fmanetpp_cli.pipeline.batch.restore_folder`'s, plus ``cluster``. The model
    is loaded here, once, and shipped to every worker. Callbacks: ``on_plan`` once, ``on_file`` when a file
    is handed to a worker, ``on_result`` as each finishes (in completion order), and ``on_progress(done,
    total)`` with the frames of the **whole job** (total: the frames the files to restore declare).
    ``report.items`` keep the plan's order, as in one-process mode.

    Raises:
        MissingExtraError: ray is not installed. ClusterError: the cluster cannot be reached.
        VideoOpenError / ConfigError: as ``restore_folder``, before anything is started.
    """
    if model is None:
        raise ConfigError("restore_folder_ray needs a model")
    opts = options if options is not None else RestoreOptions()
    cluster = cluster if cluster is not None else RayCluster()
    in_path, out_path = Path(in_dir), Path(out_dir)
    report_file = Path(report_path) if report_path is not None else None
    src, dst, ext = validate_folder_run(
        in_path, out_path, opts, skip_existing=skip_existing, report_path=report_file, extension=extension
    )
    check_ray_device(opts)
    import_ray(loopback=cluster.address == "auto")  # a missing extra fails before the model loads
    network = model if isinstance(model, nn.Module) else model()
    hooks = callbacks or BatchCallbacks()
    started = time.perf_counter()
    tasks = _plan_tasks(in_path, out_path, src, dst, glob, ext, probe_frames=True)
    if hooks.on_plan is not None:
        hooks.on_plan(tasks)
    to_restore = [t for t in tasks if t.problem is None and not (skip_existing and t.output.exists())]
    known = [t.frames for t in to_restore if t.frames]
    total = sum(known) if known else None
    finished: dict[int, BatchItem] = {}

    def snapshot() -> BatchReport:
        items = tuple(finished[i] for i in sorted(finished))
        return BatchReport(in_path, out_path, items, time.perf_counter() - started)

    with ray_session(cluster) as ray:
        pool = start_workers(ray, cluster, network, opts, wanted=max(1, len(to_restore)))
        actors = pool.actors
        progress = ray.remote(_Progress).options(num_cpus=0).remote()
        try:
            todo = deque(enumerate(tasks))
            free = list(actors)
            running: dict[Any, tuple[int, Any, float]] = {}
            while todo or running:
                while todo and free:
                    index, task = todo.popleft()
                    worker = free.pop(0)
                    if hooks.on_file is not None:
                        hooks.on_file(task, index)
                    task_opts = _retry_resumes(opts, task.output)
                    ref = worker.restore_file.remote(task, task_opts, skip_existing, index, progress)
                    running[ref] = (index, worker, time.perf_counter())
                ready, _ = ray.wait(list(running), num_returns=1, timeout=poll_seconds)
                for ref in ready:
                    index, worker, since = running.pop(ref)
                    free.append(worker)
                    item = _result(ray, ref, tasks[index], cluster.retries, time.perf_counter() - since)
                    finished[index] = item
                    _logger.info("%s: %s %s", tasks[index].relative, item.status, item.reason)
                    if hooks.on_result is not None:
                        hooks.on_result(item)
                    if report_file is not None:
                        write_report(snapshot(), report_file)
                if hooks.on_progress is not None:
                    # Finished files count what they wrote; running ones what their worker last reported.
                    live = ray.get(progress.snapshot.remote())
                    done = sum(i.frames for i in finished.values())
                    done += sum(n for k, n in live.items() if k not in finished)
                    hooks.on_progress(done, None if total is None else max(total, done))
        finally:
            _stop(ray, [*actors, progress])
    report = snapshot()
    if report_file is not None:
        write_report(report, report_file)
    return report


def _retry_resumes(options: RestoreOptions, output: Path) -> RestoreOptions:
    """The options a file's task runs with: a retry continues the work its dead attempt kept.

    A work folder that exists when the task is handed out belongs to an earlier run, and is treated as in
    one-process mode (continued with ``--resume``, refused without). One that does not exist then can only
    be made by an attempt of this task, so the task runs with ``resume`` on: the first attempt starts
    afresh, and a retry after its worker died continues from the finished segments (the fingerprint
    check still applies) instead of failing on them.
    """
    if options.resume or options.compare is not None or work_folder(output).exists():
        return options
    return replace(options, resume=True)


def _result(ray: ModuleType, ref: Any, task: BatchTask, retries: int, seconds: float) -> BatchItem:
    """The worker's item, or a failed one when its worker died more often than it may be retried."""
    try:
        item: BatchItem = ray.get(ref)
    except ray.exceptions.RayError as e:
        _logger.debug("%s: worker lost", task.input, exc_info=True)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = f"its worker died {retries + 1} time(s) while restoring it ({first})"
        return replace(BatchItem(task.input, task.output, FAILED), reason=reason, seconds=seconds)
    return item


def restore_video_ray(
    input: str | Path,
    output: str | Path,
    options: RestoreOptions | None = None,
    model: nn.Module | None = None,
    on_progress: ProgressFn | None = None,
    *,
    info: VideoInfo | None = None,
    cluster: RayCluster | None = None,
) -> RestoreReport:
    """``restore_video`` with the video split into segments restored by Ray workers (``segments.py``).

    The driver (this process) decodes the input, sends each segment's frames to a worker, and encodes the
    restored frames in order with the source timestamps; audio and the other streams are copied from the
    input once. The result is identical, frame for frame, to ``restore_video`` with the same options. The
    output is written through the work folder of ``resume.py``, so a stopped run keeps its finished
    segments and ``options.resume`` continues it (also a run that ``restore_video`` started), sending
    only unfinished chunks to the workers.
    ``cluster.segment_frames`` sets the output frames per segment (default: the clip shared out so that
    every worker gets two segments, at least one chunk's worth each).

    Raises:
        MissingExtraError, ClusterError: as :func:`restore_folder_ray`; ClusterError also when a segment's
            worker died more often than it may be retried. ConfigError: ``--device cuda:N``
            (``check_ray_device``). Otherwise as ``restore_video``.
    """
    if model is None:
        raise ConfigError("restore_video_ray needs a model")
    opts = options if options is not None else RestoreOptions()
    cluster = cluster if cluster is not None else RayCluster()
    check_ray_device(opts)
    import_ray(loopback=cluster.address == "auto")
    info = info if info is not None else probe(Path(input))
    with ray_session(cluster) as ray:
        pool = start_workers(ray, cluster, model, opts, wanted=cluster.num_workers or 1 << 16)
        actors = pool.actors
        turn = itertools.cycle(actors)

        def plan_source(height: int, width: int, options: RestoreOptions) -> RestorePlan:
            job = functools.partial(plan_for, height=height, width=width, options=options)
            return _unwrap(ray, lambda: ray.get(actors[0].run.remote(job)), f"{input}: planning")

        def collect(ref: Any) -> SegmentResult:
            return _unwrap(ray, lambda: ray.get(ref), f"{input}: a segment")

        size = cluster.segment_frames
        if size is None and info.expected_frames:
            size = -(-info.expected_frames // (2 * len(actors)))
        try:
            return restore_split(
                input, output, opts, model, plan_source, lambda job: next(turn).run.remote(job), collect,
                segment_frames=size, in_flight=2 * len(actors), on_progress=on_progress, info=info,
            )  # fmt: skip
        finally:
            _stop(ray, actors)


def _unwrap(ray: ModuleType, call: Callable[[], Any], what: str) -> Any:
    """``call()``; a worker's own error is raised as itself, a lost worker as :class:`ClusterError`."""
    try:
        return call()
    except ray.exceptions.RayTaskError as e:
        cause = getattr(e, "cause", None)
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except ray.exceptions.RayError as e:
        raise ClusterError(f"{what}: its worker died more often than it may be retried ({e})") from e
