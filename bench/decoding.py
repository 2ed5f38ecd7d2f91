"""Decoding settings of the starter model against its autoregressive twin: quality and speed.

For each setting, one 64-token sample per prompt (the starter's sample prompts, four seeds
each), scored by the AR twin (gen-PPL), with distinct-2, 4-gram repetition, forward passes and
tokens/s; the twin's own samples are measured the same way in the same run.

    python bench/decoding.py
"""

import time

import torch

from diffusion_core import GenerationConfig, checkpoint
from diffusion_core.runtime import keep_freed_memory, quiet_transformers
from diffusion_core.starter import (
    SAMPLE_PROMPTS,
    STARTER_AR,
    STARTER_DIFFUSION,
    ar_samples,
    diffusion_samples,
    sample_metrics,
)

NEW = 64
GRID = {
    "64 steps, blocks of 16, cosine": GenerationConfig(max_new_tokens=NEW, steps=64, block_length=16),
    "64 steps, blocks of 8, linear": GenerationConfig(max_new_tokens=NEW, steps=64, block_length=8, schedule="linear"),
    "64 steps, one block, cosine": GenerationConfig(max_new_tokens=NEW, steps=64),
    "32 steps, blocks of 8, linear": GenerationConfig(max_new_tokens=NEW, steps=32, block_length=8, schedule="linear"),
    "16 steps, blocks of 16, cosine": GenerationConfig(max_new_tokens=NEW, steps=16, block_length=16),
    "threshold 0.7, blocks of 8": GenerationConfig(
        max_new_tokens=NEW, steps=64, block_length=8, remasking="threshold", threshold=0.7
    ),
    "16 steps, blocks of 16, top_p 0.8": GenerationConfig(max_new_tokens=NEW, steps=16, block_length=16, top_p=0.8),
}


def main() -> None:
    quiet_transformers()
    keep_freed_memory()
    device = torch.device("cpu")
    model, tokenizer = checkpoint.load(STARTER_DIFFUSION, device)
    twin = checkpoint.load_causal_lm(STARTER_AR, device)
    prompts = [p for p in SAMPLE_PROMPTS for _ in range(4)]
    threads = torch.get_num_threads()
    print(f"{len(prompts)} prompts x {NEW} tokens; torch {torch.__version__}, {threads} threads, {time.strftime('%F')}")
    print(f"{'setting':<36}{'gen-PPL':>9}{'dist-2':>8}{'rep-4':>7}{'NFE/sample':>11}{'tok/s':>8}")
    texts, seconds = ar_samples(twin, tokenizer, prompts, NEW, top_p=0.9)
    m = sample_metrics(twin, tokenizer, prompts, texts, seconds)
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    print(
        f"{'AR twin, top_p 0.9':<36}{m['gen_ppl']:>9.1f}{m['distinct_2']:>8.3f}{m['repetition_4gram']:>7.3f}"
        f"{tokens / len(prompts):>11.1f}{tokens / seconds:>8.1f}"
    )
    for name, config in GRID.items():
        texts, seconds, nfe = diffusion_samples(model, tokenizer, prompts, config)
        m = sample_metrics(twin, tokenizer, prompts, texts, seconds)
        tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
        print(
            f"{name:<36}{m['gen_ppl']:>9.1f}{m['distinct_2']:>8.3f}{m['repetition_4gram']:>7.3f}"
            f"{nfe / len(prompts):>11.1f}{tokens / seconds:>8.1f}"
        )
    print("gen-PPL: perplexity of the samples under the AR twin (lower is more fluent by its judgement);")
    print("dist-2: unique word pairs / all pairs; rep-4: share of word 4-grams already seen in the same text.")


if __name__ == "__main__":
    main()
