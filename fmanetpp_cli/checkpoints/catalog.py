"""Every model the user can run and whether it is on this machine: the zoo, imports and downloads.

:func:`list_models` merges three sources (what ``fmanetpp models`` shows):

1. the zoo table (:mod:`fmanetpp_cli.checkpoints.zoo`): available when its file is in a weights folder or,
   for Hub entries, in the Hugging Face cache;
2. other ``*.safetensors`` files of ours in the weights folders (your own imports under another name, or
   trained weights copied there), named by their file stem, which ``--model`` accepts;
3. ``fmanetpp.weights/1`` files in the Hugging Face cache (anything fetched with ``fmanetpp download`` or
   ``--model owner/name``), one row per repository file, named ``owner/name`` (plus ``:file`` when a
   repository holds several).

Only file headers are read (no tensor is loaded), so listing is fast even with large weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fmanetpp_cli.checkpoints import hub, zoo
from fmanetpp_cli.errors import FMANetError


@dataclass(frozen=True)
class CatalogEntry:
    """One row of ``fmanetpp models``.

    Attributes:
        name: what to pass to ``--model``.
        kind: ``"bundled"``, ``"zoo"`` (a known entry), ``"local"`` (a file in a weights folder) or
            ``"hub-cache"`` (downloaded from the Hub).
        available: whether the file is on this machine (no download needed).
        path: the local file when available.
        arch: architecture (``fmanet`` / ``fmanetpp``), when known.
        config: preset name (zoo entries) or "custom" (files described by their own metadata).
        scale: native scale factor, when known.
        channel_order: colour order the weights expect, when known.
        repo_id: Hub repository, when the entry comes from or is published on the Hub.
        filename: file name (inside the repository for Hub entries).
        revision: pinned commit (zoo) or cached commit (Hub cache).
        sha256: recorded digest (zoo entries with a fixed file).
        license: licence text.
        notes: how to obtain it / what to know.
    """

    name: str
    kind: str
    available: bool
    path: Path | None = None
    arch: str | None = None
    config: str | None = None
    scale: int | None = None
    channel_order: str | None = None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None
    sha256: str | None = None
    license: str = ""
    notes: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (paths as strings)."""
        d = asdict(self)
        d["path"] = str(self.path) if self.path is not None else None
        return d


def _header(path: Path) -> Any | None:
    """The weights-file description of ``path``, or None when it is not an fmanetpp weights file."""
    from fmanetpp_cli.checkpoints.weights_file import read_weights_info

    try:
        return read_weights_info(path)
    except (FMANetError, OSError, ValueError):
        return None


def _from_spec(spec: zoo.WeightSpec, cache_dir: str | Path | None) -> CatalogEntry:
    path = zoo.find_local(spec)
    if path is None and spec.repo_id is not None:
        path = hub.cached(spec.repo_id, spec.filename, revision=spec.revision, cache_dir=cache_dir)
    return CatalogEntry(
        name=spec.name,
        kind="bundled" if spec.bundled else "zoo",
        available=path is not None,
        path=path,
        arch=spec.arch,
        config=spec.config,
        scale=spec.scale,
        channel_order=spec.channel_order,
        repo_id=spec.repo_id,
        filename=spec.filename,
        revision=spec.revision,
        sha256=spec.sha256,
        license=spec.license,
        notes=spec.notes,
    )


def _from_file(
    name: str,
    kind: str,
    path: Path,
    info: Any,
    *,
    filename: str | None = None,
    repo_id: str | None = None,
    revision: str | None = None,
) -> CatalogEntry:
    return CatalogEntry(
        name=name,
        kind=kind,
        available=True,
        path=path,
        arch=info.arch,
        config="custom",
        scale=info.config.get("scale"),
        channel_order=info.channel_order,
        filename=filename or path.name,
        repo_id=repo_id,
        revision=revision,
        license=info.extra.get("license", ""),
        notes=info.extra.get("description", ""),
    )


def _local_files(known: set[str]) -> list[CatalogEntry]:
    rows: list[CatalogEntry] = []
    seen: set[str] = set()
    for folder in zoo.weights_dirs():
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.safetensors")):
            if path.name in known or path.name in seen:
                continue
            info = _header(path)
            if info is None:
                continue
            seen.add(path.name)
            rows.append(_from_file(path.stem, "local", path, info))
    return rows


def _cached_hub_files(cache_dir: str | Path | None, known: set[tuple[str, str]]) -> list[CatalogEntry]:
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hub.cache_dir_from_env(cache_dir))
    except CacheNotFound:
        return []
    rows: list[CatalogEntry] = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        # Newest snapshot first; one row per file name of the repository.
        found: dict[str, tuple[Path, str, Any]] = {}
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True):
            for f in revision.files:
                rel = str(f.file_path.relative_to(revision.snapshot_path))
                if not rel.endswith(".safetensors") or rel in found or (repo.repo_id, rel) in known:
                    continue
                info = _header(f.file_path)
                if info is not None:
                    found[rel] = (f.file_path, revision.commit_hash, info)
        for rel, (path, commit, info) in sorted(found.items()):
            name = repo.repo_id if len(found) == 1 else f"{repo.repo_id}:{rel}"
            rows.append(
                _from_file(name, "hub-cache", path, info, filename=rel, repo_id=repo.repo_id, revision=commit)
            )
    return rows


def list_models(*, cache_dir: str | Path | None = None, include_unlisted: bool = False) -> list[CatalogEntry]:
    """Zoo entries, then other local weights files, then fmanetpp weights in the Hugging Face cache."""
    specs = zoo.list_specs(include_unlisted=include_unlisted)
    rows = [_from_spec(spec, cache_dir) for spec in specs]
    known_names = {spec.filename for spec in zoo.ZOO.values()}
    known_hub = {(s.repo_id, s.filename) for s in zoo.ZOO.values() if s.repo_id is not None}
    rows += _local_files(known_names)
    rows += _cached_hub_files(cache_dir, known_hub)
    return rows
