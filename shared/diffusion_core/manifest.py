"""Checkpoint integrity without torch: the sha256 manifest, atomic JSON writes, fsync.

The API, the worker and the store all check checkpoints with these functions; importing them
loads no model code.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .errors import CheckpointError

MANIFEST = "manifest.json"
METADATA = "unmask.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file, fsync and rename, so readers never see half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    fsync(tmp)
    tmp.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


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
        assert isinstance(files, dict)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise CheckpointError(f"{directory}: {MANIFEST} is not a valid manifest") from None
    if not any(name.endswith(".safetensors") for name in files):
        raise CheckpointError(f"{directory}: {MANIFEST} lists no safetensors weights")
    for name, entry in files.items():
        path = (directory / name).resolve()
        if directory.resolve() not in path.parents:
            raise CheckpointError(f"{directory}: manifest names a file outside the checkpoint: {name}")
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} is missing")
        if sha256(path) != entry["sha256"]:
            raise CheckpointError(f"{directory}: {name} does not match its manifest (sha256 differs)")


def read_metadata(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / METADATA
    return json.loads(path.read_text()) if path.is_file() else {}
