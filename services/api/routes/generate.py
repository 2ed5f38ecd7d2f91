"""POST /generate, POST /generate_stream (SSE) and WS /ws/generate."""

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import StreamingResponse
from pydantic import ValidationError

from ..defaults import DISCONNECT_POLL_S
from ..deps import EngineDep, MetricsDep, RegistryDep, SettingsDep
from ..engine import Ticket
from ..errors import ApiError
from ..generation import frame_message, prompt_of, resolve, results, submit
from ..schemas import GenerateRequest, GenerateResponse

router = APIRouter(tags=["generate"])


async def wait_final(ticket: Ticket, request: Request) -> None:
    """Wait for the last frame; a client that hangs up cancels its request within a step."""
    final = asyncio.ensure_future(ticket.final())
    try:
        while not final.done():
            await asyncio.wait({final}, timeout=DISCONNECT_POLL_S)
            if not final.done() and await request.is_disconnected():
                ticket.cancel()
                final.cancel()
                raise ApiError(499, "client disconnected")
        final.result()
    finally:
        if not final.done():
            ticket.cancel()


@router.post("/generate", response_model=GenerateResponse | list[GenerateResponse], response_model_exclude_none=True)
async def generate(
    body: GenerateRequest,
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    engine: EngineDep,
    metrics: MetricsDep,
) -> GenerateResponse | list[GenerateResponse]:
    """Denoise to the end and return the text (a list when num_samples > 1)."""
    started = time.perf_counter()
    entry = await resolve(registry, body.parameters.model, "parameters.model")
    ticket = submit(engine, entry, settings, prompt_of(entry, body), body.parameters, stream=False)
    await wait_final(ticket, request)
    metrics.latency.labels("/generate").observe(time.perf_counter() - started)
    out = results(ticket, body.parameters, started)
    return out[0] if len(out) == 1 else out


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


@router.post("/generate_stream", responses={200: {"content": {"text/event-stream": {}}, "description": "frames"}})
async def generate_stream(
    body: GenerateRequest, settings: SettingsDep, registry: RegistryDep, engine: EngineDep, metrics: MetricsDep
) -> StreamingResponse:
    """Server-Sent Events: the step-0 canvas and one `frame` event per step, then a `done` event."""
    started = time.perf_counter()
    entry = await resolve(registry, body.parameters.model, "parameters.model")
    ticket = submit(engine, entry, settings, prompt_of(entry, body), body.parameters, stream=True)

    async def events() -> AsyncIterator[str]:
        try:
            async for message in messages(ticket, body, started):
                yield sse(message)
            metrics.latency.labels("/generate_stream").observe(time.perf_counter() - started)
        except Exception:
            yield sse(
                {"type": "error", "error": {"message": "internal error", "type": "internal_error", "param": None}}
            )
        finally:
            ticket.cancel()

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


@router.websocket("/ws/generate")
async def ws_generate(
    websocket: WebSocket, settings: SettingsDep, registry: RegistryDep, engine: EngineDep, metrics: MetricsDep
) -> None:
    """One request message in; `frame` messages, then `done` (or `error` and close 1008/1011) out."""
    if not await accept(websocket, settings):
        return
    started = time.perf_counter()
    try:
        body = await receive_request(websocket, settings)
        entry = await resolve(registry, body.parameters.model, "parameters.model")
        ticket = submit(engine, entry, settings, prompt_of(entry, body), body.parameters, stream=True)
    except ApiError as exc:
        await close_with_error(websocket, exc, metrics)
        return
    except WebSocketDisconnect:
        return
    try:
        async for message in messages(ticket, body, started):
            await websocket.send_json(message)
        metrics.latency.labels("/ws/generate").observe(time.perf_counter() - started)
        await websocket.close()
    except (WebSocketDisconnect, RuntimeError):
        pass
    except Exception:
        await close_with_error(websocket, ApiError(500, "internal error"), metrics, code=1011)
    finally:
        ticket.cancel()


async def messages(ticket: Ticket, body: GenerateRequest, started: float) -> AsyncIterator[dict[str, Any]]:
    """What both streams send: the step-0 canvas, a `frame` per step, then `done` with the results."""
    if ticket.opening is not None:
        yield ticket.opening
    async for frame in ticket.frames():
        yield frame_message(ticket, frame)
    done = [r.model_dump(exclude_none=True) for r in results(ticket, body.parameters, started)]
    yield {"type": "done", "results": done}


async def accept(websocket: WebSocket, settings: SettingsDep) -> bool:
    """Accept a generation socket unless a browser opened it from a page of another origin.

    Browsers send Origin and let any page open a WebSocket anywhere; a page of this server, an
    origin in UNMASK_ALLOWED_ORIGINS, or a client that sends no Origin (not a browser) may drive it."""
    origin = websocket.headers.get("origin")
    if origin is not None and not origin_allowed(origin, websocket.headers.get("host", ""), settings.allowed_origins):
        await websocket.close(code=1008)  # before accept: the browser sees the handshake refused (403)
        return False
    await websocket.accept()
    return True


def origin_allowed(origin: str, host: str, allowed: list[str]) -> bool:
    if origin.rstrip("/") in allowed or "*" in allowed:
        return True
    return urlsplit(origin).netloc.lower() == host.lower() and bool(host)


async def receive_request(websocket: WebSocket, settings: SettingsDep) -> GenerateRequest:
    """The one request message of a generation socket; ApiError 408, 413 or 422 (naming the field) if it is not one."""
    try:
        message = await asyncio.wait_for(websocket.receive(), settings.ws_request_timeout_s)
    except TimeoutError:
        raise ApiError(408, f"no request message within {settings.ws_request_timeout_s:g} s") from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    raw = message.get("text")
    if raw is None:
        raise ApiError(422, "send the request as one text message holding JSON, not a binary one")
    if len(raw.encode()) > settings.max_payload_bytes:
        raise ApiError(413, f"message is larger than {settings.max_payload_bytes} bytes")
    try:
        return GenerateRequest.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"])
        raise ApiError(422, f"{param}: {first['msg']}" if param else first["msg"], param or None) from None


async def close_with_error(websocket: WebSocket, error: ApiError, metrics: MetricsDep, code: int = 1008) -> None:
    metrics.errors.labels(error.type).inc()
    try:
        await websocket.send_json({"type": "error", **error.body()})
        await websocket.close(code=code)
    except (WebSocketDisconnect, RuntimeError):
        pass
