"""The generation loop: start from masks, predict them all, keep some, re-mask the rest, repeat.

`Denoiser` holds one request's state and advances one step per forward pass; `denoise` drives
it with a model and yields a `Frame` per step. The serving engine drives many Denoisers with
one batched forward pass; both go through `Denoiser.advance`, so there is one loop.
"""

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .canvas import Canvas, build_canvas
from .config import GenerationConfig
from .errors import ConfigError, InputError
from .model import SpecialTokens, masked_logits, max_positions
from .remasking import keep_mask
from .sampling import SamplingParams, probability_of, sample
from .schedules import masked_after


@dataclass(frozen=True)
class Frame:
    """One denoising step. Tensors are (B, T) on the CPU; B = samples, T = canvas length."""

    step: int  # forward passes so far, 1-based
    block: int  # semi-autoregressive block being filled, 0-based
    tokens: torch.Tensor  # current ids; masked positions hold the mask id
    masked: torch.Tensor  # still masked after this step
    revealed: torch.Tensor  # committed at this step
    confidence: torch.Tensor  # model probability of each committed token when it was committed; NaN elsewhere
    forward_s: float  # time in the model's forward pass
    step_s: float  # time for the whole step, forward included
    elapsed_s: float  # since the first step started
    done: bool  # no mask is left


