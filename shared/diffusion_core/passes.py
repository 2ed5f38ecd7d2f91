"""One forward pass: what it needs (`StepInputs`), what it gives (`StepOutputs`), and running it.

Several requests' inputs join into one batch for the serving engine, and the outputs split back.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import accumulate

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from .cache import KV, CachePass, cached_logits
from .model import masked_logits
from .timing import Lap, lap


@dataclass(frozen=True)
class StepInputs:
    """What one forward pass needs: the window's ids and attention (B, W), and where the head predicts.

    With the block cache a pass computes only `query` (B, Q) window columns (-1: padding) and reads
    the cached keys and values `past` of (B, P) other positions (`past_mask`: which are real); the
    head's `cols` then index the query columns.

    A request's own inputs also say what it will do with the outputs: the canvas columns the head
    predicts and the cache's decision for the pass, both handed back to `Denoiser.advance`. Joined
    inputs, which only the forward pass reads, carry neither."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    rows: torch.Tensor  # (M,) row of each position to predict
    cols: torch.Tensor  # (M,) column in the window (or in `query`)
    query: torch.Tensor | None = None
    past: KV | None = None
    past_mask: torch.Tensor | None = None
    slots: torch.Tensor | None = None  # (B, R) canvas column of each prediction, R per row
    cache: CachePass | None = None

    @staticmethod
    def join(parts: "list[StepInputs]", pad: int) -> "StepInputs":
        """Several requests' inputs as one batch: rows stacked, windows (queries, pasts) right-padded."""
        width = max(p.input_ids.shape[1] for p in parts)
        ids = torch.cat([F.pad(p.input_ids, (0, width - p.input_ids.shape[1]), value=pad) for p in parts])
        attention = torch.cat([F.pad(p.attention_mask, (0, width - p.attention_mask.shape[1])) for p in parts])
        firsts = [0, *accumulate(p.input_ids.shape[0] for p in parts)]  # first row of each request
        rows = torch.cat([p.rows + first for p, first in zip(parts, firsts)])
        joined = StepInputs(ids, attention, rows, torch.cat([p.cols for p in parts]))
        if all(p.query is None for p in parts):
            return joined
        queries = [p.all_columns() for p in parts]
        q = max(x.shape[1] for x in queries)
        query = torch.cat([F.pad(x, (0, q - x.shape[1]), value=-1) for x in queries])
        past, past_mask = _join_past(parts)
        return replace(joined, query=query, past=past, past_mask=past_mask)

    def all_columns(self) -> torch.Tensor:
        """(B, Q) the window columns this pass computes: `query`, or every column."""
        if self.query is not None:
            return self.query
        b, w = self.input_ids.shape
        return torch.arange(w, device=self.input_ids.device).expand(b, w)


def _join_past(parts: list[StepInputs]) -> tuple[KV | None, torch.Tensor | None]:
    """The parts' cached keys and values padded to the longest (parts without any get masked zeros)."""
    with_past = [p for p in parts if p.past is not None]
    if not with_past:
        return None, None
    template = with_past[0].past
    assert template is not None
    length = max(p.past.length for p in with_past if p.past is not None)
    kvs, masks = [], []
    for p in parts:
        b = p.input_ids.shape[0]
        if p.past is None or p.past_mask is None:
            empty = torch.zeros(b, length, dtype=torch.long, device=p.input_ids.device)
            kvs.append(template.empty(b, length))
            masks.append(empty)
        else:
            kvs.append(p.past.padded(length))
            masks.append(F.pad(p.past_mask, (0, length - p.past.length)))
    return KV.cat(kvs, 0), torch.cat(masks)


@dataclass(frozen=True)
class StepOutputs:
    """What one forward pass gave: logits (M, V) at the requested positions, its timing, and with the
    block cache the keys and values of every query position."""

    logits: torch.Tensor
    timer: Lap | None = None
    kv: KV | None = None

    def split(self, parts: list[StepInputs]) -> "list[StepOutputs]":
        """Each joined request's share, in the order of `parts`."""
        logits = self.logits.split([p.rows.numel() for p in parts])
        firsts = [0, *accumulate(p.input_ids.shape[0] for p in parts)]
        return [
            StepOutputs(
                part, self.timer, None if self.kv is None else self.kv.rows(first, first + p.input_ids.shape[0])
            )
            for p, part, first in zip(parts, logits, firsts)
        ]


@contextmanager
def inference(device: torch.device, autocast: bool = False) -> Iterator[None]:
    """How forward passes and steps run: no autograd, and bf16 autocast when asked."""
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        yield


def forward(model: PreTrainedModel, step: StepInputs) -> StepOutputs:
    """One forward pass: logits (M, V) at the requested positions, its timing on the device, and with
    the block cache the keys and values it computed."""
    with lap(step.input_ids.device) as timer:
        if step.query is None:
            return StepOutputs(masked_logits(model, step.input_ids, step.attention_mask, step.rows, step.cols), timer)
        logits, kv = cached_logits(
            model, step.input_ids, step.attention_mask, step.query, step.past, step.past_mask, step.rows, step.cols
        )
    return StepOutputs(logits, timer, kv)
