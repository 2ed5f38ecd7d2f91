"""Sampler overhead and speed against a position-by-position loop, in one run.

For each model size and batch size: time 10 denoising steps of unmask's loop, the same number
of plain forward passes (the floor any generator must pay), and a baseline that, the
straightforward way, runs the full LM head and then samples every masked position in a
Python loop with per-position top-k/top-p filtering. Random weights: speed only.

    python bench/sampler.py            # small, base-sized (random weights) and the starter (trained)
    python bench/sampler.py --quick    # small model, fewer repeats
"""

import argparse
import time

import torch
from common import record
from transformers import RobertaConfig, RobertaForMaskedLM

from diffusion_core import Canvas, Denoiser, GenerationConfig, run
from diffusion_core.model import SpecialTokens
from diffusion_core.runtime import keep_freed_memory

SPECIAL = SpecialTokens(start=0, end=2, mask=4, pad=1)
SIZES = {"small 4x256 8k": (4, 256, 4, 8000), "base 12x768 50k": (12, 768, 12, 50265), "starter 6x384 30k": None}


def load(name: str) -> tuple[torch.nn.Module, SpecialTokens, int]:
    """Random weights of a size, or the bundled starter (trained: peaked distributions)."""
    shape = SIZES[name]
    if shape is None:
        from diffusion_core import checkpoint
        from diffusion_core.starter import STARTER_DIFFUSION

        model, tokenizer = checkpoint.load(STARTER_DIFFUSION, torch.device("cpu"))
        return model, SpecialTokens.of(tokenizer), model.config.vocab_size
    return make_model(*shape), SPECIAL, shape[3]


def make_model(layers: int, width: int, heads: int, vocab: int) -> RobertaForMaskedLM:
    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=vocab,
        hidden_size=width,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=4 * width,
        max_position_embeddings=514,
        pad_token_id=1,
    )
    return RobertaForMaskedLM(config).eval()


def make_state(special: SpecialTokens, vocab: int, length: int, prompt: int, batch: int, steps: int, **kw) -> Denoiser:
    """One request of `length` tokens: a random prompt, then masks, denoised as one block."""
    g = torch.Generator().manual_seed(0)
    ids = [special.start] + torch.randint(1000, vocab, (prompt - 1,), generator=g).tolist()
    canvas = Canvas(
        tokens=ids + [special.mask] * (length - prompt), masked=[False] * prompt + [True] * (length - prompt)
    )
    kw = {"block_length": 0, **kw}
    config = GenerationConfig(
        max_new_tokens=length - prompt, steps=steps, num_samples=batch, seed=0, forbid_eos=True, **kw
    )
    banned = [special.start, special.pad, special.mask]
    return Denoiser(canvas, config, special, window=512, banned_ids=banned)


def time_unmask(model, special, vocab, length, prompt, batch, steps, autocast=False, **kw) -> tuple[float, float, int]:
    state = make_state(special, vocab, length, prompt, batch, steps, **kw)
    started = time.perf_counter()
    for _ in run(model, state, autocast=autocast, every_step=False):
        pass
    elapsed = time.perf_counter() - started
    result = state.result()
    return elapsed, result.forward_s, result.nfe


@torch.inference_mode()
def time_forward(model, vocab, length, batch, steps) -> float:
    ids = torch.randint(5, vocab, (batch, length))
    started = time.perf_counter()
    for _ in range(steps):
        model(input_ids=ids)
    return time.perf_counter() - started


@torch.inference_mode()
def time_baseline(model, special, vocab, length, prompt, batch, steps, top_k=50, top_p=0.9) -> float:
    """The position-by-position loop: full logits, then per sample and per masked position filter and sample."""
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, vocab, (batch, length), generator=g)
    x[:, prompt:] = special.mask
    per_step = (length - prompt) // steps
    started = time.perf_counter()
    for step in range(steps):
        logits = model(input_ids=x).logits
        for b in range(batch):
            masked = (x[b] == special.mask).nonzero().squeeze(-1).tolist()
            picks = []
            for i in masked:
                row = logits[b, i].clone()
                kth = torch.topk(row, top_k).values[-1]
                row[row < kth] = float("-inf")
                sorted_row, order = torch.sort(row, descending=True)
                cum = torch.softmax(sorted_row, -1).cumsum(-1)
                remove = cum > top_p
                remove[1:] = remove[:-1].clone()
                remove[0] = False
                row[order[remove]] = float("-inf")
                probs = torch.softmax(row, -1)
                token = int(torch.multinomial(probs, 1, generator=g))
                picks.append((float(probs[token]), i, token))
            picks.sort(reverse=True)
            keep = picks if step == steps - 1 else picks[:per_step]
            for _, i, token in keep:
                x[b, i] = token
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    keep_freed_memory()
    sizes = [k for k in SIZES if not args.quick or k.startswith("small")]
    length, prompt, steps = args.length, 16, args.steps
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, T={length}, {steps} steps, top_p=0.9 sampling"
    )
    print(
        f"{'model':<17}{'B':>3}{'forward s':>11}{'unmask s':>10}{'outside top_p':>15}{'outside temp':>14}"
        f"{'loop s':>13}{'speedup':>9}{'k50+p s':>9}{'same rule':>10}{'bf16 s':>8}{'thr NFE':>9}"
    )
    for name in sizes:
        model, special, vocab = load(name)
        args = (model, special, vocab, length, prompt)
        for batch in (1, 8):
            time_unmask(*args, batch, 2)  # warm-up
            forward = time_forward(model, vocab, length, batch, steps)
            total, in_forward, _ = time_unmask(*args, batch, steps)
            total_t, in_forward_t, _ = time_unmask(*args, batch, steps, sampling="temperature")
            baseline = time_baseline(*args, batch, steps)
            same_rule, _, _ = time_unmask(*args, batch, steps, top_k=50)  # the loop's rule: top-k 50, then top-p
            bf16, _, _ = time_unmask(*args, batch, steps, autocast=True)
            _, _, nfe = time_unmask(*args, batch, steps, remasking="threshold", threshold=0.5)
            print(
                f"{name:<17}{batch:>3}{forward:>11.2f}{total:>10.2f}{(total - in_forward) / total:>14.1%}"
                f"{(total_t - in_forward_t) / total_t:>14.1%}{baseline:>13.2f}{baseline / total:>8.1f}x"
                f"{same_rule:>9.2f}{baseline / same_rule:>9.1f}x{bf16:>8.2f}{nfe:>9}"
            )
    print("forward s: 10 full forward passes (the floor with a full LM head); outside: share of unmask's time")
    print("not in its own forward passes, with top_p 0.9 (the default) and plain temperature sampling; random")
    print("weights give flat distributions, so top_p sorts the vocabulary: the worst case for it. speedup:")
    print("loop / unmask (unmask's exact full-vocabulary nucleus against the loop's top-50 + top-p);")
    print("k50+p / same rule: unmask with the loop's own rule (top-k 50, then top-p 0.9) and the speedup over")
    print("the loop; bf16: unmask with bf16 autocast; thr NFE: forward passes with")
    print("threshold remasking at 0.5 (random weights are rarely that confident; the starter often is).")


if __name__ == "__main__":
    with record("sampler", "Sampler overhead against the forward pass, and against a position-by-position loop"):
        main()
