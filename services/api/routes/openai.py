"""OpenAI-compatible /v1/completions, /v1/chat/completions and /v1/models."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from redis.exceptions import RedisError

from diffusion_core import MASK_PLACEHOLDER, Frame
from diffusion_core.denoise import cut_at_stops
from diffusion_core.model import SpecialTokens
from diffusion_core.terminal import TokenPieces

from .. import generation, logprobs
from ..deps import EngineDep, MetricsDep, OptionalStoreDep, RegistryDep, SettingsDep
from ..errors import ApiError
from ..generation import chat_prompt, resolve, results, submit
from ..schemas import ChatRequest, CompletionRequest, Token
from .generate import sse, wait_final

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models")
async def list_models(registry: RegistryDep, store: OptionalStoreDep) -> dict[str, Any]:
    """The base model and every retained fine-tuned version (any of them can be named in `model`).

    With the job store unreachable the list holds the models loaded here, and says it is partial."""
    data = [{"id": registry.base_name, "object": "model", "created": 0, "owned_by": "unmask"}]
    partial = False
    if store is not None:
        try:
            versions = await asyncio.to_thread(store.versions)
        except RedisError:
            versions, partial = [], True
        data += [
            {"id": r["model"], "object": "model", "created": r["created_at"], "owned_by": "unmask"} for r in versions
        ]
    if partial:
        listed = {m["id"] for m in data}
        data += [
            {"id": name, "object": "model", "created": 0, "owned_by": "unmask"}
            for name in registry.names()
            if name not in listed
        ]
    return {"object": "list", "data": data, **({"partial": True} if partial else {})}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def _choice(index: int, text: str, reason: str) -> dict[str, Any]:
    finish = "stop" if reason == "eos_token" else "length"
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest,
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    engine: EngineDep,
    metrics: MetricsDep,
) -> dict[str, Any] | StreamingResponse:
    """Text completions; with `suffix`, the text between prompt and suffix (infilling). With stream=true,
    one chunk per choice when its prompt is finished, then [DONE]: diffusion does not write left to right, so
    there are no earlier partial texts to send."""
    started = time.perf_counter()
    entry = await resolve(registry, body.model)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if not prompts or len(prompts) * body.n > settings.max_samples:
        raise ApiError(422, f"between 1 and {settings.max_samples} completions per request (prompts x n)", "prompt")
    if body.max_tokens > settings.max_new_tokens:
        raise ApiError(422, f"max_tokens must be at most {settings.max_new_tokens} on this server", "max_tokens")
    params = body.parameters()
    if body.suffix is not None:  # infilling: max_tokens blanks between each prompt and the suffix
        params = params.model_copy(update={"max_new_tokens": 0})
    given = [p + MASK_PLACEHOLDER * body.max_tokens + body.suffix if body.suffix is not None else p for p in prompts]
    tickets = [submit(engine, entry, settings, text, params, stream=False) for text in given]
    ident, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": ident, "object": "text_completion", "created": created, "model": entry.name}

    async def choices() -> AsyncIterator[dict[str, Any]]:
        for p, ticket in enumerate(tickets):
            await wait_final(ticket, request)
            for i, r in enumerate(results(ticket, params, started, written_only=body.suffix is not None)):
                assert r.details is not None
                choice = _choice(p * body.n + i, r.generated_text, r.details.finish_reason)
                if body.logprobs is not None:
                    top = r.details.top_tokens
                    choice["logprobs"] = logprobs.completion(r.details.tokens, top, len(prompts[p]))
                yield choice

    if body.stream:

        async def stream() -> AsyncIterator[str]:
            try:
                async for choice in choices():
                    yield sse({**head, "choices": [choice]})
                yield "data: [DONE]\n\n"
            finally:
                for t in tickets:
                    t.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream")
    out = [c async for c in choices()]
    metrics.latency.labels("/v1/completions").observe(time.perf_counter() - started)
    supplied = [p + (body.suffix or "") for p in prompts]  # the text the client sent, blanks not counted
    prompt_tokens = sum(len(entry.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in supplied)
    completion_tokens = sum(sum(t.result.generated_tokens) for t in tickets if t.result is not None)
    return {**head, "choices": out, "usage": _usage(prompt_tokens, completion_tokens)}


def _final(pieces: TokenPieces, frame: Frame, row: int, end: int) -> list[Token]:
    """Row's reply as far as it is final: written tokens up to the first still-masked one, with the log-probs
    they were written with."""
    tokens, masked, live = frame.tokens[row], frame.masked[row], frame.live[row]
    columns = []
    for k in range(frame.prompt_length, len(tokens)):
        if masked[k] or not live[k] or int(tokens[k]) == end:
            break
        columns.append(k)
    return generation.tokens(pieces, tokens[columns].tolist(), frame.confidence[row, columns].log().tolist())


def _delta_logprobs(
    pieces: TokenPieces, frame: Frame, row: int, final: list[Token], start: int, stop: int, top: bool
) -> dict[str, Any]:
    """A stream chunk's `logprobs`: the reply's tokens start..stop, which lie at the columns after the prompt."""
    alternatives = None
    if top:
        columns = range(frame.prompt_length + start, frame.prompt_length + stop)
        ids, lps = frame.top_ids[row], frame.top_logprobs[row]
        alternatives = [generation.tokens(pieces, ids[k].tolist(), lps[k].tolist()) for k in columns]
    return {"content": logprobs.chat(final[start:stop], alternatives)}


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatRequest,
    request: Request,
    settings: SettingsDep,
    registry: RegistryDep,
    engine: EngineDep,
    metrics: MetricsDep,
) -> dict[str, Any] | StreamingResponse:
    """Chat: the reply to `messages`, written by denoising. With stream=true, `chat.completion.chunk`
    deltas carry the reply as it becomes final (left to right, a block once it is fully unmasked),
    then [DONE]; the per-step frames are on the WebSocket and SSE routes."""
    started = time.perf_counter()
    entry = await resolve(registry, body.model)
    if body.n > settings.max_samples:
        raise ApiError(422, f"n must be at most {settings.max_samples} on this server", "n")
    prompt, params, stops = chat_prompt(entry, body.messages), body.parameters(), body.stops()
    ticket = submit(engine, entry, settings, prompt, params, stream=body.stream)
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    head = {"id": ident, "created": created, "model": entry.name}
    end = SpecialTokens.of(entry.tokenizer).end

    if body.stream:

        async def stream() -> AsyncIterator[str]:
            sent, done, counted = [""] * body.n, [False] * body.n, [0] * body.n
            chunk = {**head, "object": "chat.completion.chunk"}
            try:
                for i in range(body.n):
                    yield sse({**chunk, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""}}]})
                async for frame in ticket.frames():
                    for i in range(body.n):
                        if done[i]:
                            continue
                        final = _final(entry.pieces, frame, i, end)
                        text, stopped = cut_at_stops(str(entry.tokenizer.decode([t.id for t in final])).strip(), stops)
                        if text.startswith(sent[i]) and len(text) > len(sent[i]):
                            delta = {"content": text[len(sent[i]) :]}
                            choice = {"index": i, "delta": delta, "finish_reason": None}
                            if body.logprobs:
                                stop = logprobs.covering(final, len(text))
                                choice["logprobs"] = _delta_logprobs(entry.pieces, frame, i, final, counted[i], stop,
                                                                     bool(body.top_logprobs))  # fmt: skip
                                counted[i] = stop
                            yield sse({**chunk, "choices": [choice]})
                            sent[i] = text
                        if stopped or frame.done:
                            done[i] = True
                            reason = "stop" if stopped or frame.ended[i] else "length"
                            yield sse({**chunk, "choices": [{"index": i, "delta": {}, "finish_reason": reason}]})
                yield "data: [DONE]\n\n"
            finally:
                ticket.cancel()

        return StreamingResponse(stream(), media_type="text/event-stream")

    await wait_final(ticket, request)
    assert ticket.result is not None
    choices = []
    for i, r in enumerate(results(ticket, params, started)):
        assert r.details is not None
        text, stopped = cut_at_stops(r.generated_text, stops)
        reason = "stop" if stopped or r.details.finish_reason == "eos_token" else "length"
        message = {"role": "assistant", "content": text}
        choice = {"index": i, "message": message, "logprobs": None, "finish_reason": reason}
        if body.logprobs:
            n = logprobs.covering(r.details.tokens, len(text))
            top = r.details.top_tokens[:n] if r.details.top_tokens is not None else None
            choice["logprobs"] = {"content": logprobs.chat(r.details.tokens[:n], top), "refusal": None}
        choices.append(choice)
    metrics.latency.labels("/v1/chat/completions").observe(time.perf_counter() - started)
    prompt_tokens = len(entry.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    completion_tokens = sum(ticket.result.generated_tokens)
    return {**head, "object": "chat.completion", "choices": choices, "usage": _usage(prompt_tokens, completion_tokens)}
