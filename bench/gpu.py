"""Generation speed where people serve models: diffusion against its autoregressive twin, and the
share of the time spent in the model, on whatever device this machine has (a GPU if any).

Diffusion is the bundled starter writing 4 tokens per pass in blocks of 16 (end tokens forbidden,
so every row writes every token), with its weights in float32 and in bf16, nucleus (top_p 0.9) or
plain temperature sampling, a step's tokens kept apart (the default) or not ("sp1": spacing 1), with
and without future masks, with the dual block cache. The twin is a GPT-2 of the starter
twin's shape (6 x 384) with random weights: one KV-cached pass per token, top_p 0.9; its speed does
not depend on its weights. "model" is the share of diffusion's wall time inside its forward passes
(timed on the device); "limit" is the forward-only speed: the same passes over the full canvas,
back to back, with nothing between them.

    python bench/gpu.py            # 64 and 256 tokens, batch 1, 8 and 32 (under 5 minutes on a GPU)
    python bench/gpu.py --quick    # tiny sizes: a smoke test that runs on a CPU (nothing recorded)
"""

import argparse
import time
from dataclasses import dataclass, replace

import torch
from common import record

from diffusion_core import GenerationConfig, checkpoint, create_denoiser, run
from diffusion_core.autoregressive import fresh_twin, sample_rows
from diffusion_core.model import masked_logits, pick_device
from diffusion_core.runtime import keep_freed_memory, quiet_transformers
from diffusion_core.starter import SAMPLE_PROMPTS, STARTER_DIFFUSION


@dataclass(frozen=True)
class Variant:
    name: str
    dtype: torch.dtype
    config: dict


VARIANTS = (
    Variant("fp32", torch.float32, {}),
    Variant("bf16", torch.bfloat16, {}),
    Variant("bf16 temp", torch.bfloat16, {"sampling": "temperature"}),
    Variant("bf16 sp1", torch.bfloat16, {"spacing": 1}),
    Variant("bf16 no-fut", torch.bfloat16, {"future_masks": False}),
    Variant("bf16 dual", torch.bfloat16, {"cache": "dual"}),
    Variant("bf16 dual r4", torch.bfloat16, {"cache": "dual", "cache_refresh": 4}),
)
DEFAULT = "bf16"  # the variant whose share of time in the model and forward limit are shown


def config_for(new: int, batch: int, **extra) -> GenerationConfig:
    settings = {"cache": "none", **extra}  # every variant but the dual ones runs full passes
    return GenerationConfig(
        max_new_tokens=new, steps=new // 4, block_length=16, num_samples=batch, forbid_eos=True, top_p=0.9, **settings
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def diffusion(model, tokenizer, prompts, config: GenerationConfig) -> tuple[float, float, int]:
    """(tokens/s, share of wall time in forward passes, passes per prompt)."""
    device = next(model.parameters()).device
    forward, nfe = 0.0, 0
    sync(device)
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        state = create_denoiser(model, tokenizer, prompt, replace(config, seed=i))
        for _ in run(model, state, every_step=False):
            pass
        result = state.result()
        forward += result.forward_s
        nfe = result.nfe
    sync(device)
    wall = time.perf_counter() - started
    return len(prompts) * config.num_samples * config.max_new_tokens / wall, forward / wall, nfe


@torch.inference_mode()
def forward_limit(model, tokenizer, config: GenerationConfig, passes: int, repeats: int = 3) -> float:
    """Tokens/s if every pass were a forward over the full canvas (head on one block), back to back."""
    device = next(model.parameters()).device
    state = create_denoiser(model, tokenizer, SAMPLE_PROMPTS[0], config)
    ids, attention = state.tokens, state.attention
    rows = torch.arange(ids.shape[0], device=device).repeat_interleave(16)
    cols = (ids.shape[1] - 16 + torch.arange(16, device=device)).repeat(ids.shape[0])
    masked_logits(model, ids, attention, rows, cols)  # warm-up
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats * passes):
        masked_logits(model, ids, attention, rows, cols)
    sync(device)
    per_pass = (time.perf_counter() - started) / (repeats * passes)
    return config.num_samples * config.max_new_tokens / (passes * per_pass)


