"""Fine-tuning (or training from scratch) a masked LM for diffusion generation, on one device or as
data-parallel ranks under torchrun (see parallel.py)."""

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import checkpoint, parallel, snapshot
from .collator import DiffusionCollator, MaskedBatch
from .config import TrainConfig
from .data import Blocks, pack, read_texts, split
from .errors import ConfigError, UnmaskError
from .evaluation import masked_token_loss
from .model import (
    SpecialTokens,
    bf16_supported,
    fresh_masked_lm,
    load_tokenizer,
    masked_logits,
    max_positions,
)
from .progress import Progress, hardware, level_key, record, stages_of, write_log_into
from .tokenizer import train_bpe

EVAL_RATES = (0.15, 0.5, 0.9)


class Diverged(UnmaskError):
    """The loss stopped being a number: no checkpoint was written."""


class TrainingCancelled(UnmaskError):
    """should_stop() asked the run to end; no checkpoint was written."""


class _MaskedLogits(nn.Module):
    """The model's logits at masked positions only, as one module that DDP can wrap."""

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        return masked_logits(self.model, input_ids, attention_mask, rows, cols)


@dataclass
class _Run:
    model: PreTrainedModel  # the weights themselves: evaluated, snapshotted and published by rank 0
    forward: nn.Module  # what a training step calls: the model's masked logits, under DDP with several ranks
    tokenizer: PreTrainedTokenizerBase
    train: Blocks
    held_out: Blocks
    collator: DiffusionCollator
    world: parallel.World
    autocast: bool
    data_summary: dict[str, Any]

    @property
    def device(self) -> torch.device:
        return self.world.device


def _prepare(config: TrainConfig, world: parallel.World) -> _Run:
    device = world.device
    docs = read_texts(config.data)
    snapshot = _run_dir(config) / "model"
    if config.resume and snapshot.is_dir():
        model, tokenizer = checkpoint.load(snapshot, device)
    elif config.base is not None:
        model, tokenizer = checkpoint.load(config.base, device)
    else:
        tokenizer = load_tokenizer(config.tokenizer) if config.tokenizer else train_bpe(docs, config.vocab_size)
        torch.manual_seed(config.seed)  # the same seed gives the same initial weights
        model = fresh_masked_lm(config.architecture or "", tokenizer, config.max_length).to(device)  # type: ignore[arg-type]
    if config.max_length > max_positions(model, tokenizer):
        limit = max_positions(model, tokenizer)
        raise ConfigError(f"max_length {config.max_length} exceeds the model's {limit} positions", "max_length")
    if config.dropout is not None:
        _set_dropout(model, config.dropout)
    if config.gradient_checkpointing:
        _checkpoint_activations(model)
    special = SpecialTokens.of(tokenizer)
    blocks = pack(docs, tokenizer, config.max_length)
    if config.eval_data:
        train_blocks, held_out = blocks, pack(read_texts(config.eval_data), tokenizer, config.max_length)
    else:
        train_blocks, held_out = split(blocks, config.held_out, config.seed)
    protected = tuple({special.start} | ({special.pad} if special.pad != special.end else set()))
    collator = DiffusionCollator(special.mask, protected, config.levels, config.eps, config.prefix_max)
    autocast = config.precision == "bf16" or (config.precision == "auto" and bf16_supported(device))
    summary = {"sources": list(config.data), "documents": len(docs), "tokens": blocks.tokens, "blocks": len(blocks)}
    model.train()
    forward = world.wrap(_MaskedLogits(model))
    return _Run(model, forward, tokenizer, train_blocks, held_out, collator, world, autocast, summary)


def _checkpoint_activations(model: PreTrainedModel) -> None:
    if not model.supports_gradient_checkpointing:
        raise ConfigError(f"{type(model).__name__} does not support gradient checkpointing", "gradient_checkpointing")
    kwargs = {"use_reentrant": False}  # the reentrant variant breaks DDP and inputs without gradients
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.20
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def _set_dropout(model: PreTrainedModel, p: float) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = p
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if hasattr(model.config, name):
            setattr(model.config, name, p)


def _run_dir(config: TrainConfig) -> Path:
    out = Path(config.output)
    return out.with_name(out.name + ".run")


