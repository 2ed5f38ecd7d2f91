"""Training past one process: data-parallel ranks, gradient accumulation and gradient checkpointing.

1. Agreement. A fresh roberta-small on the starter corpus, 20 steps of 16 blocks of 64 tokens, fp32:
   two gloo ranks under torchrun (8 blocks each), one process accumulating 8 x 2, and snapshots moved
   between two ranks and one process, each against one process at batch 16 measured in the same run.
2. Throughput. The starter fine-tuned at the same global batch by one process and by two ranks on
   this host: tokens/s per device and in all.
3. Memory. The starter at batch 32 with and without gradient checkpointing, each in a fresh process:
   peak resident memory (CPU) or peak allocated memory (CUDA), and seconds per step.

    python bench/parallel.py    # targets: differences <= 1e-4; checkpointing uses less memory
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
from dataclasses import asdict, replace
from pathlib import Path

import torch
from common import record

from diffusion_core import checkpoint
from diffusion_core.runtime import quiet_transformers
from diffusion_core.starter import STARTER_DIFFUSION, corpus_folder
from diffusion_core.training import TrainConfig, TrainingCancelled, train

CORPUS = corpus_folder(Path("runs/starter")) / "austen.txt"
STEPS, STOP_AT = 20, 13  # a stopped run's snapshot is at step 10


def agreement_config(out: Path, **changes) -> TrainConfig:
    config = TrainConfig(
        data=(str(CORPUS),), output=str(out), architecture="roberta-small", tokenizer=str(STARTER_DIFFUSION),
        max_length=64, batch_size=16, learning_rate=5e-4, warmup_steps=5, max_steps=STEPS, log_every=1,
        eval_every=10_000, save_every=10, precision="fp32", device="cpu", seed=0,
    )  # fmt: skip
    return replace(config, **changes)


def ranks(config: TrainConfig, stop_after: int = 0) -> None:
    """config trained by two ranks (this script, as each rank), stopped after stop_after steps if given."""
    spec = Path(config.output).with_name("spec.json")
    spec.write_text(json.dumps({"config": asdict(config), "stop_after": stop_after}))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    done = subprocess.run([*command, __file__, "--rank", str(spec)], capture_output=True, text=True, env=env)
    if done.returncode != 0 and not (
        stop_after and Path(config.output).with_name(Path(config.output).name + ".run").is_dir()
    ):
        raise SystemExit(done.stderr[-3000:])


def as_rank(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    config = TrainConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()})
    steps, stop_after = iter(range(1, 1_000_000)), spec["stop_after"]
    try:
        train(config, show_progress=False, should_stop=lambda: bool(stop_after) and next(steps) >= stop_after)
    except TrainingCancelled:
        sys.exit(3)


def stop(config: TrainConfig) -> None:
    """config trained by one process, stopped after STOP_AT steps (its snapshot stays)."""
    steps = iter(range(1, 1_000_000))
    try:
        train(config, show_progress=False, should_stop=lambda: next(steps) >= STOP_AT)
    except TrainingCancelled:
        pass


def differences(model: Path, reference: Path) -> tuple[float, float]:
    """(largest per-step loss difference, largest weight difference)."""
    losses = [[e["loss"] for e in json.loads((m / "training_log.json").read_text())] for m in (model, reference)]
    left, _ = checkpoint.load(model, torch.device("cpu"))
    right, _ = checkpoint.load(reference, torch.device("cpu"))
    weights = max(float((a - b).abs().max()) for a, b in zip(left.state_dict().values(), right.state_dict().values()))
    return max(abs(a - b) for a, b in zip(*losses)), weights


def agreement(root: Path) -> None:
    reference = train(agreement_config(root / "one"), show_progress=False)
    ranks(agreement_config(root / "two", batch_size=8))
    train(agreement_config(root / "accum", batch_size=8, grad_accum=2), show_progress=False)
    ranks(agreement_config(root / "2to1", batch_size=8), stop_after=STOP_AT)
    train(agreement_config(root / "2to1", batch_size=8, grad_accum=2, resume=True), show_progress=False)
    stop(agreement_config(root / "1to2"))
    ranks(agreement_config(root / "1to2", batch_size=8, resume=True))
    rows = [
        ("2 gloo ranks x 8 blocks", root / "two"),
        ("1 process, 8 blocks x accumulation 2", root / "accum"),
        ("snapshot at step 10 by 2 ranks, resumed by 1 process", root / "2to1"),
        ("snapshot at step 10 by 1 process, resumed by 2 ranks", root / "1to2"),
    ]
    print(f"agreement with 1 process x 16 blocks, {STEPS} steps (roberta-small, 64-token blocks, fp32)")
    print(f"{'run':<56}{'max |loss diff|':>16}{'max |weight diff|':>19}")
    for name, path in rows:
        loss, weight = differences(path, reference)
        print(f"{name:<56}{loss:>16.2e}{weight:>19.2e}")


def throughput(root: Path) -> None:
    common = dict(
        data=(str(CORPUS),), base=str(STARTER_DIFFUSION), max_length=128, max_steps=12, warmup_steps=0,
        eval_every=10_000, save_every=10_000, held_out=0.0, device="cpu",
    )  # fmt: skip
    one = train(TrainConfig(output=str(root / "t1"), batch_size=16, **common), show_progress=False)  # type: ignore[arg-type]
    ranks(TrainConfig(output=str(root / "t2"), batch_size=8, **common))  # type: ignore[arg-type]
    print(f"\nthroughput: the starter, 12 steps of 16 blocks of 128 tokens, {os.cpu_count()} CPU cores")
    print(f"{'layout':<40}{'tokens/s in all':>16}{'per device':>12}")
    for name, path in (("1 process", one), ("2 gloo ranks x 8 blocks", root / "t2")):
        training = checkpoint.read_metadata(path)["training"]
        per_device = training["tokens_per_s_per_device"]
        print(f"{name:<40}{per_device * training['ranks']:>16,.0f}{per_device:>12,.0f}")


def memory_probe(on: bool) -> None:
    """In a fresh process: the starter at batch 32 for 3 steps; prints peak memory (MB) and seconds per step."""
    quiet_transformers()
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as out:
        config = TrainConfig(
            data=(str(CORPUS),), output=f"{out}/m", base=str(STARTER_DIFFUSION), max_length=128, batch_size=32,
            max_steps=3, warmup_steps=0, eval_every=10_000, save_every=10_000, held_out=0.0,
            gradient_checkpointing=on,
        )  # fmt: skip
        path = train(config, show_progress=False)
        seconds = checkpoint.read_metadata(path)["training"]["wall_time_s"] / 3
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    print(json.dumps({"peak_mb": peak, "seconds_per_step": seconds}))


def memory() -> None:
    results = {}
    for on in (False, True):
        out = subprocess.run([sys.executable, __file__, "--memory", str(int(on))], capture_output=True, text=True)
        results[on] = json.loads(out.stdout.strip().splitlines()[-1])
    where = "CUDA peak allocated" if torch.cuda.is_available() else "peak resident memory of the process"
    print(f"\nmemory: the starter at batch 32, 128-token blocks ({where})")
    print(f"{'gradient checkpointing':<24}{'peak MB':>10}{'s/step':>9}")
    for on in (False, True):
        print(f"{'on' if on else 'off':<24}{results[on]['peak_mb']:>10,.0f}{results[on]['seconds_per_step']:>9.2f}")
    ratio = results[True]["peak_mb"] / results[False]["peak_mb"]
    slower = results[True]["seconds_per_step"] / results[False]["seconds_per_step"]
    print(f"checkpointing: {ratio:.2f}x the memory, {slower:.2f}x the time per step")


def main() -> None:
    quiet_transformers()
    with tempfile.TemporaryDirectory() as folder:
        agreement(Path(folder))
        throughput(Path(folder))
    memory()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--rank"]:
        as_rank(sys.argv[2])
    elif sys.argv[1:2] == ["--memory"]:
        memory_probe(sys.argv[2] == "1")
    else:
        with record("parallel", "Training past one process: ranks, accumulation and checkpointing"):
            main()
