"""Loading masked LMs, choosing a device, and running the LM head on masked positions only."""

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForMaskedLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .errors import CheckpointError, ConfigError, TokenizerError

# Architectures whose learned positions start after the padding index (RoBERTa's offset of 2).
_PADDING_OFFSET_TYPES = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"}


def pick_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; any other name is checked, not trusted."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' requested but MPS is not available")
    return device


def cpu_bf16() -> str | None:
    """The instructions with which this CPU computes bf16 natively (AMX, AVX512-BF16), or None."""
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        return "AMX"
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        return "AVX512-BF16"
    return None


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 is fast here: CUDA with bf16, or a CPU with AVX512-BF16 / AMX."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_bf16() is not None


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class DtypeChoice:
    """The weights' dtype and why it was chosen (shown by /info and `unmask generate --json`)."""

    dtype: torch.dtype
    reason: str

    @property
    def name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def pick_dtype(name: str, device: torch.device) -> DtypeChoice:
    """A name from DTYPES, or 'auto': bf16 where the device computes it natively, else float32.

    Weights converted to bf16 run a forward pass 1.7x faster than float32 on a CPU with AVX512-BF16
    and several times faster on a GPU; autocast instead casts at every op and gains less. A CPU
    without native bf16 would emulate it, slower than float32.
    """
    if name != "auto":
        from .names import lookup

        return DtypeChoice(lookup(DTYPES, name, "dtype", "dtype"), "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return DtypeChoice(torch.bfloat16, "auto: this GPU computes bf16")
        return DtypeChoice(torch.float32, "auto: this GPU has no bf16")
    if device.type == "cpu":
        feature = cpu_bf16()
        if feature is not None:
            return DtypeChoice(torch.bfloat16, f"auto: this CPU computes bf16 natively ({feature})")
        return DtypeChoice(torch.float32, "auto: this CPU has no native bf16 (neither AVX512-BF16 nor AMX)")
    return DtypeChoice(torch.float32, f"auto: float32 on {device.type}")


@dataclass(frozen=True)
class SpecialTokens:
    """The ids the denoiser needs; `start` opens every sequence, `end` closes a document."""

    start: int
    end: int
    mask: int
    pad: int

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> "SpecialTokens":
        start = _first(tokenizer.cls_token_id, tokenizer.bos_token_id)
        end = _first(tokenizer.sep_token_id, tokenizer.eos_token_id)
        missing = [role for role, i in (("mask", tokenizer.mask_token_id), ("start (cls/bos)", start),
                                        ("end (sep/eos)", end)) if i is None]  # fmt: skip
        if missing:
            raise TokenizerError(f"the tokenizer has no {' and no '.join(missing)} token; unmask needs one")
        assert start is not None and end is not None
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
        return cls(start=start, end=end, mask=int(tokenizer.mask_token_id), pad=int(pad))


def _first(*ids: int | None) -> int | None:
    return next((i for i in ids if i is not None), None)


def max_positions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """How many tokens one forward pass may hold."""
    config = model.config
    limit = getattr(config, "max_position_embeddings", None) or 512
    if config.model_type in _PADDING_OFFSET_TYPES:
        limit -= (config.pad_token_id or 0) + 1
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:
        limit = min(limit, tok_limit)
    return int(limit)


# Files one of which a local tokenizer directory must hold; without them transformers may build
# an empty 5-token tokenizer from the model config without complaint.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "vocab.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def load_tokenizer(source: str | Path) -> PreTrainedTokenizerBase:
    """A tokenizer from a directory or hub id; a clear error when there is none."""
    path = Path(source)
    if path.is_dir() and not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise TokenizerError(f"no usable tokenizer at {source}: none of {', '.join(_TOKENIZER_FILES)} found")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source))
    except (OSError, ValueError, TypeError) as exc:
        raise TokenizerError(f"no usable tokenizer at {source}: {_one_line(exc)}") from None
    if tokenizer.mask_token_id is None:
        raise TokenizerError(f"tokenizer at {source} has no mask token")
    if len(tokenizer) < 16:
        raise TokenizerError(
            f"tokenizer at {source} has only {len(tokenizer)} tokens; its vocabulary files are missing"
        )
    return tokenizer


def load_masked_lm(source: str | Path, device: torch.device, dtype: torch.dtype = torch.float32) -> PreTrainedModel:
    """Weights from safetensors only (never a pickle), in `dtype`, in eval mode."""
    try:
        model = AutoModelForMaskedLM.from_pretrained(str(source), use_safetensors=True, dtype=dtype)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load a masked LM from {source}: {_one_line(exc)}") from None
    return model.to(device).eval()  # type: ignore[arg-type]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# LM heads that map hidden states to logits position by position, by family: RoBERTa, BERT,
# ModernBERT (head, then decoder), DistilBERT (transform, activation, norm, projector).
_HEADS = (
    ("lm_head",),
    ("cls",),
    ("head", "decoder"),
    ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector"),
)


def split_head(model: PreTrainedModel) -> tuple[nn.Module, nn.Module] | None:
    """(encoder, LM head) when the head can run on a subset of positions, else None (full passes)."""
    encoder = getattr(model, model.base_model_prefix, None)
    if not isinstance(encoder, nn.Module):
        return None
    for names in _HEADS:
        parts = [part for name in names if isinstance(part := getattr(model, name, None), nn.Module)]
        if len(parts) == len(names):
            return encoder, parts[0] if len(parts) == 1 else nn.Sequential(*parts)
    return None


def masked_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
) -> torch.Tensor:
    """Logits (M, V) at positions (rows[i], cols[i]) of input_ids (B, L); the head sees only those."""
    parts = split_head(model)
    if parts is None:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[rows, cols]
    encoder, head = parts
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return head_logits(head, hidden[rows, cols])


def head_logits(head: nn.Module, picked: torch.Tensor) -> torch.Tensor:
    """The LM head over (M, H) hidden states, run on `head_rows(M)` rows (zeros past M)."""
    m = picked.shape[0]
    return head(F.pad(picked, (0, 0, 0, head_rows(m) - m)))[:m]


def head_rows(m: int) -> int:
    """The rows the head runs on for m positions: m rounded up to a quarter-octave size (8, 16, 24, 32,
    40, ..., 64, 80, ...), at most a quarter more. A CPU's matmul kernels keep a compiled plan per
    shape, without bound in practice: with a head on every count of masked positions a training run
    grew by gigabytes; with these sizes it holds steady."""
    grain = 1 << max(3, m.bit_length() - 3)
    return -(-max(m, 1) // grain) * grain


# Fresh RoBERTa shapes for `unmask train --architecture`: (layers, width, heads).
ARCHITECTURES = {
    "roberta-tiny": (2, 64, 2),
    "roberta-small": (4, 256, 4),
    "roberta-base": (12, 768, 12),
}


def fresh_masked_lm(name: str, tokenizer: PreTrainedTokenizerBase, max_length: int) -> PreTrainedModel:
    """A randomly initialised RobertaForMaskedLM of a named size, sized to the tokenizer."""
    from transformers import RobertaConfig, RobertaForMaskedLM

    from .names import lookup

    layers, width, heads = lookup(ARCHITECTURES, name, "architecture")
    special = SpecialTokens.of(tokenizer)
    config = RobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * width,
        max_position_embeddings=max_length + special.pad + 1,
        pad_token_id=special.pad,
        bos_token_id=special.start,
        eos_token_id=special.end,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return RobertaForMaskedLM(config)
