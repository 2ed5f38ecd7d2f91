"""The autoregressive twin's decoding: batched rows are the single-row samples, seeds included."""

import torch

from diffusion_core import checkpoint
from diffusion_core.autoregressive import sample, sample_rows


def test_batched_rows_equal_single_samples_with_the_same_seeds(tiny_twin, tokenizer):
    model = checkpoint.load_causal_lm(tiny_twin, torch.device("cpu"))
    rows = sample_rows(model, tokenizer, "the quick", 12, rows=3, seed=5)
    singles = [list(sample(model, tokenizer, "the quick", 12, seed=5 + i))[-1][0] for i in range(3)]
    assert rows == singles and len({tuple(r) for r in rows}) > 1
