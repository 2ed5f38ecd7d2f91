"""Repetition penalties, applied to a step's logits on the device.

- `repetition_penalty` (Hugging Face's and TGI's, after CTRL): a token already in the text, the
  prompt or what the model has written, gets its logit divided by the penalty when positive and
  multiplied by it when negative, so a penalty above 1 makes it less likely either way.
- `frequency_penalty` and `presence_penalty` (OpenAI's): subtracted from a token's logit once per
  time the model has written it, and once if it has written it at all.

A masked LM writes in any order, so "written so far" is every token committed before this step,
wherever it stands on the canvas.
"""

from dataclasses import dataclass

import torch

from .config import GenerationConfig


@dataclass(frozen=True)
class Penalties:
    repetition: float = 1.0
    frequency: float = 0.0
    presence: float = 0.0

    @staticmethod
    def of(config: GenerationConfig) -> "Penalties":
        return Penalties(config.repetition_penalty, config.frequency_penalty, config.presence_penalty)

    @property
    def active(self) -> bool:
        return self.repetition != 1.0 or self.frequency != 0.0 or self.presence != 0.0


def token_counts(tokens: torch.Tensor, where: torch.Tensor, vocab: int) -> torch.Tensor:
    """(B, V): how often each id stands in each row of `tokens` (B, T) at the columns `where` marks."""
    counts = torch.zeros(tokens.shape[0], vocab, device=tokens.device)
    return counts.scatter_add_(1, tokens.clamp(0, vocab - 1), where.float())


def penalize(
    logits: torch.Tensor,
    rows: torch.Tensor,
    tokens: torch.Tensor,
    in_text: torch.Tensor,
    written: torch.Tensor,
    penalties: Penalties,
) -> torch.Tensor:
    """logits (M, V) of predictions for the rows `rows` (M,) of a canvas `tokens` (B, T); `in_text` (B, T)
    marks the prompt and the committed text, `written` the part of it the model wrote."""
    vocab = logits.shape[-1]
    if penalties.repetition != 1.0:
        seen = token_counts(tokens, in_text, vocab)[rows] > 0
        scaled = torch.where(logits > 0, logits / penalties.repetition, logits * penalties.repetition)
        logits = torch.where(seen, scaled, logits)
    if penalties.frequency != 0.0 or penalties.presence != 0.0:
        counts = token_counts(tokens, written, vocab)[rows]
        logits = logits - penalties.frequency * counts - penalties.presence * (counts > 0).float()
    return logits
