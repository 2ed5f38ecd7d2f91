"""The block cache: keys and values of text that no longer changes, kept between forward passes.

With semi-autoregressive blocks most of a pass recomputes finished text. For encoders of the
BERT/RoBERTa layout (embeddings, then layers of self-attention and a feed-forward, each with a
residual and a LayerNorm) this module runs the layers itself, so that a pass can compute only some
positions (its queries) while attending to keys and values kept from earlier passes:

- prefix: a block's later passes compute the block and everything after it; the finished text
  before the block is read from the cache (Fast-dLLM's prefix cache).
- dual: they compute the block only; the masked text after it is cached too, from the block's
  first pass (Fast-dLLM's DualCache).

The cache is an approximation: finished text stops seeing the text written after it was cached.
`BlockCache.refresh` bounds that: every `refresh` blocks the first pass recomputes everything.
"""

import logging
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .config import CACHE_MODES
from .model import head_logits, split_head

log = logging.getLogger("unmask")

__all__ = ["CACHE_MODES", "KV", "BlockCache", "CacheMode", "CachePass", "cached_logits", "layers_of", "mode_for"]
_warned: set[str] = set()


@dataclass(frozen=True)
class KV:
    """Keys and values per layer, each (B, heads, P, head size), for P positions of B rows."""

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def columns(self, start: int, end: int) -> "KV":
        return KV(tuple(k[:, :, start:end] for k in self.keys), tuple(v[:, :, start:end] for v in self.values))

    def rows(self, start: int, end: int) -> "KV":
        return KV(tuple(k[start:end] for k in self.keys), tuple(v[start:end] for v in self.values))

    def padded(self, length: int) -> "KV":
        """Right-padded with zeros to `length` positions (the caller masks them)."""
        grow = (0, 0, 0, length - self.length)
        return KV(tuple(F.pad(k, grow) for k in self.keys), tuple(F.pad(v, grow) for v in self.values))

    def empty(self, rows: int, length: int) -> "KV":
        """Zeros shaped like these for `rows` rows and `length` positions (masked by the caller)."""
        k = [x.new_zeros(rows, x.shape[1], length, x.shape[3]) for x in self.keys]
        return KV(tuple(k), tuple(x.clone() for x in k))

    @staticmethod
    def cat(parts: "list[KV]", dim: int) -> "KV":
        """Joined along positions (dim=2) or rows (dim=0)."""
        layers = range(len(parts[0].keys))
        return KV(
            tuple(torch.cat([p.keys[i] for p in parts], dim) for i in layers),
            tuple(torch.cat([p.values[i] for p in parts], dim) for i in layers),
        )


