"""Data-parallel training: two gloo ranks under a real torchrun train exactly as one process with the same
global batch does; accumulation equals a larger batch; snapshots move between world sizes."""

import json
import os
import random
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from diffusion_core import checkpoint
from diffusion_core.errors import ConfigError
from diffusion_core.tokenizer import train_bpe
from diffusion_core.training import TrainConfig, TrainingCancelled, train

PAIR = ["the quick brown fox jumps over the lazy dog", "a small grey cat sleeps under the warm sun"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("ranks")
    rng = random.Random(1)
    (root / "corpus.txt").write_text("\n\n".join(rng.choice(PAIR) + " " + rng.choice(PAIR) for _ in range(300)))
    train_bpe(PAIR * 50, vocab_size=400, max_length=64).save_pretrained(root / "tokenizer")
    return root


def base_config(corpus: Path, output: Path, **overrides) -> TrainConfig:
    values = dict(
        data=(str(corpus / "corpus.txt"),),
        output=str(output),
        architecture="roberta-tiny",
        tokenizer=str(corpus / "tokenizer"),
        max_length=24,
        prefix_max=4,
        batch_size=16,
        learning_rate=2e-3,
        warmup_steps=5,
        max_steps=20,
        log_every=1,
        eval_every=1000,
        save_every=10,
        precision="fp32",
        device="cpu",
    )
    return TrainConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory) -> Path:
    """The reference: one process, batch 16, 20 steps."""
    return train(base_config(corpus, tmp_path_factory.mktemp("one") / "model"), show_progress=False)


def torchrun(*args: str, ranks: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def run_ranks(spec: dict, path: Path, ranks: int = 2) -> subprocess.CompletedProcess:
    path.write_text(json.dumps(spec))
    return torchrun(str(Path(__file__).with_name("ranks.py")), str(path), ranks=ranks)


def step_losses(model: Path) -> list[float]:
    return [entry["loss"] for entry in json.loads((model / "training_log.json").read_text())]


def assert_same_weights(a: Path, b: Path) -> None:
    left, _ = checkpoint.load(a, torch.device("cpu"))
    right, _ = checkpoint.load(b, torch.device("cpu"))
    for (name, x), y in zip(left.state_dict().items(), right.state_dict().values()):
        assert (x - y).abs().max() <= TOLERANCE, f"{name} differs by {(x - y).abs().max():.2e}"


def test_two_ranks_under_torchrun_train_as_one_process_with_the_same_global_batch(corpus, one_process, tmp_path):
    out = tmp_path / "two"
    done = torchrun(
        "-m", "diffusion_core.cli", "train", str(corpus / "corpus.txt"), "--output", str(out),
        "--architecture", "roberta-tiny", "--tokenizer", str(corpus / "tokenizer"), "--max-length", "24",
        "--prefix-max", "4", "--batch-size", "8", "--learning-rate", "2e-3", "--warmup-steps", "5",
        "--max-steps", "20", "--log-every", "1", "--eval-every", "1000", "--precision", "fp32", "--device", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("checkpoint written to") == 1, "rank 0 alone publishes and says so"
    ours, reference = step_losses(out), step_losses(one_process)
    assert len(ours) == len(reference) == 20
    assert max(abs(a - b) for a, b in zip(ours, reference)) <= TOLERANCE, (ours, reference)
    assert_same_weights(out, one_process)
    training = checkpoint.read_metadata(out)["training"]
    assert (training["ranks"], training["batch_size"], training["effective_batch"]) == (2, 8, 16)
    assert training["tokens_seen"] == checkpoint.read_metadata(one_process)["training"]["tokens_seen"]
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "two.run").exists()


def test_gradient_accumulation_equals_the_larger_batch(corpus, one_process, tmp_path):
    accumulated = train(base_config(corpus, tmp_path / "accum", batch_size=8, grad_accum=2), show_progress=False)
    ours, reference = step_losses(accumulated), step_losses(one_process)
    assert max(abs(a - b) for a, b in zip(ours, reference)) <= TOLERANCE
    assert_same_weights(accumulated, one_process)
    assert checkpoint.read_metadata(accumulated)["training"]["effective_batch"] == 16


def test_a_stop_asked_by_one_rank_stops_both_and_the_snapshot_resumes_in_one_process(corpus, one_process, tmp_path):
    out = tmp_path / "m"
    spec = {"config": asdict(base_config(corpus, out, batch_size=8)), "stop_rank": 1, "stop_after": 15}
    stopped = run_ranks(spec, tmp_path / "spec.json")
    assert stopped.returncode != 0
    assert (tmp_path / "cancelled.0").exists(), f"rank 0 did not stop by itself: {stopped.stderr[-3000:]}"
    state = json.loads((tmp_path / "m.run" / "state.json").read_text())
    assert state["step"] == 10 and state["global_batch"] == 16 and not out.exists()

    with pytest.raises(ConfigError, match="effective batch of 16.*grad_accum") as wrong:
        train(base_config(corpus, out, batch_size=8, resume=True), show_progress=False)
    assert wrong.value.param == "grad_accum"
    resumed = train(base_config(corpus, out, batch_size=8, grad_accum=2, resume=True), show_progress=False)
    assert step_losses(resumed)[-1] == pytest.approx(step_losses(one_process)[-1], abs=TOLERANCE)
    assert_same_weights(resumed, one_process)


def test_a_one_process_snapshot_resumes_on_two_ranks(corpus, one_process, tmp_path):
    out = tmp_path / "m"
    steps = iter(range(1, 100))
    with pytest.raises(TrainingCancelled):
        train(base_config(corpus, out), show_progress=False, should_stop=lambda: next(steps) >= 13)
    assert json.loads((tmp_path / "m.run" / "state.json").read_text())["step"] == 10
    spec = {"config": asdict(base_config(corpus, out, batch_size=8, resume=True))}
    done = run_ranks(spec, tmp_path / "spec.json")
    assert done.returncode == 0, done.stderr[-3000:]
    assert [e["step"] for e in json.loads((out / "training_log.json").read_text())][-10:] == list(range(11, 21))
    assert_same_weights(out, one_process)


def test_gradient_checkpointing_keeps_fewer_activations_for_the_same_result(corpus, tmp_path):
    saved: dict[bool, int] = {}
    outputs = {}
    for on in (False, True):
        saved[on] = 0

        def pack(tensor: torch.Tensor, on: bool = on) -> torch.Tensor:
            saved[on] += tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            config = base_config(corpus, tmp_path / f"gc{on}", max_steps=3, gradient_checkpointing=on)
            outputs[on] = train(config, show_progress=False)
    assert saved[True] < 0.7 * saved[False], saved
    assert_same_weights(outputs[True], outputs[False])
    assert step_losses(outputs[True]) == pytest.approx(step_losses(outputs[False]), abs=1e-5)
    assert checkpoint.read_metadata(outputs[True])["training"]["gradient_checkpointing"] is True
