"""Frozen configurations of the core, validated once when built."""

from dataclasses import dataclass, field, fields
from typing import Any

from .errors import ConfigError

MIN_TEMPERATURE = 0.01  # below it logits / T overflows float32; greedy is the limit
MAX_TEMPERATURE = 100.0
# The registries' names (schedules.SCHEDULES, ...) written out so that parsing a command line needs no
# torch; tests/test_config.py checks they match.
SCHEDULES = ("cosine", "linear", "exponential", "loglinear")
SAMPLING_RULES = ("top_p", "top_k", "temperature", "greedy")
REMASKING_RULES = ("low_confidence", "random", "threshold")
CACHE_MODES = ("none", "prefix", "dual")
_BOUNDS = ("ge", "gt", "le", "lt")


def _param(default: Any, help: str, choices: tuple[str, ...] = (), **bounds: float) -> Any:
    """A generation parameter: its default, its one-line help, and its bounds or choices, declared once
    for the core's checks, the API's schemas, the CLI's flags and the viewer's form."""
    assert set(bounds) <= set(_BOUNDS), bounds
    return field(default=default, metadata={"help": help, "choices": choices, **bounds})


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = _param(64, "masks appended after the prompt (0: only fill <mask> placeholders)", ge=0)
    steps: int = _param(
        16, "denoising steps (forward passes), at most; threshold remasking and end tokens may use fewer", ge=1
    )
    schedule: str = _param("cosine", "how many tokens stay masked after each step", SCHEDULES)
    sampling: str = _param("top_p", "how a token is drawn from the model's distribution", SAMPLING_RULES)
    temperature: float = _param(
        1.0, "divides the logits before sampling (sampling=greedy is 0)", ge=MIN_TEMPERATURE, le=MAX_TEMPERATURE
    )
    top_k: int = _param(0, "only the k most likely tokens (0: all); with top_p, its nucleus is taken inside them", ge=0)
    top_p: float = _param(0.9, "with sampling=top_p: the probability mass kept", gt=0, le=1)
    remasking: str = _param("low_confidence", "which of a step's predictions are kept", REMASKING_RULES)
    threshold: float = _param(0.9, "with remasking=threshold: keep predictions at least this confident", gt=0, le=1)
    spacing: int = _param(
        3,
        "slots kept in one step lie at least this many columns apart while the step's count allows"
        " (low_confidence, random; 1: neighbours may be kept together)",
        ge=1,
        le=100_000,
    )
    block_length: int = _param(16, "semi-autoregressive blocks of this many tokens (0: one block)", ge=0, le=100_000)
    future_masks: bool = _param(True, "passes see later blocks' masks; false: the text so far and this block (faster)")
    cache: str = _param(
        "none", "keep finished text's keys and values between passes (BERT/RoBERTa layouts)", CACHE_MODES
    )
    cache_refresh: int = _param(
        1, "with a cache: recompute everything at the first pass of every this many blocks", ge=1, le=100_000
    )
    seed: int | None = _param(None, "sample i uses seed + i; none draws a fresh seed", ge=0, lt=2**31)
    num_samples: int = _param(1, "texts generated together in one batch", ge=1)
    forbid_eos: bool = _param(False, "never end early at an end-of-text token")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["choices"] and value not in f.metadata["choices"]:
                known = ", ".join(sorted(f.metadata["choices"]))
                what = {"sampling": "sampling rule", "remasking": "remasking rule", "cache": "cache mode"}.get(
                    f.name, f.name
                )
                raise ConfigError(f"unknown {what} {value!r}; choose one of: {known}", f.name)
            if value is not None and not isinstance(value, bool):
                for bound, limit in ((b, f.metadata.get(b)) for b in _BOUNDS):
                    _check(limit is None or _holds(value, bound, limit), f.name, f"must be {_WORDS[bound]} {limit}")
        _check(self.sampling != "top_k" or self.top_k > 0, "top_k", "must be set (> 0) with sampling=top_k")


_WORDS = {"ge": "at least", "gt": "greater than", "le": "at most", "lt": "less than"}


def _holds(value: float, bound: str, limit: float) -> bool:
    return {"ge": value >= limit, "gt": value > limit, "le": value <= limit, "lt": value < limit}[bound]


def parameters() -> list[dict[str, Any]]:
    """Every generation parameter as JSON (name, type, default, help, bounds, choices): what /info serves
    to the viewer's form."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    out = []
    for f in fields(GenerationConfig):
        kind = kinds[type(f.default)] if f.default is not None else "integer"
        entry = {"name": f.name, "type": kind, "default": f.default, "help": f.metadata["help"]}
        entry.update({b: f.metadata[b] for b in _BOUNDS if f.metadata.get(b) is not None})
        if f.metadata["choices"]:
            entry["choices"] = list(f.metadata["choices"])
        out.append(entry)
    return out


def bounds(name: str) -> dict[str, float]:
    """The bounds of one parameter, as keyword arguments for pydantic's Field."""
    meta = next(f.metadata for f in fields(GenerationConfig) if f.name == name)
    return {b: meta[b] for b in _BOUNDS if meta.get(b) is not None}


def help_of(name: str) -> str:
    return str(next(f.metadata["help"] for f in fields(GenerationConfig) if f.name == name))


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field} {message}", field)
