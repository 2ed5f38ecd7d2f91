"""Turning validated requests into engine tickets, and frames and results into JSON."""

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from diffusion_core import (
    CheckpointError,
    ConfigError,
    Frame,
    InputError,
    animation,
    create_denoiser,
    decode,
)
from diffusion_core.terminal import TokenPieces
from diffusion_core.tokenizer import chat_text

from .config import Settings
from .engine import Engine, Overloaded, Ticket
from .errors import ApiError, from_core
from .registry import ModelEntry, ModelRegistry
from .schemas import ChatMessage, Details, GenerateParameters, GenerateRequest, GenerateResponse, Timings, Token


async def resolve(registry: ModelRegistry, name: str | None, param: str = "model") -> ModelEntry:
    """The named (or current) model, loading a retained version on first use; 503 while loading, 404 unknown."""
    if registry.current is None:
        reason = f"model failed to load: {registry.error}" if registry.error else "model is loading"
        raise ApiError(503, reason)
    entry = registry.get(name)
    if entry is not None:
        return entry
    assert name is not None
    try:
        record = registry.store.version(name) if registry.store is not None else None
    except RedisError:
        raise ApiError(503, f"cannot look up model {name!r}: the job store (Redis) is unreachable") from None
    if record is None:
        raise ApiError(404, f"unknown model {name!r}; available: {', '.join(registry.names())}", param)
    try:
        return await asyncio.to_thread(registry.version, record["version"])
    except CheckpointError as exc:
        raise ApiError(503, f"model {name!r} cannot be served: {exc}", param) from None


def chat_prompt(entry: ModelEntry, messages: list[ChatMessage]) -> str:
    """The model's chat template over the messages, with the generation prompt; 400 without a template."""
    if not getattr(entry.tokenizer, "chat_template", None):
        raise ApiError(400, f"model {entry.name} has no chat template; send a prompt instead", "messages")
    return chat_text(entry.tokenizer, [m.model_dump() for m in messages])


def prompt_of(entry: ModelEntry, body: GenerateRequest) -> str:
    """The request's prompt: `inputs`, or its `messages` through the chat template."""
    if body.messages is not None:
        return chat_prompt(entry, body.messages)
    return body.inputs or ""


def check_limits(settings: Settings, params: GenerateParameters, prefix: str = "parameters") -> None:
    for field, limit in (
        ("max_new_tokens", settings.max_new_tokens),
        ("steps", settings.max_steps),
        ("num_samples", settings.max_samples),
    ):
        if getattr(params, field) > limit:
            raise ApiError(422, f"{field} must be at most {limit} on this server", f"{prefix}.{field}")


def submit(
    engine: Engine, entry: ModelEntry, settings: Settings, inputs: str, params: GenerateParameters, stream: bool
) -> Ticket:
    """Validate against the limits and the model, then queue; 422, 429 as ApiError."""
    check_limits(settings, params)
    prompt_ids = entry.tokenizer(inputs, add_special_tokens=False)["input_ids"]
    prompt_tokens = len(prompt_ids)
    if prompt_tokens > settings.max_input_tokens:
        raise ApiError(
            422, f"inputs is {prompt_tokens} tokens; this server accepts at most {settings.max_input_tokens}", "inputs"
        )
    try:
        state = create_denoiser(entry.model, entry.tokenizer, inputs, params.generation(), params.top_n_tokens)
    except (ConfigError, InputError) as exc:
        raise from_core(exc) from None
    opening = animation.opening(state, entry.pieces) if stream else None  # before the engine touches state
    try:
        ticket = engine.submit(state, entry, stream)
    except Overloaded:
        raise ApiError(429, "the server is at capacity; retry shortly", headers={"Retry-After": "1"}) from None
    ticket.opening = opening
    ticket.prompt_ids = prompt_ids if params.decoder_input_details else []
    return ticket


def frame_message(ticket: Ticket, frame: Frame) -> dict[str, Any]:
    return animation.message(frame, ticket.entry.pieces)


def results(
    ticket: Ticket, params: GenerateParameters, started: float, written_only: bool = False
) -> list[GenerateResponse]:
    """One response per sample: the text (with written_only, only what the model wrote: the filled
    blanks, not the text around them) and its details."""
    result = ticket.result
    assert result is not None, "results() of an unfinished request"
    texts = decode(ticket.entry.tokenizer, result, written_only)
    timings = Timings(
        total_ms=round((time.perf_counter() - started) * 1000, 2),
        forward_ms=round(result.forward_s * 1000, 2),
        queue_ms=round(ticket.queue_s * 1000, 2),
    )
    pieces = ticket.entry.pieces
    prefill = [Token(id=i, text=t, logprob=None, special=i in pieces.special) for i, t in
               zip(ticket.prompt_ids, pieces(ticket.prompt_ids))]  # fmt: skip
    out = []
    for i, (text, reason, count) in enumerate(zip(texts, result.finish_reasons, result.generated_tokens)):
        details = Details(
            finish_reason="eos_token" if reason == "eos" else "length",
            steps=params.steps,
            nfe=result.nfe,
            seed=result.seed + i,
            generated_tokens=count,
            timings=timings,
            prefill=prefill,
            tokens=tokens(pieces, result.written[i], result.logprobs[i]),
            top_tokens=[tokens(pieces, *zip(*top)) for top in result.top_logprobs[i]] if params.top_n_tokens else None,
        )
        out.append(GenerateResponse(generated_text=text, details=details if params.details else None))
    return out


def tokens(pieces: TokenPieces, ids: Sequence[int], logprobs: Sequence[float]) -> list[Token]:
    """Ids with their log-probabilities as TGI's tokens; the texts join into the decoded text."""
    return [Token(id=i, text=t, logprob=lp, special=i in pieces.special) for i, t, lp in
            zip(ids, pieces(list(ids)), logprobs)]  # fmt: skip
