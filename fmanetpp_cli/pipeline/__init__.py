"""The restore pipeline: temporal chunks, spatial tiles, scene cuts, device and precision, streaming.

``restore_video(input, output, options, model, on_progress=None) -> RestoreReport`` is the one call behind
``fmanetpp restore``; ``RestoreOptions`` holds its knobs (validated on construction).
``restore_folder(in_dir, out_dir, options, model) -> BatchReport`` runs it over every video of a folder.
"""

from __future__ import annotations

from fmanetpp_cli.pipeline.batch import BatchReport, restore_folder
from fmanetpp_cli.pipeline.options import RestoreOptions, default_compare_path
from fmanetpp_cli.pipeline.runner import DEFAULT_CHUNK, RestoreReport, plan_parameters, restore_video

__all__ = [
    "DEFAULT_CHUNK",
    "BatchReport",
    "RestoreOptions",
    "RestoreReport",
    "default_compare_path",
    "plan_parameters",
    "restore_folder",
    "restore_video",
]
