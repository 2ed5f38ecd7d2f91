"""Published checkpoint versions: list them, see which is current, activate one (promote or roll back)."""

import asyncio
import time
from typing import Any

from fastapi import APIRouter

from diffusion_core.errors import CheckpointError
from diffusion_core.manifest import MANIFEST, sha256, verify
from diffusion_core.store import BASE, Store

from ..defaults import SWAP_POLL_S, SWAP_WAIT_S
from ..deps import ApiKeyDep, RegistryDep, StoreDep
from ..errors import ApiError, public_reload_error
from ..registry import ModelRegistry

router = APIRouter(prefix="/v1/checkpoints", tags=["fine-tuning"])


def listing(registry: ModelRegistry, store: Store) -> dict[str, Any]:
    current = store.current() or BASE
    base: dict[str, Any] = {
        "version": BASE,
        "model": registry.base_name,
        "source": registry.source,
        "created_at": None,
        "job_id": None,
        "metrics": {},
    }
    data = [{**r, "current": r["version"] == current} for r in [base, *store.versions()]]
    return {
        "object": "list",
        "data": data,
        "current": current,
        "serving": registry.serving,
        "reload_error": public_reload_error(registry, store.root),
    }


@router.get("")
async def list_checkpoints(registry: RegistryDep, store: StoreDep) -> dict[str, Any]:
    """Every retained version (newest first, after the base), which is current, what this process serves."""
    return await asyncio.to_thread(listing, registry, store)


def _check(store: Store, version: str) -> None:
    record = store.version(version)
    if record is None:
        raise ApiError(404, f"no checkpoint version {version!r}", "version")
    path = store.path(version)
    try:
        verify(path)
        if sha256(path / MANIFEST) != record["manifest_sha256"]:
            raise CheckpointError(f"{version}: manifest is not the one recorded at publish")
    except CheckpointError as exc:
        raise ApiError(409, f"refusing to activate {version}: {exc}", "version") from None


@router.post("/{version}/activate", dependencies=[ApiKeyDep])
async def activate(version: str, registry: RegistryDep, store: StoreDep) -> dict[str, Any]:
    """Verify the version, point every API process at it, and wait until this one serves it."""
    if version != BASE:
        await asyncio.to_thread(_check, store, version)
    asked = time.time()
    await asyncio.to_thread(store.activate, version)
    deadline = time.monotonic() + SWAP_WAIT_S
    while registry.serving != version and time.monotonic() < deadline:
        error = registry.reload_error
        if error is not None and error["version"] == version and error["at"] >= asked:
            raise ApiError(409, f"this server refused {version}: {error['message']}", "version")
        await asyncio.sleep(SWAP_POLL_S)
    return await asyncio.to_thread(listing, registry, store)
