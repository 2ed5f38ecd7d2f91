"""The autoregressive twin: batched decoding rows are the single-row samples, seeds included; a
stopped training run continues as the uninterrupted one would have."""

from dataclasses import replace

import torch

from diffusion_core import autoregressive, checkpoint
from diffusion_core.autoregressive import TwinTraining, fresh_twin, sample, sample_rows, train_twin
from diffusion_core.data import Blocks


def test_batched_rows_equal_single_samples_with_the_same_seeds(tiny_twin, tokenizer):
    model = checkpoint.load_causal_lm(tiny_twin, torch.device("cpu"))
    rows = sample_rows(model, tokenizer, "the quick", 12, rows=3, seed=5)
    singles = [list(sample(model, tokenizer, "the quick", 12, seed=5 + i))[-1][0] for i in range(3)]
    assert rows == singles and len({tuple(r) for r in rows}) > 1


def test_forbid_eos_makes_the_twin_write_every_token_it_was_asked_for(tiny_twin, tokenizer):
    model = checkpoint.load_causal_lm(tiny_twin, torch.device("cpu"))
    _, end = autoregressive.ends(tokenizer)

    def prefer_the_end(module, inputs, logits):
        logits[..., end] += 30.0
        return logits

    model.lm_head.register_forward_hook(prefer_the_end)
    assert sample_rows(model, tokenizer, "the quick", 12, rows=2, seed=1) == [[end], [end]]
    rows = sample_rows(model, tokenizer, "the quick", 12, rows=2, seed=1, forbid_eos=True)
    assert [len(r) for r in rows] == [12, 12] and all(end not in r for r in rows)


def _blocks(tokenizer, count: int) -> Blocks:
    ids = torch.randint(5, len(tokenizer), (count, 16), generator=torch.Generator().manual_seed(0))
    return Blocks(ids, torch.ones_like(ids))


def test_a_continued_twin_sees_the_blocks_the_uninterrupted_run_would_have(tokenizer, monkeypatch):
    """Stopped after a pass and continued from (step, tokens): the same batches in the same order, the
    learning rate resuming its schedule, the curve and the pass count going on from there."""
    seen: list[torch.Tensor] = []

    def recording(model, ids, attention):
        if torch.is_grad_enabled():  # a training step, not a held-out evaluation
            seen.append(ids.clone())
        return real(model, ids, attention)

    real = autoregressive.causal_loss
    monkeypatch.setattr(autoregressive, "causal_loss", recording)
    blocks, held_out = _blocks(tokenizer, 24), _blocks(tokenizer, 4)
    plan = TwinTraining(max_passes=3, batch_size=4, warmup_steps=1, evals_per_pass=1, patience=99)

    def fresh():
        torch.manual_seed(0)
        return fresh_twin(tokenizer, layers=1, width=32, heads=2, positions=32)

    straight = train_twin(fresh(), blocks, held_out, plan)
    uninterrupted, seen[:] = list(seen), []
    model = fresh()
    first = train_twin(model, blocks, held_out, replace(plan, max_passes=1))
    assert first["steps"] == 6 and [p["passes"] for p in first["curve"]] == [0, 1.0]
    rest = train_twin(model, blocks, held_out, plan, start=(first["steps"], first["tokens_seen"]))
    assert len(seen) == len(uninterrupted) == 18
    assert all(torch.equal(a, b) for a, b in zip(seen, uninterrupted))
    assert [p["passes"] for p in rest["curve"]] == [1.0, 2.0, 3.0]
    assert rest["steps"] == straight["steps"] and rest["tokens_seen"] == straight["tokens_seen"]
    assert rest["curve"][0]["held_out_loss"] == first["curve"][-1]["held_out_loss"]
