"""The generation loop: start from masks, predict them all, keep some, re-mask the rest, repeat.

`Denoiser` holds one request's state and advances one step per forward pass; `run` drives it
with a model and yields a `Frame` per step. The serving engine drives many Denoisers with one
batched forward pass; both go through `Denoiser.request` and `Denoiser.advance`, so there is one
loop, and both end with the same self-contained `Result`.

The state lives on the model's device and a step is a forward pass plus batched tensor ops:
random numbers are counter-based (draws.py), the plan of blocks and passes is known on the host
(plan.py), and nothing crosses to the host inside a step, except one flag when the number of
passes depends on the text (threshold remasking, end tokens). A Frame is copied off the device
only when asked.
"""

import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .cache import BlockCache, CacheMode, mode_for
from .canvas import Canvas, build_canvas
from .config import GenerationConfig
from .draws import REMASK, REVISE, SAMPLE, uniforms
from .errors import ConfigError, InputError
from .model import SpecialTokens, max_positions
from .outcome import Frame, Result, frame_of, result_of
from .passes import StepInputs, StepOutputs, forward, inference
from .penalties import Penalties, penalize
from .plan import Block, Pass, Plan, keep_counts
from .remasking import Spacing, keep_mask
from .revision import edits, remask_choice, remask_counts
from .sampling import SamplingParams, probability_of, sample
from .timing import Lap

__all__ = [
    "Denoiser", "Frame", "Generation", "Result", "StepInputs", "StepOutputs",
    "create_denoiser", "decode", "denoising", "generate", "run",
]  # fmt: skip


