"""The autoregressive twin: a GPT-2 trained on the same blocks with the same tokenizer.

It is the baseline of every diffusion-vs-AR comparison and the reference that scores
generated text (gen-PPL).
"""

import inspect
import math
import time
from collections.abc import Iterator

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


def train_twin(
    model: PreTrainedModel,
    blocks: Blocks,
    time_limit_s: float,
    batch_size: int = 16,
    learning_rate: float = 5e-4,
    warmup_steps: int = 100,
    autocast: bool = False,
    seed: int = 0,
) -> dict[str, float]:
    """Train for a wall-clock budget with cosine decay over that budget; returns a summary."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, betas=(0.9, 0.98), weight_decay=0.01)
    device = next(model.parameters()).device
    model.train()
    started, step, tokens = time.perf_counter(), 0, 0
    bar = tqdm(desc="AR twin", unit="step")
    while (elapsed := time.perf_counter() - started) < time_limit_s:
        index = torch.randint(len(blocks), (batch_size,), generator=generator)
        ids, attn = blocks.input_ids[index].to(device), blocks.attention_mask[index].to(device)
        warm = min(1.0, (step + 1) / warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = (
                learning_rate * warm * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, elapsed / time_limit_s))))
            )
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = causal_loss(model, ids, attn)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens += int(attn.sum())
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.3f}")
    bar.close()
    model.eval()
    return {"steps": step, "tokens_seen": tokens, "wall_time_s": round(time.perf_counter() - started, 1)}


@torch.inference_mode()
def held_out_loss(model: PreTrainedModel, blocks: Blocks, batch_size: int = 16, max_batches: int = 8) -> float:
    device = next(model.parameters()).device
    losses = [
        float(
            causal_loss(
                model,
                blocks.input_ids[i : i + batch_size].to(device),
                blocks.attention_mask[i : i + batch_size].to(device),
            )
        )
        for i in range(0, min(len(blocks), batch_size * max_batches), batch_size)
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
) -> Iterator[tuple[torch.Tensor, Lap]]:
    """Yield (next token of each row (B,) on the model's device, the forward pass's lap) per step.

    KV-cached; row i draws with seed + i (counter-based, as diffusion does); sampling stays on the
    device. Stops when every row has written the end token (rows that ended keep sampling, unused)."""
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
        tokens = nucleus(result.logits[:, -1].float(), draws, params)
        yield tokens, timer
        ended |= tokens == end
        if bool(ended.all()):  # the one host read of a step
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
) -> Iterator[tuple[list[int], float]]:
    """Yield (continuation ids so far, forward seconds) after each token; KV-cached, one pass per token."""
    out: list[int] = []
    for tokens, timer in _decode(model, tokenizer, prompt, max_new_tokens, 1, top_p, temperature, seed):
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
) -> list[list[int]]:
    """`rows` continuations of one prompt decoded as one batch; each cut after its end token."""
    _, end = ends(tokenizer)
    steps = [t for t, _ in _decode(model, tokenizer, prompt, max_new_tokens, rows, top_p, temperature, seed)]
    out = []
    for row in torch.stack(steps, 1).cpu().tolist() if steps else [[]] * rows:
        out.append(row[: row.index(end) + 1] if end in row else row)
    return out
