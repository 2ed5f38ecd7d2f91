"""The shared store: uploaded training files and published checkpoint versions.

Bytes live on a filesystem that every API replica and worker mounts (`<root>/files`,
`<root>/checkpoints`); which version is current, and the record of every file and version,
live in Redis. The API and the trainer meet only here, so both read one definition of the
keys, the event and the layout. No torch: the worker's parent process imports this.
"""

import json
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

from redis import Redis

from .errors import CheckpointError, InputError
from .manifest import MANIFEST, fsync, sha256, verify, write_bytes

POINTER = "unmask:model:current"  # the version every API process serves; absent or BASE: its configured model
VERSIONS = "unmask:versions"  # hash: version -> JSON record
FILES = "unmask:files"  # hash: file id -> JSON file object (OpenAI's shape)
EVENTS = "unmask:events"  # pub/sub channel: {"type": "checkpoint.activated", "version": ...}
BASE = "base"  # the pointer value that rolls back to the model each API was started with

VERSION_RE = re.compile(r"ft-[0-9a-f]{12}")
FILE_RE = re.compile(r"file-[0-9a-f]{24}")
FILE_TYPES = (".txt", ".jsonl")


def new_version() -> str:
    return f"ft-{secrets.token_hex(6)}"


def _loads(raw: bytes | str | None) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None


class Store:
    """Files and checkpoint versions under `root`, indexed in Redis."""

    def __init__(self, root: str | Path, redis: Redis) -> None:
        self.root = Path(root)
        self.redis = redis

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / "checkpoints"

    # Files

    def add_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """Validate training text (UTF-8 .txt or .jsonl with "text") and store it; InputError names the problem."""
        from .data import parse_texts  # torch-free callers of the store never upload

        suffix = Path(filename).suffix.lower()
        if suffix not in FILE_TYPES:
            raise InputError(f"{filename}: unsupported file type {suffix!r}; use .txt or .jsonl", "file")
        docs = [d for d in parse_texts(content, suffix, filename) if d.strip()]
        if not docs:
            raise InputError(f"{filename}: the file holds no text", "file")
        file_id = f"file-{secrets.token_hex(12)}"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        write_bytes(self.files_dir / f"{file_id}{suffix}", content)
        record = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": Path(filename).name,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
            "documents": len(docs),
        }
        try:
            self.redis.hset(FILES, file_id, json.dumps(record))
        except BaseException:  # all or nothing: a file no record names could never be listed or deleted
            (self.files_dir / f"{file_id}{suffix}").unlink(missing_ok=True)
            raise
        return record

    def file(self, file_id: str) -> dict[str, Any] | None:
        if not FILE_RE.fullmatch(file_id):
            return None
        return _loads(self.redis.hget(FILES, file_id))  # type: ignore[arg-type]

    def files(self) -> list[dict[str, Any]]:
        records = [json.loads(v) for v in self.redis.hvals(FILES)]  # type: ignore[union-attr]
        return sorted(records, key=lambda r: (r["created_at"], r["id"]), reverse=True)

    def file_path(self, record: dict[str, Any]) -> Path:
        return self.files_dir / f"{record['id']}{Path(record['filename']).suffix.lower()}"

    def delete_file(self, file_id: str) -> bool:
        record = self.file(file_id)
        if record is None:
            return False
        self.redis.hdel(FILES, file_id)
        self.file_path(record).unlink(missing_ok=True)
        return True

    # Checkpoint versions

    def staging(self, job_id: str) -> Path:
        """Where a job trains (its snapshots beside it); never listed as a version."""
        return self.checkpoints_dir / ".staging" / job_id / "model"

    def path(self, version: str) -> Path:
        if not VERSION_RE.fullmatch(version):
            raise CheckpointError(f"not a checkpoint version: {version!r}")
        return self.checkpoints_dir / version

    def publish(self, staged: Path, version: str, record: dict[str, Any], keep: int) -> dict[str, Any]:
        """Verify, rename into place, record the manifest hash, point at it, announce it, prune old ones."""
        verify(staged)
        final = self.path(version)
        final.parent.mkdir(parents=True, exist_ok=True)
        staged.rename(final)
        fsync(final.parent)
        record = {**record, "version": version, "manifest_sha256": sha256(final / MANIFEST)}
        self.redis.hset(VERSIONS, version, json.dumps(record))
        self.activate(version)
        self.prune(keep)
        return record

    def versions(self) -> list[dict[str, Any]]:
        """Published versions, newest first."""
        records = [json.loads(v) for v in self.redis.hvals(VERSIONS)]  # type: ignore[union-attr]
        return sorted(records, key=lambda r: (r["created_at"], r["version"]), reverse=True)

    def version(self, name: str) -> dict[str, Any] | None:
        """A version's record, by version id or by its model name (fine_tuned_model)."""
        if VERSION_RE.fullmatch(name):
            return _loads(self.redis.hget(VERSIONS, name))  # type: ignore[arg-type]
        return next((r for r in self.versions() if r["model"] == name), None)

    def current(self) -> str | None:
        raw = self.redis.get(POINTER)
        return raw.decode() if isinstance(raw, bytes) else raw  # type: ignore[return-value]

    def activate(self, version: str) -> None:
        """Point every API process at `version` (or BASE): set the pointer, then announce it."""
        if version != BASE and self.version(version) is None:
            raise CheckpointError(f"unknown checkpoint version {version!r}")
        self.redis.set(POINTER, version)
        self.redis.publish(EVENTS, json.dumps({"type": "checkpoint.activated", "version": version}))

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest `keep` versions (never the current one); returns those deleted."""
        current = self.current()
        doomed = [r["version"] for r in self.versions()[keep:] if r["version"] != current]
        for version in doomed:
            self.redis.hdel(VERSIONS, version)
            shutil.rmtree(self.path(version), ignore_errors=True)
        return doomed
