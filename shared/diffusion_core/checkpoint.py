"""Checkpoints: a Hugging Face model directory plus unmask.json and a sha256 manifest.

Written to `<dir>.tmp/`, fsynced, verified, then renamed into place, so a reader sees either the
old directory or the complete new one. Weights are safetensors only; nothing is unpickled.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .errors import CheckpointError
from .model import load_masked_lm, load_tokenizer

MANIFEST = "manifest.json"
METADATA = "unmask.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    """Write JSON through a temporary file and a rename, so readers never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    _fsync(tmp)
    tmp.replace(path)


def write_manifest(directory: Path) -> dict[str, dict[str, Any]]:
    """Hash every file under directory (the manifest itself excluded) and record it."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(directory)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files}
    write_json(directory / MANIFEST, {"files": entries})
    return entries


def verify(directory: Path) -> None:
    """Raise CheckpointError unless every file the manifest lists is present and unchanged."""
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{directory}: no {MANIFEST}; refusing an unverifiable checkpoint")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{directory}: {MANIFEST} is not a valid manifest") from None
    for name, entry in files.items():
        path = (directory / name).resolve()
        if directory.resolve() not in path.parents:
            raise CheckpointError(f"{directory}: manifest names a file outside the checkpoint: {name}")
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        if sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{directory}: {name} does not match its manifest (sha256 differs)")


def save(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | Path,
    metadata: dict[str, Any],
    dtype: torch.dtype | None = None,
) -> Path:
    """Write a complete, verified checkpoint at `directory`, replacing any earlier one atomically."""
    final = Path(directory)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    to_save = model if dtype is None else _copy_as(model, dtype)
    to_save.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    write_json(tmp / METADATA, metadata)
    for path in tmp.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
            _fsync(path)
    write_manifest(tmp)
    verify(tmp)
    _fsync(tmp)
    _swap_into_place(tmp, final)
    return final


def _copy_as(model: PreTrainedModel, dtype: torch.dtype) -> PreTrainedModel:
    import copy

    return copy.deepcopy(model).to(dtype)  # type: ignore[arg-type]


def _swap_into_place(tmp: Path, final: Path) -> None:
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    _fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def read_metadata(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METADATA
    return json.loads(path.read_text()) if path.is_file() else {}


def load(source: str | Path, device: torch.device) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model and tokenizer from a checkpoint directory (verified) or a hub id (users online)."""
    path = Path(source)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path}: a checkpoint is a directory")
        if (path / METADATA).exists() or (path / MANIFEST).exists():
            verify(path)
    elif str(source).startswith((".", "/")) or str(source).count("/") > 1:
        raise CheckpointError(f"{source}: no such checkpoint directory")
    tokenizer = load_tokenizer(source)
    return load_masked_lm(source, device), tokenizer


def load_causal_lm(source: str | Path, device: torch.device) -> PreTrainedModel:
    """A causal LM (the AR twin) from a verified checkpoint directory or a hub id, float32, eval mode."""
    from transformers import AutoModelForCausalLM

    path = Path(source)
    if path.is_dir() and ((path / METADATA).exists() or (path / MANIFEST).exists()):
        verify(path)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(source), use_safetensors=True, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load a causal LM from {source}: {str(exc).splitlines()[0]}") from None
    return model.to(device).eval()  # type: ignore[arg-type]
