"""The generation loop: start from masks, predict them all, keep some, re-mask the rest, repeat.

`Denoiser` holds one request's state and advances one step per forward pass; `run` drives it
with a model and yields a `Frame` per step. The serving engine drives many Denoisers with one
batched forward pass; both go through `Denoiser.advance`, so there is one loop.

The state lives on the model's device and a step is a forward pass plus batched tensor ops:
random numbers are counter-based (draws.py), the plan of blocks and steps is known on the host,
and nothing crosses to the host inside a step, except one flag when the number of steps depends
on the text (threshold remasking, end tokens). A Frame is copied off the device only when asked.
"""

import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import accumulate

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .cache import KV, BlockCache, cached_logits, usable
from .canvas import Canvas, build_canvas
from .config import GenerationConfig
from .draws import REMASK, SAMPLE, uniforms
from .errors import ConfigError, InputError
from .model import SpecialTokens, masked_logits, max_positions
from .remasking import Spacing, keep_mask
from .sampling import SamplingParams, probability_of, sample
from .schedules import masked_after
from .timing import Lap, lap


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
    confidence: torch.Tensor  # model probability of each committed token when it was committed; NaN elsewhere
    forward_s: float  # time in this step's forward pass
    step_s: float  # time for the whole step, forward included
    elapsed_s: float  # since the first step started
    done: bool  # no mask is left


@dataclass(frozen=True)
class StepInputs:
    """What one forward pass needs: the window's ids and attention (B, W), and where the head predicts.

    With the block cache a pass computes only `query` (B, Q) window columns (-1: padding) and reads
    the cached keys and values `past` of (B, P) other positions (`past_mask`: which are real); the
    head's `cols` then index the query columns."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor  # (M,) row of each position to predict
    cols: torch.Tensor  # (M,) column in the window (or in `query`)
    query: torch.Tensor | None = None
    past: KV | None = None
    past_mask: torch.Tensor | None = None

    @staticmethod
    def join(parts: "list[StepInputs]", pad: int) -> "StepInputs":
        """Several requests' inputs as one batch: rows stacked, windows (queries, pasts) right-padded."""
        width = max(p.input_ids.shape[1] for p in parts)
        ids = torch.cat([F.pad(p.input_ids, (0, width - p.input_ids.shape[1]), value=pad) for p in parts])
        attention = torch.cat([F.pad(p.attention_mask, (0, width - p.attention_mask.shape[1])) for p in parts])
        firsts = [0, *accumulate(p.input_ids.shape[0] for p in parts)]  # first row of each request
        rows = torch.cat([p.rows + first for p, first in zip(parts, firsts)])
        joined = StepInputs(ids, attention, rows, torch.cat([p.cols for p in parts]))
        if all(p.query is None for p in parts):
            return joined
        queries = [p.all_columns() for p in parts]
        q = max(x.shape[1] for x in queries)
        query = torch.cat([F.pad(x, (0, q - x.shape[1]), value=-1) for x in queries])
        past, past_mask = _join_past(parts)
        return replace(joined, query=query, past=past, past_mask=past_mask)

    def all_columns(self) -> torch.Tensor:
        """(B, Q) the window columns this pass computes: `query`, or every column."""
        if self.query is not None:
            return self.query
        b, w = self.input_ids.shape
        return torch.arange(w, device=self.input_ids.device).expand(b, w)


def _join_past(parts: list[StepInputs]) -> tuple[KV | None, torch.Tensor | None]:
    """The parts' cached keys and values padded to the longest (parts without any get masked zeros)."""
    with_past = [p for p in parts if p.past is not None]
    if not with_past:
        return None, None
    template = with_past[0].past
    assert template is not None
    length = max(p.past.length for p in with_past if p.past is not None)
    kvs, masks = [], []
    for p in parts:
        b = p.input_ids.shape[0]
        if p.past is None or p.past_mask is None:
            empty = torch.zeros(b, length, dtype=torch.long, device=p.input_ids.device)
            kvs.append(template.empty(b, length))
            masks.append(empty)
        else:
            kvs.append(p.past.padded(length))
            masks.append(F.pad(p.past_mask, (0, length - p.past.length)))
    return KV.cat(kvs, 0), torch.cat(masks)


