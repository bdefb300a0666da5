"""The ``fmanetpp.weights/1`` file: a safetensors file whose metadata says how to rebuild the network.

Metadata (all strings, see ``docs/design.md``): ``format``, ``arch`` (``fmanet`` / ``fmanetpp``),
``config`` (JSON of ``config.to_dict()``), ``channel_order`` (``RGB`` / ``BGR``), ``source_sha256``
(JSON ``{file name: sha256}`` for converted weights) and optional free-text entries.

:func:`save_model` writes one atomically; :func:`load_model` rebuilds the architecture from the
metadata and loads the tensors strictly; :func:`read_weights_info` reads only the header.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any, cast

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from fmanetpp_cli._files import atomic_output
from fmanetpp_cli.checkpoints.io import sniff_weights_file
from fmanetpp_cli.errors import CheckpointError, ConfigError, StateDictMismatchError
from fmanetpp_cli.models import arch_of, build_model

FORMAT = "fmanetpp.weights/1"
CHANNEL_ORDERS = ("RGB", "BGR")
REQUIRED_KEYS = ("format", "arch", "config", "channel_order")


@dataclass(frozen=True)
class WeightsInfo:
    """What the header of a weights file says, read without loading the tensors.

    Attributes:
        path: the file.
        arch: architecture name (``fmanet`` / ``fmanetpp``).
        config: the architecture config as ``to_dict()`` gave it.
        channel_order: colour order the weights expect at the input (``RGB`` / ``BGR``).
        num_params: number of scalars over all tensors.
        num_tensors: number of tensors.
        sources: ``{file name: sha256}`` of the files the weights were converted from (may be empty).
        extra: every other metadata entry (``name``, ``description``, ``license``, ``training`` ...).
    """

    path: Path
    arch: str
    config: dict[str, Any]
    channel_order: str
    num_params: int
    num_tensors: int
    sources: dict[str, str] = field(default_factory=dict)
    extra: dict[str, str] = field(default_factory=dict)


def _check_channel_order(channel_order: str) -> str:
    order = channel_order.upper()
    if order not in CHANNEL_ORDERS:
        raise ConfigError(f"channel order must be one of {', '.join(CHANNEL_ORDERS)}, not {channel_order!r}")
    return order


def build_metadata(
    arch: str,
    config: dict[str, Any],
    *,
    channel_order: str = "RGB",
    source_sha256: dict[str, str] | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The metadata dict of a weights file (every value a string, as safetensors requires)."""
    meta = {
        "format": FORMAT,
        "arch": arch,
        "config": json.dumps(config, sort_keys=True),
        "channel_order": _check_channel_order(channel_order),
    }
    if source_sha256:
        meta["source_sha256"] = json.dumps(source_sha256, sort_keys=True)
    for key, value in (extra or {}).items():
        if key in meta:
            raise ConfigError(f"metadata key {key!r} is set by save_model itself")
        meta[key] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return meta


def save_model(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    channel_order: str = "RGB",
    metadata: dict[str, str] | None = None,
    source_sha256: dict[str, str] | None = None,
) -> Path:
    """Write a network's weights and how to rebuild it to a safetensors file, atomically.

    Args:
        model: a network built by :func:`fmanetpp_cli.models.build_model` (it has ``.config``).
        path: the output file; written to a temporary file beside it, then renamed over it.
        channel_order: the colour order the weights expect (``RGB``; ``BGR`` for official FMA-Net).
        metadata: optional extra string entries (``name``, ``description``, ``license``, ``training``).
        source_sha256: ``{file name: sha256}`` of the files the weights come from, for imports.

    Returns:
        The path written.

    Raises:
        ConfigError: the model is not one of ours, or a bad channel order / metadata key.
    """
    arch = arch_of(model)
    meta = build_metadata(
        arch,
        cast(Any, model).config.to_dict(),  # every network of ours carries its config
        channel_order=channel_order,
        source_sha256=source_sha256,
        extra=metadata,
    )
    # Cloning gives every tensor its own contiguous storage; safetensors refuses shared or strided ones.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    out = Path(path)
    with atomic_output(out) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return out


