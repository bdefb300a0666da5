"""Degradation synthesis: blurry low-resolution inputs and sharp ground truth from sharp footage.

- ``exposure``: exposure levels 5:1..5:5, REDS-ME (fixed) and REDS-RE (random walk) schedules, averaging of
  high-frame-rate frames, antialiased bicubic x4.
- ``motion``: continuous synthetic camera motion over stills, integrated over the exposure window, with
  the true optical flow.
- ``noise``: optional Gaussian noise and H.264 compression.
- ``degrade``: the ``fmanetpp degrade`` library call (frame folders + flows + sidecar JSON).
"""

from fmanetpp_cli.synth.degrade import DegradeOptions, DegradeReport, degrade, synthesize
from fmanetpp_cli.synth.motion import MotionRange, Trajectory, camera_motion_clip

__all__ = [
    "DegradeOptions",
    "DegradeReport",
    "MotionRange",
    "Trajectory",
    "camera_motion_clip",
    "degrade",
    "synthesize",
]
