"""Weights from the Hugging Face Hub: cache look-up, download, checksum, and error translation.

Everything goes through ``huggingface_hub.hf_hub_download`` and its normal cache (``HF_HUB_CACHE``), so a
file downloaded here is shared with every other tool that uses the Hub. Three environment variables are read
at *call* time (the library reads them once at import, which would ignore a change made later in the same
process): ``HF_ENDPOINT`` (another Hub, or a test server), ``HF_HUB_CACHE`` / ``HF_HOME`` (the cache), and
``HF_HUB_OFFLINE`` (never touch the network).

A file whose sha256 differs from the expected one is refused: the cached copy (the snapshot link and the
blob it points to) is deleted before :class:`ChecksumError` is raised, so the next run cannot pick it up
from the cache. Errors of ``huggingface_hub`` and of its HTTP client become :class:`WeightsNotFoundError`
(no such repository, revision or file; not cached while offline) or :class:`HubError` (server errors,
dropped connections), always naming the repository and the file.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

from fmanetpp_cli._files import sha256_file
from fmanetpp_cli.errors import ChecksumError, HubError, WeightsNotFoundError

_logger = logging.getLogger(__name__)

_TRUE = {"1", "on", "yes", "true"}


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` when given, else whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set."""
    if offline is not None:
        return offline
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def endpoint() -> str | None:
    """The Hub endpoint from ``HF_ENDPOINT`` now, or None for the library's default."""
    value = os.environ.get("HF_ENDPOINT", "").strip()
    return value.rstrip("/") or None


def cache_dir_from_env(cache_dir: str | Path | None = None) -> str | None:
    """``cache_dir`` when given, else ``HF_HUB_CACHE``, else ``$HF_HOME/hub``, else None (library default)."""
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    if os.environ.get("HF_HUB_CACHE"):
        return str(Path(os.environ["HF_HUB_CACHE"]).expanduser())
    if os.environ.get("HF_HOME"):
        return str(Path(os.environ["HF_HOME"]).expanduser() / "hub")
    return None


def _describe(repo_id: str, filename: str, revision: str | None) -> str:
    return f"{repo_id}/{filename}" + (f" (revision {revision})" if revision else "")


def http_status(exc: BaseException) -> int | None:
    """The HTTP status code somewhere in an exception's cause chain, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
        current = current.__cause__ or current.__context__
    return None


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and its causes / contexts, outermost first."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not seen for seen in chain):
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


_DROPPED = {"RemoteProtocolError", "ReadError", "WriteError"}
_UNREACHABLE = {"ConnectError", "ConnectTimeout", "ReadTimeout", "PoolTimeout", "ConnectionRefusedError"}


def translate_error(exc: BaseException, repo_id: str, filename: str, revision: str | None) -> Exception:
    """Map an error of ``huggingface_hub`` / its HTTP client to our hierarchy (the caller raises ``from``)."""
    from huggingface_hub import errors as hf_errors

    what = _describe(repo_id, filename, revision)
    where = endpoint() or "https://huggingface.co"
    if isinstance(exc, hf_errors.GatedRepoError):
        return HubError(f"{what}: the repository is gated; accept its terms and log in (`hf auth login`)")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return WeightsNotFoundError(f"{what}: no repository {repo_id!r} on {where} (or it is private)")
    if isinstance(exc, hf_errors.RevisionNotFoundError):
        return WeightsNotFoundError(f"{what}: revision {revision!r} does not exist in {repo_id}")
    if isinstance(exc, hf_errors.RemoteEntryNotFoundError):
        return WeightsNotFoundError(f"{what}: no file {filename!r} in {repo_id} at that revision")
    if isinstance(exc, hf_errors.LocalEntryNotFoundError | hf_errors.OfflineModeIsEnabled) and (
        is_offline() or isinstance(exc, hf_errors.OfflineModeIsEnabled)
    ):
        return WeightsNotFoundError(
            f"{what}: not in the local Hugging Face cache and offline mode is on "
            "(--offline or HF_HUB_OFFLINE=1)"
        )
    status = http_status(exc)
    if status is not None:
        return HubError(f"{what}: the Hub at {where} answered HTTP {status}")
    chain = _chain(exc)
    cause = chain[-1]
    detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
    kinds = {type(e).__name__ for e in chain}
    if kinds & _DROPPED:
        return HubError(f"{what}: the connection to {where} dropped during the download ({detail})")
    if kinds & _UNREACHABLE:
        return HubError(f"{what}: cannot reach {where} ({detail})")
    return HubError(f"{what}: download from {where} failed ({type(cause).__name__}: {detail})")


def evict(path: Path) -> None:
    """Delete a cached file: the snapshot entry and, when it is a link into ``blobs/``, the blob too."""
    blob: Path | None = None
    if path.is_symlink():
        blob = path.resolve()
    for victim in (path, blob):
        if victim is not None:
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()


def verify_sha256(path: Path, expected: str, *, what: str, evict_on_mismatch: bool) -> None:
    """Raise :class:`ChecksumError` (after evicting a cached file when asked) if ``path`` differs."""
    actual = sha256_file(path)
    if actual == expected.lower():
        return
    if evict_on_mismatch:
        evict(path)
    raise ChecksumError(
        f"{what}: sha256 {actual} differs from the expected {expected.lower()}; "
        + ("the download was deleted from the cache" if evict_on_mismatch else "the file was not used")
    )


def cached(
    repo_id: str, filename: str, *, revision: str | None = None, cache_dir: str | Path | None = None
) -> Path | None:
    """The cached copy of a Hub file at ``revision`` (default ``main``), or None; never uses the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(
        repo_id, filename, cache_dir=cache_dir_from_env(cache_dir), revision=revision or "main"
    )
    return Path(found) if isinstance(found, str) else None


