"""The restore pipeline: temporal chunks, spatial tiles, scene cuts, device and precision, streaming.

``restore_video(input, output, options, model, on_progress=None) -> RestoreReport`` is the one call behind
``fmanetpp restore``; ``RestoreOptions`` holds its knobs (validated on construction) and
``plan_restore(...) -> RestorePlan`` turns them, once, into the sizes the engine runs with.
``restore_folder(in_dir, out_dir, options, model) -> BatchReport`` runs it over every video of a folder.
"""

from __future__ import annotations

from fmanetpp_cli.pipeline.batch import BatchReport, restore_folder
from fmanetpp_cli.pipeline.options import RestoreOptions, default_compare_path
from fmanetpp_cli.pipeline.plan import DEFAULT_CHUNK, RestorePlan, plan_parameters, plan_restore
from fmanetpp_cli.pipeline.runner import RestoreReport, restore_video

__all__ = [
    "DEFAULT_CHUNK",
    "BatchReport",
    "RestoreOptions",
    "RestorePlan",
    "RestoreReport",
    "default_compare_path",
    "plan_parameters",
    "plan_restore",
    "restore_folder",
    "restore_video",
]
