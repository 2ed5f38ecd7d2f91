"""Threshold decoding against one token per step: forward passes at equal quality.

The starter writes 64 tokens (blocks of 16) for the sample prompts x 4 seeds: once committing one
token per forward pass (64 steps, low-confidence remasking), then committing every prediction
above a confidence threshold (at least one per step). Equal quality: gen-PPL under the twin no
more than 10% above the one-per-step run's, distinct-2 no more than 0.05 below it.

    python bench/threshold.py      # target: >= 4x fewer forward passes at equal quality
"""

import time
from dataclasses import replace

import torch
from common import record

from diffusion_core import GenerationConfig, checkpoint
from diffusion_core.assessment import diffusion_run
from diffusion_core.runtime import keep_freed_memory, quiet_transformers
from diffusion_core.starter import SAMPLE_PROMPTS, STARTER_AR, STARTER_DIFFUSION, sample_metrics

NEW = 64
BASELINE = GenerationConfig(max_new_tokens=NEW, steps=NEW, block_length=16, forbid_eos=True)
THRESHOLDS = (0.9, 0.7, 0.5, 0.3, 0.2, 0.1)


def main() -> None:
    quiet_transformers()
    keep_freed_memory()
    device = torch.device("cpu")
    model, tokenizer = checkpoint.load(STARTER_DIFFUSION, device)
    twin = checkpoint.load_causal_lm(STARTER_AR, device)
    prompts = [p for p in SAMPLE_PROMPTS for _ in range(4)]
    print(f"{len(prompts)} samples x {NEW} tokens, blocks of 16; {time.strftime('%F')}")
    print(f"{'decoding':<28}{'NFE/sample':>11}{'gen-PPL':>9}{'dist-2':>8}{'fewer NFE':>10}{'equal quality':>14}")
    texts, seconds, nfe = diffusion_run(model, tokenizer, prompts, BASELINE)
    base = sample_metrics(twin, tokenizer, prompts, texts, seconds)
    base_nfe = nfe / len(prompts)
    print(f"{'one token per step':<28}{base_nfe:>11.1f}{base['gen_ppl']:>9.1f}{base['distinct_2']:>8.3f}{1:>9.1f}x")
    best = 0.0
    for tau in THRESHOLDS:
        config = replace(BASELINE, remasking="threshold", threshold=tau)
        texts, seconds, nfe = diffusion_run(model, tokenizer, prompts, config)
        m = sample_metrics(twin, tokenizer, prompts, texts, seconds)
        ratio = base_nfe / (nfe / len(prompts))
        equal = m["gen_ppl"] <= 1.1 * base["gen_ppl"] and m["distinct_2"] >= base["distinct_2"] - 0.05
        best = max(best, ratio) if equal else best
        name = f"threshold {tau}"
        print(f"{name:<28}{nfe / len(prompts):>11.1f}{m['gen_ppl']:>9.1f}{m['distinct_2']:>8.3f}{ratio:>9.1f}x"
              f"{'yes' if equal else 'no':>14}")  # fmt: skip
    print(f"fewest forward passes at equal quality: {best:.1f}x fewer than one token per step (target >= 4x)")


if __name__ == "__main__":
    with record("threshold", "Threshold decoding vs one token per step: forward passes at equal quality"):
        main()
