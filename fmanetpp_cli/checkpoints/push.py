"""Publish a weights file to the user's own Hugging Face Hub repository, with a generated model card.

:func:`push_weights` checks that the file is an ``fmanetpp.weights/1`` file (so only weights that
:func:`~fmanetpp_cli.checkpoints.load_model` can rebuild are published), creates the repository if needed,
and uploads the file and a ``README.md`` model card in one commit. The card is written from the file's own
metadata: architecture, config, channel order, parameter count, sha256, source files, training data and
metrics (the ``training`` / ``metrics`` metadata entries, or values passed in), and the licence.

The result carries the commit id and the sha256, which are exactly what a pinned zoo entry needs
(:class:`~fmanetpp_cli.checkpoints.zoo.WeightSpec` ``revision`` and ``sha256``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmanetpp_cli._files import sha256_file
from fmanetpp_cli.checkpoints import hub
from fmanetpp_cli.checkpoints.weights_file import WeightsInfo, read_weights_info
from fmanetpp_cli.errors import ConfigError, HubError

# Licence identifiers the Hub knows, for the card's front matter; anything else becomes "other".
_HUB_LICENSES = {"mit", "apache-2.0", "bsd-3-clause", "cc-by-4.0", "cc-by-nc-4.0", "cc-by-sa-4.0", "openrail"}

_ARCH_TITLES = {
    "fmanetpp": "FMA-Net++ (Youk, Oh, Kim, arXiv 2512.04390)",
    "fmanet": "FMA-Net (Youk, Oh, Kim, CVPR 2024)",
}


@dataclass(frozen=True)
class PushResult:
    """What was published.

    Attributes:
        repo_id: the repository.
        filename: the weights file's path inside the repository.
        revision: the commit id that holds the upload (pin it).
        sha256: hex digest of the uploaded weights.
        url: the repository's web address.
        commit_url: the commit's web address.
    """

    repo_id: str
    filename: str
    revision: str
    sha256: str
    url: str
    commit_url: str


def _parse_json_text(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _license_id(text: str) -> str:
    first = re.split(r"[\s(;,]", text.strip(), maxsplit=1)[0].lower() if text.strip() else ""
    return first if first in _HUB_LICENSES else "other"


def _bullets(value: Any) -> list[str]:
    if value is None or value == "" or value == {}:
        return ["- not recorded in the weights file"]
    if isinstance(value, dict):
        return [f"- **{k}**: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in value.items()]
    if isinstance(value, list):
        return [f"- {v}" for v in value]
    return [str(value)]


def model_card(
    info: WeightsInfo,
    *,
    repo_id: str,
    filename: str,
    sha256: str,
    license: str | None = None,
    training: Any = None,
    metrics: Any = None,
) -> str:
    """The ``README.md`` model card for a weights file (YAML front matter + Markdown).

    ``license``, ``training`` and ``metrics`` override the file's metadata entries of the same name.
    """
    meta = info.extra
    licence = license or meta.get("license") or "unknown"
    training = training if training is not None else _parse_json_text(meta.get("training"))
    metrics = metrics if metrics is not None else _parse_json_text(meta.get("metrics"))
    name = meta.get("name") or Path(filename).stem
    title = _ARCH_TITLES.get(info.arch, info.arch)
    lines = [
        "---",
        f"license: {_license_id(licence)}",
        "library_name: fmanetpp",
        "pipeline_tag: image-to-image",
        "tags:",
        "- video-super-resolution",
        "- video-deblurring",
        f"- {info.arch}",
        "---",
        "",
        f"# {name}",
        "",
        meta.get("description")
        or f"Weights for {title}: joint x{info.config.get('scale', 4)} video "
        "super-resolution and deblurring, for the `fmanetpp` command-line tool.",
        "",
        "## Use",
        "",
        "With the `fmanetpp` command-line tool installed:",
        "",
        "```bash",
        f"fmanetpp download {repo_id} --filename {filename}",
        f"fmanetpp restore input.mp4 output.mp4 --model {repo_id}",
        "```",
        "",
        "## Architecture",
        "",
        f"- **architecture**: `{info.arch}`, {title}",
        f"- **parameters**: {info.num_params:,} in {info.num_tensors} tensors",
        f"- **input channel order**: {info.channel_order}",
        f"- **file**: `{filename}`, sha256 `{sha256}`",
        "",
        "Config (`config` metadata entry of the file, rebuilt by `fmanetpp_cli.load_model`):",
        "",
        "```json",
        json.dumps(info.config, indent=2, sort_keys=True),
        "```",
        "",
        "## Training data",
        "",
        *_bullets(training),
        "",
        "## Metrics",
        "",
        *_bullets(metrics),
        "",
    ]
    if info.sources:
        lines += ["## Converted from", ""]
        lines += [f"- `{src}`, sha256 `{digest}`" for src, digest in info.sources.items()]
        lines.append("")
    lines += ["## Licence", "", str(licence), ""]
    return "\n".join(lines)


def push_weights(
    path: str | Path,
    repo_id: str,
    *,
    path_in_repo: str | None = None,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str | None = None,
    license: str | None = None,
    training: Any = None,
    metrics: Any = None,
    card: bool = True,
) -> PushResult:
    """Upload a weights file (and its model card) to ``repo_id``, creating the repository if needed.

    Args:
        path: an ``fmanetpp.weights/1`` safetensors file.
        repo_id: ``owner/name`` of a model repository the user may write to.
        path_in_repo: the file's name in the repository (default: the local name).
        private: create the repository private (an existing one keeps its visibility).
        token: a Hub token; None uses the one ``huggingface_hub`` finds (``HF_TOKEN`` or ``hf auth login``).
        revision: branch to commit to (default ``main``).
        commit_message: default "Upload <file> with fmanetpp".
        license: licence text for the card (default: the file's ``license`` metadata).
        training: training-data description for the card (default: the ``training`` metadata).
        metrics: metrics for the card (default: the ``metrics`` metadata).
        card: also upload the generated ``README.md``.

    Returns:
        The repository, file name, commit id and sha256 of what was published.

    Raises:
        WeightsNotFoundError / CheckpointError: the file is missing or not an fmanetpp weights file.
        ConfigError: ``repo_id`` is not ``owner/name``.
        HubError: the Hub refused (not logged in, no write access) or could not be reached.
    """
    from huggingface_hub import CommitOperationAdd, HfApi

    from fmanetpp_cli.checkpoints.resolve import looks_like_repo_id

    if not looks_like_repo_id(repo_id):
        raise ConfigError(f"{repo_id!r} is not a Hub repository id (owner/name)")
    info = read_weights_info(path)
    local = Path(path)
    filename = path_in_repo or local.name
    if not filename.endswith(".safetensors"):
        raise ConfigError(f"{filename}: the name in the repository must end in .safetensors")
    digest = sha256_file(local)
    operations = [CommitOperationAdd(path_in_repo=filename, path_or_fileobj=str(local))]
    if card:
        text = model_card(
            info,
            repo_id=repo_id,
            filename=filename,
            sha256=digest,
            license=license,
            training=training,
            metrics=metrics,
        )
        operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=text.encode("utf-8")))
    api = HfApi(endpoint=hub.endpoint(), token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        commit = api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message or f"Upload {filename} with fmanetpp",
            revision=revision,
        )
    except Exception as e:  # noqa: BLE001 - every failure of the client is translated
        status = hub.http_status(e)
        if status in (401, 403):
            raise HubError(
                f"{repo_id}: the Hub refused the upload (HTTP {status}); log in with `hf auth login` or set "
                "HF_TOKEN to a token with write access"
            ) from e
        raise hub.translate_error(e, repo_id, filename, revision) from e
    return PushResult(
        repo_id=repo_id,
        filename=filename,
        revision=commit.oid,
        sha256=digest,
        url=str(repo_url),
        commit_url=commit.commit_url,
    )
