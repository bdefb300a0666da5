"""Reading weights safely: safetensors first, legacy torch pickles only through the weights-only loader.

A torch ``.pt``/``.pth`` file is a pickle (inside a zip archive since torch 1.6, bare before that), and
unpickling can run arbitrary code. This module never unpickles with the unrestricted loader: legacy
files go through ``torch.load(weights_only=True, map_location="cpu")`` only, which rebuilds tensors and
plain containers and refuses every other global. When it refuses, the pickle opcodes are scanned (read,
never executed, with :mod:`pickletools`) to name the globals that blocked it, and
:class:`~fmanetpp_cli.errors.UnsafeCheckpointError` is raised. There is no unsafe fallback.

Also here: sha256 of in-memory buffers (that of files, and atomic writes: ``fmanetpp_cli._files``).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file as load_safetensors_file

from fmanetpp_cli.checkpoints.remap import canonicalize
from fmanetpp_cli.errors import CheckpointError, UnsafeCheckpointError, WeightsNotFoundError

StateDict = dict[str, torch.Tensor]

# Opcodes that push a string (the operands of STACK_GLOBAL are two strings pushed just before it).
_STRING_OPS = frozenset(
    {
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
        "UNICODE",
        "BINUNICODE",
        "SHORT_BINUNICODE",
        "BINUNICODE8",
    }
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_NO_PUSH_OPS = frozenset({"MEMOIZE", "PROTO", "FRAME", "STOP", "POP", "POP_MARK", "MARK"}) | _PUT_OPS
# torch's legacy format is five pickles back to back (magic, protocol, sys info, object, storage keys).
_MAX_PICKLES_PER_FILE = 8


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of an in-memory buffer."""
    return hashlib.sha256(data).hexdigest()


def is_safetensors(head: bytes) -> bool:
    """Whether the first bytes of a file look like a safetensors header (u64 length, then ``{``)."""
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n < (1 << 32) and head[8:9] == b"{"


def scan_pickle_globals(data: bytes) -> list[str]:
    """Every global (``module.name``) that the pickles in ``data`` would import, without running them.

    ``data`` is a bare pickle stream (possibly several pickles back to back, as in torch's legacy
    format) or a zip archive (torch's current format), whose ``*.pkl`` members are scanned.
    Unparseable tails (the raw tensor bytes of the legacy format) end the scan quietly.
    """
    found: list[str] = []
    for payload in _pickle_payloads(data):
        stream = io.BytesIO(payload)
        for _ in range(_MAX_PICKLES_PER_FILE):
            if stream.tell() >= len(payload):
                break
            try:
                for name in _globals_of_one_pickle(stream):
                    if name not in found:
                        found.append(name)
            except Exception:  # noqa: BLE001 - not a pickle (any more): the scan is best effort
                break
    return found


def _pickle_payloads(data: bytes) -> list[bytes]:
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return [data]
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return [zf.read(info) for info in zf.infolist() if info.filename.endswith(".pkl")]
    except (zipfile.BadZipFile, OSError, EOFError):
        return []


def _globals_of_one_pickle(stream: io.BytesIO) -> Iterator[str]:
    """Globals referenced by the one pickle that starts at the stream position (which moves past it).

    A generator, so that the names met before a malformed opcode are still reported.
    """
    pushed: list[Any] = []  # what each pushing opcode left, strings kept, everything else None
    memo: dict[int, Any] = {}
    for opcode, arg, _pos in pickletools.genops(stream):
        op = opcode.name
        if op in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            yield f"{module}.{name}"
            pushed.append(None)
        elif op == "STACK_GLOBAL":
            mod_s, name_s = (pushed[-2], pushed[-1]) if len(pushed) >= 2 else (None, None)
            if isinstance(mod_s, str) and isinstance(name_s, str):
                yield f"{mod_s}.{name_s}"
            else:
                yield "<unresolved STACK_GLOBAL>"
            pushed.append(None)
        elif op in ("EXT1", "EXT2", "EXT4"):
            yield f"<copyreg extension {arg}>"
            pushed.append(None)
        elif op in _STRING_OPS:
            pushed.append(arg.decode("latin-1") if isinstance(arg, bytes) else str(arg))
        elif op in _PUT_OPS:
            memo[int(arg or 0)] = pushed[-1] if pushed else None
        elif op == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif op in _GET_OPS:
            pushed.append(memo.get(int(arg or 0)))
        elif op not in _NO_PUSH_OPS:
            pushed.append(None)


