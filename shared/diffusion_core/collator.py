"""Masking a batch for the diffusion objective: one masking rate per batch, any rate in (0, 1]."""

from dataclasses import dataclass

import torch

from .config import DEFAULT_LEVELS


@dataclass(frozen=True)
class MaskedBatch:
    input_ids: torch.Tensor  # (B, L) with masked positions replaced by the mask id
    attention_mask: torch.Tensor  # (B, L)
    labels: torch.Tensor  # (B, L) original ids where masked, -100 elsewhere
    rate: float  # the masking rate drawn for this batch


@dataclass(frozen=True)
class DiffusionCollator:
    mask_id: int
    protected_ids: tuple[int, ...]  # never masked (start, padding); the end-of-text token is content
    levels: tuple[float, ...] | None = DEFAULT_LEVELS  # discrete rates; None = continuous U(eps, 1)
    eps: float = 0.02  # lowest rate in continuous mode
    prefix_max: int = 0  # a prefix of 0..prefix_max tokens per example stays visible, like a prompt

    def draw_rate(self, generator: torch.Generator) -> float:
        if self.levels:
            return self.levels[int(torch.randint(len(self.levels), (1,), generator=generator))]
        return self.eps + (1 - self.eps) * float(torch.rand(1, generator=generator))

    def __call__(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, generator: torch.Generator
    ) -> MaskedBatch:
        """Mask ids (B, L) at one rate; every row keeps at least one masked token."""
        rate = self.draw_rate(generator)
        b, length = input_ids.shape
        prefix = torch.randint(self.prefix_max + 1, (b, 1), generator=generator)
        eligible = (attention_mask > 0) & (torch.arange(length) > prefix)
        eligible &= ~torch.isin(input_ids, torch.tensor(self.protected_ids))
        scores = torch.rand(b, length, generator=generator)
        masked = eligible & (scores < rate)
        fallback = scores.masked_fill(~eligible, 2.0).argmin(-1)
        none = ~masked.any(-1) & eligible.any(-1)
        masked[none.nonzero().squeeze(-1), fallback[none]] = True
        return MaskedBatch(
            input_ids=input_ids.masked_fill(masked, self.mask_id),
            attention_mask=attention_mask,
            labels=input_ids.masked_fill(~masked, -100),
            rate=rate,
        )
