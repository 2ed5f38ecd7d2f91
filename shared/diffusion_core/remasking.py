"""Remasking rules: which of this step's predictions are kept; the rest are masked again.

Each rule maps confidences (B, L) (-inf where nothing was predicted), the number of tokens the
schedule asks to keep per row (B,), random scores (B, L), a threshold and a Spacing to a keep
mask (B, L).

Predictions made in one pass are drawn independently of each other, so two neighbours kept
together often clash (", ," or "the the"). The count-based rules therefore keep their picks
apart: best first, each pick rules out the slots within `spacing - 1` columns of it, and a row
whose free slots run out before its count takes the rest by score alone.
"""

from dataclasses import dataclass

import torch

from .names import lookup


@dataclass(frozen=True)
class Spacing:
    """Where the predictions sit and how far apart a pass's kept slots must lie."""

    columns: torch.Tensor  # (B, L) canvas column of each prediction
    spacing: int = 1  # kept slots at least this many columns apart (1: no constraint)
    most: int = 0  # the largest count (known on the host): how many picks to place apart


def top_per_row(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Keep the counts[b] highest scores of each row b: scores (B, L), counts (B,) -> bool (B, L)."""
    order = scores.argsort(dim=-1, descending=True)
    ranks = order.argsort(dim=-1)
    return (ranks < counts.unsqueeze(-1)) & torch.isfinite(scores)


def _top_apart(scores: torch.Tensor, counts: torch.Tensor, apart: Spacing | None) -> torch.Tensor:
    """top_per_row, with picks made best first at least apart.spacing columns from each other while
    a row has such slots left; then the row's count is made up from the best of the rest."""
    if apart is None or apart.spacing <= 1 or apart.most <= 1:
        return top_per_row(scores, counts)
    kept = torch.zeros_like(scores, dtype=torch.bool)
    free = torch.isfinite(scores)
    wanted = counts.unsqueeze(-1)
    for _ in range(apart.most):
        candidates = scores.masked_fill(~free, float("-inf"))
        best = candidates.argmax(-1, keepdim=True)
        take = (kept.sum(-1, keepdim=True) < wanted) & torch.isfinite(candidates.gather(1, best))
        kept |= torch.zeros_like(kept).scatter_(1, best, take)
        near = (apart.columns - apart.columns.gather(1, best)).abs() < apart.spacing
        free &= ~(near & take)
    short = (counts - kept.sum(-1)).clamp(min=0)
    return kept | top_per_row(scores.masked_fill(kept, float("-inf")), short)


def low_confidence(
    conf: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor, threshold: float, apart: Spacing | None = None
) -> torch.Tensor:
    """Keep the most confident predictions; re-mask the least confident (LLaDA)."""
    return _top_apart(conf, counts, apart)


def random(
    conf: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor, threshold: float, apart: Spacing | None = None
) -> torch.Tensor:
    """Keep a uniformly random subset of the predictions (the reverse process of training)."""
    return _top_apart(noise.masked_fill(~torch.isfinite(conf), float("-inf")), counts, apart)


def threshold(
    conf: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor, threshold: float, apart: Spacing | None = None
) -> torch.Tensor:
    """Keep every prediction at or above the threshold, and always the most confident one (confident
    neighbours rarely clash: no spacing)."""
    best = top_per_row(conf, torch.ones_like(counts))
    return (conf >= threshold) | best


REMASKING = {f.__name__: f for f in (low_confidence, random, threshold)}


def keep_mask(
    name: str,
    conf: torch.Tensor,
    counts: torch.Tensor,
    noise: torch.Tensor,
    threshold: float,
    apart: Spacing | None = None,
) -> torch.Tensor:
    """Apply the named rule; see the module docstring for shapes."""
    return lookup(REMASKING, name, "remasking rule")(conf, counts, noise, threshold, apart)
