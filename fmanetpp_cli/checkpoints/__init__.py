"""Weights: safe reading, official-checkpoint import, and the ``fmanetpp.weights/1`` safetensors format.

- :func:`read_state_dict`: a state dict from safetensors or, safely, a legacy torch pickle.
- :func:`save_model` / :func:`load_model`: write a network with the metadata that rebuilds it; rebuild it
  and load strictly.
- :func:`import_official`: the official FMA-Net ``model_D_best.pt`` + ``model_R_best.pt`` pair (folder
  or zip) to one safetensors file.
- :func:`sha256_file`: hex digest of a file.
"""

from __future__ import annotations

from fmanetpp_cli._files import sha256_file
from fmanetpp_cli.checkpoints.convert import ImportResult, import_official
from fmanetpp_cli.checkpoints.io import read_state_dict
from fmanetpp_cli.checkpoints.weights_file import (
    WeightsInfo,
    load_model,
    load_state_dict_strict,
    read_weights_info,
    save_model,
)

__all__ = [
    "ImportResult",
    "WeightsInfo",
    "import_official",
    "load_model",
    "load_state_dict_strict",
    "read_state_dict",
    "read_weights_info",
    "save_model",
    "sha256_file",
]
