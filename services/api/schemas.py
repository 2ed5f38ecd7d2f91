"""Request and response bodies. Field names follow TGI (/generate) and OpenAI (/v1/completions)."""

from dataclasses import fields
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from diffusion_core import config
from diffusion_core.animation import MAX_FRAMES
from diffusion_core.config import DEFAULT_LEVELS, MIN_TEMPERATURE, GenerationConfig, TrainConfig


def _one_of(table: dict | tuple, what: str) -> AfterValidator:
    """A validator accepting only the names registered in table."""

    def check(value: str) -> str:
        if value not in table:
            raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(sorted(table))}")
        return value

    return AfterValidator(check)


ScheduleName = Annotated[str, _one_of(config.SCHEDULES, "schedule")]
SamplingName = Annotated[str, _one_of(config.SAMPLING_RULES, "sampling rule")]
RemaskingName = Annotated[str, _one_of(config.REMASKING_RULES, "remasking rule")]
CacheMode = Annotated[str, _one_of(config.CACHE_MODES, "cache mode")]
RevisionName = Annotated[str, _one_of(config.REVISIONS, "revision")]
_DEFAULTS = {f.name: f.default for f in fields(GenerationConfig)}


def param(name: str) -> Any:
    """The Field of a generation parameter: default, bounds and description from GenerationConfig."""
    b = config.bounds(name)
    return Field(
        _DEFAULTS[name],
        description=config.help_of(name),
        ge=b.get("ge"),
        gt=b.get("gt"),
        le=b.get("le"),
        lt=b.get("lt"),
    )


