"""Log-likelihoods of a masked-diffusion model: the ELBO estimate of log p(continuation | context).

A masked-diffusion model has no left-to-right factorisation to read a likelihood from; it gives a
lower bound instead (LLaDA, eq. 6, in its lower-variance form):

    log p(x | c) >= E_{l ~ U{1..L}} E_{M: l of the L positions} [(L / l) sum_{i in M} log p(x_i | c, x minus M)]

for a continuation x of L tokens. `loglikelihoods` estimates it by Monte Carlo: `samples` masks per
continuation, the counts l spread evenly over 1..L (stratified: each count's mean is weighted 1/L, so
the estimate stays unbiased and varies less), the positions drawn from a generator seeded by `seed`
and the tokens themselves, so a pair scores the same in any batch and any order. A continuation short
enough that all its 2^L - 1 masks fit in `samples` rows gets the bound itself, every mask enumerated.
"""

import math
import zlib
from dataclasses import dataclass
from itertools import combinations

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .model import SpecialTokens, masked_logits

SAMPLES = 32  # masks per continuation: the harness's default (LLaDA uses 128 for its benchmarks)


@dataclass(frozen=True)
class Pair:
    """One request: token ids of the context (start token not included) and of the continuation."""

    context: list[int]
    continuation: list[int]


@dataclass(frozen=True)
class _Row:
    """One forward pass row: the whole sequence, the continuation's masked columns, and its weight."""

    pair: int
    ids: list[int]
    masked: list[int]  # columns of the sequence
    weight: float  # (L / l) / (samples with this l) / L: the row's share of the pair's estimate


def sequence(pair: Pair, special: SpecialTokens, window: int) -> tuple[list[int], int]:
    """[start] + context + continuation, the context cut from the left to fit `window`; and the
    continuation's first column."""
    room = window - 1 - len(pair.continuation)
    if room < 0:
        raise ValueError(f"a continuation of {len(pair.continuation)} tokens does not fit a window of {window}")
    context = pair.context[len(pair.context) - room :] if len(pair.context) > room else pair.context
    return [special.start, *context, *pair.continuation], 1 + len(context)