def layers_of(model: PreTrainedModel) -> nn.ModuleList | None:
    """The model's encoder layers when they have the BERT/RoBERTa layout this module runs, else None."""
    base = getattr(model, model.base_model_prefix, None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    config = model.config
    if (
        split_head(model) is None
        or not hasattr(base, "embeddings")
        or not isinstance(layers, nn.ModuleList)
        or getattr(config, "is_decoder", False)
        or getattr(config, "position_embedding_type", "absolute") != "absolute"
    ):
        return None
    for layer in layers:
        attention = getattr(layer, "attention", None)
        own = getattr(attention, "self", None)
        needed = [(own, n) for n in ("query", "key", "value", "num_attention_heads", "attention_head_size")]
        needed += [(attention, "output"), (layer, "intermediate"), (layer, "output")]
        if not all(hasattr(owner, name) for owner, name in needed):
            return None
    return layers


def cached_logits(
    model: PreTrainedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    query: torch.Tensor,
    past: KV | None,
    past_mask: torch.Tensor | None,
    rows: torch.Tensor,
    cols: torch.Tensor,
) -> tuple[torch.Tensor, KV]:
    """One pass over the query columns of each row's window.

    input_ids, attention_mask: (B, W) the whole window (it fixes each position's embedding);
    query: (B, Q) window columns to compute (-1 pads a row with fewer); past: keys and values of
    (B, P) other positions with past_mask saying which are real. Queries attend to the real past
    and to every real query position. Returns logits (M, V) at query positions (rows[i], cols[i])
    and the keys and values of all query positions."""
    base = getattr(model, model.base_model_prefix)
    _, head = split_head(model)  # type: ignore[misc]
    layers = layers_of(model)
    assert layers is not None, "cached_logits needs a BERT/RoBERTa-layout encoder"
    at = query.clamp(min=0)
    hidden = base.embeddings(input_ids=input_ids).gather(1, at.unsqueeze(-1).expand(-1, -1, base.config.hidden_size))
    real = attention_mask.gather(1, at).bool() & (query >= 0)
    if past is not None and past_mask is not None:
        real = torch.cat([past_mask.bool(), real], 1)
    visible = real[:, None, None, :]  # (B, 1, 1, P + Q): every query sees the same keys
    keys, values = [], []
    b, q = query.shape
    layer: Any
    for i, layer in enumerate(layers):
        own = layer.attention.self
        shape = (b, q, own.num_attention_heads, own.attention_head_size)
        queries = own.query(hidden).view(shape).transpose(1, 2)
        k = own.key(hidden).view(shape).transpose(1, 2)
        v = own.value(hidden).view(shape).transpose(1, 2)
        keys.append(k)
        values.append(v)
        if past is not None:
            k, v = torch.cat([past.keys[i], k], 2), torch.cat([past.values[i], v], 2)
        context = F.scaled_dot_product_attention(queries, k, v, attn_mask=visible)
        attended = layer.attention.output(context.transpose(1, 2).reshape(b, q, -1), hidden)
        hidden = layer.output(layer.intermediate(attended), attended)
    return head_logits(head, hidden[rows, cols]), KV(tuple(keys), tuple(values))


class CacheMode(Enum):
    """How passes reuse keys and values; resolved once per request against the model (`mode_for`)."""

    NONE = "none"
    PREFIX = "prefix"
    DUAL = "dual"


def mode_for(model: PreTrainedModel, name: str) -> CacheMode:
    """The mode a request asking for `name` runs with on this model: NONE (full passes, with a notice
    logged once) when the model does not have the layout this module runs."""
    mode = CacheMode(name)
    if mode is CacheMode.NONE or layers_of(model) is not None:
        return mode
    kind = type(model).__name__
    if kind not in _warned:
        _warned.add(kind)
        log.warning("cache=%s needs a BERT/RoBERTa-layout encoder; %s runs full passes instead", name, kind)
    return CacheMode.NONE


@dataclass(frozen=True)
class CachePass:
    """What the cache decided for one pass, in window columns: the pass computes [lo, hi) for a block
    at [start, end) of a `width`-column window; `full` (a refresh) reads nothing from the cache;
    `store` (a block's first pass) has keep() take what the pass computed."""

    lo: int
    hi: int
    start: int
    end: int
    width: int
    full: bool
    store: bool


class BlockCache:
    """What one request keeps between passes, in window columns: the prefix [0, prefix_end), and with
    the dual cache the text after the block, [suffix_start, suffix_end).

    A refresh (a block's first pass, every `refresh` blocks, or when the window moved) computes every
    column and keeps the text before the block (and, dual, after it). Another block's first pass
    computes the text finished since the last one and the block, reading the rest from the cache,
    and appends that text to the prefix. Passes within a block compute the block (dual) or the block
    and all that follows it (prefix). `plan` and `past` only read; `keep` is the one change, made
    from the CachePass that `plan` returned, so a pass that never comes back changes nothing."""

    def __init__(self, mode: CacheMode, refresh: int) -> None:
        self.mode, self.refresh = mode, refresh
        self.prefix: KV | None = None
        self.prefix_end = 0
        self.suffix: KV | None = None
        self.suffix_start = self.suffix_end = 0
        self.blocks = 0  # blocks since the last refresh

    def plan(self, first_pass: bool, reusable: bool, start: int, end: int, width: int) -> CachePass | None:
        """This pass's columns, for a block at window columns [start, end) of a `width`-column window;
        `reusable` is False when the window's columns moved since the last block. None: no cache."""
        if self.mode is CacheMode.NONE:
            return None
        dual = self.mode is CacheMode.DUAL
        if not first_pass:
            return CachePass(start, end if dual else width, start, end, width, full=False, store=False)
        stale = dual and (self.suffix is None or self.suffix_end != width or self.suffix_start > end)
        full = self.prefix is None or not reusable or stale or self.blocks >= self.refresh
        lo = 0 if full else self.prefix_end
        return CachePass(lo, width if full or not dual else end, start, end, width, full=full, store=True)

    def past(self, now: CachePass, attention: torch.Tensor) -> tuple[KV | None, torch.Tensor | None]:
        """Cached keys and values the pass reads, and which of them are real, from the window's attention."""
        if now.full:
            return None, None
        parts, real = [], []
        if self.prefix is not None:
            parts.append(self.prefix)
            real.append(attention[:, : self.prefix_end])
        if self.suffix is not None:
            parts.append(self.suffix.columns(now.end - self.suffix_start, self.suffix_end - self.suffix_start))
            real.append(attention[:, now.end : self.suffix_end])
        if not parts:
            return None, None
        return KV.cat(parts, 2) if len(parts) > 1 else parts[0], torch.cat(real, 1)

    def keep(self, now: CachePass, computed: KV) -> None:
        """After a block's first pass: append the finished text before the block to the prefix (after a
        refresh, start it afresh, and with the dual cache keep the text after the block)."""
        if not now.store:
            return
        fresh = computed.columns(0, now.start - now.lo)
        if now.full:
            self.prefix, self.suffix, self.blocks = fresh, None, 0
            if self.mode is CacheMode.DUAL:
                self.suffix = computed.columns(now.end - now.lo, now.width - now.lo)
                self.suffix_start, self.suffix_end = now.end, now.width
        else:
            self.prefix = fresh if self.prefix is None else KV.cat([self.prefix, fresh], 2)
        self.prefix_end = now.start
        self.blocks += 1
