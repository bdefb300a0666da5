"""fmanetpp: joint video super-resolution and deblurring (FMA-Net++ and FMA-Net) for real footage.

Public API (imported lazily so that `import fmanetpp_cli` stays light):

- ``create_model(name)`` / ``list_models()``: build an architecture from the preset registry.
- ``load_model(path, device="cpu")``: rebuild a model from a safetensors file and load it strictly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models", "load_model"]

_LAZY = {
    "create_model": "fmanetpp_cli.models",
    "list_models": "fmanetpp_cli.models",
    "load_model": "fmanetpp_cli.checkpoints",
}

if TYPE_CHECKING:
    from fmanetpp_cli.checkpoints import load_model
    from fmanetpp_cli.models import create_model, list_models


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fmanetpp_cli' has no attribute {name!r}")
