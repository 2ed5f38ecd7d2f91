"""Fine-tuning (or training from scratch) a masked LM for diffusion generation."""

import json
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import checkpoint
from .collator import DEFAULT_LEVELS, DiffusionCollator, MaskedBatch
from .data import Blocks, pack, read_texts, split
from .errors import ConfigError, UnmaskError
from .evaluation import masked_token_loss
from .model import (
    ARCHITECTURES,
    SpecialTokens,
    bf16_supported,
    fresh_masked_lm,
    load_tokenizer,
    masked_logits,
    max_positions,
    pick_device,
)
from .names import lookup
from .plots import line_chart
from .tokenizer import train_bpe

EVAL_RATES = (0.15, 0.5, 0.9)


class TrainingCancelled(UnmaskError):
    """should_stop() asked the run to end; no checkpoint was written."""


@dataclass(frozen=True)
class TrainConfig:
    data: tuple[str, ...]  # .txt / .jsonl files, folders, or hf:NAME[:CONFIG[:SPLIT]]
    output: str  # checkpoint directory to write
    base: str | None = None  # checkpoint directory or hub id to start from
    architecture: str | None = None  # or a fresh model: roberta-tiny | roberta-small | roberta-base
    tokenizer: str | None = None  # tokenizer for a fresh model; None trains a byte-level BPE on the data
    vocab_size: int = 8000  # size of that BPE
    max_length: int = 128  # tokens per packed block
    batch_size: int = 16
    learning_rate: float = 2e-4
    warmup_steps: int = 100
    max_steps: int = 0  # 0: run `epochs` passes over the data
    epochs: float = 1.0
    levels: tuple[float, ...] | None = DEFAULT_LEVELS  # masking rates; None: continuous t ~ U(eps, 1)
    eps: float = 0.02
    prefix_max: int = 0  # up to this many leading tokens per example stay unmasked
    held_out: float = 0.05  # share of blocks kept for evaluation (when eval_data is empty)
    eval_data: tuple[str, ...] = ()  # held-out text files; when given, all of `data` trains
    eval_every: int = 200  # steps between held-out evaluations
    save_every: int = 500  # steps between resumable snapshots
    time_limit_s: float = 0.0  # stop early after this many seconds (0: no limit)
    seed: int = 0
    precision: str = "auto"  # auto (bf16 autocast where fast) | bf16 | fp32
    device: str = "auto"
    resume: bool = False  # continue from the snapshot in <output>.run/
    save_dtype: str = "float32"  # float32 | float16 | bfloat16 for the published weights
    dropout: float | None = None  # override the model's dropout (None: keep it)

    def __post_init__(self) -> None:
        if (self.base is None) == (self.architecture is None):
            raise ConfigError("give exactly one of base (a checkpoint to fine-tune) or architecture (a fresh model)")
        if self.architecture is not None:
            lookup(ARCHITECTURES, self.architecture, "architecture")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"unknown precision {self.precision!r}; choose one of: auto, bf16, fp32")
        if self.save_dtype not in ("float32", "float16", "bfloat16"):
            raise ConfigError(f"unknown save_dtype {self.save_dtype!r}; choose one of: float32, float16, bfloat16")
        for name in ("max_length", "batch_size", "warmup_steps", "eval_every", "save_every"):
            if getattr(self, name) < (8 if name == "max_length" else 0 if name == "warmup_steps" else 1):
                raise ConfigError(f"{name} is too small: {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ConfigError("learning_rate must be in (0, 1)")
        if self.levels is not None and (not self.levels or not all(0 < r <= 1 for r in self.levels)):
            raise ConfigError("levels must be masking rates in (0, 1]")
        if not 0 <= self.held_out < 1:
            raise ConfigError("held_out must be in [0, 1)")
        if self.max_steps < 0 or self.epochs <= 0:
            raise ConfigError("max_steps must be >= 0 and epochs > 0")


@dataclass
class Progress:
    """What a watcher sees: shared by the CLI bar, the JSON log and a queued job's status."""

    step: int
    total_steps: int
    tokens: int
    loss: float
    level_losses: dict[str, float]
    learning_rate: float
    elapsed_s: float
    eta_s: float
    eval: dict[str, float] = field(default_factory=dict)


@dataclass
class _Run:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    train: Blocks
    held_out: Blocks
    collator: DiffusionCollator
    device: torch.device
    autocast: bool
    data_summary: dict[str, Any]


def _level_key(rate: float) -> str:
    return f"{math.ceil(rate * 10 - 1e-9) / 10:.1f}"


def _prepare(config: TrainConfig) -> _Run:
    device = pick_device(config.device)
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
    return _Run(model.train(), tokenizer, train_blocks, held_out, collator, device, autocast, summary)


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


def _loss(run: _Run, batch: MaskedBatch) -> torch.Tensor:
    """Cross-entropy over masked tokens only; the LM head never sees the unmasked ones."""
    rows, cols = (batch.labels != -100).nonzero(as_tuple=True)
    d = run.device
    with torch.autocast(d.type, dtype=torch.bfloat16, enabled=run.autocast):
        logits = masked_logits(run.model, batch.input_ids.to(d), batch.attention_mask.to(d), rows.to(d), cols.to(d))
    return F.cross_entropy(logits.float(), batch.labels[rows, cols].to(d))


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
    """Train, evaluate and publish a checkpoint at config.output; returns its path."""
    run = _prepare(config)
    torch.manual_seed(config.seed)  # dropout's draws (a resumed run restores the state it reached)
    if len(run.train) == 0:
        raise ConfigError("not enough training text for one block")
    steps_per_epoch = math.ceil(len(run.train) / config.batch_size)
    total = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(
        run.model.parameters(), lr=config.learning_rate, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01
    )
    generator = torch.Generator().manual_seed(config.seed)
    state: dict[str, Any] = {"step": 0, "tokens": 0, "elapsed_s": 0.0, "log": []}
    order = torch.randperm(len(run.train), generator=generator)  # this epoch's order of the blocks
    if config.resume and (restored := _restore(config, optimizer, generator)) is not None:
        state, order = restored
    started = time.perf_counter() - state["elapsed_s"]
    level_sums: dict[str, list[float]] = {}
    bar = tqdm(total=total, initial=state["step"], disable=not show_progress, unit="step", dynamic_ncols=True)
    while state["step"] < total:
        if should_stop is not None and should_stop():
            raise TrainingCancelled("training was cancelled")
        step = state["step"]
        offset = (step % steps_per_epoch) * config.batch_size
        if offset == 0 and step > 0:
            order = torch.randperm(len(run.train), generator=generator)
        index = order[offset : offset + config.batch_size]
        lr = _set_lr(optimizer, config, step, total, time.perf_counter() - started)
        batch = run.collator(run.train.input_ids[index], run.train.attention_mask[index], generator)
        loss = _loss(run, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 1.0)
        optimizer.step()
        state["step"] += 1
        state["tokens"] += int(batch.attention_mask.sum())
        level_sums.setdefault(_level_key(batch.rate), []).append(loss.item())
        elapsed = time.perf_counter() - started
        done = state["step"] >= total or (config.time_limit_s and elapsed >= config.time_limit_s)
        if state["step"] % 10 == 0 or done or state["step"] % config.eval_every == 0:
            evaluation = _evaluate(run, config) if state["step"] % config.eval_every == 0 or done else {}
            progress = _record(state, level_sums, total, elapsed, lr, evaluation, config.time_limit_s)
            level_sums = {}
            bar.set_postfix(loss=f"{progress.loss:.3f}", **{f"eval@{k}": f"{v:.2f}" for k, v in evaluation.items()})
            if on_progress is not None:
                on_progress(progress)
        bar.update(1)
        if state["step"] % config.save_every == 0 and not done:
            _snapshot(run, config, optimizer, generator, order, state, elapsed)
        if done:
            break
    bar.close()
    state["elapsed_s"] = time.perf_counter() - started
    return _publish(run, config, state)


def _record(
    state: dict[str, Any],
    sums: dict[str, list[float]],
    total: int,
    elapsed: float,
    lr: float,
    evaluation: dict[str, float],
    time_limit: float,
) -> Progress:
    levels = {k: sum(v) / len(v) for k, v in sorted(sums.items())}
    losses = [x for v in sums.values() for x in v]
    step = state["step"]
    progress = Progress(
        step=step,
        total_steps=total,
        tokens=state["tokens"],
        loss=sum(losses) / len(losses) if losses else float("nan"),
        level_losses=levels,
        learning_rate=lr,
        elapsed_s=elapsed,
        eta_s=_eta(elapsed, step, total, time_limit),
        eval=evaluation,
    )
    state["log"].append(asdict(progress))
    return progress


def _eta(elapsed: float, step: int, total: int, time_limit: float) -> float:
    by_steps = elapsed / step * (total - step) if step else 0.0
    return min(by_steps, max(0.0, time_limit - elapsed)) if time_limit else by_steps


def _plot(log: list[dict[str, Any]], path: Path) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for entry in log:
        for level, loss in entry["level_losses"].items():
            series.setdefault(f"rate {level}", []).append((entry["step"], loss))
        for rate, loss in entry["eval"].items():
            series.setdefault(f"held-out {rate}", []).append((entry["step"], loss))
    line_chart(dict(sorted(series.items())), path, "masked-token loss per masking level", "step", "loss (nats)")


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
            "learning_rate": config.learning_rate,
            "precision": "bf16" if run.autocast else "fp32",
            "device": str(run.device),
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
        extras=lambda tmp: _write_log_into(tmp, state["log"]),
    )
    shutil.rmtree(_run_dir(config), ignore_errors=True)
    return path


