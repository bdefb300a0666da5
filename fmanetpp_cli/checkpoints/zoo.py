"""The table of known weights (the "model zoo") and the local folders searched for them.

Each entry is a frozen :class:`WeightSpec`: what the network is (architecture, preset, scale, channel
order), where the file comes from (a Hub ``repo_id`` + ``filename`` at a pinned ``revision``, or a local
file only), its ``sha256`` when known, and its licence and provenance. The table lives in code so that an
installed package knows it without the repository checkout (house style, section 5.4).

Entries today:

- ``fmanetpp-small-v6``: the bundled default, an FMA-Net++ ``fmanetpp-small-v2g`` preset trained from
  scratch on this project's CPU under the three-set split (``train/splits.py``); the file
  ``fmanetpp-small-v6.safetensors`` ships in the repository's ``weights/`` folder. It is not published on
  the Hub (no repository exists yet), so it has no ``repo_id``.
- ``fmanetpp-small-v5``: the previous default (``fmanetpp-small-v3`` fine-tuned on faster camera motion
  with an EMA of the weights and an l2 pixel loss).
- ``fmanetpp-small-v4``: the previous default (v3 fine-tuned longer, without EMA; over the training budget).
- ``fmanetpp-small-v3`` and ``fmanetpp-small-v2``: earlier defaults, kept in ``weights/`` because the
  v5/v4 and v3 recipes start from them.
- ``fmanet-reds``: the official FMA-Net (CVPR 2024) REDS weights. They are released as a zip on Google Drive,
  not on the Hub, so this is a local-only entry: import the release once with
  ``fmanetpp weights import FMA-Net.zip <weights dir>/fmanet-reds.safetensors`` (any folder of
  :func:`weights_dirs`) and the name resolves from then on.

There is deliberately no Hub entry for a real model: no official FMA-Net or FMA-Net++ repository exists
on the Hub at the time of writing, and inventing repository ids or checksums would only produce confusing
404s. Weights on the Hub (yours, after ``fmanetpp weights push``) are used by ``REPO_ID`` directly.

Local folders searched for an entry's ``filename`` (first hit wins), see :func:`weights_dirs`:

1. ``$FMANETPP_WEIGHTS_DIR`` (one folder, or several joined with ``os.pathsep``);
2. the ``weights/`` folder of the source checkout this package runs from (an editable install);
3. ``fmanetpp_cli/assets/`` inside the installed package (where a wheel build can ship the default);
4. the per-user folder ``$XDG_DATA_HOME/fmanetpp/weights`` (default ``~/.local/share/fmanetpp/weights``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

WEIGHTS_DIR_ENV = "FMANETPP_WEIGHTS_DIR"

# Name of the model used when neither --model nor --weights is given.
DEFAULT_MODEL = "fmanetpp-small-v6"


@dataclass(frozen=True, slots=True)
class WeightSpec:
    """One known set of weights.

    Attributes:
        name: the name users type (``--model NAME``).
        arch: architecture name (``"fmanet"`` or ``"fmanetpp"``), a key of ``models.ARCHITECTURES``.
        config: the preset name in ``models.MODEL_CONFIGS`` the weights were made for.
        filename: file name of the weights, locally and inside the Hub repository.
        scale: the native upscaling factor.
        channel_order: the colour order the weights expect (``"RGB"`` or ``"BGR"``).
        repo_id: ``owner/name`` on the Hub, or None for a file that only exists locally.
        revision: the pinned commit of ``repo_id`` (40 hex digits); None only without ``repo_id``.
        sha256: hex digest of the file when it is fixed and known (the bundled file, Hub files); None when it
            is not (an import, whose bytes depend on the converter version): then no checksum check.
        license: the licence of the weights (and the data they were trained on, where it matters).
        source: where the weights come from (a URL or a short description).
        notes: anything a user should know (how to obtain the file, what is not published yet).
        bundled: True for the default model that ships with the repository.
        listed: False keeps an entry out of the default ``fmanetpp models`` listing.
    """

    name: str
    arch: str
    config: str
    filename: str
    scale: int = 4
    channel_order: str = "RGB"
    repo_id: str | None = None
    revision: str | None = None
    sha256: str | None = None
    license: str = ""
    source: str = ""
    notes: str = ""
    bundled: bool = False
    listed: bool = True

    @property
    def on_hub(self) -> bool:
        """Whether the entry can be downloaded from the Hub."""
        return self.repo_id is not None


def _trained_here(name: str, config: str, sha256: str, notes: str, *, bundled: bool = False) -> WeightSpec:
    """An FMA-Net++ file trained by this project and committed as ``weights/<name>.safetensors``.

    ``sha256`` is that of the committed file; tests/test_zoo.py checks they agree.
    """
    return WeightSpec(
        name=name,
        arch="fmanetpp",
        config=config,
        filename=f"{name}.safetensors",
        sha256=sha256,
        license="MIT",
        source="trained in this project (fmanetpp train); model card in weights/README.md",
        notes=notes,
        bundled=bundled,
    )


_ENTRIES: tuple[WeightSpec, ...] = (
    _trained_here(
        "fmanetpp-small-v6",
        "fmanetpp-small-v2g",
        "0d492712269e0089d2ed9887db753275669db283145e001825a3c95b65bf8f2f",
        "The bundled default (model card and training footage in weights/README.md), the first trained "
        "under the three-set split. Not published on the Hub yet; `fmanetpp weights push` publishes a copy.",
        bundled=True,
    ),
    _trained_here(
        "fmanetpp-small-v5",
        "fmanetpp-small-v2g",
        "9ad0ffcc0b16e3779dc295fdd1dd3f4d683c2d39deb2cf5389e6949c84b02157",
        "The previous bundled default (weights/README.md); its recipes saw the test set's Big Buck Bunny "
        "frames.",
    ),
    _trained_here(
        "fmanetpp-small-v4",
        "fmanetpp-small-v2g",
        "dbbf80a291a3209a78e974d1488d38c6945dbb69f7d5f616571d2c8b2224414d",
        "The previous bundled default (weights/README.md); its training went over the issue's budget.",
    ),
    _trained_here(
        "fmanetpp-small-v3",
        "fmanetpp-small-v2g",
        "e6e4431754abdfbfb081cc2009bf3c90d47172aeedf2b565861e5bc8bcb0da4a",
        "An earlier bundled default; the starting point of the v5 and v4 recipes (weights/README.md).",
    ),
    _trained_here(
        "fmanetpp-small-v2",
        "fmanetpp-small-v2",
        "9d63ace280a550a69cb5c9cfdc4ba49ca1aed772ee1301dfa03a89e82b6f577b",
        "An earlier bundled default; the starting point of the v3 recipe (weights/README.md).",
    ),
    WeightSpec(
        name="fmanet-reds",
        arch="fmanet",
        config="fmanet",
        filename="fmanet-reds.safetensors",
        channel_order="BGR",
        license="MIT; REDS data terms",
        source="https://github.com/KAIST-VICLab/FMA-Net (release zip on Google Drive)",
        notes=(
            "Official FMA-Net (CVPR 2024) REDS weights (code MIT; trained on REDS, whose own terms apply). "
            "Not on the Hub: download the release zip from the "
            "official README, then `fmanetpp weights import FMA-Net.zip DIR/fmanet-reds.safetensors` with "
            "DIR one of the weights folders listed by `fmanetpp models`."
        ),
    ),
)

ZOO: MappingProxyType[str, WeightSpec] = MappingProxyType({spec.name: spec for spec in _ENTRIES})


def list_specs(include_unlisted: bool = False) -> list[WeightSpec]:
    """Every zoo entry in table order (entries with ``listed=False`` only when asked)."""
    return [spec for spec in ZOO.values() if spec.listed or include_unlisted]


def _checkout_weights_dir() -> Path | None:
    # fmanetpp_cli/checkpoints/zoo.py -> the folder that holds fmanetpp_cli/ (a source checkout when it also
    # has pyproject.toml; a site-packages folder otherwise, which must not be searched).
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file():
        return root / "weights"
    return None


def user_weights_dir() -> Path:
    """The per-user weights folder (``$XDG_DATA_HOME/fmanetpp/weights``); it may not exist yet."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fmanetpp" / "weights"


def weights_dirs() -> list[Path]:
    """The folders searched for zoo files, in order (see the module docstring); some may not exist."""
    dirs: list[Path] = []
    env = os.environ.get(WEIGHTS_DIR_ENV, "")
    dirs.extend(Path(p).expanduser() for p in env.split(os.pathsep) if p)
    checkout = _checkout_weights_dir()
    if checkout is not None:
        dirs.append(checkout)
    dirs.append(Path(__file__).resolve().parents[1] / "assets")
    dirs.append(user_weights_dir())
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def find_local(spec: WeightSpec) -> Path | None:
    """The first file called ``spec.filename`` in :func:`weights_dirs`, or None."""
    for folder in weights_dirs():
        candidate = folder / spec.filename
        if candidate.is_file():
            return candidate
    return None
