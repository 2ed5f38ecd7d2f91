"""Diffusion against its autoregressive twin: tokens/s at 64 and 256 tokens, batch 1 and 8, by dtype.

Both write the starter's sample prompts with the same sampling (top_p 0.9). Diffusion takes 4 steps
per 16-token block (16 steps for 64 tokens, 64 for 256) in each setting of SETTINGS; the twin one
token per forward pass with a KV cache, `batch` continuations per prompt decoded together. The first
table is like for like: both write exactly the tokens asked for (the end token forbidden, as
`unmask eval` does). The second lets both stop at their end tokens, where tokens/s counts only
what each wrote. All samples are scored by the twin in float32 (gen-PPL), so each speed ratio is
read at a known quality.

    python bench/speed.py   # targets (256 tokens, batch 1): the default >= 2.5x float32 without the cache
                            # and >= 1.5x the twin at its fastest dtype
"""

import time
from dataclasses import replace

import torch
from common import record

from diffusion_core import GenerationConfig, checkpoint, generate
from diffusion_core.autoregressive import perplexity, sample_rows
from diffusion_core.model import pick_dtype
from diffusion_core.runtime import keep_freed_memory, quiet_transformers
from diffusion_core.starter import SAMPLE_PROMPTS, STARTER_AR, STARTER_DIFFUSION

CASES = [(64, 1), (64, 8), (256, 1), (256, 8)]
STOPPING_CASES = [(64, 1), (256, 1)]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SETTINGS = [  # (name, dtype, settings); the first is the baseline of the "x base" column
    ("no cache", "float32", {"cache": "none"}),
    ("no cache", "bfloat16", {"cache": "none"}),
    ("dual cache", "float32", {"cache": "dual"}),
    ("dual cache", "bfloat16", {"cache": "dual"}),
    ("dual cache, refresh every 4 blocks", "bfloat16", {"cache": "dual", "cache_refresh": 4}),
]


def diffusion(model, tokenizer, new: int, batch: int, forbid_eos: bool, **setting) -> tuple[list, list, float, int]:
    config = GenerationConfig(
        max_new_tokens=new, steps=new // 4, block_length=16, num_samples=batch, forbid_eos=forbid_eos, **setting
    )
    prompts, texts = [], []
    started = time.perf_counter()
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        result = generate(model, tokenizer, prompt, replace(config, seed=100 * i))
        texts += result.texts
        prompts += [prompt] * batch
    seconds = time.perf_counter() - started
    tokens = sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    return prompts, texts, seconds, tokens


def autoregressive(twin, tokenizer, new: int, batch: int, forbid_eos: bool) -> tuple[list, list, float, int]:
    prompts, texts, tokens = [], [], 0
    started = time.perf_counter()
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        rows = sample_rows(twin, tokenizer, prompt, new, batch, top_p=0.9, seed=100 * i, forbid_eos=forbid_eos)
        tokens += sum(len(r) for r in rows)
        texts += [str(tokenizer.decode(r, skip_special_tokens=True)).strip() for r in rows]
        prompts += [prompt] * batch
    return prompts, texts, time.perf_counter() - started, tokens


def table(models, twins, judge, tokenizer, cases, settings, forbid_eos: bool) -> None:
    print(f"{'tokens':>6} {'batch':>5}  {'model, setting':<42} {'dtype':<9} {'tok/s':>8} {'x base':>7} {'x twin':>7}"
          f" {'PPL':>7} {'tokens/sample':>14}")  # fmt: skip
    for new, batch in cases:
        twin_rates = {}
        for dtype, twin in twins.items():
            ap, at, seconds, count = autoregressive(twin, tokenizer, new, batch, forbid_eos)
            twin_rates[dtype] = count / seconds
            per = count / len(at)
            print(f"{new:>6} {batch:>5}  {'twin':<42} {dtype:<9} {count / seconds:>8.1f} {'':>7} {'':>7}"
                  f" {perplexity(judge, tokenizer, ap, at):>7.1f} {per:>14.1f}")  # fmt: skip
        fastest, base = max(twin_rates.values()), None
        for name, dtype, setting in settings:
            dp, dt, seconds, count = diffusion(models[dtype], tokenizer, new, batch, forbid_eos, **setting)
            rate = count / seconds
            base = base or rate
            ppl = perplexity(judge, tokenizer, dp, dt)
            print(f"{new:>6} {batch:>5}  {'diffusion, ' + name:<42} {dtype:<9} {rate:>8.1f} {rate / base:>6.2f}x"
                  f" {rate / fastest:>6.2f}x {ppl:>7.1f} {count / len(dt):>14.1f}")  # fmt: skip


def main() -> None:
    quiet_transformers()
    keep_freed_memory()
    device = torch.device("cpu")
    models = {name: checkpoint.load(STARTER_DIFFUSION, device, dtype)[0] for name, dtype in DTYPES.items()}
    _, tokenizer = checkpoint.load(STARTER_DIFFUSION, device)
    twins = {name: checkpoint.load_causal_lm(STARTER_AR, device, dtype) for name, dtype in DTYPES.items()}
    judge = twins["float32"]
    for name in DTYPES:  # warm-up
        diffusion(models[name], tokenizer, 16, 1, True), autoregressive(twins[name], tokenizer, 16, 1, True)
    auto = pick_dtype("auto", device)
    default = GenerationConfig()
    print(f"{len(SAMPLE_PROMPTS)} prompts; diffusion: 4 steps per 16-token block; twin: KV cache; top_p 0.9 both")
    print(f"today's defaults: --dtype auto = {auto.name} here ({auto.reason}); cache {default.cache}")
    print("\nBoth write every token asked for (end token forbidden):")
    table(models, twins, judge, tokenizer, CASES, SETTINGS, forbid_eos=True)
    print("\nBoth stop at their end tokens (tokens/s counts what each wrote):")
    stopping = [s for s in SETTINGS if s[1] == "bfloat16" and "refresh" not in s[0]]
    table(models, twins, judge, tokenizer, STOPPING_CASES, [SETTINGS[0], *stopping], forbid_eos=False)
    print("x base: tokens/s over diffusion in float32 without the cache; x twin: over the twin at its fastest dtype;")
    print("same run. PPL: gen-PPL under the twin in float32 (lower = more fluent by its judgement).")


if __name__ == "__main__":
    with record("speed", "Diffusion vs the autoregressive twin: tokens/s by dtype"):
        main()