def stages_of(source: str | None) -> list[dict[str, Any]]:
    """The training stages a checkpoint's weights went through, oldest first, from its unmask.json
    (a checkpoint from before stages were recorded gives its one `training` record)."""
    path = Path(source) if source else None
    if path is None or not (path / checkpoint.METADATA).is_file():
        return []
    meta = checkpoint.read_metadata(path)
    if "stages" in meta:
        return list(meta["stages"])
    if "training" in meta:
        return [
            {
                "base": meta.get("base"),
                **meta["training"],
                "held_out_loss": meta.get("metrics", {}).get("held_out_loss"),
            }
        ]
    return []


def _write_log_into(path: Path, log: list[dict[str, Any]]) -> None:
    """The training log and its plot, written beside the weights before the manifest signs them."""
    checkpoint.write_json(path / "training_log.json", log)
    _plot(log, path / "loss.png")


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def _snapshot(
    run: _Run,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    order: torch.Tensor,
    state: dict[str, Any],
    elapsed: float,
) -> None:
    """Everything --resume needs, as safetensors + JSON (never pickle), replaced atomically: the weights,
    the optimizer's moments, the random states (masking draws, dropout) and this epoch's block order."""
    directory = _run_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    checkpoint.save(run.model, run.tokenizer, directory / "model", {"snapshot_step": state["step"]})
    tensors, groups = _flatten_optimizer(optimizer)
    tensors["generator"] = generator.get_state()
    tensors["torch_rng"] = torch.get_rng_state()
    tensors["order"] = order
    tmp = directory / "optimizer.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(directory / "optimizer.safetensors")
    checkpoint.write_json(directory / "state.json", {**state, "elapsed_s": elapsed, "param_groups": groups})


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    sd = optimizer.state_dict()
    tensors = {f"state.{i}.{k}": v.contiguous() for i, s in sd["state"].items() for k, v in s.items()}
    return tensors, sd["param_groups"]


def _restore(
    config: TrainConfig, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[dict[str, Any], torch.Tensor] | None:
    """(the run's state, this epoch's block order) from the snapshot, the optimizer and random states set."""
    directory = _run_dir(config)
    if not (directory / "state.json").is_file():
        return None
    state = json.loads((directory / "state.json").read_text())
    tensors = load_file(str(directory / "optimizer.safetensors"))
    generator.set_state(tensors.pop("generator"))
    torch.set_rng_state(tensors.pop("torch_rng"))
    order = tensors.pop("order")
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state.pop("param_groups")})
    return state, order
