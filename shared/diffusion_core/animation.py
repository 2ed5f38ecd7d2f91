"""Denoising runs as pictures: frame messages, PNG stills, an animated GIF, a self-contained HTML player.

Everything here works from *frame messages*, the JSON the WebSocket sends the viewer (one per
step: a text piece, mask flag, reveal flag and confidence per position). The CLI builds them from
core Frames, the server receives them back from the viewer for its GIF export: one format, one
renderer. The font is the TrueType font bundled with Pillow, so a picture is the same on every
machine.
"""

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from html import escape
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .config import GenerationConfig
from .denoise import Denoiser, Frame, create_denoiser, run
from .errors import TooLargeError
from .manifest import write_bytes
from .terminal import TokenPieces

Message = dict[str, Any]

WIDTH = 760
MARGIN = 16
FONT_SIZE = 17
LINE = 27
MASK_WIDTH = 26
FRAME_MS = 300  # each step on screen in a GIF
HOLD_MS = 2500  # the finished text stays this long before the GIF loops
COLORS = {
    "background": (255, 255, 255),
    "text": (34, 34, 34),
    "muted": (110, 110, 110),
    "prompt": (31, 78, 153),
    "masked": (214, 214, 214),
    "new": (255, 213, 79),
    "edited": (128, 203, 196),
    "bar": (31, 78, 153),
    "track": (230, 230, 230),
}
# What one server-side rendering may cost: the viewer's largest runs fit well inside these.
MAX_FRAMES = 1025  # a 1024-step run and its opening canvas
MAX_POSITIONS = 600_000  # token positions over all frames (each is measured to lay the text out)
MAX_LINES = 400  # lines of text in one frame (about 11,000 pixels tall; /render/html has no such limit)
MAX_PIXELS = 160_000_000  # all frames together, at the tallest frame's height (the GIF encoder keeps a byte each)
RENDER_TIMEOUT_S = 60.0  # drawing stops here with TooLargeError
LEGEND = (
    ("prompt", "prompt"),
    ("masked", "still masked"),
    ("new", "revealed at this step"),
    ("text", "earlier"),
    ("edited", "edited"),
)


def _samples(frame: Frame, pieces: TokenPieces) -> list[dict[str, Any]]:
    samples = []
    for row in range(frame.tokens.shape[0]):
        keep = frame.live[row]
        conf = frame.confidence[row][keep].tolist()
        samples.append(
            {
                "tokens": pieces(frame.tokens[row][keep].tolist()),
                "masked": frame.masked[row][keep].tolist(),
                "revealed": frame.revealed[row][keep].tolist(),
                "edited": frame.edited[row][keep].tolist(),
                "fixed": frame.fixed[row][keep].tolist(),
                "confidence": [None if c != c else round(c, 4) for c in conf],
            }
        )
    return samples


def message(frame: Frame, pieces: TokenPieces) -> Message:
    """One step as the viewer receives it: per sample, the piece, mask, reveal and confidence of each position."""
    timing = {
        "forward_ms": round(frame.forward_s * 1000, 2),
        "step_ms": round(frame.step_s * 1000, 2),
        "elapsed_ms": round(frame.elapsed_s * 1000, 2),
    }
    return {"type": "frame", "step": frame.step, "steps": frame.steps, "block": frame.block, "done": frame.done,
            "prompt_length": frame.prompt_length, "samples": _samples(frame, pieces), "timing": timing}  # fmt: skip


def opening(state: Denoiser, pieces: TokenPieces) -> Message:
    """Step 0: the prompt and every mask, before the first forward pass (call it before the first step)."""
    return message(state.frame(), pieces)


def ar_message(prompt: list[str], written: list[str], step: int, elapsed_s: float, forward_s: float) -> Message:
    """One token of autoregressive decoding in the same shape, so both sides render alike."""
    n = len(prompt) + len(written)
    sample = {
        "tokens": prompt + written,
        "masked": [False] * n,
        "revealed": [False] * (n - 1) + [bool(written)],
        "edited": [False] * n,
        "fixed": [True] * len(prompt) + [False] * len(written),
        "confidence": [None] * n,
    }
    timing = {"forward_ms": round(forward_s * 1000, 2), "step_ms": 0.0, "elapsed_ms": round(elapsed_s * 1000, 2)}
    return {"type": "frame", "step": step, "steps": None, "block": 0, "done": False, "samples": [sample],
            "prompt_length": len(prompt), "timing": timing}  # fmt: skip


def diffusion_messages(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, config: GenerationConfig
) -> Iterator[Message]:
    """The opening canvas, then one message per denoising step."""
    pieces = TokenPieces(tokenizer)
    state = create_denoiser(model, tokenizer, prompt, config)
    yield opening(state, pieces)
    for frame in run(model, state):
        yield message(frame, pieces)


