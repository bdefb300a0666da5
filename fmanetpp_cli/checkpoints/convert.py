"""Import the official FMA-Net (CVPR 2024) checkpoints into one ``fmanetpp.weights/1`` safetensors file.

The official trainer writes ``model_D_best.pt`` (Net_D) and ``model_R_best.pt`` (Net_R) into
``<save_dir>/model_stage<stage>/``; the released archive is expected to hold the same files. Both are
plain dicts with the sub-network state dict under ``model_D_state_dict`` / ``model_R_state_dict`` beside
optimizer and scheduler state. :func:`import_official` finds the pair at any depth of a folder or a zip
(zip members are read into memory, never extracted), loads both with the weights-only loader, keeps the
model weights only, gives them the full-model names, builds :class:`~fmanetpp_cli.models.fmanet.FMANet`
from the official configuration, loads strictly and saves safetensors with the channel order ``BGR``
(the official pipeline feeds OpenCV frames unconverted) and the sha256 of every source file.
"""

from __future__ import annotations

import configparser
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import torch

from fmanetpp_cli._files import sha256_file
from fmanetpp_cli.checkpoints.io import load_torch_checkpoint, sha256_bytes
from fmanetpp_cli.checkpoints.remap import canonicalize, remap_official_fmanet
from fmanetpp_cli.checkpoints.weights_file import load_state_dict_strict, save_model
from fmanetpp_cli.errors import CheckpointError, ConfigError, OutputExistsError, WeightsNotFoundError
from fmanetpp_cli.models import build_model, fmanet

NET_D_FILE = "model_D_best.pt"
NET_R_FILE = "model_R_best.pt"
# A released full-size checkpoint pair is ~120 MB with optimizer state; anything far larger is refused
# before it is decompressed into memory.
MAX_MEMBER_BYTES = 4 << 30

