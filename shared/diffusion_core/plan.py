"""A request's plan, on the host: its blocks, each block's window, and how many masks each pass keeps.

The masked slots are filled in semi-autoregressive blocks, left to right. Each block gets a share
of the steps, and each of its passes keeps enough predictions that the block's masked share
follows the schedule: `keep_counts` is that rule, applied to every row on the device and to the
fullest row here. The plan runs ahead of the device: before each pass it knows how many masks the
fullest row has left, so that a step needs nothing from the device. When the text sets the pace
instead (end tokens, threshold remasking), the request reads that count after each pass and hands
it to `Plan.after`; that read is the only difference between the two.
"""

from dataclasses import dataclass

import torch

from .config import GenerationConfig
from .errors import ConfigError
from .schedules import masked_after


def keep_counts(schedule: str, step: int, steps: int, remaining: torch.Tensor, total: torch.Tensor) -> torch.Tensor:
    """How many of each row's `remaining` (B,) masks the pass at `step` of a block's `steps` keeps, for
    rows that had `total` (B,) at the block's start: enough that the schedule's share stays masked, at
    least one, at most what is left; the block's last planned pass keeps them all."""
    if step + 1 >= steps:
        return remaining
    target = masked_after(schedule, step + 1, steps, total)
    return torch.where(remaining > 0, (remaining - target).clamp(min=1), 0).minimum(remaining)


@dataclass(frozen=True)
class Block:
    """A semi-autoregressive block: its slots' canvas columns, where they start among all the request's
    slots, its planned passes, and the canvas columns [start, end) its passes see besides column 0."""

    columns: tuple[int, ...]
    offset: int
    steps: int
    start: int
    end: int

    def to_window(self, column: int) -> int:
        """A canvas column (0, or in [start, end)) as a column of this block's window."""
        return column - (self.start - 1) if column else 0


@dataclass(frozen=True)
class Pass:
    """One forward pass as planned: its block, its step within the block, and the masks left in the
    fullest row before it."""

    block: int
    step: int
    left: int


@dataclass(frozen=True)
class Plan:
    blocks: tuple[Block, ...]
    schedule: str

    @staticmethod
    def of(masked: list[bool], config: GenerationConfig, window: int) -> "Plan":
        """The plan of a canvas whose masked columns are `masked`, for a model of `window` positions."""
        slots = [i for i, m in enumerate(masked) if m]
        size = min(config.block_length or len(slots), len(slots))
        chunks = [tuple(slots[i : i + size]) for i in range(0, len(slots), size)]
        base, extra = divmod(config.steps, len(chunks))  # steps shared out, the first blocks get the rest
        text_end = max(i for i, m in enumerate(masked) if not m) + 1  # one past the last supplied token
        blocks = []
        for i, columns in enumerate(chunks):
            if columns[-1] - columns[0] + 2 > window:  # the block and the start token
                raise ConfigError(f"block_length {size} does not fit the model's {window} positions", "block_length")
            start, end = _window(columns[-1] + 1, len(masked), text_end, window, config.future_masks)
            blocks.append(Block(columns, i * size, max(1, base + (i < extra)), start, end))
        return Plan(tuple(blocks), config.schedule)

    def first(self) -> Pass:
        return Pass(0, 0, len(self.blocks[0].columns))

    def keeps(self, now: Pass) -> int:
        """How many masks the fullest row keeps at this pass."""
        return int(self._counts(now))

    def after(self, now: Pass, left: int | None = None) -> Pass | None:
        """The pass after `now` (None: the request is finished). `left` is the masks the fullest row of
        the block has left, read from the device; without it the plan assumes every pass kept its count."""
        block = self.blocks[now.block]
        if left is None:
            left = now.left - int(self._counts(now))
        if now.step + 1 < block.steps and left > 0:
            return Pass(now.block, now.step + 1, left)
        if now.block + 1 < len(self.blocks):
            return Pass(now.block + 1, 0, len(self.blocks[now.block + 1].columns))
        return None

    def passes(self) -> int:
        """Forward passes the plan makes when every pass keeps its count (the most a request can take)."""
        count = 0
        now: Pass | None = self.first()
        while now is not None:
            count, now = count + 1, self.after(now)
        return count

    def _counts(self, now: Pass) -> torch.Tensor:
        block = self.blocks[now.block]
        slots = torch.tensor([len(block.columns)])
        return keep_counts(self.schedule, now.step, block.steps, torch.tensor([now.left]), slots)


def _window(block_end: int, length: int, text_end: int, window: int, future_masks: bool) -> tuple[int, int]:
    """Canvas columns [start, end) a block's passes see besides column 0: all of the canvas, or without
    the masks of later blocks (future_masks=False), or a slice ending at the block when the canvas
    outgrows the model."""
    if not future_masks:
        length = max(block_end, text_end)  # text the request supplied always stays in view
    if length <= window:
        return 1, length
    return max(1, block_end - (window - 1)), block_end