def ar_messages(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    max_new_tokens: int,
    top_p: float = 0.9,
    temperature: float = 1.0,
    seed: int = 0,
    forbid_eos: bool = False,
) -> Iterator[Message]:
    """The prompt, then one message per token of the causal LM (one forward pass each)."""
    from .autoregressive import sample

    pieces = TokenPieces(tokenizer)
    prompt_pieces = pieces(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    yield ar_message(prompt_pieces, [], 0, 0.0, 0.0)
    started = time.perf_counter()
    decoding = sample(model, tokenizer, prompt, max_new_tokens, top_p, temperature, seed, forbid_eos)
    for step, (ids, forward_s) in enumerate(decoding):
        yield ar_message(prompt_pieces, pieces(ids), step + 1, time.perf_counter() - started, forward_s)


@dataclass(frozen=True)
class _Token:
    text: str
    role: str  # prompt | masked | new | edited | text
    space: bool  # a space before it


def _tokens(msg: Message, sample: int = 0) -> list[_Token]:
    s = msg["samples"][sample]
    out = []
    edited = s.get("edited") or [False] * len(s["tokens"])
    for piece, masked, revealed, fixed, changed in zip(s["tokens"], s["masked"], s["revealed"], s["fixed"], edited):
        if not masked and not piece.strip():
            continue
        role = "masked" if masked else "prompt" if fixed else "edited" if changed else "new" if revealed else "text"
        out.append(_Token(piece.strip(), role, masked or piece[:1].isspace()))
    return out


@cache
def font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont:
    loaded = ImageFont.load_default(size)
    assert isinstance(loaded, ImageFont.FreeTypeFont), "Pillow was built without FreeType"
    return loaded


def _layout(tokens: list[_Token], width: int) -> list[tuple[_Token, float, int]]:
    """(token, x, line) for each token, wrapped at `width`."""
    f, space = font(), font().getlength(" ")
    x, line, placed = 0.0, 0, []
    for token in tokens:
        w = MASK_WIDTH if token.role == "masked" else f.getlength(token.text)
        gap = space if token.space and x > 0 else 0.0
        if x + gap + w > width and x > 0:
            x, line, gap = 0.0, line + 1, 0.0
        placed.append((token, x + gap, line))
        x += gap + w
    return placed


def _header(msg: Message, label: str) -> str:
    step, steps = msg["step"], msg.get("steps")
    elapsed = msg["timing"]["elapsed_ms"] / 1000
    counter = f"step {step}/{steps}" if steps else f"token {step}"
    return f"{label + '  ' if label else ''}{counter}  ·  {elapsed:.2f} s  ·  {step} forward passes"


def draw(
    msg: Message, width: int = WIDTH, lines: int | None = None, label: str = "", progress: float | None = None
) -> Image.Image:
    """One frame message as an RGB image (height fits `lines` lines of text, default: its own)."""
    f = font()
    placed = _layout(_tokens(msg), width - 2 * MARGIN)
    n_lines = lines or (placed[-1][2] + 1 if placed else 1)
    top = MARGIN + LINE + 14
    height = top + n_lines * LINE + MARGIN + LINE
    image = Image.new("RGB", (width, height), COLORS["background"])
    pen = ImageDraw.Draw(image)
    pen.text((MARGIN, MARGIN), _header(msg, label), font=f, fill=COLORS["muted"])
    done = progress if progress is not None else (msg["step"] / msg["steps"] if msg.get("steps") else 1.0)
    bar_y = MARGIN + LINE
    pen.rectangle((MARGIN, bar_y, width - MARGIN, bar_y + 5), fill=COLORS["track"])
    pen.rectangle((MARGIN, bar_y, MARGIN + (width - 2 * MARGIN) * min(1.0, done), bar_y + 5), fill=COLORS["bar"])
    for token, x, line in placed:
        x0, y0 = MARGIN + x, top + line * LINE
        if token.role == "masked":
            pen.rounded_rectangle((x0, y0 + 3, x0 + MASK_WIDTH - 4, y0 + LINE - 5), 4, fill=COLORS["masked"])
            continue
        if token.role in ("new", "edited"):
            box = (x0 - 1, y0 + 2, x0 + f.getlength(token.text) + 1, y0 + LINE - 3)
            pen.rectangle(box, fill=COLORS[token.role])
        pen.text((x0, y0 + 3), token.text, font=f, fill=COLORS["prompt" if token.role == "prompt" else "text"])
    _legend(pen, height - MARGIN - LINE + 6)
    return image


def _legend(pen: ImageDraw.ImageDraw, y: int) -> None:
    small, x = font(13), MARGIN
    for color, name in LEGEND:
        pen.rectangle((x, y + 3, x + 12, y + 15), fill=COLORS[color])
        pen.text((x + 17, y + 1), name, font=small, fill=COLORS["muted"])
        x += 17 + int(small.getlength(name)) + 18


def _lines(messages: Sequence[Message], width: int) -> int:
    return max(
        (_layout(_tokens(m), width - 2 * MARGIN)[-1][2] + 1 for m in messages if _tokens(m)),
        default=1,
    )


def stills(
    messages: Sequence[Message], width: int = WIDTH, label: str = "", timeout_s: float | None = None
) -> list[Image.Image]:
    """One paletted image per frame message, all the same size; TooLargeError past the limits above."""
    return list(drawing(messages, width, label, timeout_s))


def drawing(
    messages: Sequence[Message], width: int = WIDTH, label: str = "", timeout_s: float | None = None
) -> Iterator[Image.Image]:
    """`stills` one at a time: the limits are checked now, each frame is drawn when it is asked for."""
    lines = _sized(messages, width)
    return _in_time(lambda m: draw(m, width, lines, label), messages, timeout_s or RENDER_TIMEOUT_S, "fewer frames")


def _in_time(
    picture: Callable[[Any], Image.Image], items: Sequence[Any], timeout_s: float, advice: str
) -> Iterator[Image.Image]:
    """picture(item) for each item, paletted, drawn as asked for; TooLargeError once `timeout_s` (counted
    from now) has passed."""
    deadline = time.monotonic() + timeout_s

    def each() -> Iterator[Image.Image]:
        for item in items:
            if time.monotonic() > deadline:
                raise TooLargeError(f"drawing took longer than {timeout_s:.0f} s; send {advice}")
            yield _paletted(picture(item))

    return each()


def _sized(messages: Sequence[Message], width: int) -> int:
    """The lines every frame is drawn with; TooLargeError naming the limit a request passes."""
    if len(messages) > MAX_FRAMES:
        raise TooLargeError(f"{len(messages)} frames; at most {MAX_FRAMES} can be drawn", "frames")
    positions = sum(len(s["tokens"]) for m in messages for s in m["samples"][:1])
    if positions > MAX_POSITIONS:
        raise TooLargeError(f"{positions:,} token positions in all; at most {MAX_POSITIONS:,} can be drawn", "frames")
    lines = _lines(messages, width)
    if lines > MAX_LINES:
        raise TooLargeError(
            f"a frame has {lines:,} lines of text; a GIF frame may have at most {MAX_LINES}"
            " (the HTML export has no such limit)",
            "frames",
        )
    _check_pixels(len(messages), width, lines)
    return lines


def _check_pixels(frames: int, width: int, lines: int) -> None:
    height = MARGIN + LINE + 14 + lines * LINE + MARGIN + LINE
    if frames * width * height > MAX_PIXELS:
        raise TooLargeError(
            f"{frames} frames of {width}x{height} pixels exceed the {MAX_PIXELS:,} one animation may have", "frames"
        )


def _blend(a: tuple[int, int, int], b: tuple[int, int, int], share: float) -> tuple[int, ...]:
    return tuple(round(x + (y - x) * share) for x, y in zip(a, b))


# Each ink and the ground it is drawn on: the anti-aliased edges of text and shapes are their blends.
_INKS = (("text", "background"), ("text", "new"), ("text", "edited"), ("prompt", "background"),
         ("muted", "background"), ("masked", "background"), ("bar", "track"))  # fmt: skip


@cache
def _palette() -> Image.Image:
    """One palette for every frame: each colour and eight blends of every ink over its ground.

    Frames that share a palette need no colour table of their own, and the GIF encoder compares
    them index by index instead of converting each pair to RGBA."""
    colors: dict[tuple[int, ...], None] = dict.fromkeys(COLORS.values())
    for ink, ground in _INKS:
        colors.update(dict.fromkeys(_blend(COLORS[ink], COLORS[ground], n / 8) for n in range(9)))
    palette = Image.new("P", (1, 1))
    palette.putpalette([channel for color in colors for channel in color])
    return palette


def _paletted(image: Image.Image) -> Image.Image:
    """One byte per pixel, each the nearest colour of the shared palette, so a long run stays small in memory."""
    return image.quantize(palette=_palette(), dither=Image.Dither.NONE)


def gif_bytes(
    images: Iterable[Image.Image], frames: int | None = None, frame_ms: int = FRAME_MS, hold_ms: int = HOLD_MS
) -> bytes:
    """An animated GIF: one frame per image, the last one held before it loops.

    `images` may be drawn as the encoder takes them (`drawing`; say how many in `frames`): the
    encoder's own copy of each frame is then the only one in memory."""
    count = frames if frames is not None else len(images)  # type: ignore[arg-type]
    assert count, "nothing to animate"
    durations = [frame_ms] * (count - 1) + [hold_ms]
    frames_in = (im if im.mode == "P" else _paletted(im) for im in images)
    buffer = BytesIO()
    first = next(frames_in)
    first.save(buffer, format="GIF", save_all=True, append_images=frames_in, duration=durations, loop=0, optimize=False)
    return buffer.getvalue()


def gif(messages: Sequence[Message], width: int = WIDTH, label: str = "") -> bytes:
    """Frame messages as an animated GIF, each frame drawn only when the encoder takes it."""
    return gif_bytes(drawing(messages, width, label), len(messages))


def save_gif(images: Sequence[Image.Image], path: str | Path) -> Path:
    """gif_bytes written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, gif_bytes(images))
    return path


def save_pngs(images: Sequence[Image.Image], folder: str | Path) -> list[Path]:
    """Numbered PNGs (0000.png ...), each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, image in enumerate(images):
        buffer = BytesIO()
        image.save(buffer, format="PNG")
        write_bytes(folder / f"{n:04d}.png", buffer.getvalue())
        paths.append(folder / f"{n:04d}.png")
    return paths


def synchronised(left: Sequence[Message], right: Sequence[Message], fps: float = 10.0) -> list[tuple[Message, Message]]:
    """Pairs of (left, right) frames on a common wall clock: at each tick, each side's latest frame."""
    end = max(left[-1]["timing"]["elapsed_ms"], right[-1]["timing"]["elapsed_ms"]) / 1000
    ticks = max(1, math.ceil(end * fps)) + 1
    pairs = []
    for tick in range(ticks):
        t = tick / fps * 1000
        pairs.append((_at(left, t), _at(right, t)))
    return pairs


def _at(messages: Sequence[Message], t_ms: float) -> Message:
    current = messages[0]
    for m in messages:
        if m["timing"]["elapsed_ms"] > t_ms:
            break
        current = m
    return current


def side_by_side(
    diffusion: Sequence[Message], autoregressive: Sequence[Message], fps: float = 10.0, width: int = 560
) -> list[Image.Image]:
    """Diffusion on the left, autoregressive on the right, frame for frame on one wall clock."""
    return list(side_by_side_drawing(diffusion, autoregressive, fps, width)[1])


def side_by_side_drawing(
    diffusion: Sequence[Message], autoregressive: Sequence[Message], fps: float = 10.0, width: int = 560
) -> tuple[int, Iterator[Image.Image]]:
    """`side_by_side` one picture at a time, and how many: the limits are checked now (each side's, and
    the pixels of every picture at its full width)."""
    pairs = synchronised(diffusion, autoregressive, fps)
    lines = max(_sized(diffusion, width), _sized(autoregressive, width))
    _check_pixels(len(pairs), 2 * width + 2, lines)

    def both(pair: tuple[Message, Message]) -> Image.Image:
        left, right = pair
        a = draw(left, width, lines, "diffusion")
        b = draw(right, width, lines, "autoregressive", progress=_share(right, autoregressive))
        picture = Image.new("RGB", (a.width + b.width + 2, a.height), COLORS["track"])
        picture.paste(a, (0, 0))
        picture.paste(b, (a.width + 2, 0))
        return picture

    return len(pairs), _in_time(both, pairs, RENDER_TIMEOUT_S, "a shorter run")


def side_by_side_gif(diffusion: Sequence[Message], autoregressive: Sequence[Message], fps: float = 10.0) -> bytes:
    """Both runs as one animated GIF on a common clock, each picture drawn when the encoder takes it."""
    count, pictures = side_by_side_drawing(diffusion, autoregressive, fps)
    return gif_bytes(pictures, count, frame_ms=round(1000 / fps))


def _share(msg: Message, run: Sequence[Message]) -> float:
    return msg["step"] / max(1, run[-1]["step"])


PLAYER = Path(__file__).parent / "player.html"  # the page template: __TITLE__ and __FRAMES__ filled in


def html(messages: Sequence[Message], title: str) -> str:
    """A self-contained page that replays the run (play, pause, step, scrub); no network needed.

    Both fields are filled in one pass (a title cannot smuggle in the other placeholder), the title
    HTML-escaped and the frames as JSON with <, > and & escaped, so no token can close the script."""
    data = json.dumps(list(messages)).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    values = {"__TITLE__": escape(title), "__FRAMES__": data}
    return re.sub("__TITLE__|__FRAMES__", lambda match: values[match.group()], PLAYER.read_text())
