"""Quality measures: held-out masked-token loss per rate, the ELBO bound, and sample diversity."""

import math
from collections import Counter

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .collator import DiffusionCollator
from .data import Blocks
from .model import masked_logits


def masked_token_loss(
    model: PreTrainedModel,
    blocks: Blocks,
    collator: DiffusionCollator,
    rate: float,
    batch_size: int = 16,
    max_batches: int = 8,
    seed: int = 1234,
    autocast: bool = False,
) -> float:
    """Mean cross-entropy (nats) of masked tokens at one masking rate, with its own RNG."""
    generator = torch.Generator().manual_seed(seed)
    fixed = DiffusionCollator(collator.mask_id, collator.protected_ids, levels=(rate,))
    device = next(model.parameters()).device
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        for start in range(0, min(len(blocks), batch_size * max_batches), batch_size):
            ids = blocks.input_ids[start : start + batch_size]
            attn = blocks.attention_mask[start : start + batch_size]
            batch = fixed(ids, attn, generator)
            rows, cols = (batch.labels != -100).nonzero(as_tuple=True)
            logits = masked_logits(model, batch.input_ids.to(device), attn.to(device), rows.to(device), cols.to(device))
            targets = batch.labels[rows, cols].to(device)
            total += float(F.cross_entropy(logits.float(), targets, reduction="sum"))
            count += targets.numel()
    model.train(was_training)
    return total / max(count, 1)


def elbo_nll(losses: dict[float, float]) -> float:
    """Upper bound on NLL per token: the integral over t of the masked loss at rate t (midpoints).

    With masking rate t, E[sum of masked CE] / t = L * E[mean masked CE], so the MDLM bound
    -log p(x) <= int_0^1 (1/t) E[sum CE] dt becomes L * int_0^1 loss(t) dt.
    """
    rates = sorted(losses)
    return sum(losses[r] for r in rates) / len(rates)


def elbo_rates(points: int = 10) -> list[float]:
    """Midpoints of `points` equal slices of (0, 1]."""
    return [(i + 0.5) / points for i in range(points)]


def distinct_n(texts: list[str], n: int) -> float:
    """Unique word n-grams over all n-grams, pooled across texts (1.0 = no repetition)."""
    grams = [tuple(words[i : i + n]) for t in texts for words in [t.split()] for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def repetition_rate(texts: list[str], n: int = 4) -> float:
    """Share of word n-grams that already occurred earlier in the same text."""
    repeats, total = 0, 0
    for text in texts:
        words = text.split()
        seen: set[tuple[str, ...]] = set()
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            repeats += gram in seen
            seen.add(gram)
            total += 1
    return repeats / total if total else 0.0


def unigram_entropy(texts: list[str]) -> float:
    """Entropy (nats) of the word distribution over all texts; low values mean a few words repeat."""
    counts = Counter(w for t in texts for w in t.split())
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values()) if total else 0.0
