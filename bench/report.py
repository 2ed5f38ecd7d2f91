"""Regenerate docs/results.md from the records the benchmarks and `unmask eval` left in bench/results/.

python bench/report.py
"""

import json
import shutil
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DOC = Path(__file__).parents[1] / "docs" / "results.md"
ORDER = (
    "gpu", "speed", "dtype", "int8", "threshold", "repetition", "training", "train_memory", "parallel", "sampler",
    "serve", "harness", "fuzz", "render", "mutants", "mutants_eval",
)  # fmt: skip
GPU_PENDING = [
    "## Diffusion vs the twin on a GPU",
    "",
    "Not measured yet: no GPU has run `python bench/gpu.py` for this version. On a machine with a CUDA GPU it",
    "prints, in under five minutes, diffusion's tokens/s with float32 and bf16 weights, top_p and temperature",
    "sampling and without future masks; the twin's with float32 and bf16 weights; batch 1, 8 and 32 at 64 and",
    "256 tokens; the share of diffusion's time in its forward passes; and the forward-only limit. It records",
    "`bench/results/gpu.json`, which this page then shows. `python bench/gpu.py --quick` runs the same code at",
    "tiny sizes on a CPU.",
    "",
]


def _eval_section() -> list[str]:
    path = RESULTS / "eval" / "eval.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    env = report["environment"]
    images = DOC.parent / "img"
    images.mkdir(exist_ok=True)
    shutil.copy(RESULTS / "eval" / "pareto.png", images / "pareto.png")
    return [
        "## Quality: `unmask eval`",
        "",
        f"`unmask eval --out bench/results/eval` on {env['date']}: {env['hardware']}, {env['threads']} threads, "
        f"torch {env['torch']}, transformers {env['transformers']}. Diffusion: the bundled starter; reference and "
        "autoregressive baseline: its twin. Prompts are the first 16 tokens of held-out blocks; every sample "
        "writes 64 tokens (end tokens forbidden, so all settings write the same length).",
        "",
        (RESULTS / "eval" / "eval.md").read_text().strip(),
        "",
        "![quality against speed](img/pareto.png)",
        "",
    ]


def _cache_section() -> list[str]:
    path = RESULTS / "eval256" / "eval.json"
    if not path.is_file():
        return []
    report = json.loads(path.read_text())
    env = report["environment"]
    configs = [setting["config"] for setting in report["decoding"].values() if "config" in setting]
    spacing = {c.get("spacing", 1) for c in configs}  # a record from before spacing existed kept neighbours
    return [
        "## The block cache at 256 tokens: `unmask eval --only`",
        "",
        "`unmask eval --new-tokens 256 --only default --only cache --out bench/results/eval256` on "
        f"{env['date']}: {env['hardware']}, {env['threads']} threads, torch {env['torch']}. The default decoding "
        "(4 tokens per step in blocks of 16) with and without the block cache, on the same held-out prompts, "
        f"scored by the twin; a step's tokens kept {' / '.join(map(str, sorted(spacing)))} columns apart"
        f"{' (neighbours together: measured before spacing was the default)' if spacing == {1} else ''}.",
        "",
        (RESULTS / "eval256" / "eval.md").read_text().strip(),
        "",
    ]


def _section(name: str) -> list[str]:
    entry = json.loads((RESULTS / f"{name}.json").read_text())
    env = entry["environment"]
    extra = ["![held-out loss against passes](img/repetition.png)", ""] if name == "repetition" else []
    return [
        f"## {entry['title']}",
        "",
        f"`{entry['command']}` on {env['date']}: {env['hardware']}; torch {env['torch']}, "
        f"transformers {env['transformers']}, Python {env['python']}.",
        "",
        "```text",
        entry["output"].rstrip(),
        "```",
        "",
        *extra,
    ]


def main() -> None:
    lines = [
        "# Results",
        "",
        "Every figure here comes from a script in this repository and compares against a baseline "
        "measured in the same run, on the machine named with it (machines are noisy; ratios travel "
        "better than absolute numbers). `make bench` re-runs them all and rewrites this page "
        "(`python bench/report.py`).",
        "",
    ]
    lines += _eval_section()
    lines += _cache_section()
    for name in ORDER:
        if (RESULTS / f"{name}.json").is_file():
            lines += _section(name)
        elif name == "gpu":
            lines += GPU_PENDING
    DOC.write_text("\n".join(lines))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
