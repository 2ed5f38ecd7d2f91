"""Diffusion against its autoregressive twin: tokens/s at 64 and 256 tokens, batch 1 and 8.

Both write the starter's sample prompts with the same sampling (top_p 0.9): diffusion with 4
steps per 16-token block (16 steps for 64 tokens, 64 for 256) in each setting of SETTINGS (its
default without the block cache, the dual cache, the dual cache refreshed every 4 blocks); the twin one
token per forward pass with a KV cache, `batch` continuations per prompt decoded together. All are scored by the twin
(gen-PPL), so each speed ratio is read at a known quality.

    python bench/speed.py          # targets: the cache >= 2.5x no cache and >= 1.5x the twin (256, batch 1)
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
SETTINGS = {  # the first is the baseline of the "x base" column
    "default (no cache)": {},
    "dual cache": {"cache": "dual"},
    "dual cache, refresh every 4 blocks": {"cache": "dual", "cache_refresh": 4},
}


def diffusion(model, tokenizer, new: int, batch: int, **setting) -> tuple[list[str], list[str], float, int]:
    config = GenerationConfig(
        max_new_tokens=new, steps=new // 4, block_length=16, num_samples=batch, forbid_eos=True, **setting
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
    print(f"{'tokens':>6} {'batch':>5}  {'setting':<36} {'tok/s':>8} {'x base':>9} {'x twin':>7} {'PPL':>7}")
    for new, batch in CASES:
        ap, at, as_, an = autoregressive(twin, tokenizer, new, batch)
        a_rate, a_ppl = an / as_, perplexity(twin, tokenizer, ap, at)
        print(f"{new:>6} {batch:>5}  {'twin':<36} {a_rate:>8.1f} {'':>9} {'':>7} {a_ppl:>7.1f}")
        base = None
        for name, setting in SETTINGS.items():
            dp, dt, ds, dn = diffusion(model, tokenizer, new, batch, **setting)
            rate = dn / ds
            base = base or rate
            ppl = perplexity(twin, tokenizer, dp, dt)
            print(
                f"{new:>6} {batch:>5}  {name:<36} {rate:>8.1f} {rate / base:>8.2f}x {rate / a_rate:>6.2f}x {ppl:>7.1f}"
            )
    print("x base / x twin: tokens/s over diffusion without the cache / over the twin's, same run; PPL: gen-PPL")
    print("under the twin (lower = more fluent by its judgement).")


if __name__ == "__main__":
    with record("speed", "Diffusion vs the autoregressive twin: tokens/s"):
        main()
