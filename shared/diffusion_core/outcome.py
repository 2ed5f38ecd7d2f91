"""What a request shows outside its Denoiser: a `Frame` per step and, at the end, its `Result`.

Both are built from the state in one copy off the device and hold only host values, so a reader
(a stream, a route, a later look) never touches the live state.
"""

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .denoise import Denoiser


@dataclass(frozen=True)
class Frame:
    """One denoising step, complete in itself. Tensors are (B, T) on the CPU; B = samples, T = canvas."""

    step: int  # forward passes so far, 1-based (0: the canvas before the first pass)
    steps: int  # forward passes asked for (threshold remasking and end tokens may use fewer)
    block: int  # semi-autoregressive block being filled, 0-based
    prompt_length: int  # the start token and the prompt: columns before the first masked one
    tokens: torch.Tensor  # current ids; masked positions hold the mask id
    masked: torch.Tensor  # still masked after this step
    revealed: torch.Tensor  # committed at this step
    fixed: torch.Tensor  # supplied by the request (start token, prompt, text around blanks)
    live: torch.Tensor  # part of the text: False past a row's end token
    edited: torch.Tensor  # committed earlier, replaced at this step (edit_margin)
    ended: torch.Tensor  # (B,) the row has written its end token
    confidence: torch.Tensor  # model probability of each committed token when it was committed; NaN elsewhere
    top_ids: torch.Tensor  # (B, T, k) with top_logprobs: the k most likely tokens when the slot was written
    top_logprobs: torch.Tensor  # (B, T, k) their log-probabilities (k = 0 without top_logprobs)
    forward_s: float  # time in this step's forward pass
    step_s: float  # time for the whole step, forward included
    elapsed_s: float  # since the first step started
    done: bool  # no mask is left


@dataclass(frozen=True)
class Result:
    """A request's outcome on the host, complete in itself: built once when it finishes (on the serving
    engine's thread), so nothing reads a live Denoiser afterwards."""

    ids: list[list[int]]  # per row: the continuation up to its end token, or the whole filled text when infilling
    written: list[list[int]]  # per row: only the ids the model wrote (filled blanks and tail), no end token
    finish_reasons: list[str]  # per row: "eos" (it wrote its end token) or "length"
    seed: int  # row i used seed + i
    nfe: int  # forward passes
    forward_s: float  # seconds in them
    logprobs: list[list[float]]  # per row, per `written` id: its log-probability when it was written
    top_logprobs: list[list[list[tuple[int, float]]]]  # per row, per `written` id: the k most likely (id, logprob)

    @property
    def generated_tokens(self) -> list[int]:
        """Per row: how many tokens the model wrote (end token and dropped slots excluded)."""
        return [len(ids) for ids in self.written]


def frame_of(state: "Denoiser") -> Frame:
    """The state now, as a self-contained Frame on the host: one copy off the device."""
    revealed, edited = torch.zeros_like(state.masked), torch.zeros_like(state.masked)
    if state.kept_last is not None and state.edited_last is not None:
        revealed.scatter_(1, *state.kept_last)
        edited.scatter_(1, *state.edited_last)
    flags = state.masked.long() | revealed.long() << 1 | state.fixed.long() << 2 | (state.attention > 0).long() << 3
    flags = flags | state.ended.long().unsqueeze(-1) << 4 | edited.long() << 5  # ended: a row's flag, every column
    tokens, flags, conf_bits = torch.stack([state.tokens, flags, state.confidence.view(torch.int32).long()]).cpu()
    if state.top_ids.numel():  # only when asked for: a second copy off the device
        top_ids, top_logprobs = state.top_ids.cpu(), state.top_logprobs.cpu()
    else:
        top_ids, top_logprobs = torch.empty((*tokens.shape, 0), dtype=torch.long), torch.empty((*tokens.shape, 0))
    now = time.perf_counter()
    return Frame(
        step=state.nfe,
        steps=state.config.steps,
        block=state.now.block if state.now is not None else len(state.plan.blocks) - 1,
        prompt_length=state.prompt_length,
        tokens=tokens,
        masked=flags & 1 > 0,
        revealed=flags & 2 > 0,
        fixed=flags & 4 > 0,
        live=flags & 8 > 0,
        edited=flags & 32 > 0,
        ended=flags[:, 0] & 16 > 0,
        confidence=conf_bits.int().view(torch.float32),
        top_ids=top_ids,
        top_logprobs=top_logprobs,
        forward_s=state.laps[-1].seconds if state.laps else 0.0,
        step_s=now - state.step_started if state.nfe else 0.0,
        elapsed_s=now - state.started if state.started is not None else 0.0,
        done=state.finished,
    )


def result_of(state: "Denoiser") -> Result:
    """What the request wrote so far, on the host (on a GPU it also reads the forward passes' timing
    events, so call it at the end)."""
    live = state.attention > 0
    written = ~state.fixed & live & (state.tokens != state.special.end)
    row_ended = state.ended.long().unsqueeze(-1).expand_as(state.tokens)
    tokens, live, written, row_ended = torch.stack([state.tokens, live.long(), written.long(), row_ended]).cpu()
    confidence, top_ids, top_logprobs = state.confidence.cpu(), state.top_ids.cpu(), state.top_logprobs.cpu()
    start = 1 if state.infill else state.prompt_length
    ended = row_ended[:, 0].tolist()
    rows = [row[start:][keep[start:] > 0].tolist() for row, keep in zip(tokens, live)]
    ids = [row[: row.index(state.special.end)] if stop else row for row, stop in zip(rows, ended)]
    kept = [keep > 0 for keep in written]
    return Result(
        ids=ids,
        written=[row[keep].tolist() for row, keep in zip(tokens, kept)],
        finish_reasons=["eos" if stop else "length" for stop in ended],
        seed=state.seed,
        nfe=state.nfe,
        forward_s=sum(timer.seconds for timer in state.laps),
        logprobs=[row[keep].log().tolist() for row, keep in zip(confidence, kept)],
        top_logprobs=[
            [list(zip(i, lp)) for i, lp in zip(ids_[keep].tolist(), lps[keep].tolist())]
            for ids_, lps, keep in zip(top_ids, top_logprobs, kept)
        ],
    )
