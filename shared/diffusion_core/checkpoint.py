"""Checkpoints: a Hugging Face model directory plus unmask.json and a sha256 manifest.

Written to `<dir>.tmp/`, fsynced, verified, then renamed into place, so a reader sees either the
old directory or the complete new one. Weights are safetensors only; nothing is unpickled.
"""

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import CheckpointError
from .manifest import MANIFEST, METADATA, fsync, read_metadata, sha256, verify, write_json, write_manifest
from .model import load_masked_lm, load_tokenizer

__all__ = [
    "MANIFEST",
    "METADATA",
    "load",
    "load_causal_lm",
    "read_metadata",
    "save",
    "sha256",
    "verify",
    "write_json",
    "write_manifest",
]


def save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | Path,
    metadata: dict[str, Any],
    dtype: torch.dtype | None = None,
    extras: Callable[[Path], None] | None = None,
) -> Path:
    """Write a complete, verified checkpoint at `directory`, replacing any earlier one atomically.

    `extras(tmp)` may add files (logs, plots) before the manifest is written and the rename."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    to_save = model if dtype is None else _copy_as(model, dtype)
    to_save.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / METADATA, metadata)
    if extras is not None:
        extras(tmp)
    for path in tmp.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            fsync(path)
    write_manifest(tmp)
    verify(tmp)
    fsync(tmp)
    _swap_into_place(tmp, final)
    return final


def _copy_as(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    import copy

    return copy.deepcopy(model).to(dtype)  # type: ignore[arg-type]


def _swap_into_place(tmp: Path, final: Path) -> None:
    """Put tmp at final. Where the kernel can exchange two paths in one step (Linux renameat2), a reader
    sees the old checkpoint or the new one, never neither; elsewhere two renames leave a moment between."""
    if final.exists() and _exchange(tmp, final):
        fsync(final.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # now the old checkpoint
        return
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically with renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return renameat2(_AT_FDCWD, bytes(a), _AT_FDCWD, bytes(b), _RENAME_EXCHANGE) == 0


def load(
    source: str | Path, device: torch.device, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (weights in `dtype`) and tokenizer from a checkpoint directory (verified) or a hub id (users online)."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: a checkpoint is a directory")
        if (path / METADATA).exists() or (path / MANIFEST).exists():
            verify(path)
    elif str(source).startswith((".", "/")) or str(source).count("/") > 1:
        raise CheckpointError(f"{source}: no such checkpoint directory")
    tokenizer = load_tokenizer(source)
    return load_masked_lm(source, device, dtype), tokenizer


def load_causal_lm(source: str | Path, device: torch.device, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """A causal LM (the AR twin) from a verified checkpoint directory or a hub id, in `dtype`, eval mode."""
    from transformers import AutoModelForCausalLM

    path = Path(source)
    if path.is_dir() and ((path / METADATA).exists() or (path / MANIFEST).exists()):
        verify(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), use_safetensors=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load a causal LM from {source}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()  # type: ignore[arg-type]