def _counts(length: int, samples: int) -> list[int]:
    """How many positions each sample masks: spread evenly over 1..L (every count once when samples >= L)."""
    return [1 + (j * length) // samples for j in range(samples)]


def _rows(index: int, pair: Pair, special: SpecialTokens, window: int, samples: int, seed: int) -> list[_Row]:
    ids, first = sequence(pair, special, window)
    length = len(pair.continuation)
    if length == 0:
        return []
    if (1 << length) - 1 <= samples:  # every mask costs no more rows than sampling: the bound itself
        return _every_mask(index, ids, first, length)
    generator = torch.Generator().manual_seed(seed ^ zlib.crc32(str((pair.context, pair.continuation)).encode()))
    counts = _counts(length, samples)
    if samples >= length:  # stratified: each count l weighted 1/L, shared by the samples that drew it
        weights = {c: 1.0 / (length * counts.count(c)) for c in set(counts)}
    else:  # fewer samples than positions: counts drawn uniformly, each sample weighted 1/samples
        counts = torch.randint(1, length + 1, (samples,), generator=generator).tolist()
        weights = dict.fromkeys(counts, 1.0 / samples)
    rows = []
    for count in counts:
        chosen = torch.randperm(length, generator=generator)[:count].sort().values
        rows.append(_Row(index, ids, [first + int(c) for c in chosen], weights[count] * length / count))
    return rows


def loglikelihoods(
    model: PreTrainedModel,
    special: SpecialTokens,
    pairs: list[Pair],
    window: int,
    samples: int = SAMPLES,
    seed: int = 0,
    batch_rows: int = 32,
) -> list[float]:
    """The ELBO estimate of log p(continuation | context) in nats, one per pair (0.0 for an empty continuation)."""
    rows = [row for i, pair in enumerate(pairs) for row in _rows(i, pair, special, window, samples, seed)]
    totals = [0.0] * len(pairs)
    for batch in _batches(rows, batch_rows):
        for row, logprob in zip(batch, _masked_logprobs(model, special, batch)):
            totals[row.pair] += row.weight * logprob
    return totals


def _batches(rows: list[_Row], size: int) -> list[list[_Row]]:
    """Rows of similar length together (less padding)."""
    ordered = sorted(rows, key=lambda r: len(r.ids))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def _padded(sequences: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Ids (B, W) padded on the right, and their attention mask."""
    ids = torch.full((len(sequences), max(map(len, sequences))), pad, dtype=torch.long)
    attention = torch.zeros_like(ids)
    for b, sequence in enumerate(sequences):
        ids[b, : len(sequence)] = torch.tensor(sequence)
        attention[b, : len(sequence)] = 1
    return ids, attention


def _masked_logprobs(model: PreTrainedModel, special: SpecialTokens, rows: list[_Row]) -> list[float]:
    """For each row, the sum over its masked columns of log p(true token), with those columns masked."""
    device = next(model.parameters()).device
    ids, attention = _padded([r.ids for r in rows], special.pad)
    which = torch.tensor([b for b, r in enumerate(rows) for _ in r.masked])
    cols = torch.tensor([c for r in rows for c in r.masked])
    targets = ids[which, cols]
    ids[which, cols] = special.mask
    with torch.inference_mode():
        logits = masked_logits(model, ids.to(device), attention.to(device), which.to(device), cols.to(device))
        logprobs = F.log_softmax(logits.float(), -1).gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
    sums = torch.zeros(len(rows), dtype=torch.float64).index_add_(0, which, logprobs.double().cpu())
    return sums.tolist()


def _every_mask(index: int, ids: list[int], first: int, length: int) -> list[_Row]:
    """The bound's every term: each of the 2^L - 1 masks, weighted (1/L) (L/l) / C(L, l)."""
    rows = []
    for count in range(1, length + 1):
        masks = list(combinations(range(length), count))
        rows += [_Row(index, ids, [first + c for c in chosen], 1.0 / count / len(masks)) for chosen in masks]
    return rows


def exact_bound(model: PreTrainedModel, special: SpecialTokens, pair: Pair, window: int) -> float:
    """The bound itself, every mask enumerated: for checking the estimate on short continuations."""
    ids, first = sequence(pair, special, window)
    terms = []
    for batch in _batches(_every_mask(0, ids, first, len(pair.continuation)), 64):
        terms += [r.weight * lp for r, lp in zip(batch, _masked_logprobs(model, special, batch))]
    return math.fsum(terms)


def greedy(
    model: PreTrainedModel, special: SpecialTokens, pairs: list[Pair], window: int, batch_rows: int = 32
) -> list[bool]:
    """Whether unmask's greedy decoding writes each continuation: with all of it masked, commit one
    position per pass (the most confident) with its most likely token; a pair stops at its first miss."""
    out = []
    for start in range(0, len(pairs), batch_rows):
        out += _greedy(model, special, pairs[start : start + batch_rows], window)
    return out


def _greedy(model: PreTrainedModel, special: SpecialTokens, pairs: list[Pair], window: int) -> list[bool]:
    states = [sequence(pair, special, window) for pair in pairs]
    masked = [set(range(first, len(ids))) for ids, first in states]
    hits = [True] * len(pairs)
    canvas = [[special.mask if c in m else t for c, t in enumerate(ids)] for (ids, _), m in zip(states, masked)]
    device = next(model.parameters()).device
    while live := [i for i, m in enumerate(masked) if hits[i] and m]:
        ids, attention = _padded([canvas[i] for i in live], special.pad)
        which = torch.tensor([b for b, i in enumerate(live) for _ in masked[i]])
        cols = torch.tensor([c for i in live for c in sorted(masked[i])])
        with torch.inference_mode():
            logits = masked_logits(model, ids.to(device), attention.to(device), which.to(device), cols.to(device))
        best, token = (x.cpu() for x in torch.softmax(logits.float(), -1).max(-1))
        for b, i in enumerate(live):
            here = (which == b).nonzero().squeeze(-1)
            pick = here[best[here].argmax()]
            column, predicted = int(cols[pick]), int(token[pick])
            hits[i] = predicted == states[i][0][column]
            canvas[i][column] = predicted
            masked[i].discard(column)
    return hits
