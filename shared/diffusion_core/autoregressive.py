"""The autoregressive twin: a GPT-2 trained on the same blocks with the same tokenizer.

It is the baseline of every diffusion-vs-AR comparison and the reference that scores
generated text (gen-PPL).
"""

import inspect
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase

from .data import Blocks
from .draws import uniforms
from .model import SpecialTokens
from .timing import Lap, lap


def fresh_twin(
    tokenizer: PreTrainedTokenizerBase, layers: int, width: int, heads: int, positions: int
) -> GPT2LMHeadModel:
    special = SpecialTokens.of(tokenizer)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=positions,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        bos_token_id=special.start,
        eos_token_id=special.end,
        pad_token_id=special.pad,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return GPT2LMHeadModel(config)


def causal_loss(model: PreTrainedModel, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy (mean over real tokens) for ids (B, L)."""
    logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    targets = ids[:, 1:].masked_fill(attention[:, 1:] == 0, -100)
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


@dataclass(frozen=True)
class TwinTraining:
    """How the twin trains: each pass visits every block once in a fresh order, the learning rate
    decays (cosine) over `max_passes`, and training stops once the held-out loss has not improved
    for `patience` evaluations (an autoregressive model overfits a small corpus after a few passes);
    the model ends at its best evaluation."""

    max_passes: float = 6.0
    batch_size: int = 16
    learning_rate: float = 5e-4
    warmup_steps: int = 100
    evals_per_pass: int = 2
    patience: int = 2
    time_limit_s: float = math.inf
    autocast: bool = False
    seed: int = 0


def train_twin(
    model: PreTrainedModel,
    blocks: Blocks,
    held_out: Blocks,
    plan: TwinTraining,
    on_best: Callable[[list[dict[str, float]]], object] | None = None,
    start: tuple[int, int] = (0, 0),
) -> dict[str, Any]:
    """Train until the held-out loss stops improving; returns a summary with the held-out curve.

    `on_best(curve)` runs after each new best evaluation, the curve so far ending at it (e.g. to
    save a snapshot). `start` (step, tokens) continues a run whose weights `model` holds from that
    step: the learning-rate schedule and the block order go on as the uninterrupted run's would;
    the optimizer starts afresh, so the learning rate warms up again."""
    generator = torch.Generator().manual_seed(plan.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=plan.learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    device = next(model.parameters()).device
    steps_per_pass = math.ceil(len(blocks) / plan.batch_size)
    total = max(1, round(plan.max_passes * steps_per_pass))
    eval_every = max(1, steps_per_pass // plan.evals_per_pass)

    def order() -> list[torch.Tensor]:
        return list(torch.randperm(len(blocks), generator=generator).split(plan.batch_size))

    (step, tokens), first, since_best = start, start[0], 0
    passes_done, into_pass = divmod(step, steps_per_pass)
    for _ in range(passes_done):
        order()  # the orders of the passes already trained
    batches: Iterator[torch.Tensor] = iter(order()[into_pass:] if into_pass else ())
    started = time.perf_counter()
    curve = [_point(model, held_out, step, tokens, steps_per_pass, started)]
    best, best_state = curve[0], _copy_state(model)
    bar = tqdm(desc="AR twin", unit="step", total=total, initial=step)
    model.train()
    while step < total and since_best < plan.patience and time.perf_counter() - started < plan.time_limit_s:
        if step % steps_per_pass == 0:
            batches = iter(order())
        index = next(batches)
        ids, attn = blocks.input_ids[index].to(device), blocks.attention_mask[index].to(device)
        progress = max(step / total, (time.perf_counter() - started) / plan.time_limit_s)
        loss = _twin_step(model, optimizer, ids, attn, plan, _twin_lr(plan, step - first, progress))
        step += 1
        tokens += int(attn.sum())
        bar.update(1)
        if step % eval_every == 0 or step == total:
            curve.append(_point(model, held_out, step, tokens, steps_per_pass, started))
            model.train()
            if curve[-1]["held_out_loss"] < best["held_out_loss"]:
                best, best_state, since_best = curve[-1], _copy_state(model), 0
                if on_best is not None:
                    on_best(curve)
            else:
                since_best += 1
            bar.set_postfix(loss=f"{float(loss):.3f}", held_out=f"{curve[-1]['held_out_loss']:.3f}")
    bar.close()
    model.load_state_dict(best_state)
    model.eval()
    stopped = "patience" if since_best >= plan.patience else "passes" if step >= total else "time"
    return _summary(plan, step, tokens, time.perf_counter() - started, stopped, curve, best)


def _summary(
    plan: TwinTraining,
    step: int,
    tokens: int,
    seconds: float,
    stopped: str,
    curve: list[dict[str, float]],
    best: dict[str, float],
) -> dict[str, Any]:
    """What train_twin reports: how far it went, why it stopped, the held-out curve, and its settings."""
    return {
        "steps": step,
        "tokens_seen": tokens,
        "wall_time_s": round(seconds, 1),
        "stopped_by": stopped,
        "best": best,
        "curve": curve,
        **{k: v for k, v in asdict(plan).items() if k != "time_limit_s" or math.isfinite(v)},
    }


def _twin_lr(plan: TwinTraining, steps_done: int, progress: float) -> float:
    """Linear warm-up over this run's first steps, then cosine from 1.0 down to 0.1 of the peak."""
    warm = min(1.0, (steps_done + 1) / plan.warmup_steps)
    return plan.learning_rate * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def _twin_step(
    model: PreTrainedModel,
    optimizer: torch.optim.Optimizer,
    ids: torch.Tensor,
    attn: torch.Tensor,
    plan: TwinTraining,
    lr: float,
) -> torch.Tensor:
    """One optimizer step at learning rate `lr`; returns the batch's loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=plan.autocast):
        loss = causal_loss(model, ids, attn)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.detach()


def _point(
    model: PreTrainedModel, held_out: Blocks, step: int, tokens: int, steps_per_pass: int, started: float
) -> dict[str, float]:
    model.eval()
    return {
        "step": step,
        "passes": round(step / steps_per_pass, 3),
        "tokens": tokens,
        "held_out_loss": round(held_out_loss(model, held_out, max_batches=None), 4),
        "elapsed_s": round(time.perf_counter() - started, 1),
    }


def _copy_state(model: PreTrainedModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@torch.inference_mode()
def held_out_loss(model: PreTrainedModel, blocks: Blocks, batch_size: int = 16, max_batches: int | None = 8) -> float:
    """Mean next-token loss over the first max_batches batches of blocks (None: all of them)."""
    device = next(model.parameters()).device
    count = len(blocks) if max_batches is None else min(len(blocks), batch_size * max_batches)
    losses = [
        float(
            causal_loss(
                model,
                blocks.input_ids[i : i + batch_size].to(device),
                blocks.attention_mask[i : i + batch_size].to(device),
            )
        )
        for i in range(0, count, batch_size)
    ]
    return sum(losses) / len(losses)


def ends(tokenizer: PreTrainedTokenizerBase) -> tuple[int | None, int | None]:
    """(start, end) ids of any tokenizer: cls/bos and sep/eos, whichever it has (GPT-2: both eos)."""
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    end = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return start, end


@torch.inference_mode()
def perplexity(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], texts: list[str]
) -> float:
    """exp(mean NLL) of each continuation given its prompt, pooled over all continuation tokens.

    Any causal LM can score: texts are re-tokenized with its own tokenizer (e.g. gpt2-large)."""
    start, _ = ends(tokenizer)
    device = next(model.parameters()).device
    limit = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    total, count = 0.0, 0
    for prompt, text in zip(prompts, texts):
        p = ([start] if start is not None else []) + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(" " + text if text[:1].isalnum() else text, add_special_tokens=False)["input_ids"]
        if not c or not p:
            continue
        ids = torch.tensor([p + c], device=device)[:, :limit]
        logits = model(input_ids=ids).logits[0, :-1].float()
        targets = ids[0, 1:].clone()
        targets[: len(p) - 1] = -100
        total += float(F.cross_entropy(logits, targets, reduction="sum"))
        count += int((targets != -100).sum())
    return math.exp(total / max(count, 1))


@torch.inference_mode()
def _decode(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int,
    rows: int,
    top_p: float,
    temperature: float,
    seed: int,
    forbid_eos: bool = False,
) -> Iterator[tuple[torch.Tensor, Lap]]:
    """Yield (next token of each row (B,) on the model's device, the forward pass's lap) per step.

    KV-cached; row i draws with seed + i (counter-based, as diffusion does); sampling stays on the
    device. Stops when every row has written the end token (rows that ended keep sampling, unused);
    with forbid_eos the end token is never drawn and every row writes max_new_tokens, as diffusion's
    forbid_eos does."""
    from .sampling import SamplingParams
    from .sampling import top_p as nucleus

    start, end = ends(tokenizer)
    device = next(model.parameters()).device
    prefix = [start] if start is not None else []
    ids = torch.tensor([prefix + tokenizer(prompt, add_special_tokens=False)["input_ids"]] * rows, device=device)
    seeds = (seed + torch.arange(rows, device=device)).unsqueeze(-1)
    column = torch.zeros(1, 1, dtype=torch.long, device=device)  # one draw per row and step
    past, ended = None, torch.zeros(rows, dtype=torch.bool, device=device)
    params = SamplingParams(temperature=temperature, top_p=top_p)
    cache = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"  # transformers 5
    for step in range(max_new_tokens):
        with lap(device) as timer:
            result = model(input_ids=ids, use_cache=True, **{cache: past})
        past = getattr(result, cache)
        draws = uniforms(seeds, column, step).view(-1).to(device)
        logits = result.logits[:, -1].float()
        if forbid_eos and end is not None:
            logits[:, end] = -math.inf
        tokens = nucleus(logits, draws, params)
        yield tokens, timer
        ended |= tokens == end
        if not forbid_eos and bool(ended.all()):  # the one host read of a step
            return
        ids = tokens.view(rows, 1)


def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int,
    top_p: float = 0.9,
    temperature: float = 1.0,
    seed: int = 0,
    forbid_eos: bool = False,
) -> Iterator[tuple[list[int], float]]:
    """Yield (continuation ids so far, forward seconds) after each token; KV-cached, one pass per token
    (with forbid_eos the end token is never drawn: it writes max_new_tokens)."""
    out: list[int] = []
    for tokens, timer in _decode(model, tokenizer, prompt, max_new_tokens, 1, top_p, temperature, seed, forbid_eos):
        out.append(int(tokens[0]))
        yield list(out), timer.seconds


def sample_rows(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int,
    rows: int,
    top_p: float = 0.9,
    temperature: float = 1.0,
    seed: int = 0,
    forbid_eos: bool = False,
) -> list[list[int]]:
    """`rows` continuations of one prompt decoded as one batch; each cut after its end token (with
    forbid_eos none is written: every row has max_new_tokens)."""
    _, end = ends(tokenizer)
    decoding = _decode(model, tokenizer, prompt, max_new_tokens, rows, top_p, temperature, seed, forbid_eos)
    steps = [t for t, _ in decoding]
    out = []
    for row in torch.stack(steps, 1).cpu().tolist() if steps else [[]] * rows:
        out.append(row[: row.index(end) + 1] if end in row else row)
    return out