@dataclass(frozen=True)
class StepOutputs:
    """What one forward pass gave: logits (M, V) at the requested positions, its timing, and with the
    block cache the keys and values of every query position."""

    logits: torch.Tensor
    timer: Lap | None = None
    kv: KV | None = None

    def split(self, parts: list[StepInputs]) -> "list[StepOutputs]":
        """Each joined request's share, in the order of `parts`."""
        logits = self.logits.split([p.rows.numel() for p in parts])
        firsts = [0, *accumulate(p.input_ids.shape[0] for p in parts)]
        return [
            StepOutputs(
                part, self.timer, None if self.kv is None else self.kv.rows(first, first + p.input_ids.shape[0])
            )
            for p, part, first in zip(parts, logits, firsts)
        ]


@dataclass(frozen=True)
class Block:
    """A semi-autoregressive block: its slots (host ints), where they start in `slots`, its planned passes."""

    columns: list[int]
    offset: int
    steps: int


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
        cached: bool = False,
    ) -> None:
        b = config.num_samples
        self.config, self.special, self.window, self.device = config, special, window, device
        self.seed = config.seed if config.seed is not None else secrets.randbits(31)
        self.tokens = torch.tensor(canvas.tokens, device=device).repeat(b, 1)
        self.masked = torch.tensor(canvas.masked, device=device).repeat(b, 1)
        self.fixed = ~self.masked
        self.attention = torch.ones_like(self.tokens)
        self.confidence = torch.full(self.tokens.shape, float("nan"), device=device)
        self.prompt_length = canvas.prompt_length
        self.text_end = max(i for i, m in enumerate(canvas.masked) if not m) + 1  # one past the last supplied token
        self.infill = canvas.infill
        self.stop_at_end = not canvas.infill and not config.forbid_eos
        banned = sorted(set(banned_ids) | ({special.end} if not self.stop_at_end else set()))
        self.banned = torch.tensor(banned, dtype=torch.long, device=device)
        self._bias: torch.Tensor | None = None
        self.row_seeds = (self.seed + torch.arange(b, device=device)).unsqueeze(-1)  # sample i uses seed + i
        self.ended = torch.zeros(b, dtype=torch.bool, device=device)
        self.blocks = self._plan_blocks(canvas.masked)
        self.slots = torch.tensor([c for block in self.blocks for c in block.columns], device=device)
        # The step's length is known on the host unless the text decides it: then one flag is read per step.
        self.watch = self.stop_at_end or config.remasking == "threshold"
        self.block_index = 0
        self.nfe = 0
        self.laps: list[Lap] = []
        self.started: float | None = None
        self._step_started = 0.0
        self._revealed: tuple[torch.Tensor, torch.Tensor] | None = None  # (columns, kept) of the last step
        self.cache = BlockCache(config.cache, config.cache_refresh) if cached else None
        self._query_start = 0  # first window column of this pass's queries (block cache)
        self._start_block()

    def _plan_blocks(self, masked: list[bool]) -> list[Block]:
        slots = [i for i, m in enumerate(masked) if m]
        size = min(self.config.block_length or len(slots), len(slots))
        chunks = [slots[i : i + size] for i in range(0, len(slots), size)]
        base, extra = divmod(self.config.steps, len(chunks))  # steps shared out, the first blocks get the rest
        plan = [Block(c, i * size, max(1, base + (i < extra))) for i, c in enumerate(chunks)]
        if len(masked) > self.window:
            for block in plan:
                if block.columns[-1] - block.columns[0] + 2 > self.window:  # the block and the start token
                    raise ConfigError(
                        f"block_length {size} does not fit the model's {self.window} positions", "block_length"
                    )
        return plan

    def _start_block(self) -> None:
        """Set up the current block: its slots on the device, how many masks each pass meets, its window."""
        if self.finished:
            return
        block = self.blocks[self.block_index]
        self.positions = self.slots[block.offset : block.offset + len(block.columns)]
        self.total = self.masked[:, self.positions].sum(-1)  # (B,) slots to fill, for the schedule
        self.block_step = 0
        # Masks left in the fullest row before each pass: planned on the host, or read once a step when watched.
        n = len(block.columns)
        self.plan = [n] if self.watch else masks_per_pass(self.config.schedule, n, block.steps)
        self.window_start, self.window_end = self._window(block)

    def _window(self, block: Block) -> tuple[int, int]:
        """Columns of the block's passes: 0 and [start, end). All of the canvas, or without the masks of
        later blocks (future_masks=False), or a slice ending at the block when the canvas outgrows the model."""
        length = self.tokens.shape[1]
        block_end = block.columns[-1] + 1
        if not self.config.future_masks:
            length = max(block_end, self.text_end)  # text the request supplied always stays in view
        if length <= self.window:
            return 1, length
        return max(1, block_end - (self.window - 1)), block_end

    @property
    def finished(self) -> bool:
        return self.block_index >= len(self.blocks)

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        start, end = self.window_start, self.window_end
        return x[:, :end] if start == 1 else torch.cat([x[:, :1], x[:, start:end]], 1)

    def request(self) -> StepInputs:
        """Inputs of the next forward pass; the head predicts this block's still-masked slots only."""
        assert not self.finished, "request() after the last step"
        self._step_started = time.perf_counter()
        if self.started is None:
            self.started = self._step_started
        self.cols = self._head_columns()
        b, r = self.cols.shape
        rows = torch.arange(b, device=self.device).repeat_interleave(r)
        window_cols = (self.cols - (self.window_start - 1)).flatten()  # canvas column -> window column
        ids, attention = self._columns(self.tokens), self._columns(self.attention)
        if self.cache is None:
            return StepInputs(ids, attention, rows, window_cols)
        block = self.blocks[self.block_index]
        start, end = (c - (self.window_start - 1) for c in (block.columns[0], block.columns[-1] + 1))
        reusable = self.window_start == 1  # window columns are canvas columns: cached ones stay valid
        lo, hi = self.cache.plan(self.block_step == 0, reusable, start, end, ids.shape[1])
        past, past_mask = self.cache.past(attention)
        query = torch.arange(lo, hi, device=self.device).expand(b, hi - lo)
        self._query_start = lo
        return StepInputs(ids, attention, rows, window_cols - lo, query, past, past_mask)

    def _head_columns(self) -> torch.Tensor:
        """(B, R): each row's first R still-masked slots of the block, in column order; R = masks left in the
        fullest row. A row with fewer fills up with committed slots, which the step leaves alone."""
        left = self.plan[min(self.block_step, len(self.plan) - 1)]
        waiting = (~self.masked[:, self.positions]).to(torch.uint8)
        first = waiting.sort(dim=-1, stable=True).indices[:, :left]  # masked (0) sort before committed (1)
        return self.positions[first]

    def advance(self, out: StepOutputs) -> None:
        """Commit part of this step's predictions. out.logits (M, V) follow request()'s rows and cols."""
        cols, cfg, logits = self.cols, self.config, out.logits
        if self.cache is not None and out.kv is not None:
            self.cache.keep(out.kv, self.window_end - self.window_start + 1)
        b, r = cols.shape
        assert logits.shape[0] == b * r, "logits do not match the requested positions"
        logits = logits.float() + self._ban_bias(logits.shape[-1])
        params = SamplingParams(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        draws = uniforms(self.row_seeds, cols, self.nfe, SAMPLE).to(self.device)  # (B, R): by canvas column
        ids = sample(cfg.sampling, logits, draws.view(-1), params).view(b, r)
        prob = probability_of(logits, ids.view(-1)).view(b, r)
        candidates = self.masked.gather(1, cols)
        keep = self._keep(prob.masked_fill(~candidates, float("-inf")), candidates)
        self.tokens.scatter_(1, cols, torch.where(keep, ids, self.tokens.gather(1, cols)))
        self.confidence.scatter_(1, cols, torch.where(keep, prob, self.confidence.gather(1, cols)))
        self.masked.scatter_(1, cols, candidates & ~keep)
        self._revealed = (cols, keep)
        if self.stop_at_end:
            self._stop_rows_at_end()
        if out.timer is not None:
            self.laps.append(out.timer)
        self.nfe += 1
        self._next_step()

    def _ban_bias(self, vocab: int) -> torch.Tensor:
        """(V,) zeros with -inf at the ids never to be sampled (special tokens)."""
        if self._bias is None or self._bias.numel() != vocab:
            # Built on the device: ids past this vocabulary land on its last id with a 0 that cannot win the min.
            inside = torch.where(self.banned < vocab, float("-inf"), 0.0)
            bias = torch.zeros(vocab, device=self.device)
            self._bias = bias.scatter_reduce_(0, self.banned.clamp(max=vocab - 1), inside, reduce="amin")
        return self._bias

    def _keep(self, conf: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Which of this pass's predictions (B, R) stay: as many as the schedule asks, by the remasking rule."""
        block = self.blocks[self.block_index]
        if self.block_step + 1 >= block.steps:
            return candidates  # the block's last planned pass fills whatever is left
        remaining = candidates.sum(-1)
        target = masked_after(self.config.schedule, self.block_step + 1, block.steps, self.total)
        # Keep remaining - target (at least one, at most what is left) so gamma(r) of the block stays masked.
        counts = torch.where(remaining > 0, (remaining - target).clamp(min=1), 0).minimum(remaining)
        noise = torch.zeros_like(conf)
        if self.config.remasking == "random":
            noise = uniforms(self.row_seeds, self.cols, self.nfe, REMASK).to(self.device)
        # The fullest row's count, on the host: masks left before this pass less those the schedule leaves.
        left, slots = self.plan[self.block_step], torch.tensor([len(block.columns)])
        most = left - int(masked_after(self.config.schedule, self.block_step + 1, block.steps, slots))
        apart = Spacing(self.cols, self.config.spacing, min(left, max(1, most)))
        return keep_mask(self.config.remasking, conf, counts, noise, self.config.threshold, apart) & candidates

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

    def _next_step(self) -> None:
        self.block_step += 1
        done = self.block_step >= len(self.plan)
        if self.watch:
            # The one host read of such a step: masks left in this block's fullest row, and anywhere at all
            # (a row that wrote its end token still fills the slots before it).
            most = self.masked[:, self.positions].sum(-1).max()
            left, writing = torch.stack([most, self.masked.any().long()]).tolist()
            if not writing:
                self.block_index = len(self.blocks)
                return
            self.plan.append(left)
            done = self.block_step >= self.blocks[self.block_index].steps or left == 0
        if done:
            self.block_index += 1
            self._start_block()

    def frame(self) -> Frame:
        """The state now, as a self-contained Frame on the host: one copy off the device."""
        revealed = torch.zeros_like(self.masked)
        if self._revealed is not None:
            revealed.scatter_(1, *self._revealed)
        flags = self.masked.long() | revealed.long() << 1 | self.fixed.long() << 2 | (self.attention > 0).long() << 3
        packed = torch.stack([self.tokens, flags, self.confidence.view(torch.int32).long()]).cpu()
        tokens, flags, conf_bits = packed
        now = time.perf_counter()
        return Frame(
            step=self.nfe,
            steps=self.config.steps,
            block=min(self.block_index, len(self.blocks) - 1),
            prompt_length=self.prompt_length,
            tokens=tokens,
            masked=flags & 1 > 0,
            revealed=flags & 2 > 0,
            fixed=flags & 4 > 0,
            live=flags & 8 > 0,
            confidence=conf_bits.int().view(torch.float32),
            forward_s=self.laps[-1].seconds if self.laps else 0.0,
            step_s=now - self._step_started if self.nfe else 0.0,
            elapsed_s=now - self.started if self.started is not None else 0.0,
            done=self.finished,
        )

    @property
    def forward_s(self) -> float:
        """Seconds in this request's forward passes (on a GPU: read from events, so call it at the end)."""
        return sum(timer.seconds for timer in self.laps)

    def output_ids(self) -> list[list[int]]:
        """Per row: the continuation's ids up to its end token, or the whole filled text's when infilling."""
        start = 1 if self.infill else self.prompt_length
        tokens, live = self.tokens[:, start:].cpu(), (self.attention[:, start:] > 0).cpu()
        rows = [row[keep].tolist() for row, keep in zip(tokens, live)]
        return [ids[: ids.index(self.special.end)] if ended else ids for ids, ended in zip(rows, self.ended.tolist())]

    def _written(self) -> torch.Tensor:
        """(B, T): slots the model filled that are part of the text, the end token excluded."""
        return ~self.fixed & (self.attention > 0) & (self.tokens != self.special.end)

    def written_ids(self) -> list[list[int]]:
        """Per row: only the ids the model wrote (the filled blanks and tail), in order."""
        return [row[keep].tolist() for row, keep in zip(self.tokens.cpu(), self._written().cpu())]

    def generated_tokens(self) -> list[int]:
        """Per row: how many tokens the model wrote (end token and dropped slots excluded)."""
        return self._written().sum(-1).tolist()

    def finish_reasons(self) -> list[str]:
        return ["eos" if e else "length" for e in self.ended.tolist()]


def masks_per_pass(schedule: str, slots: int, steps: int) -> list[int]:
    """Masks left before each pass of a block of `slots` (every row alike), when each pass keeps
    max(1, remaining - target) of them and the last planned pass keeps the rest; its length is the passes."""
    plan, remaining = [slots], slots
    for step in range(1, steps):
        target = int(masked_after(schedule, step, steps, torch.tensor([slots])))
        remaining -= min(remaining, max(1, remaining - target))
        if remaining == 0:
            break
        plan.append(remaining)
    return plan


def create_denoiser(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, text: str, config: GenerationConfig
) -> Denoiser:
    """Validate the request against this model and build its initial state."""
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
    return Denoiser(canvas, config, special, window, banned, device, cached=usable(model, config.cache))


@contextmanager
def inference(device: torch.device, autocast: bool = False) -> Iterator[None]:
    """How forward passes and steps run: no autograd, and bf16 autocast when asked."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        yield


def forward(model: PreTrainedModel, step: StepInputs) -> StepOutputs:
    """One forward pass: logits (M, V) at the requested positions, its timing on the device, and with
    the block cache the keys and values it computed."""
    with lap(step.input_ids.device) as timer:
        if step.query is None:
            return StepOutputs(masked_logits(model, step.input_ids, step.attention_mask, step.rows, step.cols), timer)
        logits, kv = cached_logits(
            model, step.input_ids, step.attention_mask, step.query, step.past, step.past_mask, step.rows, step.cols
        )
    return StepOutputs(logits, timer, kv)


def run(model: PreTrainedModel, state: Denoiser, autocast: bool = False, every_step: bool = True) -> Iterator[Frame]:
    """Drive one Denoiser with its own forward passes, yielding a Frame per step (or only the last one:
    every_step=False copies nothing off the device until the end)."""
    while not state.finished:
        with inference(state.device, autocast):
            state.advance(forward(model, state.request()))
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


def decode(tokenizer: PreTrainedTokenizerBase, state: Denoiser) -> list[str]:
    """Per-row text of a finished (or partly finished) state, special tokens left out."""
    return [str(tokenizer.decode(ids, skip_special_tokens=True)).strip() for ids in state.output_ids()]


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
    return Generation(
        texts=decode(tokenizer, state),
        finish_reasons=state.finish_reasons(),
        seed=state.seed,
        nfe=state.nfe,
        seconds=time.perf_counter() - started,
        frames=frames if keep_frames else [],
    )