# [network] fields of the official experiment.cfg and how the official Config parses them.
_INI_NETWORK_FIELDS: dict[str, type] = {
    "in_channels": int,
    "dim": int,
    "ds_kernel_size": int,
    "us_kernel_size": int,
    "num_RDB": int,
    "growth_rate": int,
    "num_dense_layer": int,
    "num_flow": int,
    "num_FRMA": int,
    "num_transformer_block": int,
    "num_heads": int,
    "LayerNorm_type": str,
    "ffn_expansion_factor": float,
    "bias": bool,
}
# Architecture fields the official Config reads from [training].
_INI_TRAINING_FIELDS: dict[str, type] = {"scale": int, "num_seq": int, "stage": int}


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_official` wrote.

    Attributes:
        output: the safetensors file.
        config: the official-style configuration the network was built from.
        sources: ``{source name: sha256}`` (the archive, if any, and both checkpoint files).
        num_params: number of scalars in the imported weights.
        channel_order: the colour order recorded (``BGR``).
    """

    output: Path
    config: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    num_params: int = 0
    channel_order: str = "BGR"


# --------------------------------------------------------------------------- configuration


def _parse_ini_value(path: Path, name: str, raw: str, kind: type) -> Any:
    raw = raw.strip()
    if kind is bool:
        # The official parser tests `== 'True'`; anything but the two spellings would silently be False.
        if raw not in ("True", "False"):
            raise ConfigError(f"{path}: {name} = {raw!r}; expected True or False")
        return raw == "True"
    try:
        return kind(raw)
    except ValueError as e:
        raise ConfigError(f"{path}: {name} = {raw!r} is not a valid {kind.__name__}") from e


def parse_experiment_cfg(path: str | os.PathLike[str], text: str | None = None) -> dict[str, Any]:
    """Read the architecture fields of an official ``experiment.cfg`` (INI) as an official config dict.

    ``[network]`` gives the network fields (all required); ``scale``, ``num_seq`` and ``stage`` come from
    ``[training]`` and default to the released model's ``4``, ``3`` and ``2`` when absent.

    Raises:
        ConfigError: not INI, no ``[network]`` section, a missing field or a malformed value.
    """
    p = Path(path)
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(p.read_text(encoding="utf-8") if text is None else text, source=str(p))
    except (configparser.Error, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: not a valid experiment.cfg ({str(e).splitlines()[0]})") from e
    if not parser.has_section("network"):
        raise ConfigError(f"{p}: no [network] section (is this the official experiment.cfg?)")
    cfg: dict[str, Any] = {}
    for name, kind in _INI_NETWORK_FIELDS.items():
        if not parser.has_option("network", name):  # option names are case-insensitive in INI
            raise ConfigError(f"{p}: [network] lacks {name}")
        cfg[name] = _parse_ini_value(p, name, parser.get("network", name), kind)
    defaults = {"scale": 4, "num_seq": 3, "stage": 2}
    for name, kind in _INI_TRAINING_FIELDS.items():
        if parser.has_option("training", name):
            cfg[name] = _parse_ini_value(p, name, parser.get("training", name), kind)
        else:
            cfg[name] = defaults[name]
    return cfg


def load_official_config(path: str | os.PathLike[str] | None) -> dict[str, Any]:
    """The official-style config dict from ``experiment.cfg`` (INI), a JSON file, or the full preset.

    A JSON file holds the official field names (as the fixtures' ``config.json``); ``None`` gives the
    released full-size configuration (preset ``fmanet``).

    Raises:
        ConfigError: no such file, or an unreadable or incomplete configuration.
    """
    if path is None:
        return dict(fmanet.PRESETS["fmanet"].to_official())
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not a text file") from e
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p}: invalid JSON ({e})") from e
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the JSON must be an object of config fields")
        return data
    return parse_experiment_cfg(p, text)


def official_to_config(cfg: dict[str, Any], source: str = "config") -> fmanet.FMANetConfig:
    """Build an ``FMANetConfig`` from an official-style dict; only stage-2 (full) networks import."""
    stage = cfg.get("stage", 2)
    if stage != 2:
        raise ConfigError(
            f"{source}: stage = {stage}; only stage-2 checkpoints hold the restoration network needed here"
        )
    try:
        return fmanet.FMANetConfig.from_official(cfg)
    except ConfigError as e:
        try:  # our own field names (``config.to_dict()``) are accepted too
            return fmanet.FMANetConfig.from_dict(cfg)
        except (ConfigError, TypeError):
            raise ConfigError(f"{source}: {e}") from e
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{source}: not an FMA-Net configuration ({e})") from e


# --------------------------------------------------------------------------- locating the two files


@dataclass(frozen=True)
class FoundCheckpoint:
    """One checkpoint file found inside ``src``.

    Attributes:
        name: its name relative to ``src`` (``archive.zip:member`` in a zip), as recorded in the metadata.
        data: its bytes.
        display: how errors name it (with the full path of ``src``).
    """

    name: str
    data: bytes
    display: str


def _pick_pair(d_paths: list[str], r_paths: list[str], src: Path) -> tuple[str, str]:
    """Choose the (Net_D, Net_R) files: the only pair, or the only folder holding both."""
    if not d_paths or not r_paths:
        lacking = " and ".join(n for n, found in ((NET_D_FILE, d_paths), (NET_R_FILE, r_paths)) if not found)
        raise WeightsNotFoundError(f"{src}: no {lacking} found (at any depth)")
    if len(d_paths) == 1 and len(r_paths) == 1:
        return d_paths[0], r_paths[0]
    r_by_dir = {str(PurePosixPath(r).parent): r for r in r_paths}
    pairs = [
        (d, r_by_dir[str(PurePosixPath(d).parent)])
        for d in d_paths
        if str(PurePosixPath(d).parent) in r_by_dir
    ]
    if len(pairs) == 1:
        return pairs[0]
    found = sorted(d_paths + r_paths)
    listed = ", ".join(found[:4]) + (f", ... ({len(found)} files)" if len(found) > 4 else "")
    raise CheckpointError(
        f"{src}: ambiguous, {len(d_paths)} {NET_D_FILE} and {len(r_paths)} {NET_R_FILE} found "
        f"({listed}); point SRC at the folder that holds the pair to import"
    )


def _unsafe_member(name: str) -> bool:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":")


_Pair = tuple[FoundCheckpoint, FoundCheckpoint, dict[str, str]]


def _find_in_zip(src: Path) -> _Pair:
    try:
        with zipfile.ZipFile(src) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
            tricks = [i.filename for i in infos if _unsafe_member(i.filename)]
            if tricks:
                raise CheckpointError(f"{src}: refused, the archive has unsafe member paths: {tricks[:3]}")
            d_paths = [i.filename for i in infos if PurePosixPath(i.filename).name == NET_D_FILE]
            r_paths = [i.filename for i in infos if PurePosixPath(i.filename).name == NET_R_FILE]
            d_name, r_name = _pick_pair(d_paths, r_paths, src)
            found = []
            for member in (d_name, r_name):
                info = zf.getinfo(member)
                if info.file_size > MAX_MEMBER_BYTES:
                    raise CheckpointError(
                        f"{src}:{member}: {info.file_size} bytes, larger than any checkpoint"
                    )
                found.append(FoundCheckpoint(f"{src.name}:{member}", zf.read(member), f"{src}:{member}"))
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, NotImplementedError) as e:
        raise CheckpointError(f"{src}: corrupt or unreadable zip archive ({e})") from e
    return found[0], found[1], {src.name: sha256_file(src)}


def _find_in_folder(src: Path) -> _Pair:
    d_paths: list[str] = []
    r_paths: list[str] = []
    for root, _dirs, files in os.walk(src):  # does not follow symlinked folders
        rel = Path(root).relative_to(src)
        for f in files:
            if f == NET_D_FILE:
                d_paths.append((rel / f).as_posix())
            elif f == NET_R_FILE:
                r_paths.append((rel / f).as_posix())
    d_name, r_name = _pick_pair(d_paths, r_paths, src)
    d, r = src / d_name, src / r_name
    found_d = FoundCheckpoint(d_name, d.read_bytes(), str(d))
    return found_d, FoundCheckpoint(r_name, r.read_bytes(), str(r)), {}


def find_official_checkpoints(src: str | os.PathLike[str]) -> _Pair:
    """Locate and read ``model_D_best.pt`` and ``model_R_best.pt`` in a folder or a zip archive.

    Returns:
        The Net_D file, the Net_R file, and ``{archive name: sha256}`` (empty for a folder).

    Raises:
        WeightsNotFoundError: ``src`` is missing, or lacks one of the files.
        CheckpointError: not a folder or zip, an ambiguous layout, unsafe member paths, a corrupt zip.
    """
    p = Path(src)
    if p.is_dir():
        return _find_in_folder(p)
    if not p.exists():
        raise WeightsNotFoundError(f"{p}: no such file or folder")
    if not zipfile.is_zipfile(p):
        raise CheckpointError(f"{p}: expected a folder or a .zip holding {NET_D_FILE} and {NET_R_FILE}")
    return _find_in_zip(p)


# --------------------------------------------------------------------------- the import


def _part_state_dict(found: FoundCheckpoint, part: str) -> dict[str, torch.Tensor]:
    obj = load_torch_checkpoint(found.data, found.display)
    return remap_official_fmanet(canonicalize(obj, source=found.display), part=part)


def _check_output(src: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output that is a folder, exists (without ``overwrite``), or is one of the inputs."""
    if out.is_dir():
        raise OutputExistsError(f"{out}: is a folder; give the output file name", overwritable=False)
    if out.exists():
        target = out.resolve()
        if target == src.resolve() or (
            src.is_dir() and target.is_relative_to(src.resolve()) and target.name in (NET_D_FILE, NET_R_FILE)
        ):
            raise OutputExistsError(f"{out}: the output is the input", overwritable=False)
        if not overwrite:
            raise OutputExistsError(f"{out}: already exists")


def import_official(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Convert the official FMA-Net checkpoint pair into one ``fmanetpp.weights/1`` safetensors file.

    Args:
        src: the released zip or a folder holding ``model_D_best.pt`` and ``model_R_best.pt`` at any depth.
        out: the safetensors file to write (atomically).
        config: the official ``experiment.cfg`` or a JSON of official config fields; ``None`` for the
            released full-size configuration.
        overwrite: replace ``out`` if it exists.

    Returns:
        What was written, with the sha256 of every source.

    Raises:
        WeightsNotFoundError, CheckpointError, UnsafeCheckpointError, StateDictMismatchError,
        ConfigError, OutputExistsError: see the finder, the loader and the strict load.
    """
    src_p, out_p = Path(src), Path(out)
    if not src_p.exists():
        raise WeightsNotFoundError(f"{src_p}: no such file or folder")
    _check_output(src_p, out_p, overwrite)
    cfg_dict = load_official_config(config)
    cfg = official_to_config(cfg_dict, source=str(config) if config else "preset fmanet")
    d_file, r_file, sources = find_official_checkpoints(src_p)
    sources[d_file.name] = sha256_bytes(d_file.data)
    sources[r_file.name] = sha256_bytes(r_file.data)
    state_dict = {**_part_state_dict(d_file, "D"), **_part_state_dict(r_file, "R")}

    model = build_model("fmanet", cfg)
    load_state_dict_strict(model, state_dict, source=str(src_p))
    out_p.parent.mkdir(parents=True, exist_ok=True)
    save_model(
        model,
        out_p,
        channel_order="BGR",
        source_sha256=sources,
        metadata={
            "name": out_p.stem,
            "description": "Official FMA-Net (CVPR 2024) weights imported from "
            f"{src_p.name}; the network expects BGR frames, as the official pipeline reads them",
        },
    )
    return ImportResult(
        output=out_p,
        config=dict(cfg_dict),
        sources=sources,
        num_params=sum(t.numel() for t in state_dict.values()),
        channel_order="BGR",
    )
