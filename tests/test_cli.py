import json
import os
import subprocess
import sys

import pytest
import torch

from diffusion_core import GenerationConfig, checkpoint, generate
from diffusion_core.cli import main


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_generate_prints_the_continuation(capsys, tiny_checkpoint):
    code, out, _ = _run(
        capsys,
        "generate",
        "the quick",
        "--model",
        tiny_checkpoint,
        "--max-new-tokens",
        8,
        "--steps",
        4,
        "--seed",
        1,
        "--dtype",
        "float32",
        "--json",
    )
    result = json.loads(out)
    assert code == 0 and result["seed"] == 1 and result["nfe"] <= 4 and len(result["texts"]) == 1
    model, tokenizer = checkpoint.load(tiny_checkpoint, torch.device("cpu"))
    expected = generate(model, tokenizer, "the quick", GenerationConfig(max_new_tokens=8, steps=4, seed=1)).texts[0]
    assert result["texts"][0] == expected != "", "the continuation, as the library writes it (not the prompt)"
    code, plain, _ = _run(capsys, "generate", "the quick", "--model", tiny_checkpoint, "--max-new-tokens", 8,
                          "--steps", 4, "--seed", 1, "--dtype", "float32")  # fmt: skip
    assert code == 0 and plain == result["texts"][0] + "\n", "without --json it prints the same text alone"


def test_show_steps_prints_one_line_per_step_with_masks_shrinking(capsys, tiny_checkpoint):
    code, out, _ = _run(
        capsys,
        "generate",
        "the quick",
        "--model",
        tiny_checkpoint,
        "--max-new-tokens",
        8,
        "--steps",
        4,
        "--seed",
        1,
        "--show-steps",
        "--forbid-eos",
    )
    steps = [line for line in out.splitlines() if line.startswith("[")]
    assert code == 0 and len(steps) == 4
    shades = [line.count("\u2591") for line in steps]
    assert shades == sorted(shades, reverse=True) and shades[-1] == 0
    assert all(line.split("] ", 1)[1].startswith("the quick") for line in steps)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--schedule", "quadratic"], "unknown schedule 'quadratic'"),
        (["--sampling", "beam"], "unknown sampling rule 'beam'"),
        (["--remasking", "oracle"], "unknown remasking rule 'oracle'"),
        (["--max-new-tokens", "500", "--block-length", "0"], "set block_length"),
        (["--steps", "0"], "steps must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2(capsys, tiny_checkpoint, extra, message):
    code, _, err = _run(capsys, "generate", "the", "--model", tiny_checkpoint, *extra)
    assert code == 2
    assert err.count("\n") == 1 and message in err


def test_tampered_checkpoint_fails_without_traceback(tiny_checkpoint, tmp_path):
    import shutil

    copy = tmp_path / "c"
    shutil.copytree(tiny_checkpoint, copy)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("64", "65", 1))
    result = subprocess.run(
        [sys.executable, "-m", "diffusion_core.cli", "generate", "hi", "--model", str(copy)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "config.json does not match its manifest" in result.stderr


def test_missing_checkpoint_is_named(capsys, tmp_path):
    code, _, err = _run(capsys, "generate", "hi", "--model", tmp_path / "nope")
    assert code == 2 and "nope: no such checkpoint directory" in err


def test_a_bad_port_variable_is_one_line_for_serve_and_harmless_elsewhere():
    env = {**os.environ, "UNMASK_PORT": "eighty"}
    run = [sys.executable, "-m", "diffusion_core.cli"]
    helped = subprocess.run([*run, "generate", "--help"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "Traceback" not in helped.stderr
    served = subprocess.run([*run, "serve"], env=env, capture_output=True, text=True)
    assert served.returncode == 2 and "Traceback" not in served.stderr
    assert served.stderr.startswith("unmask: error: UNMASK_PORT ") and served.stderr.count("\n") == 1


def test_a_sample_that_ends_early_says_so_and_why(capsys, tiny_checkpoint):
    """Asked for many tokens, a sample that writes its end token first is not silently short."""
    for seed in range(40):
        code, out, err = _run(capsys, "generate", "the", "--model", tiny_checkpoint, "--max-new-tokens", 48,
                              "--steps", 12, "--seed", seed, "--sampling", "temperature")  # fmt: skip
        if "ended at its end token" in err:
            assert code == 0 and "of 48 tokens (--forbid-eos writes them all)" in err
            return
    pytest.fail("no seed ended early")


def test_a_long_generation_in_a_terminal_shows_its_progress(tiny_checkpoint):
    """On a terminal, `unmask generate` draws a bar of forward passes on stderr while it works."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    command = [sys.executable, "-m", "diffusion_core.cli", "generate", "the", "--model", str(tiny_checkpoint),
               "--max-new-tokens", "40", "--steps", "20", "--seed", "0", "--forbid-eos"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=follower)
    os.close(follower)  # the child holds its own end; reading stops when it exits
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip()
    assert b"/20 [" in shown and b"pass/s" in shown, shown[-300:]  # the bar counts the 20 planned passes
