"""Remasking rules: which of this step's predictions are kept; the rest are masked again.

Each rule maps confidences (B, L) (-inf where nothing was predicted), the number of tokens the
schedule asks to keep per row (B,), random scores (B, L) and a threshold to a keep mask (B, L).
"""

import torch

from .names import lookup


def _top_per_row(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Keep the counts[b] highest scores of each row b: scores (B, L), counts (B,) -> bool (B, L)."""
    order = scores.argsort(dim=-1, descending=True)
    ranks = order.argsort(dim=-1)
    return (ranks < counts.unsqueeze(-1)) & torch.isfinite(scores)


def low_confidence(conf: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep the most confident predictions; re-mask the least confident (LLaDA)."""
    return _top_per_row(conf, counts)


def random(conf: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep a uniformly random subset of the predictions (the reverse process of training)."""
    return _top_per_row(noise.masked_fill(~torch.isfinite(conf), float("-inf")), counts)


def threshold(conf: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep every prediction at or above the threshold, and always the most confident one."""
    best = _top_per_row(conf, torch.ones_like(counts))
    return (conf >= threshold) | best


REMASKING = {f.__name__: f for f in (low_confidence, random, threshold)}


def keep_mask(
    name: str, conf: torch.Tensor, counts: torch.Tensor, noise: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Apply the named rule; see the module docstring for shapes."""
    return lookup(REMASKING, name, "remasking rule")(conf, counts, noise, threshold)
