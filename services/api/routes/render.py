"""POST /render/gif and /render/html: a run the viewer recorded, drawn by the same code as `unmask visualize`."""

import asyncio
from typing import Any

from fastapi import APIRouter, Response

from diffusion_core import animation
from diffusion_core.errors import TooLargeError
from diffusion_core.runtime import release_freed_memory

from ..errors import ApiError
from ..schemas import RenderRequest

router = APIRouter(prefix="/render", tags=["render"])


def _frames(body: RenderRequest) -> list[dict[str, Any]]:
    if any(body.sample >= len(f.samples) for f in body.frames):
        raise ApiError(422, f"sample {body.sample} is not in every frame", "sample")
    frames = []
    for frame in body.frames:
        data = frame.model_dump()
        data["samples"] = [data["samples"][body.sample]]
        frames.append(data)
    return frames


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


@router.post("/gif", response_class=Response, responses={200: {"content": {"image/gif": {}}}})
async def render_gif(body: RenderRequest) -> Response:
    """An animated GIF: one frame per message, the last one held; with the twin's frames, both side by side."""
    frames = _frames(body)
    twin = [f.model_dump() for f in body.autoregressive] if body.autoregressive else None
    try:  # off the event loop; the size is checked before drawing and the drawing has a deadline
        if twin is None:
            data = await asyncio.to_thread(animation.gif, frames)
        else:
            data = await asyncio.to_thread(animation.side_by_side_gif, frames, twin)
    except TooLargeError as exc:
        raise ApiError(413, str(exc), exc.param) from None
    finally:  # the API keeps freed memory for the engine's reuse; a drawing's peak is not worth keeping
        await asyncio.to_thread(release_freed_memory)
    return Response(data, media_type="image/gif", headers=_attachment("unmask.gif"))


@router.post("/html", response_class=Response, responses={200: {"content": {"text/html": {}}}})
async def render_html(body: RenderRequest) -> Response:
    """A self-contained page that replays the run offline (play, pause, step, scrub)."""
    page = await asyncio.to_thread(animation.html, _frames(body), body.title)
    return Response(page, media_type="text/html; charset=utf-8", headers=_attachment("unmask.html"))
