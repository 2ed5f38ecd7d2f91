"""Turning a prompt (optionally with mask placeholders) into the token canvas the denoiser fills."""

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from .errors import InputError
from .model import SpecialTokens

MASK_PLACEHOLDER = "<mask>"


@dataclass(frozen=True)
class Canvas:
    """Token ids with a start token first; `masked[i]` marks a position the model must fill."""

    tokens: list[int]
    masked: list[bool]

    @property
    def prompt_length(self) -> int:
        """Tokens before the first masked position (the start token included)."""
        return self.masked.index(True) if any(self.masked) else len(self.tokens)

    @property
    def infill(self) -> bool:
        """True when fixed text follows a masked position: the model fills gaps, not a tail."""
        return not all(self.masked[self.prompt_length :])


def build_canvas(tokenizer: PreTrainedTokenizerBase, special: SpecialTokens, text: str, max_new_tokens: int) -> Canvas:
    """start + prompt (each placeholder one masked token) + max_new_tokens masks; no end token."""
    placeholders = {MASK_PLACEHOLDER}
    if tokenizer.mask_token:
        placeholders.add(tokenizer.mask_token)
    pattern = "|".join(re.escape(p) for p in sorted(placeholders, key=len, reverse=True))
    pieces = re.split(f"({pattern})", text)
    tokens, masked = [special.start], [False]
    for i, piece in enumerate(pieces):
        if piece in placeholders:
            tokens.append(special.mask)
            masked.append(True)
            continue
        followed_by_mask = i + 1 < len(pieces) or max_new_tokens > 0
        piece = piece.rstrip() if followed_by_mask else piece
        ids = tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else []
        tokens.extend(ids)
        masked.extend([False] * len(ids))
    tokens.extend([special.mask] * max_new_tokens)
    masked.extend([True] * max_new_tokens)
    if not any(masked):
        raise InputError(
            "nothing to generate: max_new_tokens is 0 and the text has no <mask> placeholder", "max_new_tokens"
        )
    return Canvas(tokens=tokens, masked=masked)