def _loss_sum(run: _Run, batch: MaskedBatch, examples: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over the masked tokens of some rows of the batch; the LM head sees no others."""
    labels = batch.labels[examples]
    rows, cols = (labels != -100).nonzero(as_tuple=True)
    d = run.device
    ids, attention = batch.input_ids[examples].to(d), batch.attention_mask[examples].to(d)
    with torch.autocast(d.type, dtype=torch.bfloat16, enabled=run.autocast):
        logits = run.forward(ids, attention, rows.to(d), cols.to(d))
    return F.cross_entropy(logits.float(), labels[rows, cols].to(d), reduction="sum")


def _backward(run: _Run, batch: MaskedBatch, accum: int) -> float:
    """Gradients of the whole batch's mean masked-token loss, from this rank's rows in `accum` passes.

    The batch (B x accum x ranks rows) is the same on every rank; rank r takes its r-th share, cut
    in `accum` micro-batches. Each pass's summed loss is divided by the batch's masked-token count
    (so the micro-batches add up to the mean) and multiplied by the rank count (DDP averages over
    ranks, the mean wants their sum). Returns this rank's part of the mean; the parts sum to it."""
    world = run.world
    count = max(1, int((batch.labels != -100).sum()))  # a batch of prompts too long to leave a masked token: 0
    shares = torch.arange(batch.labels.shape[0]).tensor_split(world.size * accum)
    part = 0.0
    for i, examples in enumerate(shares[world.rank * accum : (world.rank + 1) * accum]):
        weight = world.size / count
        if len(examples) == 0:  # an epoch's last, short batch: still take part in the gradient all-reduce
            examples, weight = torch.zeros(1, dtype=torch.long), 0.0
        with world.accumulating(run.forward, last=i == accum - 1):
            loss = _loss_sum(run, batch, examples) * weight
            loss.backward()
        part += loss.item() / world.size
    return part


def _lr_factor(step: int, warmup: int, progress: float) -> float:
    """Linear warmup over `warmup` steps, then cosine decay to 10% of the peak as progress -> 1."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _set_lr(optimizer: torch.optim.Optimizer, config: TrainConfig, step: int, total: int, elapsed: float) -> float:
    """The schedule follows steps, or wall time when a time limit ends the run sooner."""
    progress = step / total
    if config.time_limit_s:
        progress = max(progress, elapsed / config.time_limit_s)
    lr = config.learning_rate * _lr_factor(step, config.warmup_steps, progress)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _evaluate(run: _Run, config: TrainConfig) -> dict[str, float]:
    if len(run.held_out) == 0:
        return {}
    return {
        f"{rate:.2f}": masked_token_loss(
            run.model, run.held_out, run.collator, rate, config.batch_size, autocast=run.autocast
        )
        for rate in EVAL_RATES
    }


def train(
    config: TrainConfig,
    on_progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    show_progress: bool = True,
) -> Path:
    """Train, evaluate and publish a checkpoint at config.output; returns its path.

    Under torchrun every rank calls this with the same config; rank 0 alone evaluates, snapshots,
    publishes and reports progress, and a stop asked on any rank stops them all after the same step."""
    with parallel.joined(config.device) as world:
        return _train(_prepare(config, world), config, on_progress, should_stop, show_progress)


def _train(
    run: _Run,
    config: TrainConfig,
    on_progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
    show_progress: bool,
) -> Path:
    world = run.world
    torch.manual_seed(config.seed + world.rank)  # dropout's draws (a resumed run restores the state it reached)
    if len(run.train) == 0:
        raise ConfigError("not enough training text for one block")
    global_batch = config.batch_size * config.grad_accum * world.size
    steps_per_epoch = math.ceil(len(run.train) / global_batch)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer, generator, state, order = _start(run, config, global_batch)
    started = time.perf_counter() - state["elapsed_s"]
    elapsed = state["elapsed_s"]
    level_sums: dict[str, list[float]] = {}
    if show_progress and world.main:
        tqdm.write(_shape_line(config, world, global_batch))
    bar = tqdm(total=total, initial=state["step"], disable=not (show_progress and world.main), unit="step")
    while state["step"] < total:
        step = state["step"]
        offset = (step % steps_per_epoch) * global_batch
        if offset == 0 and step > 0:
            order = torch.randperm(len(run.train), generator=generator)
        index = order[offset : offset + global_batch]
        lr = _set_lr(optimizer, config, step, total, elapsed)
        batch = run.collator(run.train.input_ids[index], run.train.attention_mask[index], generator)
        part = _optimize(run, optimizer, batch, config.grad_accum)
        stop = should_stop is not None and bool(should_stop())
        clock = time.perf_counter() - started if world.main else 0.0
        loss, stops, elapsed = world.sum([part, float(stop), clock])  # rank 0's clock paces every rank
        if stops:
            raise TrainingCancelled("training was cancelled")
        if not math.isfinite(loss):
            message = f"the training loss became {loss} at step {state['step'] + 1}; lower the learning rate"
            raise Diverged(message, "learning_rate")
        state["step"] += 1
        state["tokens"] += int(batch.attention_mask.sum())
        level_sums.setdefault(level_key(batch.rate), []).append(loss)
        done = state["step"] >= total or bool(config.time_limit_s and elapsed >= config.time_limit_s)
        if state["step"] % config.log_every == 0 or done or state["step"] % config.eval_every == 0:
            evaluate = world.main and (state["step"] % config.eval_every == 0 or done)
            evaluation = _evaluate(run, config) if evaluate else {}
            progress = record(state, level_sums, total, elapsed, lr, evaluation, config.time_limit_s)
            level_sums = {}
            if world.main:
                bar.set_postfix(_postfix(progress, world), refresh=False)
                if on_progress is not None:
                    on_progress(progress)
            world.barrier()
        bar.update(1)
        if state["step"] % config.save_every == 0 and not done:
            if world.main:
                _snapshot(run, config, optimizer, generator, order, state, elapsed)
            world.barrier()
        if done:
            break
    bar.close()
    state["elapsed_s"] = elapsed
    path = _publish(run, config, state) if world.main else Path(config.output)
    world.barrier()
    return path


def _start(
    run: _Run, config: TrainConfig, global_batch: int
) -> tuple[torch.optim.Optimizer, torch.Generator, dict[str, Any], torch.Tensor]:
    """The optimizer, the data generator, the run's counters and the epoch's block order: fresh, or as
    the last snapshot left them when resuming."""
    optimizer = torch.optim.AdamW(
        run.model.parameters(), lr=config.learning_rate, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01
    )
    generator = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed_s": 0.0, "log": [], "global_batch": global_batch}
    order = torch.randperm(len(run.train), generator=generator)  # this epoch's order of the blocks
    if config.resume and (restored := snapshot.restore(_run_dir(config), optimizer, generator)) is not None:
        state, order = restored
        _check_resumable(state, config, run.world)
    return optimizer, generator, state, order


def _optimize(run: _Run, optimizer: torch.optim.Optimizer, batch: MaskedBatch, grad_accum: int) -> float:
    """One optimizer step on this rank's share of the batch; returns the share's loss."""
    optimizer.zero_grad(set_to_none=True)
    part = _backward(run, batch, grad_accum)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
    optimizer.step()
    return part


def _shape_line(config: TrainConfig, world: parallel.World, global_batch: int) -> str:
    backend = f" ({'nccl' if world.device.type == 'cuda' else 'gloo'})" if world.size > 1 else ""
    return (
        f"effective batch {global_batch} = {config.batch_size} per pass x {config.grad_accum} accumulated"
        f" x {world.size} rank{'s' if world.size > 1 else ''}, blocks of {config.max_length} tokens,"
        f" on {world.device.type}{backend}"
    )


def _postfix(progress: Progress, world: parallel.World) -> dict[str, str]:
    per_device = progress.tokens / max(progress.elapsed_s, 1e-9) / world.size
    evals = {f"eval@{k}": f"{v:.2f}" for k, v in progress.eval.items()}
    return {"loss": f"{progress.loss:.3f}", "tok/s/device": f"{per_device:,.0f}", **evals}


def _check_resumable(state: dict[str, Any], config: TrainConfig, world: parallel.World) -> None:
    """A snapshot continues only with the batch it was made with: the block order is cut in batches of that size."""
    was = state.get("global_batch", config.batch_size)
    now = config.batch_size * config.grad_accum * world.size
    if was != now:
        raise ConfigError(
            f"the snapshot was made with an effective batch of {was} blocks and this run's is {now}"
            f" ({config.batch_size} x grad_accum {config.grad_accum} x {world.size} ranks); choose batch_size and"
            f" grad_accum so that their product times the ranks is {was}",
            "grad_accum",
        )
    state["global_batch"] = now


def _snapshot(
    run: _Run,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    order: torch.Tensor,
    state: dict[str, Any],
    elapsed: float,
) -> None:
    snapshot.save(
        _run_dir(config), run.model, run.tokenizer, optimizer, generator, order, {**state, "elapsed_s": elapsed}
    )


def _publish(run: _Run, config: TrainConfig, state: dict[str, Any]) -> Path:
    final_eval: dict[str, float] = next((e["eval"] for e in reversed(state["log"]) if e["eval"]), {})
    metadata: dict[str, Any] = {
        "format": 1,
        "base": config.base,
        "architecture": config.architecture or run.model.config.model_type,
        "diffusion": {
            "levels": list(config.levels) if config.levels else None,
            "eps": config.eps,
            "prefix_max": config.prefix_max,
            "max_length": config.max_length,
        },
        "data": run.data_summary,
        "training": {
            "steps": state["step"],
            "tokens_seen": state["tokens"],
            "wall_time_s": round(state["elapsed_s"], 1),
            "batch_size": config.batch_size,
            "grad_accum": config.grad_accum,
            "ranks": run.world.size,
            "effective_batch": state["global_batch"],
            "gradient_checkpointing": config.gradient_checkpointing,
            "tokens_per_s_per_device": round(state["tokens"] / max(state["elapsed_s"], 1e-9) / run.world.size, 1),
            "learning_rate": config.learning_rate,
            "precision": "bf16" if run.autocast else "fp32",
            "device": str(run.device) if run.world.size == 1 else f"{run.world.size} x {run.device.type}",
            "hardware": hardware(run.device),
            "torch": torch.__version__,
        },
        "metrics": {"held_out_loss": final_eval},
    }
    this_stage = {"base": config.base, **metadata["training"], "held_out_loss": final_eval}
    metadata["stages"] = stages_of(config.base) + [this_stage]
    out = Path(config.output)
    dtype = getattr(torch, config.save_dtype)
    run.model.eval()
    path = checkpoint.save(
        run.model,
        run.tokenizer,
        out,
        metadata,
        dtype=None if dtype == torch.float32 else dtype,
        extras=lambda tmp: write_log_into(tmp, state["log"]),
    )
    shutil.rmtree(_run_dir(config), ignore_errors=True)
    return path
