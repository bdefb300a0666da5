"""Turn what the user typed (``--model NAME|PATH|REPO_ID``, ``--weights FILE``) into one local weights file.

Resolution order (first match wins; nothing here builds a model, so no download ever happens inside a
model constructor):

1. ``weights``: a file given with ``--weights``; it must exist.
2. ``model`` naming an existing file: that file.
3. ``model`` naming a zoo entry (:mod:`fmanetpp_cli.checkpoints.zoo`): the file in a local weights folder
   (the bundled default lives there), then the Hugging Face cache, then a download (not when offline).
   Otherwise ``model`` as the stem of a ``<model>.safetensors`` file in a weights folder (your own imports).
4. ``model`` shaped like a Hub repository id (``owner/name``): the file ``filename`` of that repository
   (default: the repository's only ``*.safetensors`` file, else ``model.safetensors``), from the cache or
   downloaded at ``revision``.
5. neither given: the bundled default (:data:`~fmanetpp_cli.checkpoints.zoo.DEFAULT_MODEL`).

Offline mode (``offline=True``, or ``offline=None`` with ``HF_HUB_OFFLINE=1`` in the environment) never
touches the network; a file missing from every local place then raises :class:`WeightsNotFoundError`.
"""

from __future__ import annotations

import re
from pathlib import Path

from fmanetpp_cli._files import sha256_file
from fmanetpp_cli.checkpoints import zoo
from fmanetpp_cli.errors import ChecksumError, ConfigError, WeightsNotFoundError

# owner/name as the Hub spells them: letters, digits, "-", "_", "." (no leading "." or "-", no "..").
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def looks_like_repo_id(text: str) -> bool:
    """Whether ``text`` reads as a Hub ``owner/name`` rather than a file path."""
    return bool(_REPO_ID.match(text)) and ".." not in text and not text.lower().endswith(_WEIGHT_SUFFIXES)


def _existing_file(text: str, what: str) -> Path:
    path = Path(text).expanduser()
    if path.is_dir():
        raise WeightsNotFoundError(f"{path}: is a folder, not a weights file ({what})")
    if not path.is_file():
        raise WeightsNotFoundError(f"{path}: no such weights file ({what})")
    return path


def _local_zoo_file(spec: zoo.WeightSpec) -> Path | None:
    path = zoo.find_local(spec)
    if path is None:
        return None
    if spec.sha256 is not None:
        actual = sha256_file(path)
        if actual != spec.sha256.lower():
            raise ChecksumError(
                f"{path}: sha256 {actual} differs from the {spec.name!r} entry's {spec.sha256}; "
                "the file is damaged or not the published one (if it was replaced on purpose, update "
                "its sha256 in fmanetpp_cli/checkpoints/zoo.py)"
            )
    return path


def _fetch_spec(
    spec: zoo.WeightSpec,
    repo_id: str,
    *,
    offline: bool | None,
    cache_dir: str | Path | None,
    force: bool = False,
) -> Path:
    """A zoo entry's file from the Hub cache or a download, pinned to its revision and sha256.

    ``repo_id`` is ``spec.repo_id``, passed once checked not to be None.
    """
    from fmanetpp_cli.checkpoints import hub

    return hub.fetch(
        repo_id,
        spec.filename,
        revision=spec.revision,
        sha256=spec.sha256,
        cache_dir=cache_dir,
        offline=offline,
        force_download=force,
    )


def resolve_spec(
    spec: zoo.WeightSpec, *, offline: bool | None = None, cache_dir: str | Path | None = None
) -> Path:
    """The local file of a zoo entry: local folders, then the Hub cache, then a download.

    Raises:
        WeightsNotFoundError: not found locally and the entry is not on the Hub, or offline and not cached.
        ChecksumError: the file found or downloaded differs from the entry's sha256.
        HubError: the download failed.
    """
    local = _local_zoo_file(spec)
    if local is not None:
        return local
    if spec.repo_id is None:
        searched = ", ".join(str(d) for d in zoo.weights_dirs())
        if spec.bundled:
            hint = " The bundled default is missing from this install; pass --model or --weights."
        else:
            hint = f" {spec.notes}" if spec.notes else ""
        raise WeightsNotFoundError(
            f"model {spec.name!r}: {spec.filename} is in none of the weights folders ({searched}).{hint}"
        )
    return _fetch_spec(spec, spec.repo_id, offline=offline, cache_dir=cache_dir)


