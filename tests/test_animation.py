"""Pictures of a run: `unmask visualize`, `unmask compare`, and the renderer they share with the server."""

import json

import pytest
from PIL import Image

from diffusion_core import animation
from diffusion_core.cli import main

ARGS = ["--max-new-tokens", "12", "--steps", "6", "--seed", "3", "--device", "cpu", "--sampling", "greedy"]


def test_visualize_writes_a_gif_pngs_and_a_player(tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "viz"
    assert main(["visualize", "the quick", "--out", str(out), "--model", str(tiny_checkpoint), *ARGS]) == 0
    gif = Image.open(out / "run.gif")
    assert gif.n_frames == 6 + 1  # the opening canvas, then one frame per step
    pngs = sorted((out / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"{n:04d}.png" for n in range(7)]
    sizes = {Image.open(p).size for p in pngs}
    assert sizes == {gif.size} and gif.width == animation.WIDTH
    first, last = Image.open(pngs[0]).convert("RGB"), Image.open(pngs[-1]).convert("RGB")
    grey = animation.COLORS["masked"]
    assert _pixels(first, grey) > _pixels(last, grey)
    page = (out / "run.html").read_text()
    assert "http" not in page.split("<script>")[1] and "the quick" in page
    assert "7 frames (6 steps" in capsys.readouterr().out


def _pixels(image: Image.Image, color: tuple[int, int, int]) -> int:
    return {c: n for n, c in image.getcolors(maxcolors=1 << 20)}.get(color, 0)


def test_drawing_uses_the_font_shipped_with_pillow_and_is_deterministic():
    assert animation.font().getname() == ("Aileron", "Regular")  # bundled in Pillow, not a system font
    frames = [_msg(0, 0.0), _msg(1, 40.0)]
    first, again = animation.gif_bytes(animation.stills(frames)), animation.gif_bytes(animation.stills(frames))
    assert first == again


def test_compare_puts_both_on_one_clock(tiny_checkpoint, tiny_twin, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["compare", "the quick", "--out", str(out), "--model", str(tiny_checkpoint), "--ar-model", str(tiny_twin)]
    assert main([*args, *ARGS, "--fps", "50"]) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert summary["diffusion"]["forward_passes"] <= 6 and summary["autoregressive"]["forward_passes"] >= 1
    assert summary["diffusion"]["tokens"] == 12
    gif = Image.open(out / "compare.gif")
    end = max(summary["diffusion"]["seconds"], summary["autoregressive"]["seconds"])
    assert abs(gif.n_frames - (end * 50 + 1)) <= 2 and gif.width == 2 * 560 + 2
    durations = []
    for n in range(gif.n_frames):
        gif.seek(n)
        durations.append(gif.info["duration"])
    assert set(durations[:-1]) == {20}, "a picture per tick of the wall clock: 50 a second"
    assert "forward passes" in capsys.readouterr().out


def test_compare_without_a_twin_names_the_flag(tiny_checkpoint, tmp_path, capsys):
    assert main(["compare", "x", "--out", str(tmp_path), "--model", str(tiny_checkpoint)]) == 2
    assert "--ar-model" in capsys.readouterr().err


def _msg(step: int, ms: float) -> dict:
    sample = {"tokens": [" a"], "masked": [False], "revealed": [True], "fixed": [False], "confidence": [None]}
    return {"step": step, "steps": 3, "samples": [sample], "timing": {"elapsed_ms": ms}}


def test_synchronised_shows_each_sides_latest_frame_at_every_tick():
    fast = [_msg(0, 0), _msg(1, 40), _msg(2, 80)]
    slow = [_msg(0, 0), _msg(1, 150), _msg(2, 290)]
    pairs = animation.synchronised(fast, slow, fps=10)
    assert len(pairs) == 4  # ticks at 0, 100, 200, 300 ms
    assert [(a["step"], b["step"]) for a, b in pairs] == [(0, 0), (2, 0), (2, 1), (2, 2)]


def test_drawing_stops_at_its_deadline_with_a_clear_error():
    from diffusion_core.errors import TooLargeError

    frames = [_msg(step, 10.0 * step) for step in range(3)]
    assert len(animation.stills(frames, timeout_s=60)) == 3
    with pytest.raises(TooLargeError, match="drawing took longer than 0 s; send fewer frames"):
        animation.stills(frames, timeout_s=1e-9)
