"""Log-probabilities in OpenAI's shapes: a completion's `logprobs` and a chat reply's `logprobs.content`.

Each token's log-probability is the one it had when it was written (a diffusion model commits tokens in
any order, each from the distribution of the pass that wrote it), and its alternatives are that
distribution's most likely tokens.
"""

from typing import Any

from .schemas import Token


def completion(tokens: list[Token], top: list[list[Token]] | None, offset: int) -> dict[str, Any]:
    """OpenAI's legacy shape; each top_logprobs entry holds the n most likely tokens (none without `top`) and
    the one written."""
    starts, at = [], offset
    for t in tokens:
        starts.append(at)
        at += len(t.text)
    alternatives = [{**{a.text: a.logprob for a in alts}, t.text: t.logprob} for t, alts in
                    zip(tokens, top or [[]] * len(tokens))]  # fmt: skip
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": alternatives,
        "text_offset": starts,
    }


def chat(tokens: list[Token], top: list[list[Token]] | None) -> list[dict[str, Any]]:
    """Chat's `logprobs.content`: one entry per token, with its bytes and its alternatives."""
    return [{**_entry(t), "top_logprobs": [_entry(a) for a in (top[k] if top else [])]} for k, t in enumerate(tokens)]


def _entry(token: Token) -> dict[str, Any]:
    return {"token": token.text, "logprob": token.logprob, "bytes": list(token.text.encode())}


def covering(tokens: list[Token], length: int) -> int:
    """How many leading tokens the first `length` characters of their (left-stripped) text hold: the tokens
    of a reply cut at a stop string."""
    text = ""
    for n, t in enumerate(tokens):
        if len((text + t.text).lstrip()) > length:
            return n
        text += t.text
    return len(tokens)
