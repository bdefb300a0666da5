"""Pure key converters: from the layouts that FMA-Net checkpoints come in to our full-model names.

Our networks keep the official attribute names, so the only differences are in the wrapping:

- the official trainer saves one file per sub-network, ``{"epoch", "model_D_state_dict", "optimizer_...",
  "scheduler_..."}`` and the same with ``R``, whose keys have no prefix (``feature_extractor.0.weight``);
  in the full model they live under ``degradation_learning_network.`` and ``restoration_network.``;
- other trainers wrap the weights in ``state_dict``, ``params`` or ``params_ema`` (BasicSR), and
  ``DataParallel`` / ``torch.compile`` add ``module.`` / ``_orig_mod.`` to every key.

Every function here is pure (no I/O, inputs untouched) and idempotent: applied to its own output it
returns the same keys, so it is safe to call on weights that are already in our format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from fmanetpp_cli.errors import CheckpointError

StateDict = dict[str, torch.Tensor]

NET_D_PREFIX = "degradation_learning_network."
NET_R_PREFIX = "restoration_network."

# Official per-network containers and the full-model prefix of their keys.
OFFICIAL_PARTS: dict[str, str] = {
    "model_D_state_dict": NET_D_PREFIX,
    "model_R_state_dict": NET_R_PREFIX,
}
# Generic wrappers, most preferred first: EMA weights are the ones meant for inference (BasicSR).
WRAPPER_KEYS: tuple[str, ...] = ("params_ema", "params", "state_dict", "model_state_dict", "model")
_STRIPPED_SEGMENTS: tuple[str, ...] = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(key: str) -> str:
    """Remove the ``module.`` (DataParallel) and ``_orig_mod.`` (torch.compile) segments of a key.

    ``module.`` is removed only at the start (a sub-module may legitimately be called ``module``
    further in); ``_orig_mod.`` wherever it starts a segment, as compiling a sub-module puts it there.
    """
    changed = True
    while changed:
        changed = False
        for seg in _STRIPPED_SEGMENTS:
            if key.startswith(seg):
                key = key[len(seg) :]
                changed = True
    return key.replace("._orig_mod.", ".")


def add_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> StateDict:
    """Put ``prefix`` in front of every key that does not already start with it (idempotent)."""
    return {(k if k.startswith(prefix) else prefix + k): v for k, v in state_dict.items()}


def _flat_tensors(obj: Mapping[Any, Any], source: str, where: str) -> StateDict:
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        shown = ", ".join(bad[:5]) + (f", ... ({len(bad)} in all)" if len(bad) > 5 else "")
        raise CheckpointError(f"{source}: {where} holds entries that are not named tensors: {shown}")
    out: StateDict = {}
    for k, v in obj.items():
        new = strip_wrapper_prefixes(k)
        if new in out:
            raise CheckpointError(f"{source}: two entries of {where} both map to the key {new!r}")
        out[new] = v
    return out


def canonicalize(obj: Any, *, source: str = "checkpoint") -> StateDict:
    """Turn a loaded checkpoint into a flat ``{full-model key: tensor}`` dict.

    - A dict with ``model_D_state_dict`` and/or ``model_R_state_dict`` (the official trainer's files):
      only those are kept (epoch, optimizer and scheduler state are dropped) and their keys get the
      ``degradation_learning_network.`` / ``restoration_network.`` prefix.
    - A dict with one of :data:`WRAPPER_KEYS` whose value is a dict: that value, recursively.
    - A flat dict of tensors: itself.
    In every case ``module.`` / ``_orig_mod.`` are stripped. Idempotent; the input is not modified.

    Raises:
        CheckpointError: no tensors, or entries that are neither tensors nor a known wrapper.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected a dict of tensors, found {type(obj).__name__}")
    parts = [k for k in OFFICIAL_PARTS if isinstance(obj.get(k), Mapping)]
    if parts:
        out: StateDict = {}
        for key in parts:
            out.update(add_prefix(canonicalize(obj[key], source=source), OFFICIAL_PARTS[key]))
        return out
    for key in WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping) and not isinstance(obj.get(key), torch.Tensor):
            return canonicalize(obj[key], source=source)
    sd = _flat_tensors(obj, source, "the checkpoint")
    if not sd:
        raise CheckpointError(f"{source}: the checkpoint holds no tensors")
    return sd


def remap_official_fmanet(state_dict: Mapping[str, torch.Tensor], part: str | None = None) -> StateDict:
    """Map an official FMA-Net state dict to the full-model key names of ``models.fmanet.FMANet``.

    Args:
        state_dict: a canonical state dict: either full-model keys already (returned unchanged) or the
            keys of one sub-network as the official trainer saves them.
        part: ``"D"`` (Net_D) or ``"R"`` (Net_R) for a sub-network dict; ``None`` for full-model keys.

    Returns:
        A new dict; applying the function again changes nothing.

    Raises:
        CheckpointError: ``part`` is not ``"D"``, ``"R"`` or ``None``.
    """
    prefixes = {"D": NET_D_PREFIX, "R": NET_R_PREFIX}
    if part is None:
        return {strip_wrapper_prefixes(k): v for k, v in state_dict.items()}
    if part not in prefixes:
        raise CheckpointError(f"unknown FMA-Net part {part!r}; expected 'D' or 'R'")
    other = prefixes["R" if part == "D" else "D"]
    clash = [k for k in state_dict if k.startswith(other)]
    if clash:
        raise CheckpointError(f"keys of the other sub-network in a Net_{part} state dict: {clash[:3]}")
    return add_prefix({strip_wrapper_prefixes(k): v for k, v in state_dict.items()}, prefixes[part])