@dataclass(frozen=True)
class StepInputs:
    """What one forward pass needs: ids and attention (B, W), and where the head must predict."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor  # (M,) row of each position to predict
    cols: torch.Tensor  # (M,) column in the window (not the canvas)


@dataclass
class _Block:
    positions: torch.Tensor  # canvas columns of this block's masked slots
    steps: int
    step: int = 0
    total: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))


class Denoiser:
    """State of one request (num_samples rows sharing one layout) between forward passes."""

    def __init__(
        self,
        canvas: Canvas,
        config: GenerationConfig,
        special: SpecialTokens,
        window: int,
        banned_ids: list[int],
    ) -> None:
        b = config.num_samples
        self.config, self.special, self.window = config, special, window
        self.seed = config.seed if config.seed is not None else secrets.randbits(31)
        self.tokens = torch.tensor(canvas.tokens).repeat(b, 1)
        self.masked = torch.tensor(canvas.masked).repeat(b, 1)
        self.fixed = ~self.masked
        self.attention = torch.ones_like(self.tokens)
        self.confidence = torch.full(self.tokens.shape, float("nan"))
        self.prompt_length = canvas.prompt_length
        self.text_end = int(self.fixed[0].nonzero().max()) + 1  # one past the last supplied token
        self.infill = canvas.infill
        self.stop_at_end = not canvas.infill and not config.forbid_eos
        self.banned = torch.tensor(sorted(set(banned_ids) | ({special.end} if not self.stop_at_end else set())))
        self._bias: torch.Tensor | None = None
        self.generators = [torch.Generator().manual_seed(self.seed + i) for i in range(b)]
        self.ended = torch.zeros(b, dtype=torch.bool)
        self.blocks = self._plan_blocks()
        self.block_index = 0
        self.nfe = 0
        self.started: float | None = None
        self._start_block()

    def _plan_blocks(self) -> list[_Block]:
        slots = self.masked[0].nonzero().squeeze(-1)
        size = min(self.config.block_length or len(slots), len(slots))
        chunks = list(slots.split(size))
        base, extra = divmod(self.config.steps, len(chunks))
        plan = [_Block(c, max(1, base + (i < extra))) for i, c in enumerate(chunks)]
        if len(self.tokens[0]) > self.window:
            for block in plan:
                if int(block.positions[-1]) - int(block.positions[0]) + 2 > self.window:
                    raise ConfigError(
                        f"block_length {size} does not fit the model's {self.window} positions", "block_length"
                    )
        return plan

    def _start_block(self) -> None:
        while self.block_index < len(self.blocks):
            block = self.blocks[self.block_index]
            block.total = self.masked[:, block.positions].sum(-1)
            if block.total.any():
                return
            self.block_index += 1

    @property
    def finished(self) -> bool:
        return self.block_index >= len(self.blocks)

    def _window_columns(self) -> torch.Tensor:
        """Canvas columns of the next pass: all of it, or without the masks of later blocks
        (future_masks=False, or a canvas longer than the model's positions)."""
        length = self.tokens.shape[1]
        block_end = int(self.blocks[self.block_index].positions[-1]) + 1
        if not self.config.future_masks:
            length = max(block_end, self.text_end)  # text the request supplied always stays in view
        if length <= self.window:
            return torch.arange(length)
        end = block_end
        start = max(1, end - (self.window - 1))
        return torch.cat([torch.zeros(1, dtype=torch.long), torch.arange(start, end)])

    def request(self) -> StepInputs:
        """Inputs of the next forward pass; the head predicts this block's masked slots only."""
        assert not self.finished, "request() after the last step"
        if self.started is None:
            self.started = time.perf_counter()
        cols = self._window_columns()
        targets = self.masked[:, cols] & self._in_block()[:, cols]
        rows, where = targets.nonzero(as_tuple=True)
        return StepInputs(self.tokens[:, cols], self.attention[:, cols], rows, where)

    def _in_block(self) -> torch.Tensor:
        inside = torch.zeros_like(self.masked)
        inside[:, self.blocks[self.block_index].positions] = True
        return inside

    def advance(self, logits: torch.Tensor, forward_s: float = 0.0) -> Frame:
        """Commit part of this step's predictions. logits (M, V) follow request()'s rows/cols."""
        t0 = time.perf_counter()
        candidates = self.masked & self._in_block()
        rows, cols = candidates.nonzero(as_tuple=True)
        assert logits.shape[0] == rows.numel(), "logits do not match the requested positions"
        logits = logits.detach().to("cpu", torch.float32) + self._ban_bias(logits.shape[-1])
        predicted, conf = self._predict(logits, rows, cols)
        keep = self._keep(conf, candidates)
        self.tokens[keep] = predicted[keep]
        self.confidence[keep] = conf[keep]
        self.masked &= ~keep
        if self.stop_at_end:
            self._stop_rows_at_end()
        self._next_step()
        self.nfe += 1
        now = time.perf_counter()
        return Frame(
            step=self.nfe,
            block=min(self.block_index, len(self.blocks) - 1),
            tokens=self.tokens.clone(),
            masked=self.masked.clone(),
            revealed=keep,
            confidence=self.confidence.clone(),
            forward_s=forward_s,
            step_s=forward_s + (now - t0),
            elapsed_s=now - (self.started or t0),
            done=self.finished,
        )

    def _ban_bias(self, vocab: int) -> torch.Tensor:
        """(V,) zeros with -inf at the ids never to be sampled (special tokens)."""
        if self._bias is None or self._bias.numel() != vocab:
            self._bias = torch.zeros(vocab).index_fill_(0, self.banned[self.banned < vocab], float("-inf"))
        return self._bias

    def _predict(
        self, logits: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled ids and their model probability, scattered to (B, T); -inf confidence elsewhere."""
        uniforms = torch.stack(
            [torch.rand(self.tokens.shape[1], generator=g, dtype=torch.float64) for g in self.generators]
        )
        cfg = self.config
        params = SamplingParams(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
        ids = sample(cfg.sampling, logits, uniforms[rows, cols], params)
        probs = probability_of(logits, ids)
        predicted = self.tokens.clone()
        predicted[rows, cols] = ids
        conf = torch.full(self.tokens.shape, float("-inf"))
        conf[rows, cols] = probs
        return predicted, conf

    def _keep(self, conf: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        block = self.blocks[self.block_index]
        remaining = candidates.sum(-1)
        if block.step + 1 >= block.steps:
            return candidates
        target = masked_after(self.config.schedule, block.step + 1, block.steps, block.total)
        counts = torch.where(remaining > 0, (remaining - target).clamp(min=1), 0).minimum(remaining)
        noise = torch.zeros_like(conf)
        if self.config.remasking == "random":
            noise = torch.stack([torch.rand(conf.shape[1], generator=g) for g in self.generators])
        keep = keep_mask(self.config.remasking, conf, counts, noise, self.config.threshold)
        return keep & candidates

    def _stop_rows_at_end(self) -> None:
        """Past the first committed end token a row is finished: drop its remaining slots."""
        hit = (self.tokens == self.special.end) & ~self.masked & ~self.fixed & (self.attention > 0)
        has = hit.any(-1)
        if not has.any():
            return
        first = torch.where(has, hit.int().argmax(-1), self.tokens.shape[1])
        after = torch.arange(self.tokens.shape[1]).unsqueeze(0) > first.unsqueeze(-1)
        self.tokens[after] = self.special.pad
        self.masked &= ~after
        self.attention[after] = 0
        self.ended |= has

    def _next_step(self) -> None:
        block = self.blocks[self.block_index]
        block.step += 1
        if block.step >= block.steps or not self.masked[:, block.positions].any():
            self.block_index += 1
            self._start_block()

    def output_ids(self) -> list[list[int]]:
        """Per row: the continuation's ids up to its end token, or the whole filled text's when infilling."""
        start = 1 if self.infill else self.prompt_length
        rows = [row[start:][keep[start:]].tolist() for row, keep in zip(self.tokens, self.attention > 0)]
        return [ids[: ids.index(self.special.end)] if ended else ids for ids, ended in zip(rows, self.ended.tolist())]

    def generated_tokens(self) -> list[int]:
        """Per row: tokens the model wrote (filled slots, end token and dropped slots excluded)."""
        written = ~self.fixed & (self.attention > 0) & (self.tokens != self.special.end)
        return written.sum(-1).tolist()

    def finish_reasons(self) -> list[str]:
        return ["eos" if e else "length" for e in self.ended.tolist()]


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
    return Denoiser(canvas, config, special, window, banned)


def run(model: PreTrainedModel, state: Denoiser, autocast: bool = False) -> Iterator[Frame]:
    """Drive one Denoiser with its own forward passes, yielding a Frame per step."""
    device = next(model.parameters()).device
    while not state.finished:
        step = state.request()
        t0 = time.perf_counter()
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = masked_logits(
                model,
                step.input_ids.to(device),
                step.attention_mask.to(device),
                step.rows.to(device),
                step.cols.to(device),
            )
        yield state.advance(logits, forward_s=time.perf_counter() - t0)


def denoise(
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
    frames = []
    started = time.perf_counter()
    for frame in run(model, state, autocast=autocast):
        if keep_frames:
            frames.append(frame)
    return Generation(
        texts=decode(tokenizer, state),
        finish_reasons=state.finish_reasons(),
        seed=state.seed,
        nfe=state.nfe,
        seconds=time.perf_counter() - started,
        frames=frames,
    )
