"""Options several commands share, declared once as ``Annotated`` aliases: ``as_json: JsonOpt = False``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.", metavar="")]
OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline", help="Use only the local cache; never download (as HF_HUB_OFFLINE=1 does).", metavar=""
    ),
]
CacheDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir", help="Hugging Face cache folder (default: HF_HUB_CACHE).", show_default=False
    ),
]
OverwriteOpt = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Write OUTPUT even if it exists (a file is replaced, a folder is written into).",
        metavar="",
    ),
]