def twin_speed(twin, tokenizer, prompts, new: int, batch: int) -> float:
    device = next(twin.parameters()).device
    sync(device)
    started, tokens = time.perf_counter(), 0
    for i, prompt in enumerate(prompts):
        tokens += sum(len(r) for r in sample_rows(twin, tokenizer, prompt, new, batch, top_p=0.9, seed=i))
    sync(device)
    return tokens / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one prompt: runs on a CPU in seconds")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    quiet_transformers()
    keep_freed_memory()
    device = pick_device(args.device)
    cases = [(16, 1), (16, 2)] if args.quick else [(64, 1), (64, 8), (256, 1), (256, 8), (256, 32)]
    prompts = list(SAMPLE_PROMPTS[: 1 if args.quick else 3])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {len(prompts)} prompts per cell, 4 tokens per pass")
    models = {}
    for variant in VARIANTS:
        if variant.dtype not in models:
            models[variant.dtype] = checkpoint.load(STARTER_DIFFUSION, device, variant.dtype)
    tokenizer = models[torch.float32][1]
    torch.manual_seed(0)
    twin32 = fresh_twin(tokenizer, layers=6, width=384, heads=6, positions=512).to(device).eval()
    twins = {"fp32": twin32, "bf16": fresh_twin(tokenizer, 6, 384, 6, 512).to(device, torch.bfloat16).eval()}
    twins["bf16"].load_state_dict({k: v.to(torch.bfloat16) for k, v in twin32.state_dict().items()})
    for variant in VARIANTS:  # warm-up: kernel selection and caches, not timed
        diffusion(models[variant.dtype][0], tokenizer, prompts[:1], config_for(16, 2, **variant.config))
    for twin in twins.values():
        twin_speed(twin, tokenizer, prompts[:1], 8, 2)
    header = "".join(f"{v.name:>12}" for v in VARIANTS)
    print(f"{'tokens':>6}{'batch':>6}{header}{'model':>7}{'limit':>9}{'of lim':>7}{'twin fp32':>10}{'twin bf16':>10}"
          f"{'diff/twin':>10}")  # fmt: skip
    for new, batch in cases:
        speeds, share, passes = {}, 0.0, 0
        for variant in VARIANTS:
            rate, fwd, nfe = diffusion(
                models[variant.dtype][0], tokenizer, prompts, config_for(new, batch, **variant.config)
            )
            speeds[variant.name] = rate
            if variant.name == DEFAULT:
                share, passes = fwd, nfe
        limit = forward_limit(models[torch.bfloat16][0], tokenizer, config_for(new, batch), passes)
        ar = {k: twin_speed(t, tokenizer, prompts, new, batch) for k, t in twins.items()}
        cells = "".join(f"{speeds[v.name]:>12.0f}" for v in VARIANTS)
        ratio = max(speeds.values()) / max(ar.values())
        print(f"{new:>6}{batch:>6}{cells}{share:>7.2f}{limit:>9.0f}{speeds[DEFAULT] / limit:>6.0%}"
              f"{ar['fp32']:>10.0f}{ar['bf16']:>10.0f}{ratio:>9.2f}x", flush=True)  # fmt: skip
    print("columns: tokens/s per variant; model: share of bf16 diffusion's wall time in its forward passes;")
    print("limit: forward-only tokens/s for the same passes (bf16); of lim: bf16 diffusion / limit;")
    print("diff/twin: the fastest diffusion variant over the fastest twin, same run.")


if __name__ == "__main__":
    import sys

    if "--quick" in sys.argv:
        main()
    else:
        with record("gpu", "Diffusion vs the twin on the fastest device here, and the share of time in the model"):
            main()
