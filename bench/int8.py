"""Int8 dynamic quantization of the linear layers (torch.ao) against float32 and bfloat16 weights on a CPU.

The starter's forward pass at batch 1 (80 and 272 tokens, as one denoising pass of a 64- and a
256-token request) and batch 8 (80 tokens), the median of 20 runs each, and the held-out
masked-token loss at rates 0.15 / 0.5 / 0.9 (the quality the weights keep), all in one run. A
--dtype int8 would earn its place only by beating float32 at equal loss on CPUs without bf16.

    python bench/int8.py
"""

import statistics
import time
from pathlib import Path

import torch
from common import record
from torch import nn
from torch.ao.quantization import quantize_dynamic

from diffusion_core import checkpoint
from diffusion_core.collator import DiffusionCollator
from diffusion_core.evaluation import masked_token_loss
from diffusion_core.model import SpecialTokens
from diffusion_core.runtime import quiet_transformers
from diffusion_core.starter import STARTER_DIFFUSION, corpus_folder, held_out_blocks

SHAPES = [(1, 80), (1, 272), (8, 80)]
RATES = (0.15, 0.5, 0.9)


def forward_ms(model: nn.Module, batch: int, length: int) -> float:
    ids = torch.randint(1000, 20000, (batch, length), generator=torch.Generator().manual_seed(0))
    attention = torch.ones_like(ids)
    times = []
    with torch.inference_mode():
        for _ in range(23):
            started = time.perf_counter()
            model(input_ids=ids, attention_mask=attention)
            times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times[3:])


def main() -> None:
    quiet_transformers()
    base, tokenizer = checkpoint.load(STARTER_DIFFUSION, torch.device("cpu"))
    models = {
        "float32": base,
        "bfloat16": checkpoint.load(STARTER_DIFFUSION, torch.device("cpu"), torch.bfloat16)[0],
        "int8 dynamic": quantize_dynamic(
            checkpoint.load(STARTER_DIFFUSION, torch.device("cpu"))[0], {nn.Linear}, dtype=torch.qint8
        ),
    }
    special = SpecialTokens.of(tokenizer)
    collator = DiffusionCollator(special.mask, (special.start, special.pad))
    held_out = held_out_blocks(corpus_folder(Path("runs/starter")), tokenizer)
    shapes = "".join(f"{f'B{b} x {t} (ms)':>16}" for b, t in SHAPES)
    print(f"{'weights':<14}{shapes}{'held-out loss 0.15 / 0.5 / 0.9':>34}")
    reference = None
    for name, model in models.items():
        times = [forward_ms(model, b, t) for b, t in SHAPES]
        reference = reference or times
        losses = [masked_token_loss(model, held_out, collator, rate, max_batches=4) for rate in RATES]
        cells = "".join(f"{ms:>9.1f} ({ref / ms:.2f}x)" for ms, ref in zip(times, reference))
        print(f"{name:<14}{cells}{' / '.join(f'{x:.3f}' for x in losses):>34}")
    print("(Nx): float32's time over this one's, same run; losses on the starter's held-out split.")


if __name__ == "__main__":
    with record("int8", "Int8 dynamic quantization against float32 and bfloat16 weights on a CPU"):
        main()
