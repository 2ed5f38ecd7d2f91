"""Does a fine-tune's memory hold steady? Resident memory of `unmask train` on the starter, step by step.

A masked-diffusion batch has a different number of masked positions at every step, and the LM
head runs on exactly those; a CPU's matmul kernels keep a compiled plan per shape. The head
therefore runs on a few rounded sizes (model.head_rows). The baseline, in the same run, is the
same training with the head on the exact count, as it ran before. Each runs in its own process
(batch 4, 128-token blocks, a 23 KB corpus, as the audit's job), sampled every 20 steps.

    python bench/train_memory.py             # 300 steps each, about 4 minutes on 2 cores
    python bench/train_memory.py --steps 100
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from common import record

ROOT = Path(__file__).resolve().parents[1]


def run(steps: int, exact: bool, folder: Path) -> list[tuple[int, float, float]]:
    """(step, MB resident, tokens/s) every 20 steps, in a fresh process like a worker's job."""
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(steps), "--folder", str(folder), *(["--exact"] if exact else [])],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    return [tuple(row) for row in json.loads(out.splitlines()[-1])]


def one(steps: int, exact: bool, folder: Path) -> None:
    from diffusion_core import model
    from diffusion_core.runtime import keep_freed_memory
    from diffusion_core.starter import STARTER_DIFFUSION
    from diffusion_core.training import TrainConfig, train

    keep_freed_memory()  # as `unmask train` and the worker do
    if exact:
        model.head_rows = lambda m: m  # the head on the exact count of masked positions
    corpus = folder / "corpus.txt"
    corpus.write_text((ROOT / "docs" / "guide.md").read_text()[:23_000])
    rows: list[tuple[int, float, float]] = []

    def sample(progress) -> None:  # noqa: ANN001
        rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
        rows.append((progress.step, rss / 1024, progress.tokens / progress.elapsed_s))

    config = TrainConfig(data=(str(corpus),), output=str(folder / ("exact" if exact else "rounded")),
                         base=str(STARTER_DIFFUSION), batch_size=4, max_length=128, max_steps=steps, log_every=20,
                         eval_every=10**9, save_every=10**9, device="cpu")  # fmt: skip
    train(config, on_progress=sample, show_progress=False)
    print(json.dumps(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--exact", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        one(args.one, args.exact, args.folder)
        return
    with tempfile.TemporaryDirectory() as tmp, record("train_memory", "Training memory: step by step"):
        exact, rounded = run(args.steps, True, Path(tmp)), run(args.steps, False, Path(tmp))
        print(f"{'step':>5} {'exact head MB':>14} {'rounded head MB':>16}")
        for (step, before, _), (_, after, _) in zip(exact, rounded):
            print(f"{step:>5} {before:>14.0f} {after:>16.0f}")
        for name, rows in (("exact head", exact), ("rounded head", rounded)):
            first, last = rows[0], rows[-1]
            grew = (last[1] - first[1]) / (last[0] - first[0])
            print(f"{name}: {first[1]:.0f} MB at step {first[0]}, {last[1]:.0f} MB at step {last[0]} "
                  f"({grew:+.1f} MB per step); {last[2]:,.0f} tokens/s")  # fmt: skip
        speed = rounded[-1][2] / exact[-1][2]
        growth = (rounded[-1][1] - rounded[0][1]) / max(1.0, exact[-1][1] - exact[0][1])
        print(f"rounded / exact: growth after step {rounded[0][0]} x{growth:.2f}, tokens/s x{speed:.2f}")


if __name__ == "__main__":
    main()
