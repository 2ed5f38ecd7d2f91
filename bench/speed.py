"""Diffusion against its autoregressive twin: tokens/s at 64 and 256 tokens, batch 1 and 8.

Both write the starter's sample prompts with the same sampling (top_p 0.9): diffusion with 4
steps per 16-token block (16 steps for 64 tokens, 64 for 256), once with its defaults and once
without future masks (each pass covers the text so far and the current block); the twin one
token per forward pass with a KV cache, `batch` continuations per prompt decoded together. All
are scored by the twin (gen-PPL), so each speed ratio is read at a known quality.

    python bench/speed.py          # target: diffusion >= 3x the twin's tokens/s at matched gen-PPL
"""

import time
from dataclasses import replace

import torch
from common import record

from diffusion_core import GenerationConfig, checkpoint, generate
from diffusion_core.autoregressive import perplexity, sample_rows
from diffusion_core.runtime import keep_freed_memory, quiet_transformers
from diffusion_core.starter import SAMPLE_PROMPTS, STARTER_AR, STARTER_DIFFUSION

CASES = [(64, 1), (64, 8), (256, 1), (256, 8)]


def diffusion(model, tokenizer, new: int, batch: int, future: bool = True) -> tuple[list[str], list[str], float, int]:
    config = GenerationConfig(
        max_new_tokens=new, steps=new // 4, block_length=16, num_samples=batch, forbid_eos=True, future_masks=future
    )
    prompts, texts, tokens = [], [], 0
    started = time.perf_counter()
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        result = generate(model, tokenizer, prompt, replace(config, seed=100 * i))
        texts += result.texts
        prompts += [prompt] * batch
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return prompts, texts, seconds, tokens


def autoregressive(twin, tokenizer, new: int, batch: int) -> tuple[list[str], list[str], float, int]:
    prompts, texts, tokens = [], [], 0
    started = time.perf_counter()
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        rows = sample_rows(twin, tokenizer, prompt, new, batch, top_p=0.9, seed=100 * i)
        tokens += sum(len(r) for r in rows)
        texts += [str(tokenizer.decode(r, skip_special_tokens=True)).strip() for r in rows]
        prompts += [prompt] * batch
    return prompts, texts, time.perf_counter() - started, tokens


def main() -> None:
    quiet_transformers()
    keep_freed_memory()
    device = torch.device("cpu")
    model, tokenizer = checkpoint.load(STARTER_DIFFUSION, device)
    twin = checkpoint.load_causal_lm(STARTER_AR, device)
    diffusion(model, tokenizer, 16, 1), autoregressive(twin, tokenizer, 16, 1)  # warm-up
    print(f"{len(SAMPLE_PROMPTS)} prompts; diffusion: 4 steps per 16-token block; twin: KV cache; top_p 0.9 both")
    print(f"{'':>12} {'diffusion (default)':>26} {'no future masks':>26} {'twin':>15}")
    print(f"{'tokens':>6} {'batch':>5} {'tok/s':>8} {'speedup':>8} {'PPL':>8} {'tok/s':>8} {'speedup':>8} {'PPL':>8}"
          f" {'tok/s':>7} {'PPL':>7}")  # fmt: skip
    for new, batch in CASES:
        ap, at, as_, an = autoregressive(twin, tokenizer, new, batch)
        a_rate, a_ppl = an / as_, perplexity(twin, tokenizer, ap, at)
        cells = []
        for future in (True, False):
            dp, dt, ds, dn = diffusion(model, tokenizer, new, batch, future)
            rate = dn / ds
            cells.append(f"{rate:>8.1f} {rate / a_rate:>7.2f}x {perplexity(twin, tokenizer, dp, dt):>8.1f}")
        print(f"{new:>6} {batch:>5} {' '.join(cells)} {a_rate:>7.1f} {a_ppl:>7.1f}")
    print("speedup: diffusion tokens/s over the twin's, same run; PPL: gen-PPL under the twin (lower = more")
    print("fluent by its judgement); the quality is matched when diffusion's gen-PPL is not above the twin's.")


if __name__ == "__main__":
    with record("speed", "Diffusion vs the autoregressive twin: tokens/s"):
        main()