class Denoiser:
    """State of one request (num_samples rows sharing one layout) between forward passes, on `device`."""

    def __init__(
        self,
        canvas: Canvas,
        config: GenerationConfig,
        special: SpecialTokens,
        window: int,
        banned_ids: list[int],
        device: torch.device = torch.device("cpu"),
        cache: CacheMode = CacheMode.NONE,
        top_logprobs: int = 0,
    ) -> None:
        b = config.num_samples
        self.config, self.special, self.device = config, special, device
        self.seed = config.seed if config.seed is not None else secrets.randbits(31)
        self.row_seeds = (self.seed + torch.arange(b, device=device)).unsqueeze(-1)  # sample i uses seed + i
        self.tokens = torch.tensor(canvas.tokens, device=device).repeat(b, 1)
        self.masked = torch.tensor(canvas.masked, device=device).repeat(b, 1)
        self.fixed = ~self.masked
        self.attention = torch.ones_like(self.tokens)
        self.confidence = torch.full(self.tokens.shape, float("nan"), device=device)
        # With top_logprobs: the k most likely tokens (ids, log-probs) of each slot's distribution when it was written.
        self.top_ids = torch.zeros((*self.tokens.shape, top_logprobs), dtype=torch.long, device=device)
        self.top_logprobs = torch.zeros((*self.tokens.shape, top_logprobs), device=device)
        self.ended = torch.zeros(b, dtype=torch.bool, device=device)
        self.prompt_length, self.infill = canvas.prompt_length, canvas.infill
        self.stop_at_end = not canvas.infill and not config.forbid_eos
        banned = sorted(set(banned_ids) | ({special.end} if not self.stop_at_end else set()))
        self.banned = torch.tensor(banned, dtype=torch.long, device=device)
        self._bias: torch.Tensor | None = None
        self.penalties = Penalties.of(config)
        self.plan = Plan.of(canvas.masked, config, window)
        self.slots = torch.tensor([c for block in self.plan.blocks for c in block.columns], device=device)
        # The pass count is known on the host unless the text decides it: then one flag is read per pass.
        self.watch = self.stop_at_end or config.remasking == "threshold"
        self.cache = BlockCache(cache, config.cache_refresh)
        self.now: Pass | None = None  # the next pass; None once finished
        self.total = torch.zeros(b, dtype=torch.long, device=device)  # (B,) the block's slots to fill, per row
        self.nfe = 0
        self.laps: list[Lap] = []
        self.started: float | None = None
        self.step_started = 0.0
        self.kept_last: tuple[torch.Tensor, torch.Tensor] | None = None  # (columns, kept) of the last step
        self.edited_last: tuple[torch.Tensor, torch.Tensor] | None = None  # (columns, replaced) of the last step
        self._move_to(self.plan.first())

    @property
    def finished(self) -> bool:
        return self.now is None

    def _positions(self, block: Block) -> torch.Tensor:
        """(S,) the block's slots, canvas columns on the device."""
        return self.slots[block.offset : block.offset + len(block.columns)]

    def _move_to(self, now: Pass | None) -> None:
        self.now = now
        if now is not None and now.step == 0:
            self.total = self.masked[:, self._positions(self.plan.blocks[now.block])].sum(-1)

    def request(self) -> StepInputs:
        """Inputs of the next forward pass; the head predicts this block's still-masked slots only.
        Canvas columns become window columns here, and window columns query columns with the cache."""
        assert self.now is not None, "request() after the last step"
        self.step_started = time.perf_counter()
        if self.started is None:
            self.started = self.step_started
        now, block = self.now, self.plan.blocks[self.now.block]
        slots = self._head_columns(block, len(block.columns) if self.config.edit_margin else now.left)
        b, r = slots.shape
        rows = torch.arange(b, device=self.device).repeat_interleave(r)
        window_cols = (slots - (block.start - 1)).flatten()  # canvas column -> window column
        ids, attention = self._window(self.tokens, block), self._window(self.attention, block)
        if self.config.cfg_scale:  # the unconditional rows: the same canvas with the supplied text masked
            supplied = self._window(self.fixed, block).index_fill(1, torch.tensor([0], device=self.device), False)
            ids = torch.cat([ids, ids.masked_fill(supplied, self.special.mask)])
            attention, rows, window_cols = attention.repeat(2, 1), torch.cat([rows, rows + b]), window_cols.repeat(2)
            b *= 2
        start, end = block.to_window(block.columns[0]), block.to_window(block.columns[-1]) + 1
        cached = self.cache.plan(now.step == 0, block.start == 1, start, end, ids.shape[1])
        if cached is None:
            return StepInputs(ids, attention, rows, window_cols, slots=slots)
        past, past_mask = self.cache.past(cached, attention)
        query = torch.arange(cached.lo, cached.hi, device=self.device).expand(b, cached.hi - cached.lo)
        return StepInputs(ids, attention, rows, window_cols - cached.lo, query, past, past_mask, slots, cached)

    @staticmethod
    def _window(x: torch.Tensor, block: Block) -> torch.Tensor:
        """The columns a block's passes see: 0 and [start, end)."""
        return x[:, : block.end] if block.start == 1 else torch.cat([x[:, :1], x[:, block.start : block.end]], 1)

    def _head_columns(self, block: Block, left: int) -> torch.Tensor:
        """(B, R): each row's first R still-masked slots of the block, in column order; R = `left`, the masks
        left in the fullest row. A row with fewer fills up with committed slots, which the step leaves alone."""
        positions = self._positions(block)
        waiting = (~self.masked[:, positions]).to(torch.uint8)
        first = waiting.sort(dim=-1, stable=True).indices[:, :left]  # masked (0) sort before committed (1)
        return positions[first]

    def advance(self, step: StepInputs, out: StepOutputs) -> None:
        """Commit part of this pass's predictions: `step` is what request() returned, `out.logits` (M, V)
        follow its rows and columns."""
        assert self.now is not None and step.slots is not None, "advance() takes this request's own inputs"
        if step.cache is not None and out.kv is not None:
            self.cache.keep(step.cache, out.kv)
        slots, cfg = step.slots, self.config
        b, r = slots.shape
        assert out.logits.shape[0] == step.rows.numel(), "logits do not match the requested positions"
        logits = self._logits(out.logits, step.rows[: b * r])
        params = SamplingParams(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        draws = uniforms(self.row_seeds, slots, self.nfe, SAMPLE).to(self.device)  # (B, R): by canvas column
        ids = sample(cfg.sampling, logits, draws.view(-1), params).view(b, r)
        prob = probability_of(logits, ids.view(-1)).view(b, r)
        candidates = self.masked.gather(1, slots)
        revisable = self._revisable()  # (B, S) over the block's slots, before this pass commits anything
        keep, remask = self._keep(prob.masked_fill(~candidates, float("-inf")), candidates, slots, revisable)
        written = keep | self._edits(logits, slots, ids, prob, candidates)
        self.tokens.scatter_(1, slots, torch.where(written, ids, self.tokens.gather(1, slots)))
        self.confidence.scatter_(1, slots, torch.where(written, prob, self.confidence.gather(1, slots)))
        if self.top_ids.shape[-1]:
            self._keep_top(logits, slots, written)
        self.masked.scatter_(1, slots, candidates & ~keep)
        self.kept_last, self.edited_last = (slots, keep), (slots, written & ~keep)
        if remask is not None:
            self._remask(remask)
        if self.stop_at_end:
            self._stop_rows_at_end()
        if out.timer is not None:
            self.laps.append(out.timer)
        self.nfe += 1
        self._move_to(self._next_pass())

    def _keep_top(self, logits: torch.Tensor, slots: torch.Tensor, written: torch.Tensor) -> None:
        """The k most likely tokens of the distributions (B*R, V) the written slots (B, R) were drawn from."""
        b, r = slots.shape
        k = self.top_ids.shape[-1]
        values, ids = torch.log_softmax(logits, -1).topk(k, -1)
        where = slots.unsqueeze(-1).expand(b, r, k)
        chosen = written.unsqueeze(-1)
        self.top_ids.scatter_(1, where, torch.where(chosen, ids.view(b, r, k), self.top_ids.gather(1, where)))
        self.top_logprobs.scatter_(
            1, where, torch.where(chosen, values.view(b, r, k), self.top_logprobs.gather(1, where))
        )

    def _ban_bias(self, vocab: int) -> torch.Tensor:
        """(V,) zeros with -inf at the ids never to be sampled (special tokens)."""
        if self._bias is None or self._bias.numel() != vocab:
            # Built on the device: ids past this vocabulary land on its last id with a 0 that cannot win the min.
            inside = torch.where(self.banned < vocab, float("-inf"), 0.0)
            bias = torch.zeros(vocab, device=self.device)
            self._bias = bias.scatter_reduce_(0, self.banned.clamp(max=vocab - 1), inside, reduce="amin")
        return self._bias

    def _logits(self, raw: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The pass's logits (M, V) as the step samples them: guided, special tokens banned, penalised."""
        logits = raw.float()
        if self.config.cfg_scale:
            conditional, unconditional = logits.chunk(2)
            logits = unconditional + (1 + self.config.cfg_scale) * (conditional - unconditional)
        logits = logits + self._ban_bias(logits.shape[-1])
        if self.penalties.active:
            in_text = ~self.masked & (self.attention > 0)
            logits = penalize(logits, rows, self.tokens, in_text, in_text & ~self.fixed, self.penalties)
        return logits

    def _keep(
        self, conf: torch.Tensor, candidates: torch.Tensor, slots: torch.Tensor, revisable: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Which of this pass's predictions (B, R) stay, as many as the schedule asks by the remasking rule,
        and which of the block's committed slots (B, S) are masked again (revise; None: none)."""
        assert self.now is not None
        now, cfg = self.now, self.config
        steps = self.plan.blocks[now.block].steps
        if now.step + 1 >= steps:
            return candidates, None  # the block's last planned pass fills whatever is left
        remaining = candidates.sum(-1)
        counts = keep_counts(cfg.schedule, now.step, steps, remaining, self.total)
        most = self.plan.keeps(now)  # placed apart: the fullest row's count, known on the host
        remask = None
        if revisable is not None:
            extra = remask_counts(cfg.revise, cfg.revise_eta, revisable.sum(-1), remaining - counts)
            counts = counts + extra  # keep as many more as are masked again: the schedule holds
            block = torch.tensor([len(self.plan.blocks[now.block].columns) - now.left])
            most += int(remask_counts(cfg.revise, cfg.revise_eta, block, torch.tensor([now.left - most])))
            remask = self._remask_choice(revisable, extra)
        noise = torch.zeros_like(conf)
        if cfg.remasking == "random":
            noise = uniforms(self.row_seeds, slots, self.nfe, REMASK).to(self.device)
        apart = Spacing(slots, cfg.spacing, most)
        return keep_mask(cfg.remasking, conf, counts, noise, cfg.threshold, apart) & candidates, remask

    def _revisable(self) -> torch.Tensor | None:
        """(B, S) the current block's slots that hold a token the model committed (not an end token)."""
        if self.config.revise == "none" or self.now is None:
            return None
        positions = self._positions(self.plan.blocks[self.now.block])
        text = ~self.masked & ~self.fixed & (self.attention > 0) & (self.tokens != self.special.end)
        return text[:, positions]

    def _remask_choice(self, revisable: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        assert self.now is not None
        positions = self._positions(self.plan.blocks[self.now.block]).expand_as(revisable)
        noise = uniforms(self.row_seeds, positions, self.nfe, REVISE).to(self.device)
        confidence = self.confidence.gather(1, positions)
        return remask_choice(self.config.revise, revisable, counts, confidence, noise)

    def _remask(self, chosen: torch.Tensor) -> None:
        """Mask again the block's slots `chosen` (B, S)."""
        assert self.now is not None
        positions = self._positions(self.plan.blocks[self.now.block]).expand_as(chosen)
        self.masked.scatter_(1, positions, self.masked.gather(1, positions) | chosen)
        self.tokens.scatter_(1, positions, self.tokens.gather(1, positions).masked_fill(chosen, self.special.mask))
        self.confidence.scatter_(1, positions, self.confidence.gather(1, positions).masked_fill(chosen, float("nan")))

    def _edits(
        self, logits: torch.Tensor, slots: torch.Tensor, ids: torch.Tensor, prob: torch.Tensor, candidates: torch.Tensor
    ) -> torch.Tensor:
        """(B, R) committed slots whose token this pass's prediction replaces (edit_margin; else none)."""
        if not self.config.edit_margin:
            return torch.zeros_like(candidates)
        now = self.tokens.gather(1, slots)
        committed = ~candidates & ~self.fixed.gather(1, slots) & (self.attention.gather(1, slots) > 0)
        committed &= now != self.special.end
        now_prob = probability_of(logits, now.view(-1)).view(now.shape)
        return edits(committed, now, ids, now_prob, prob, self.config.edit_margin)

    def _stop_rows_at_end(self) -> None:
        """Past the first committed end token a row is finished: drop its remaining slots."""
        hit = (self.tokens == self.special.end) & ~self.masked & ~self.fixed & (self.attention > 0)
        has = hit.any(-1)
        length = self.tokens.shape[1]
        first = torch.where(has, hit.int().argmax(-1), length)  # column of each row's first end token
        after = torch.arange(length, device=self.device).unsqueeze(0) > first.unsqueeze(-1)
        self.tokens.masked_fill_(after, self.special.pad)
        self.masked &= ~after
        self.attention.masked_fill_(after, 0)
        self.ended |= has

    def _next_pass(self) -> Pass | None:
        assert self.now is not None
        if not self.watch:
            return self.plan.after(self.now)
        # The one host read of such a pass: masks left in this block's fullest row, and anywhere at all
        # (a row that wrote its end token still fills the slots before it).
        most = self.masked[:, self._positions(self.plan.blocks[self.now.block])].sum(-1).max()
        left, writing = torch.stack([most, self.masked.any().long()]).tolist()
        return self.plan.after(self.now, left) if writing else None

    def frame(self) -> Frame:
        """The state now, as a self-contained Frame on the host: one copy off the device."""
        return frame_of(self)

    def result(self) -> Result:
        """What the request wrote so far, on the host (on a GPU it also reads the forward passes' timing
        events, so call it at the end)."""
        return result_of(self)


def create_denoiser(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    config: GenerationConfig,
    top_logprobs: int = 0,
) -> Denoiser:
    """Validate the request against this model and build its initial state (with top_logprobs, each written
    token also keeps the k most likely tokens of its distribution, for Result.top_logprobs)."""
    special = SpecialTokens.of(tokenizer)
    window = max_positions(model, tokenizer)
    canvas = build_canvas(tokenizer, special, text, config.max_new_tokens)
    if canvas.prompt_length > window - 1:
        raise InputError(
            f"prompt is {canvas.prompt_length - 1} tokens; this model allows at most {window - 2}", "inputs"
        )
    if len(canvas.tokens) > window and not config.block_length:
        raise ConfigError(
            f"prompt + max_new_tokens is {len(canvas.tokens)} tokens but the model holds {window}; "
            "set block_length to generate past it",
            "max_new_tokens",
        )
    banned = [i for i in tokenizer.all_special_ids if i != special.end]
    device = next(model.parameters()).device
    return Denoiser(canvas, config, special, window, banned, device, mode_for(model, config.cache), top_logprobs)


def run(
    model: PreTrainedModel,
    state: Denoiser,
    autocast: bool = False,
    every_step: bool = True,
    on_step: Callable[[Denoiser], object] | None = None,
) -> Iterator[Frame]:
    """Drive one Denoiser with its own forward passes, yielding a Frame per step (or only the last one:
    every_step=False copies nothing off the device until the end); `on_step` runs after every pass."""
    while not state.finished:
        with inference(state.device, autocast):
            step = state.request()
            state.advance(step, forward(model, step))
        if on_step is not None:
            on_step(state)
        if every_step or state.finished:
            yield state.frame()


def denoising(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, config: GenerationConfig
) -> Iterator[Frame]:
    """Yield one Frame per forward pass until no mask is left."""
    return run(model, create_denoiser(model, tokenizer, text, config))


@dataclass(frozen=True)
class Generation:
    """The outcome of one request: one text per sample, and how it was made."""

    texts: list[str]
    finish_reasons: list[str]
    seed: int
    nfe: int
    seconds: float
    frames: list[Frame]


def decode(tokenizer: PreTrainedTokenizerBase, result: Result, written_only: bool = False) -> list[str]:
    """Per-row text, special tokens left out: the continuation (or filled text), or with `written_only`
    only what the model wrote (the filled blanks, not the text around them)."""
    rows = result.written if written_only else result.ids
    return [str(tokenizer.decode(ids, skip_special_tokens=True)).strip() for ids in rows]


def cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the first of the stop strings, and whether one was found."""
    ends = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(ends)], True) if ends else (text, False)


def generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    text: str,
    config: GenerationConfig,
    autocast: bool = False,
    keep_frames: bool = False,
) -> Generation:
    """Run a request to the end and decode it; frames are kept only when asked for."""
    state = create_denoiser(model, tokenizer, text, config)
    started = time.perf_counter()
    frames = list(run(model, state, autocast=autocast, every_step=keep_frames))
    result = state.result()
    return Generation(
        texts=decode(tokenizer, result),
        finish_reasons=result.finish_reasons,
        seed=result.seed,
        nfe=result.nfe,
        seconds=time.perf_counter() - started,
        frames=frames if keep_frames else [],
    )
