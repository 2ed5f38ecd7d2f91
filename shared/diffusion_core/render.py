"""Frames as text: the terminal view of `unmask generate --show-steps`."""

from transformers import PreTrainedTokenizerBase

from .denoise import Frame
from .model import SpecialTokens

MASK_GLYPH = "\u2591"  # light shade: one per masked position


def frame_text(tokenizer: PreTrainedTokenizerBase, frame: Frame, row: int = 0) -> str:
    """One row of a frame as a line of text, each masked position shown as a shade block."""
    special = SpecialTokens.of(tokenizer)
    parts: list[str] = []
    run: list[int] = []
    for token, masked, live in zip(frame.tokens[row].tolist(), frame.masked[row].tolist(), (frame.tokens[row] != special.pad).tolist()):
        if masked or not live or token in (special.start, special.end):
            if run:
                parts.append(tokenizer.decode(run))
                run = []
            if masked:
                parts.append(" " + MASK_GLYPH)
            continue
        run.append(token)
    if run:
        parts.append(tokenizer.decode(run))
    text = "".join(parts)
    return " ".join(text.split())