def _open_weights(path: str | os.PathLike[str]) -> tuple[Path, dict[str, str]]:
    p, safetensors = sniff_weights_file(path)
    if not safetensors:
        raise CheckpointError(
            f"{p}: not a safetensors file; convert official checkpoints with `fmanetpp weights import`"
        )
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p}: corrupt safetensors file ({e})") from e
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise CheckpointError(
            f"{p}: not an fmanetpp weights file (metadata lacks {', '.join(missing)}); "
            "a bare state dict needs its architecture: import it with `fmanetpp weights import`"
        )
    if meta["format"] != FORMAT:
        raise CheckpointError(f"{p}: unsupported weights format {meta['format']!r} (expected {FORMAT})")
    return p, meta


def _file_channel_order(p: Path, meta: dict[str, str]) -> str:
    try:
        return _check_channel_order(meta["channel_order"])
    except ConfigError as e:
        raise CheckpointError(f"{p}: {e}") from e


def _json_field(p: Path, meta: dict[str, str], key: str) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p}: metadata entry {key!r} is not valid JSON ({e})") from e


def read_weights_info(path: str | os.PathLike[str]) -> WeightsInfo:
    """Describe a weights file from its header alone (no tensor is read).

    Raises:
        WeightsNotFoundError: no such file.
        CheckpointError: not a safetensors file, or metadata missing / malformed.
    """
    p, meta = _open_weights(path)
    config = _json_field(p, meta, "config")
    sources = _json_field(p, meta, "source_sha256") if "source_sha256" in meta else {}
    num_params = 0
    with safe_open(str(p), framework="pt") as f:
        keys = list(f.keys())
        for key in keys:
            num_params += prod(f.get_slice(key).get_shape())
    extra = {k: v for k, v in meta.items() if k not in (*REQUIRED_KEYS, "source_sha256")}
    return WeightsInfo(
        path=p,
        arch=meta["arch"],
        config=config,
        channel_order=_file_channel_order(p, meta),
        num_params=num_params,
        num_tensors=len(keys),
        sources=sources,
        extra=extra,
    )


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str = "") -> None:
    """Load ``state_dict`` into ``model`` requiring exactly the same keys and shapes.

    Raises:
        StateDictMismatchError: lists every missing, unexpected and mis-shaped key (nothing is loaded).
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [
        (k, tuple(v.shape), tuple(expected[k].shape))
        for k, v in state_dict.items()
        if k in expected and tuple(v.shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or mismatched:
        raise StateDictMismatchError(missing, unexpected, mismatched, source=source)
    model.load_state_dict(state_dict, strict=True)


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network a weights file describes and load its weights strictly.

    Args:
        path: an ``fmanetpp.weights/1`` safetensors file (see :func:`save_model`).
        device: where the model should live.

    Returns:
        The network in ``eval()`` mode on ``device``, with ``channel_order`` set from the file.

    Raises:
        WeightsNotFoundError: no such file.
        CheckpointError: not a weights file of ours (a legacy pickle, a bare state dict, bad metadata,
            an unknown architecture or config field).
        StateDictMismatchError: the tensors do not fit the architecture (lists the keys).
    """
    p, meta = _open_weights(path)
    config = _json_field(p, meta, "config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{p}: metadata entry 'config' is not a JSON object")
    try:
        model = build_model(meta["arch"], config)
    except ConfigError as e:
        raise CheckpointError(f"{p}: its metadata does not describe a network we can build ({e})") from e
    try:
        state_dict = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{p}: corrupt safetensors file ({e})") from e
    load_state_dict_strict(model, state_dict, source=str(p))
    cast(Any, model).channel_order = _file_channel_order(p, meta)
    return model.to(torch.device(device)).eval()