class GenerateParameters(BaseModel):
    """GenerationConfig's parameters (tests/test_config.py checks that the names and types match), and
    two of the response's own."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    max_new_tokens: int = param("max_new_tokens")
    steps: int = param("steps")
    schedule: ScheduleName = param("schedule")
    sampling: SamplingName = param("sampling")
    temperature: float = param("temperature")
    top_k: int = param("top_k")
    top_p: float = param("top_p")
    repetition_penalty: float = param("repetition_penalty")
    frequency_penalty: float = param("frequency_penalty")
    presence_penalty: float = param("presence_penalty")
    cfg_scale: float = param("cfg_scale")
    remasking: RemaskingName = param("remasking")
    threshold: float = param("threshold")
    spacing: int = param("spacing")
    revise: RevisionName = param("revise")
    revise_eta: float = param("revise_eta")
    edit_margin: float = param("edit_margin")
    block_length: int = param("block_length")
    future_masks: bool = param("future_masks")
    cache: CacheMode = param("cache")
    cache_refresh: int = param("cache_refresh")
    seed: int | None = param("seed")
    num_samples: int = param("num_samples")
    forbid_eos: bool = param("forbid_eos")
    details: bool = Field(True, description="include details in the response")
    top_n_tokens: int = Field(
        0, ge=0, le=5, description="details.top_tokens: at each written position, the n most likely tokens then"
    )
    decoder_input_details: bool = Field(
        False, description="details.prefill: the prompt's tokens (logprob null: diffusion does not score its prompt)"
    )
    model: str | None = Field(None, description="model id; default: the current model")

    def generation(self) -> GenerationConfig:
        return GenerationConfig(**self.model_dump(exclude=RESPONSE_OPTIONS))


RESPONSE_OPTIONS = {"details", "top_n_tokens", "decoder_input_details", "model"}  # not GenerationConfig's


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    role: Literal["system", "user", "assistant", "developer"]
    content: str = Field(..., max_length=100_000)


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    messages: list[ChatMessage] | None = Field(
        None, min_length=1, max_length=256, description="instead of inputs: a conversation, through the chat template"
    )
    inputs: str | None = Field(
        None,
        max_length=100_000,
        validate_default=True,
        description="prompt; each <mask> is one token to fill in place",
    )
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)

    @field_validator("inputs")
    @classmethod
    def _one_prompt(cls, inputs: str | None, info: ValidationInfo) -> str | None:
        if (inputs is None) == (info.data.get("messages") is None):
            raise ValueError("give exactly one of inputs (a prompt) or messages (a conversation)")
        return inputs


class Timings(BaseModel):
    total_ms: float
    forward_ms: float
    queue_ms: float


class Token(BaseModel):
    """A generated token (TGI's shape): its log-probability is the one it had when it was written."""

    id: int
    text: str
    logprob: float | None
    special: bool = False


class Details(BaseModel):
    finish_reason: Literal["length", "eos_token"]  # TGI's names: max_new_tokens written, or the end token
    steps: int
    nfe: int  # forward passes this request took part in
    seed: int
    generated_tokens: int
    timings: Timings
    prefill: list[Token] = Field(default_factory=list, description="with decoder_input_details: the prompt")
    tokens: list[Token] = Field(default_factory=list, description="the generated tokens, in text order")
    top_tokens: list[list[Token]] | None = Field(None, description="with top_n_tokens: per generated token")


class GenerateResponse(BaseModel):
    generated_text: str
    details: Details | None = None


class _OpenAIRequest(BaseModel):
    """What OpenAI's completions and chat completions share, plus unmask's denoising settings."""

    model_config = ConfigDict(extra="ignore", strict=True, allow_inf_nan=False)

    model: str | None = None
    # OpenAI's fields keep OpenAI's defaults and bounds (temperature 0 means greedy there).
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    seed: int | None = param("seed")
    # OpenAI's penalties, with OpenAI's names, defaults and bounds (GenerationConfig declares the same).
    frequency_penalty: float = param("frequency_penalty")
    presence_penalty: float = param("presence_penalty")
    steps: int = param("steps")
    schedule: ScheduleName = param("schedule")
    remasking: RemaskingName = param("remasking")
    spacing: int = param("spacing")
    repetition_penalty: float = param("repetition_penalty")
    cfg_scale: float = param("cfg_scale")
    revise: RevisionName = param("revise")
    revise_eta: float = param("revise_eta")
    edit_margin: float = param("edit_margin")
    block_length: int = param("block_length")
    future_masks: bool = param("future_masks")
    cache: CacheMode = param("cache")
    cache_refresh: int = param("cache_refresh")

    def generation(self, max_new_tokens: int, top: int = 0) -> GenerateParameters:
        greedy = self.temperature < MIN_TEMPERATURE
        sampling = "greedy" if greedy else ("top_p" if self.top_p < 1 else "temperature")
        return GenerateParameters(
            max_new_tokens=max_new_tokens,
            steps=self.steps,
            schedule=self.schedule,
            sampling=sampling,
            temperature=1.0 if greedy else self.temperature,
            top_p=self.top_p,
            remasking=self.remasking,
            spacing=self.spacing,
            repetition_penalty=self.repetition_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            cfg_scale=self.cfg_scale,
            revise=self.revise,
            revise_eta=self.revise_eta,
            edit_margin=self.edit_margin,
            block_length=self.block_length,
            future_masks=self.future_masks,
            cache=self.cache,
            cache_refresh=self.cache_refresh,
            seed=self.seed,
            num_samples=self.n,
            top_n_tokens=top,
        )


class CompletionRequest(_OpenAIRequest):
    """OpenAI's /v1/completions subset, plus unmask's denoising settings as extensions."""

    prompt: str | list[str]
    max_tokens: int = Field(16, ge=1)
    suffix: str | None = Field(
        None, max_length=100_000, description="text after the completion: max_tokens blanks between prompt and suffix"
    )
    logprobs: int | None = Field(
        None, ge=0, le=5, description="each token's log-probability when it was written, and the n most likely then"
    )

    def parameters(self) -> GenerateParameters:
        return self.generation(self.max_tokens, self.logprobs or 0)


class ChatRequest(_OpenAIRequest):
    """OpenAI's /v1/chat/completions subset: the prompt is the model's chat template over `messages`."""

    messages: list[ChatMessage] = Field(..., min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1, description="reply length (older name of max_completion_tokens)")
    max_completion_tokens: int | None = Field(None, ge=1, description="reply length; default 64")
    stop: str | list[str] | None = Field(None, description="up to 4 strings; the reply ends before the first")
    logprobs: bool = Field(False, description="each reply token's log-probability when it was written")
    top_logprobs: int | None = Field(None, ge=0, le=5, description="with logprobs: the n most likely tokens then")

    @model_validator(mode="after")
    def _stops(self) -> "ChatRequest":
        stops = self.stops()
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop: at most 4 non-empty strings")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs: needs logprobs set to true")
        return self

    def stops(self) -> list[str]:
        return [self.stop] if isinstance(self.stop, str) else list(self.stop or [])

    def parameters(self) -> GenerateParameters:
        return self.generation(self.max_completion_tokens or self.max_tokens or 64, self.top_logprobs or 0)


# A job's defaults that differ from TrainConfig's, and why; tests/test_config.py holds the rest to TrainConfig.
JOB_DEFAULTS: dict[str, tuple[Any, str]] = {
    "epochs": (3, "OpenAI's auto (n_epochs): a job's data is small, and one pass over it teaches little"),
    "learning_rate": (1e-4, "a job continues a model already trained for diffusion: half a first run's peak"),
    "warmup_steps": (10, "jobs are short (tens to hundreds of steps): 100 steps of warmup would be most of one"),
}


def _job_default(name: str) -> Any:
    return JOB_DEFAULTS[name][0] if name in JOB_DEFAULTS else config.default_of(name, TrainConfig)


def _train(name: str, *, le: float, default: Any = None) -> Any:
    """A hyperparameter's Field: description and lower bound from TrainConfig, an upper bound of the API's own."""
    low = config.bounds(name, TrainConfig)
    return Field(
        default if default is not None else _job_default(name),
        description=config.help_of(name, TrainConfig),
        ge=low.get("ge"),
        gt=low.get("gt"),
        le=le,
    )


def _auto(name: str) -> Any:
    return Field("auto", description=f"{config.help_of(name, TrainConfig)}; auto: {_job_default(name)}")


