"""The frame message is declared once (schemas.FrameMessage): what the streams send, what the docs show."""

import json
import re
from pathlib import Path

from diffusion_core import GenerationConfig, animation, create_denoiser, run
from diffusion_core.terminal import TokenPieces
from services.api.schemas import FrameMessage

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _fields(message: dict) -> None:
    assert set(message) == set(FrameMessage.model_fields), "the message and its declaration list the same fields"
    FrameMessage.model_validate(message)


def test_every_frame_the_core_sends_is_the_declared_message(tiny_model, tokenizer):
    config = GenerationConfig(max_new_tokens=8, steps=4, num_samples=2, seed=0)
    state = create_denoiser(tiny_model, tokenizer, "the quick", config)
    pieces = TokenPieces(tokenizer)
    messages = [animation.opening(state, pieces)] + [animation.message(f, pieces) for f in run(tiny_model, state)]
    for message in messages:
        _fields(message)
    _fields(animation.ar_message(["the"], [" quick"], 1, 0.1, 0.01))


def test_the_documented_frame_is_the_declared_message():
    example = re.search(r'```json\n(\{"type": "frame".*?)\n```', DOCS.read_text(), re.S)
    assert example is not None, "docs/api.md shows a frame"
    _fields(json.loads(example.group(1).replace('"..."', '"x"')))
