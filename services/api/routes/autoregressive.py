"""WS /ws/generate_ar: the autoregressive twin writing the same prompt, one frame per token.

The viewer runs it beside /ws/generate on one wall clock. Frames have the shape of the
diffusion frames, so one renderer draws both.
"""

import asyncio
import secrets
import time
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from diffusion_core import animation

from ..deps import EngineDep, MetricsDep, RegistryDep, SettingsDep
from ..engine import Overloaded
from ..errors import ApiError
from ..generation import check_limits
from ..registry import Twin
from ..schemas import GenerateRequest
from .generate import accept, close_with_error, receive_request

router = APIRouter(tags=["generate"])
_END = object()


@router.websocket("/ws/generate_ar")
async def ws_generate_ar(
    websocket: WebSocket, settings: SettingsDep, registry: RegistryDep, engine: EngineDep, metrics: MetricsDep
) -> None:
    """Same request as /ws/generate (max_new_tokens, temperature, top_p, seed are used); a frame per token."""
    if not await accept(websocket, settings):
        return
    try:
        body = await receive_request(websocket, settings)
        check_limits(settings, body.parameters)
        if body.inputs is None:
            raise ApiError(422, "the autoregressive twin takes a prompt (inputs), not messages", "messages")
        twin = registry.twin
        if twin is None:
            reason = registry.twin_error or "this server has no autoregressive model (set UNMASK_AR_MODEL)"
            raise ApiError(404, reason)
    except ApiError as exc:
        await close_with_error(websocket, exc, metrics)
        return
    except WebSocketDisconnect:
        return
    try:
        with engine.slot():
            await _stream(websocket, twin, body, metrics)
    except Overloaded:
        await close_with_error(websocket, ApiError(429, "the server is at capacity; retry shortly"), metrics)


async def _stream(websocket: WebSocket, twin: Twin, body: GenerateRequest, metrics: MetricsDep) -> None:
    params, prompt = body.parameters, body.inputs or ""
    seed = params.seed if params.seed is not None else secrets.randbits(31)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    started = time.perf_counter()

    def produce() -> None:
        try:
            frames = animation.ar_messages(
                twin.model,
                twin.tokenizer,
                prompt,
                params.max_new_tokens,
                params.top_p,
                params.temperature,
                seed,
                params.forbid_eos,  # both sides write the same length when asked
            )
            for frame in frames:
                if stop.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, frame)
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    worker = asyncio.create_task(asyncio.to_thread(produce))
    last: dict[str, Any] | None = None
    try:
        while (item := await queue.get()) is not _END:
            if isinstance(item, Exception):
                raise item
            last = item
            await websocket.send_json(item)
        await websocket.send_json(_done(last, seed, started))
        metrics.latency.labels("/ws/generate_ar").observe(time.perf_counter() - started)
        await websocket.close()
    except (WebSocketDisconnect, RuntimeError):
        pass
    except Exception:
        await close_with_error(websocket, ApiError(500, "internal error"), metrics, code=1011)
    finally:
        stop.set()
        await asyncio.gather(worker, return_exceptions=True)


def _done(last: dict[str, Any] | None, seed: int, started: float) -> dict[str, Any]:
    sample = last["samples"][0] if last else {"tokens": [], "fixed": []}
    text = "".join(piece for piece, fixed in zip(sample["tokens"], sample["fixed"]) if not fixed).strip()
    written = last["step"] if last else 0
    timings = {"total_ms": round((time.perf_counter() - started) * 1000, 2)}
    details = {"generated_tokens": written, "nfe": written, "seed": seed, "timings": timings}
    return {"type": "done", "results": [{"generated_text": text, "details": details}]}