def resolve_weights(
    model: str | None = None,
    weights: str | None = None,
    *,
    offline: bool | None = None,
    filename: str | None = None,
    revision: str | None = None,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
) -> Path:
    """Resolve ``--model`` / ``--weights`` to a local weights file (order in the module docstring).

    Args:
        model: a file path, a zoo name or a Hub ``owner/name``; None for the bundled default.
        weights: a weights file given directly; excludes ``model``.
        offline: True never uses the network; None follows ``HF_HUB_OFFLINE``.
        filename: file inside a Hub repository (only with a repository id).
        revision: branch, tag or commit of a Hub repository (only with a repository id).
        sha256: expected digest of a file from a Hub repository; a mismatch is refused.
        cache_dir: the Hugging Face cache folder (default: the library's, ``HF_HUB_CACHE``).

    Returns:
        The path of an existing local file (a path inside the Hugging Face cache for Hub files).

    Raises:
        ConfigError: both ``model`` and ``weights``, or Hub-only options without a repository id.
        WeightsNotFoundError: nothing matches (the message says what was looked for and where).
        ChecksumError: a file differs from its recorded sha256 (and was not used).
        HubError: a download failed.
    """
    if model is not None and weights is not None:
        raise ConfigError("give either --model or --weights, not both")
    hub_only = {"--filename": filename, "--revision": revision, "--sha256": sha256}
    given = [flag for flag, value in hub_only.items() if value is not None]
    if weights is not None:
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to a Hub repository id, not to --weights")
        return _existing_file(weights, "--weights")
    if model is None:
        model = zoo.DEFAULT_MODEL
    is_repo = looks_like_repo_id(model) and model not in zoo.ZOO and not Path(model).expanduser().exists()
    if given and not is_repo:
        raise ConfigError(f"{', '.join(given)} only apply to a Hub repository id (owner/name), not {model!r}")

    path = Path(model).expanduser()
    if path.exists():
        return _existing_file(model, "--model")
    if model in zoo.ZOO:
        return resolve_spec(zoo.ZOO[model], offline=offline, cache_dir=cache_dir)
    if not is_repo and "/" not in model and not model.endswith(_WEIGHT_SUFFIXES):
        for folder in zoo.weights_dirs():
            candidate = folder / f"{model}.safetensors"
            if candidate.is_file():
                return candidate
    if is_repo:
        from fmanetpp_cli.checkpoints import hub

        name = filename or hub.default_filename(
            model, revision=revision, offline=offline, cache_dir=cache_dir
        )
        return hub.fetch(model, name, revision=revision, sha256=sha256, cache_dir=cache_dir, offline=offline)
    known = ", ".join(sorted(zoo.ZOO))
    raise WeightsNotFoundError(
        f"{model}: not a weights file, a known model ({known}), a file in a weights folder "
        "(see `fmanetpp models`) or a Hub repository id (owner/name)"
    )


def download_weights(
    model: str,
    *,
    filename: str | None = None,
    revision: str | None = None,
    sha256: str | None = None,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    force: bool = False,
) -> Path:
    """Fetch a zoo entry or a Hub repository's weights into the Hugging Face cache (``fmanetpp download``).

    Unlike :func:`resolve_weights`, a repository id asks the Hub first (a moved branch is followed, a file
    already cached is not downloaded again), and ``force`` downloads again. A zoo entry that is not on
    the Hub is only found locally.

    Raises:
        ConfigError: Hub options given with a zoo name.
        WeightsNotFoundError / HubError / ChecksumError: as :func:`resolve_weights`.
    """
    from fmanetpp_cli.checkpoints import hub

    if model in zoo.ZOO:
        if filename is not None or revision is not None or sha256 is not None:
            raise ConfigError(
                f"{model!r} is a known model: --filename, --revision and --sha256 are fixed for it"
            )
        spec = zoo.ZOO[model]
        if spec.repo_id is None or zoo.find_local(spec) is not None:
            return resolve_spec(spec, offline=offline, cache_dir=cache_dir)
        return _fetch_spec(spec, spec.repo_id, offline=offline, cache_dir=cache_dir, force=force)
    if not looks_like_repo_id(model):
        known = ", ".join(sorted(zoo.ZOO))
        raise WeightsNotFoundError(
            f"{model}: not a known model ({known}) or a Hub repository id (owner/name)"
        )
    name = filename or hub.default_filename(model, revision=revision, offline=offline, cache_dir=cache_dir)
    return hub.fetch(
        model,
        name,
        revision=revision,
        sha256=sha256,
        cache_dir=cache_dir,
        offline=offline,
        force_download=force,
        prefer_cache=False,
    )
