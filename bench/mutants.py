"""A mutation check of the core: plausible one-line bugs, each applied alone, and whether the tests kill it.

Each mutant replaces one snippet of a core module (the snippet must occur exactly once), runs the
core's tests with the mutant in place, and puts the file back. A mutant the tests do not kill is a
bug they would let through: it gets a test, or a sentence in the report saying why not.

    python bench/mutants.py          # about 20 mutants, a few minutes on 2 cores
"""

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import record

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "shared" / "diffusion_core"
TESTS = [
    "tests/test_denoise.py",
    "tests/test_plan.py",
    "tests/test_cache.py",
    "tests/test_schedules.py",
    "tests/test_collator.py",
    "tests/test_remasking.py",
    "tests/test_sampling.py",
    "tests/test_draws.py",
    "tests/test_training.py",
    "tests/api/test_engine.py",
]


@dataclass(frozen=True)
class Mutant:
    file: str
    before: str
    after: str
    bug: str


MUTANTS = [
    Mutant("plan.py", "(remaining - target).clamp(min=1)", "(remaining - target).clamp(min=0)",
           "a pass may commit nothing"),
    Mutant("denoise.py", "if now.step + 1 >= steps:", "if now.step + 1 > steps:",
           "the block's last planned pass does not fill what is left"),
    Mutant("denoise.py", "first = torch.where(has, hit.int().argmax(-1), length)",
           "first = torch.where(has, hit.int().argmax(-1) + 1, length)", "one token survives past the end token"),
    Mutant("denoise.py", "window_cols = (slots - (block.start - 1)).flatten()",
           "window_cols = (slots - block.start).flatten()", "the head reads the wrong column of a window"),
    Mutant("denoise.py", "self.row_seeds = (self.seed + torch.arange(b, device=device)).unsqueeze(-1)",
           "self.row_seeds = (self.seed + 0 * torch.arange(b, device=device)).unsqueeze(-1)",
           "every sample of a request draws the same numbers"),
    Mutant("plan.py", "length = max(block_end, text_end)", "length = block_end",
           "without future masks, text after a blank drops out of view"),
    Mutant("schedules.py", "return math.cos(math.pi * r / 2)", "return math.cos(math.pi * r / 3)",
           "the cosine schedule is wrong"),
    Mutant("schedules.py", "torch.floor(total * gamma(step / steps) + 1e-9)", "torch.ceil(total * gamma(step / steps))",
           "the schedule rounds up"),
    Mutant("collator.py", "(torch.arange(length) > prefix)", "(torch.arange(length) >= prefix)",
           "the visible prefix is one token shorter"),
    Mutant("collator.py", "masked[none.nonzero().squeeze(-1), fallback[none]] = True", "pass",
           "a row may have nothing masked"),
    Mutant("collator.py", "masked = eligible & (scores < rate)", "masked = eligible & (scores < rate / 2)",
           "the masking rate is halved"),
    Mutant("remasking.py", "return (conf >= threshold) | best", "return conf >= threshold",
           "threshold remasking may keep nothing"),
    Mutant("remasking.py", "order = scores.argsort(dim=-1, descending=True)", "order = scores.argsort(dim=-1)",
           "low-confidence remasking keeps the least confident"),
    Mutant("remasking.py", "near = (apart.columns - apart.columns.gather(1, best)).abs() < apart.spacing",
           "near = (apart.columns - apart.columns.gather(1, best)).abs() < 1",
           "a step's kept tokens may be neighbours"),
    Mutant("remasking.py", "short = (counts - kept.sum(-1)).clamp(min=0)", "short = counts * 0",
           "a step keeps fewer tokens than the schedule asks when room runs out"),
    Mutant("sampling.py", "outside = (probs.cumsum(-1) - probs) >= top_p", "outside = probs.cumsum(-1) >= top_p",
           "the nucleus drops the token that crosses top_p"),
    Mutant("cache.py", "stale or self.blocks >= self.refresh", "stale or self.blocks > self.refresh",
           "the cache refreshes one block late"),
    Mutant("cache.py", "real = attention_mask.gather(1, at).bool() & (query >= 0)",
           "real = attention_mask.gather(1, at).bool()", "padding queries of a joined batch are attended to"),
]  # fmt: skip


def killed(mutant: Mutant) -> tuple[bool, str]:
    path = CORE / mutant.file
    original = path.read_text()
    if original.count(mutant.before) != 1:
        raise SystemExit(f"{mutant.file}: the snippet {mutant.before!r} must occur exactly once")
    path.write_text(original.replace(mutant.before, mutant.after))
    try:
        run = subprocess.run(
            [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=ROOT, capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        path.write_text(original)
    failed = next((line for line in run.stdout.splitlines() if line.startswith("FAILED")), "")
    return run.returncode != 0, failed.removeprefix("FAILED ").split(" - ")[0]


def main() -> None:
    print(f"{len(MUTANTS)} mutants of the core; tests: {' '.join(Path(t).name for t in TESTS)}")
    print(f"{'file':<13} {'bug':<58} {'result':<8} first failing test")
    kills = 0
    for mutant in MUTANTS:
        started = time.perf_counter()
        dead, test = killed(mutant)
        kills += dead
        result = "killed" if dead else "SURVIVED"
        print(f"{mutant.file:<13} {mutant.bug:<58} {result:<8} {test} ({time.perf_counter() - started:.0f} s)")
    print(f"killed {kills} of {len(MUTANTS)}")


if __name__ == "__main__":
    with record("mutants", "Mutation check: one-line bugs in the core and the tests that catch them"):
        main()