class Hyperparameters(BaseModel):
    """OpenAI's names where they exist ("auto" included), plus the diffusion extras; each maps to a TrainConfig
    field of the same name (n_epochs: epochs), whose description and lower bound it takes."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    n_epochs: Literal["auto"] | Annotated[int, Field(ge=1, le=100)] = _auto("epochs")
    max_steps: int | None = Field(None, ge=1, le=1_000_000, description="optimizer steps; overrides n_epochs")
    batch_size: Literal["auto"] | Annotated[int, Field(ge=1, le=512)] = _auto("batch_size")
    grad_accum: int = _train("grad_accum", le=1024)
    n_devices: int = Field(1, ge=1, le=1024, description="devices (GPUs, or CPU cores) the worker trains on at once")
    gradient_checkpointing: bool = Field(
        _job_default("gradient_checkpointing"), description=config.help_of("gradient_checkpointing", TrainConfig)
    )
    learning_rate: Literal["auto"] | Annotated[float, Field(gt=0, le=0.01)] = _auto("learning_rate")
    warmup_steps: int = _train("warmup_steps", le=100_000)
    levels: list[Annotated[float, Field(ge=config.MIN_RATE, le=1)]] = Field(
        default_factory=lambda: list(DEFAULT_LEVELS),
        min_length=1,
        max_length=64,
        description=config.help_of("levels", TrainConfig),
    )
    prefix_max: int = _train("prefix_max", le=1024)
    max_length: Literal["auto"] | Annotated[int, Field(**config.bounds("max_length", TrainConfig), le=2048)] = Field(
        "auto",
        description=f"{config.help_of('max_length', TrainConfig)}; auto: {_job_default('max_length')}, or the"
        " model's positions if fewer",
    )

    def resolved(self, positions: int) -> dict[str, Any]:
        values = self.model_dump()
        auto = {
            "n_epochs": _job_default("epochs"),
            "batch_size": _job_default("batch_size"),
            "learning_rate": _job_default("learning_rate"),
            "max_length": min(_job_default("max_length"), positions),
        }
        return {k: auto[k] if v == "auto" else v for k, v in values.items()}


SUFFIX = r"^[a-z0-9][a-z0-9-]{0,39}$"


class FineTuneRequest(BaseModel):
    """POST /v1/fine_tuning/jobs. `training_texts` (inline documents) is unmask's extension."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=200, description="the base: the served model or a retained version")
    training_file: str | None = Field(None, description="an uploaded file id (purpose fine-tune)")
    training_texts: list[Annotated[str, Field(max_length=1_000_000)]] | None = Field(
        None, min_length=1, max_length=100_000, description="documents given inline instead of a file"
    )
    validation_file: str | None = None
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    suffix: str | None = Field(None, pattern=SUFFIX, description="lower-case letters, digits, dashes; up to 40")
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description="up to 16 pairs, keys up to 64 characters, values up to 512 (OpenAI's)"
    )


class SampleFrame(BaseModel):
    """One sample of a frame message, as the streams send it."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    tokens: list[Annotated[str, Field(max_length=64)]] = Field(max_length=2048)
    masked: list[bool] = Field(max_length=2048)
    revealed: list[bool] = Field(max_length=2048)
    fixed: list[bool] = Field(max_length=2048)
    confidence: list[float | None] = Field(max_length=2048)
    edited: list[bool] = Field(default_factory=list, max_length=2048, description="empty: nothing edited")

    @model_validator(mode="after")
    def _aligned(self) -> "SampleFrame":
        sizes = {len(self.tokens), len(self.masked), len(self.revealed), len(self.fixed), len(self.confidence)}
        if len(sizes) != 1 or len(self.edited) not in (0, len(self.tokens)):
            raise ValueError(
                "tokens, masked, revealed, fixed, confidence (and edited, if given) must have one entry per position"
            )
        return self


class FrameTiming(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    elapsed_ms: float = Field(ge=0, description="since the first step started")
    forward_ms: float = Field(0, ge=0, description="this step's forward pass")
    step_ms: float = Field(0, ge=0, description="this whole step, forward included")


class FrameMessage(BaseModel):
    """One `frame` message of the streams: the wire format, declared once (the streams send it, /render reads it)."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    type: Literal["frame"] = "frame"
    step: int = Field(ge=0, description="forward passes so far; 0 is the canvas before the first")
    steps: int | None = Field(None, ge=1, description="passes asked for; null for the autoregressive twin")
    block: int = Field(0, ge=0, description="semi-autoregressive block being filled")
    done: bool = Field(False, description="no mask is left")
    prompt_length: int = Field(0, ge=0, description="positions before the first masked one, start token included")
    samples: list[SampleFrame] = Field(min_length=1, max_length=64)
    timing: FrameTiming


class RenderRequest(BaseModel):
    """Frames a viewer received (the `frame` messages of /ws/generate), to render as a GIF or a page."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)

    frames: list[FrameMessage] = Field(min_length=1, max_length=MAX_FRAMES)
    autoregressive: list[FrameMessage] | None = Field(
        None,
        min_length=1,
        max_length=MAX_FRAMES,
        description="the twin's frames (/ws/generate_ar) of the same prompt: the GIF shows both side by side on "
        "one clock; the HTML page ignores them",
    )
    sample: int = Field(0, ge=0, description="which sample to draw")
    title: str = Field("unmask", max_length=300)
