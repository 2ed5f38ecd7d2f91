"""Masking schedules: the fraction of generated tokens still masked after a share r of the steps.

Each is a pure function gamma(r) on [0, 1] with gamma(0) = 1 and gamma(1) = 0. The denoiser
commits enough tokens per step to follow it; see docs/guide.md for the shapes.
"""

import math

import torch

from .names import lookup


def linear(r: float) -> float:
    """The same number of tokens every step."""
    return 1.0 - r


def cosine(r: float) -> float:
    """Few tokens early, many late (MaskGIT): early commitments get the most context."""
    return math.cos(math.pi * r / 2)


def exponential(r: float, k: float = 4.0) -> float:
    """A slower start than cosine: the first steps commit very few tokens."""
    return 1.0 - math.expm1(k * r) / math.expm1(k)


def loglinear(r: float, k: float = 20.0) -> float:
    """A fast start: most tokens early, a long tail of refinement steps."""
    return 1.0 - math.log1p(k * r) / math.log1p(k)


SCHEDULES = {f.__name__: f for f in (linear, cosine, exponential, loglinear)}


def masked_after(schedule: str, step: int, steps: int, total: torch.Tensor) -> torch.Tensor:
    """Tokens of `total` (B,) that stay masked once `step` of `steps` steps are done -> (B,)."""
    gamma = lookup(SCHEDULES, schedule, "schedule")
    if step >= steps:
        return torch.zeros_like(total)
    return torch.floor(total * gamma(step / steps) + 1e-9).long().clamp(min=0).minimum(total)
