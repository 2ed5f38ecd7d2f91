"""Float32 against bfloat16 weights, judged as `unmask eval` judges: the quality half of `--dtype auto`.

Runs `unmask eval` on the starter's 20 held-out prompts at 64 tokens with three seeds (prompt i
sampled with seed + i) and at 256 tokens with one, for each dtype, with the dual cache (the default)
and without it, with the twin beside them in the same dtype; the judge (the twin in float32) is the same
for all. Prints each figure's mean over the seeds and its spread (max - min): the spread at 64
tokens is the noise a difference must exceed.

    python bench/dtype.py       # target: bfloat16 within the seeds' spread of float32
"""

import json
import statistics
import subprocess
import sys

from common import RESULTS, record

SEEDS = {64: (0, 1000, 2000), 256: (0,)}  # a 256-token run takes minutes a seed on 2 CPU cores
DTYPES = ("float32", "bfloat16")
FIGURES = ("gen_ppl", "unigram_entropy", "distinct_2")  # speed: bench/speed.py, on a quiet machine


def evaluate(tokens: int, dtype: str, seed: int) -> dict:
    out = RESULTS / "dtype" / f"{tokens}-{dtype}-{seed}"
    if not (out / "eval.json").is_file():
        settings = ["--only", "steps (default)", "--only", "steps, no cache"]
        command = [sys.executable, "-m", "diffusion_core.cli", "eval", "--new-tokens", str(tokens), "--dtype", dtype]
        command += ["--seed", str(seed), *settings, "--out", str(out)]
        subprocess.run(command, check=True, capture_output=True)
    return json.loads((out / "eval.json").read_text())


def rows(reports: list[dict]) -> dict[str, dict[str, list[float]]]:
    """setting -> figure -> one value per seed."""
    table: dict[str, dict[str, list[float]]] = {}
    for report in reports:
        for name, row in report["decoding"].items():
            if "refresh" in name:
                continue
            cache = row.get("config", {}).get("cache")
            short = "twin" if cache is None else "no cache" if cache == "none" else f"{cache} cache"
            for figure in FIGURES:
                table.setdefault(short, {}).setdefault(figure, []).append(row[figure])
    return table


def main() -> None:
    seeds = "; ".join(f"{n} tokens: {', '.join(map(str, s))}" for n, s in SEEDS.items())
    print(f"unmask eval, 20 held-out prompts, seeds ({seeds}): mean (max - min over the seeds)")
    header = f"{'tokens':>6}  {'setting':<11} {'dtype':<9}" + "".join(f"{f:>22}" for f in FIGURES)
    print(header)
    for tokens, seeds in SEEDS.items():
        for dtype in DTYPES:
            table = rows([evaluate(tokens, dtype, seed) for seed in seeds])
            for setting, figures in table.items():
                cells = "".join(
                    f"{statistics.mean(v):>13.3f} ({max(v) - min(v):>6.3f})" for v in (figures[f] for f in FIGURES)
                )
                print(f"{tokens:>6}  {setting:<11} {dtype:<9}{cells}")
    print("gen_ppl: under the twin in float32 (lower = more fluent); entropy of the words; distinct word pairs.")


if __name__ == "__main__":
    with record("dtype", "Float32 against bfloat16 weights: unmask eval over three seeds"):
        main()
