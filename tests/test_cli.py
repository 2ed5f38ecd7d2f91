import json
import os
import subprocess
import sys

import pytest

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
        "--json",
    )
    result = json.loads(out)
    assert code == 0 and result["seed"] == 1 and result["nfe"] <= 4 and len(result["texts"]) == 1
    assert result["texts"][0].strip(), "the continuation (the prompt is not repeated) is printed"
    code, plain, _ = _run(capsys, "generate", "the quick", "--model", tiny_checkpoint, "--max-new-tokens", 8,
                          "--steps", 4, "--seed", 1)  # fmt: skip
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
