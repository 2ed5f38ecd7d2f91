"""Frames as text: the terminal view of `unmask generate --show-steps`."""

from transformers import PreTrainedTokenizerBase

from .denoise import Frame
from .model import SpecialTokens

MASK_GLYPH = "\u2591"  # light shade: one per masked position
_CLOSING = set(".,;:!?)]}”’")  # WordPiece punctuation that attaches to the word before it


def frame_text(tokenizer: PreTrainedTokenizerBase, frame: Frame, row: int = 0) -> str:
    """One row of a frame as a line of text, each masked position shown as a shade block."""
    special = SpecialTokens.of(tokenizer)
    parts: list[str] = []
    run: list[int] = []
    for token, masked, live in zip(frame.tokens[row].tolist(), frame.masked[row].tolist(), frame.live[row].tolist()):
        if masked or not live or token in (special.start, special.end):
            if run:
                parts.append(str(tokenizer.decode(run)))
                run = []
            if masked:
                parts.append(MASK_GLYPH)
            continue
        run.append(token)
    if run:
        parts.append(str(tokenizer.decode(run)))
    return " ".join(" ".join(parts).split())


class TokenPieces:
    """Token id -> the text it adds when it follows other text ('' for special tokens), cached."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.special = set(tokenizer.all_special_ids)
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.wordpiece = backend is not None and type(backend.model).__name__ == "WordPiece"
        self.cache: dict[int, str] = {}

    def __call__(self, ids: list[int]) -> list[str]:
        return [self.cache[i] if i in self.cache else self._piece(i) for i in ids]

    def _piece(self, token_id: int) -> str:
        if token_id in self.special:
            piece = ""
        elif self.wordpiece:
            token = str(self.tokenizer.convert_ids_to_tokens(token_id))
            piece = token[2:] if token.startswith("##") else ("" if token in _CLOSING else " ") + token
        else:
            piece = str(self.tokenizer.decode([token_id], clean_up_tokenization_spaces=False))
        self.cache[token_id] = piece
        return piece
