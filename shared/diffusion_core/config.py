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
REVISIONS = ("none", "cap", "rescale", "conf")  # revision.py's strategies (ReMDM's names)
ARCHITECTURES = ("roberta-tiny", "roberta-small", "roberta-base")  # model.ARCHITECTURES' names
PRECISIONS = ("auto", "bf16", "fp32")
SAVE_DTYPES = ("float32", "float16", "bfloat16")
MIN_RATE = 0.001  # lower masking rates mask nothing in a block, and their 1/t loss weight overflows
DEFAULT_LEVELS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
_BOUNDS = ("ge", "gt", "le", "lt")
_REQUIRED = object()


def _param(default: Any, help: str, choices: tuple[str, ...] = (), **bounds: float) -> Any:
    """A parameter: its default, its one-line help, and its bounds or choices, declared once for the
    core's checks, the API's schemas, the CLI's flags and the viewer's form."""
    assert set(bounds) <= set(_BOUNDS), bounds
    metadata = {"help": help, "choices": choices, **bounds}
    return field(metadata=metadata) if default is _REQUIRED else field(default=default, metadata=metadata)


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
    repetition_penalty: float = _param(
        1.0,
        "tokens already in the text (prompt and written) get positive logits divided by it, negative ones"
        " multiplied (1: off)",
        ge=0.01,
        le=10,
    )
    frequency_penalty: float = _param(
        0.0, "subtracted from a token's logit for each time the model has written it (0: off)", ge=-2, le=2
    )
    presence_penalty: float = _param(
        0.0, "subtracted from the logit of every token the model has written at least once (0: off)", ge=-2, le=2
    )
    cfg_scale: float = _param(
        0.0,
        "classifier-free guidance: logits moved away from a pass with the prompt masked by this much"
        " (0: off; each pass runs twice the rows)",
        ge=0,
        le=10,
    )
    remasking: str = _param("low_confidence", "which of a step's predictions are kept", REMASKING_RULES)
    threshold: float = _param(0.9, "with remasking=threshold: keep predictions at least this confident", gt=0, le=1)
    spacing: int = _param(
        3,
        "slots kept in one step lie at least this many columns apart while the step's count allows"
        " (low_confidence, random; 1: neighbours may be kept together)",
        ge=1,
        le=100_000,
    )
    revise: str = _param(
        "none",
        "re-mask tokens the block has committed so later steps write them again (ReMDM): cap and rescale"
        " pick them at random, conf the least confident first",
        REVISIONS,
    )
    revise_eta: float = _param(
        0.5,
        "with revise: cap, the largest share of the committed tokens re-masked per step; rescale and conf,"
        " the share of the most the schedule allows",
        gt=0,
        le=1,
    )
    edit_margin: float = _param(
        0.0,
        "replace a committed token of the block when a new prediction for its slot is this much more probable"
        " (0: off; the head then reads every slot of the block)",
        ge=0,
        le=1,
    )
    block_length: int = _param(16, "semi-autoregressive blocks of this many tokens (0: one block)", ge=0, le=100_000)
    future_masks: bool = _param(True, "passes see later blocks' masks; false: the text so far and this block (faster)")
    cache: str = _param(
        "dual",
        "keep the keys and values of text not being written between passes (BERT/RoBERTa layouts; none: full passes)",
        CACHE_MODES,
    )
    cache_refresh: int = _param(
        1, "with a cache: recompute everything at the first pass of every this many blocks", ge=1, le=100_000
    )
    seed: int | None = _param(None, "sample i uses seed + i; none draws a fresh seed", ge=0, lt=2**31)
    num_samples: int = _param(1, "texts generated together in one batch", ge=1)
    forbid_eos: bool = _param(False, "never end early at an end-of-text token")

    def __post_init__(self) -> None:
        _check_fields(self)
        _check(self.sampling != "top_k" or self.top_k > 0, "top_k", "must be set (> 0) with sampling=top_k")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (`unmask train`, a queued job's worker, the starter recipe)."""

    data: tuple[str, ...] = _param(_REQUIRED, "training text: .txt / .jsonl files, folders, or hf:NAME[:CONFIG]")
    output: str = _param(_REQUIRED, "checkpoint directory to write")
    base: str | None = _param(None, "checkpoint directory or hub id to fine-tune (e.g. roberta-base)")
    architecture: str | None = _param(None, "a fresh model instead of a base", ARCHITECTURES)
    tokenizer: str | None = _param(None, "tokenizer for a fresh model (default: a byte-level BPE trained on the data)")
    vocab_size: int = _param(8000, "size of that BPE", ge=16)
    max_length: int = _param(128, "tokens per packed training block", ge=8)
    batch_size: int = _param(16, "blocks per device per forward pass", ge=1)
    grad_accum: int = _param(1, "forward passes per optimizer step (a step sees batch_size x grad_accum x ranks)", ge=1)
    gradient_checkpointing: bool = _param(False, "recompute activations in the backward pass: less memory")
    learning_rate: float = _param(2e-4, "peak learning rate: linear warmup, then cosine decay to 10%", gt=0, lt=1)
    warmup_steps: int = _param(100, "steps of linear warmup", ge=0)
    max_steps: int = _param(0, "optimizer steps (0: train for epochs)", ge=0)
    epochs: float = _param(1.0, "passes over the training blocks, when max_steps is 0", gt=0)
    levels: tuple[float, ...] | None = _param(
        DEFAULT_LEVELS, "masking rates, one drawn per batch (none, on the command line continuous: t ~ U(eps, 1))"
    )
    eps: float = _param(0.02, "lowest masking rate of the continuous draw", ge=MIN_RATE, lt=1)
    prefix_max: int = _param(16, "up to this many leading tokens per example stay unmasked, like a prompt", ge=0)
    held_out: float = _param(0.05, "share of blocks kept for evaluation, when no eval_data is given", ge=0, lt=1)
    eval_data: tuple[str, ...] = _param((), "held-out text files; when given, all of data trains")
    eval_every: int = _param(200, "steps between held-out evaluations", ge=1)
    log_every: int = _param(10, "steps averaged into one progress record", ge=1)
    save_every: int = _param(500, "steps between resumable snapshots", ge=1)
    time_limit_s: float = _param(0.0, "stop after this many seconds (0: no limit)", ge=0)
    seed: int = _param(0, "seeds a fresh model's weights, the block order and the masking", ge=0)
    precision: str = _param("auto", "auto: bf16 autocast where the device computes bf16", PRECISIONS)
    device: str = _param("auto", "auto | cpu | cuda | cuda:N | mps")
    resume: bool = _param(False, "continue from the snapshot in <output>.run/")
    save_dtype: str = _param("float32", "dtype of the published weights", SAVE_DTYPES)
    dropout: float | None = _param(None, "override the model's dropout (none: keep it)", ge=0, lt=1)

    def __post_init__(self) -> None:
        if (self.base is None) == (self.architecture is None):
            raise ConfigError("give exactly one of base (a checkpoint to fine-tune) or architecture (a fresh model)")
        _check_fields(self)
        ok = self.levels is None or (bool(self.levels) and all(MIN_RATE <= r <= 1 for r in self.levels))
        _check(ok, "levels", f"must be masking rates in [{MIN_RATE}, 1]")


_WHAT = {"sampling": "sampling rule", "remasking": "remasking rule", "cache": "cache mode", "revise": "revision"}


def _check_fields(config: Any) -> None:
    """Every field's choices and bounds, as its declaration states them."""
    for f in fields(config):
        value = getattr(config, f.name)
        if f.metadata["choices"] and value is not None and value not in f.metadata["choices"]:
            known = ", ".join(sorted(f.metadata["choices"]))
            raise ConfigError(f"unknown {_WHAT.get(f.name, f.name)} {value!r}; choose one of: {known}", f.name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            for bound, limit in ((b, f.metadata.get(b)) for b in _BOUNDS):
                _check(limit is None or _holds(value, bound, limit), f.name, f"must be {_WORDS[bound]} {limit}")


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


def bounds(name: str, of: type = GenerationConfig) -> dict[str, float]:
    """The bounds of one parameter, as keyword arguments for pydantic's Field."""
    meta = next(f.metadata for f in fields(of) if f.name == name)
    return {b: meta[b] for b in _BOUNDS if meta.get(b) is not None}


def help_of(name: str, of: type = GenerationConfig) -> str:
    return str(next(f.metadata["help"] for f in fields(of) if f.name == name))


def default_of(name: str, of: type = GenerationConfig) -> Any:
    return next(f.default for f in fields(of) if f.name == name)


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field} {message}", field)