def _download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None,
    cache_dir: str | None,
    local_files_only: bool,
    force: bool = False,
) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force,
            endpoint=endpoint(),
        )
    except Exception as e:  # noqa: BLE001 - every failure of the client is translated below
        raise translate_error(e, repo_id, filename, revision) from e
    return Path(str(path))


def fetch(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
    force_download: bool = False,
    prefer_cache: bool = True,
) -> Path:
    """A Hub file from the cache, else downloaded (unless offline), checked against ``sha256`` if given.

    Args:
        repo_id: ``owner/name`` of a model repository.
        filename: path of the file inside the repository.
        revision: branch, tag or (best) a 40-hex commit; None means ``main``.
        sha256: expected hex digest; a mismatch deletes the cached copy and raises.
        cache_dir: cache folder (default: ``HF_HUB_CACHE`` / the library's default).
        offline: True never touches the network; None follows ``HF_HUB_OFFLINE``.
        force_download: download again even when cached (not allowed offline).
        prefer_cache: use a cached copy without asking the Hub (the resolution order of ``--model``); False
            asks the Hub first, as ``hf_hub_download`` does, so a moved branch is followed
            (``fmanetpp download``).

    Returns:
        The path of the file inside the Hugging Face cache.

    Raises:
        WeightsNotFoundError: no such repository / revision / file, or not cached while offline.
        HubError: the server failed or the connection dropped (no partial file is left in the cache).
        ChecksumError: the file's sha256 differs from ``sha256`` (it was deleted from the cache).
    """
    cache = cache_dir_from_env(cache_dir)
    what = _describe(repo_id, filename, revision)
    if is_offline(offline):
        if force_download:
            raise HubError(f"{what}: cannot download again while offline (--offline or HF_HUB_OFFLINE=1)")
        try:
            path = _download(repo_id, filename, revision=revision, cache_dir=cache, local_files_only=True)
        except (WeightsNotFoundError, HubError) as e:
            raise WeightsNotFoundError(
                f"{what}: not in the local Hugging Face cache and offline mode is on "
                "(--offline or HF_HUB_OFFLINE=1)"
            ) from e
    else:
        hit: Path | None = None
        if prefer_cache and not force_download:
            with contextlib.suppress(WeightsNotFoundError, HubError):
                hit = _download(repo_id, filename, revision=revision, cache_dir=cache, local_files_only=True)
        path = hit or _download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=cache,
            local_files_only=False,
            force=force_download,
        )
    if sha256 is not None:
        verify_sha256(path, sha256, what=what, evict_on_mismatch=True)
    return path


def list_files(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
) -> list[str]:
    """Files of a repository: from the Hub, or offline from the cached snapshot of ``revision``."""
    if is_offline(offline):
        return _cached_snapshot_files(repo_id, revision=revision, cache_dir=cache_dir)
    from huggingface_hub import HfApi

    try:
        return sorted(HfApi(endpoint=endpoint()).list_repo_files(repo_id, revision=revision))
    except Exception as e:  # noqa: BLE001 - translated
        raise translate_error(e, repo_id, "*", revision) from e


def _cached_snapshot_files(repo_id: str, *, revision: str | None, cache_dir: str | Path | None) -> list[str]:
    from huggingface_hub.constants import HF_HUB_CACHE

    root = Path(cache_dir_from_env(cache_dir) or HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    ref = root / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else (revision or "")
    snapshot = root / "snapshots" / commit
    if not commit or not snapshot.is_dir():
        return []
    return sorted(str(p.relative_to(snapshot)) for p in snapshot.rglob("*") if p.is_file())


def default_filename(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    offline: bool | None = None,
) -> str:
    """The weights file of a repository when none is named.

    That is its only ``*.safetensors`` file, else ``model.safetensors``.

    Raises:
        WeightsNotFoundError: no safetensors file, or several and none is ``model.safetensors``.
    """
    files = list_files(repo_id, revision=revision, cache_dir=cache_dir, offline=offline)
    weights = [f for f in files if f.endswith(".safetensors")]
    if len(weights) == 1:
        return weights[0]
    if "model.safetensors" in weights:
        return "model.safetensors"
    if not weights:
        where = "in the local cache" if is_offline(offline) else "in the repository"
        raise WeightsNotFoundError(f"{repo_id}: no *.safetensors file {where}; name one with --filename")
    raise WeightsNotFoundError(
        f"{repo_id}: several weights files ({', '.join(weights)}); choose one with --filename"
    )
