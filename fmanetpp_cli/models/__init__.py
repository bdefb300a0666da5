"""Architectures and the preset registry.

- ``ARCHITECTURES`` maps an architecture name (``"fmanet"``, ``"fmanetpp"``) to its frozen config class and
  its network class. Weights files record the architecture name and ``config.to_dict()``, and
  ``build_model(arch, config_dict)`` rebuilds the network from them.
- ``MODEL_CONFIGS`` maps a preset name to a config instance (each network module exports ``PRESETS``);
  ``create_model(name)`` builds that preset with freshly initialised weights.

Nothing in this package does file, network or terminal I/O (``tests/test_import_boundaries.py``).
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from fmanetpp_cli.errors import ConfigError


class ArchConfig(Protocol):
    """What every architecture config class provides (``FMANetConfig``, ``FMANetPPConfig``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types of every field."""
        ...

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArchConfig:
        """Rebuild from :meth:`to_dict` output; unknown keys raise ``ConfigError``."""
        ...


ARCHITECTURES: dict[str, tuple[type[ArchConfig], type[nn.Module]]] = {}
MODEL_CONFIGS: dict[str, ArchConfig] = {}


def _register_all() -> None:
    if ARCHITECTURES:
        return
    from fmanetpp_cli.models import fmanet, fmanetpp

    ARCHITECTURES["fmanet"] = (fmanet.FMANetConfig, fmanet.FMANet)
    MODEL_CONFIGS.update(fmanet.PRESETS)
    ARCHITECTURES["fmanetpp"] = (fmanetpp.FMANetPPConfig, fmanetpp.FMANetPP)
    MODEL_CONFIGS.update(fmanetpp.PRESETS)


def list_models() -> list[str]:
    """Names of every preset, sorted."""
    _register_all()
    return sorted(MODEL_CONFIGS)


def config_from_dict(arch: str, config: dict[str, Any]) -> ArchConfig:
    """Rebuild an architecture config from its ``to_dict()`` form (unknown keys are an error)."""
    _register_all()
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch][0].from_dict(config)


def build_model(arch: str, config: dict[str, Any] | ArchConfig) -> nn.Module:
    """Build a network of architecture ``arch`` from a config instance or its dict form."""
    _register_all()
    cfg = config if not isinstance(config, dict) else config_from_dict(arch, config)
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[arch][1](cfg)


def arch_of(model: nn.Module) -> str:
    """The architecture name of a network built by this package."""
    _register_all()
    for name, (_, cls) in ARCHITECTURES.items():
        if isinstance(model, cls):
            return name
    raise ConfigError(f"{type(model).__name__} is not an fmanetpp architecture")


def preset_arch(name: str) -> str:
    """The architecture name of a preset."""
    _register_all()
    cfg = MODEL_CONFIGS.get(name)
    for arch, (cfg_cls, _) in ARCHITECTURES.items():
        if isinstance(cfg, cfg_cls):
            return arch
    raise ConfigError(f"unknown model preset {name!r}; known: {', '.join(sorted(MODEL_CONFIGS))}")


def create_model(name: str) -> nn.Module:
    """Build a preset by name with freshly initialised weights.

    Raises:
        ConfigError: the name is not a known preset.
    """
    return build_model(preset_arch(name), MODEL_CONFIGS[name])