def _allowed_globals() -> set[str]:
    """Globals torch's weights-only loader accepts (its private table when present, else a safe core)."""
    try:
        from torch import _weights_only_unpickler as wo

        return set(wo._get_allowed_globals()) | set(wo._get_user_allowed_globals())
    except Exception:  # noqa: BLE001 - private API; fall back to the core that state dicts need
        return {
            "collections.OrderedDict",
            "collections.Counter",
            "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_parameter",
            "torch.FloatStorage",
            "torch.storage.UntypedStorage",
        }


def blocking_globals(data: bytes) -> list[str]:
    """The globals in ``data``'s pickles that the weights-only loader would refuse."""
    allowed = _allowed_globals()
    return [g for g in scan_pickle_globals(data) if g not in allowed]


def load_torch_checkpoint(data: bytes, source: str) -> Any:
    """Unpickle a torch checkpoint with the weights-only loader; tensors land on the CPU.

    Args:
        data: the whole file content (zip or legacy format).
        source: how to name the file in errors (a path, or ``archive.zip:member``).

    Returns:
        The loaded object: tensors and plain containers only.

    Raises:
        UnsafeCheckpointError: the pickle references globals other than tensors and plain containers
            (they are named; nothing was executed).
        CheckpointError: the file is corrupt, empty or not a torch checkpoint.
    """
    if not data:
        raise CheckpointError(f"{source}: the file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": we report, never print
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        blocked = blocking_globals(data)
        if blocked:
            raise UnsafeCheckpointError(source, blocked) from e
        named = re.findall(r"GLOBAL ([\w.]+)", str(e))
        if named:
            raise UnsafeCheckpointError(source, sorted(set(named))) from e
        raise CheckpointError(f"{source}: not a readable torch checkpoint ({_first_line(e)})") from e
    except MemoryError:
        raise
    except Exception as e:  # noqa: BLE001 - damaged files fail in many ways (IndexError, UnicodeDecodeError...)
        raise CheckpointError(f"{source}: corrupt or not a torch checkpoint ({_first_line(e)})") from e


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def sniff_weights_file(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """Check that ``path`` is an existing file and tell whether its header is a safetensors one.

    Returns:
        ``(path, is_safetensors)``.

    Raises:
        CheckpointError: ``path`` is a folder.
        WeightsNotFoundError: no such file.
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"{p}: is a folder, not a weights file")
    if not p.is_file():
        raise WeightsNotFoundError(f"{p}: no such file")
    with open(p, "rb") as f:
        head = f.read(9)
    return p, is_safetensors(head)


def read_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Read a state dict from a ``.safetensors`` file or a legacy torch pickle, safely.

    The result is canonical (see :func:`fmanetpp_cli.checkpoints.remap.canonicalize`): wrappers such as
    ``state_dict``/``params_ema``/``model_D_state_dict`` are unwrapped, ``module.``/``_orig_mod.`` are
    stripped, and official sub-network dicts get their full-model prefix.

    Raises:
        WeightsNotFoundError: no such file.
        UnsafeCheckpointError: a pickle that references non-tensor globals (nothing is executed).
        CheckpointError: a folder, an empty, corrupt or unrecognised file, or one without tensors.
    """
    p, safetensors = sniff_weights_file(path)
    if safetensors:
        try:
            tensors = load_safetensors_file(str(p), device="cpu")
        except (SafetensorError, ValueError, OSError) as e:
            raise CheckpointError(f"{p}: corrupt safetensors file ({_first_line(e)})") from e
        return canonicalize(tensors, source=str(p))
    obj = load_torch_checkpoint(p.read_bytes(), str(p))
    return canonicalize(obj, source=str(p))
