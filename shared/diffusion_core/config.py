"""Frozen configurations of the core, validated once when built."""

from dataclasses import dataclass

from .errors import ConfigError
from .registry import lookup

CACHE_MODES = ("none", "prefix", "dual")

MIN_TEMPERATURE = 0.01  # below it logits / T overflows float32; greedy is the limit


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 64  # masks appended after the prompt (0: only fill <mask> placeholders)
    steps: int = 16  # forward passes, at most; threshold remasking and end tokens may use fewer
    schedule: str = "cosine"  # how many tokens stay masked after each step (schedules.SCHEDULES)
    sampling: str = "top_p"  # greedy | temperature | top_k | top_p (sampling.SAMPLERS)
    temperature: float = 1.0  # divides the logits before sampling
    top_k: int = 0  # top_k and top_p rules: the k most likely tokens only (0: all); top_p then keeps a nucleus of them
    top_p: float = 0.9  # with sampling="top_p": probability mass kept
    remasking: str = "low_confidence"  # which predictions are kept (remasking.REMASKING)
    threshold: float = 0.9  # with remasking="threshold": keep predictions this confident
    block_length: int = 16  # semi-autoregressive blocks of this many tokens (0: one block)
    future_masks: bool = True  # passes see later blocks' masks; False: the text so far + this block (faster)
    seed: int | None = None  # sample i uses seed + i; None draws a fresh seed
    num_samples: int = 1  # rows generated together in one batch
    forbid_eos: bool = False  # never end early at an end-of-text token
    cache: str = "none"  # none | prefix | dual: keep finished text's keys and values between passes (cache.py)
    cache_refresh: int = 1  # with a cache: recompute everything at the first pass of every this many blocks

    def __post_init__(self) -> None:
        from .remasking import REMASKING  # the registries hold torch functions; the CLI parser needs none
        from .sampling import SAMPLERS
        from .schedules import SCHEDULES

        lookup(SCHEDULES, self.schedule, "schedule", "schedule")
        lookup(SAMPLERS, self.sampling, "sampling rule", "sampling")
        lookup(REMASKING, self.remasking, "remasking rule", "remasking")
        _check(self.max_new_tokens >= 0, "max_new_tokens", "must be 0 or more")
        _check(self.steps >= 1, "steps", "must be at least 1")
        _check(
            self.temperature >= MIN_TEMPERATURE,
            "temperature",
            f"must be at least {MIN_TEMPERATURE} (sampling=greedy is 0)",
        )
        _check(self.top_k >= 0, "top_k", "must be 0 or more")
        _check(self.sampling != "top_k" or self.top_k > 0, "top_k", "must be set (> 0) with sampling=top_k")
        _check(0 < self.top_p <= 1, "top_p", "must be in (0, 1]")
        _check(0 < self.threshold <= 1, "threshold", "must be in (0, 1]")
        _check(self.block_length >= 0, "block_length", "must be 0 or more")
        _check(self.cache in CACHE_MODES, "cache", f"must be one of {', '.join(CACHE_MODES)}")
        _check(self.cache_refresh >= 1, "cache_refresh", "must be at least 1")
        _check(self.num_samples >= 1, "num_samples", "must be at least 1")
        _check(self.seed is None or 0 <= self.seed < 2**31, "seed", "must be in [0, 2**31)")


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field} {message}", field)
