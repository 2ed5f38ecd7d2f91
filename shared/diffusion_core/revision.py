"""Taking back committed tokens: re-masking (ReMDM) and editing.

Plain decoding commits a token for good, though it was chosen when little of its context was
written. Two ways to revise it, both within the block being written (earlier blocks are finished
and cached):

- Re-masking (ReMDM, Wang et al. 2025): at every pass but a block's last, some of the block's
  committed tokens are masked again and the pass keeps as many more of its predictions, so the
  masked share still follows the schedule and the number of passes is unchanged. In counts: with
  c committed before the pass and m to stay masked after it, ReMDM's largest re-masking share
  sigma_max = min(1, m / c) allows m. `cap` re-masks min(eta * c, m), `rescale` eta * min(c, m),
  both at random; `conf` as many as rescale, the least confident first (confidence: the
  probability the token had when it was committed).
- Editing: the head reads every slot of the block, committed ones too, and a committed token is
  replaced when this pass's prediction for its slot is at least `edit_margin` more probable than
  the token there.
"""

import torch

from .remasking import top_per_row


def remask_counts(strategy: str, eta: float, committed: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How many of `committed` (B,) tokens a pass re-masks when `target` (B,) masks must remain after it."""
    if strategy == "cap":
        return torch.minimum(torch.floor(eta * committed + 1e-9).long(), target)
    return torch.floor(eta * torch.minimum(committed, target) + 1e-9).long()


def remask_choice(
    strategy: str, eligible: torch.Tensor, counts: torch.Tensor, confidence: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """Which slots (B, S) to mask again: counts[b] of row b's `eligible` ones, the least `confidence`
    first for conf, by `noise` (uniforms) otherwise."""
    scores = -confidence if strategy == "conf" else noise
    return top_per_row(scores.masked_fill(~eligible, float("-inf")), counts) & eligible


def edits(
    committed: torch.Tensor,
    now: torch.Tensor,
    new: torch.Tensor,
    now_prob: torch.Tensor,
    new_prob: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """Which committed slots (B, R) take this pass's prediction `new` instead of the token `now` there."""
    return committed & (new != now) & (new_prob - now_prob >= margin)
