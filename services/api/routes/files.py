"""OpenAI's Files API, for training data: POST/GET /v1/files, GET/DELETE /v1/files/{id}."""

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile

from diffusion_core.errors import InputError

from ..defaults import UPLOAD_CHUNK
from ..deps import ApiKeyDep, SettingsDep, StoreDep
from ..errors import ApiError

router = APIRouter(prefix="/v1/files", tags=["fine-tuning"])


@router.post("", dependencies=[ApiKeyDep])
async def upload(
    settings: SettingsDep,
    store: StoreDep,
    file: Annotated[UploadFile, File(description=".txt (blank-line separated) or .jsonl with a text field")],
    purpose: Annotated[str, Form()],
) -> dict[str, Any]:
    """Store a training file after checking it: size, UTF-8, not binary, the format of every line."""
    if purpose != "fine-tune":
        raise ApiError(422, f"purpose {purpose!r} is not supported; use 'fine-tune'", "purpose")
    content = bytearray()
    while chunk := await file.read(UPLOAD_CHUNK):
        content += chunk
        if len(content) > settings.max_upload_bytes:
            raise ApiError(413, f"file is larger than {settings.max_upload_bytes} bytes", "file")
    try:
        return await asyncio.to_thread(store.add_file, bytes(content), file.filename or "upload.txt", purpose)
    except InputError as exc:
        raise ApiError(422, str(exc), "file") from None


@router.get("")
async def list_files(store: StoreDep) -> dict[str, Any]:
    return {"object": "list", "data": store.files(), "has_more": False}


@router.get("/{file_id}")
async def get_file(file_id: str, store: StoreDep) -> dict[str, Any]:
    record = store.file(file_id)
    if record is None:
        raise ApiError(404, f"no file {file_id!r}", "file_id")
    return record


@router.delete("/{file_id}", dependencies=[ApiKeyDep])
async def delete_file(file_id: str, store: StoreDep) -> dict[str, Any]:
    if not store.delete_file(file_id):
        raise ApiError(404, f"no file {file_id!r}", "file_id")
    return {"id": file_id, "object": "file", "deleted": True}
