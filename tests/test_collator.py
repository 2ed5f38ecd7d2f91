import torch

from diffusion_core.collator import DiffusionCollator
from diffusion_core.data import pack, split
from diffusion_core.model import SpecialTokens

from .conftest import SENTENCES


def _blocks(tokenizer):
    return pack(SENTENCES * 10, tokenizer, max_length=32)


def test_packing_starts_every_block_and_separates_documents(tokenizer):
    special = SpecialTokens.of(tokenizer)
    blocks = _blocks(tokenizer)
    assert (blocks.input_ids[:, 0] == special.start).all()
    assert (blocks.input_ids == special.end).sum() == len(SENTENCES) * 10
    train, held_out = split(blocks, 0.2, seed=0)
    assert len(train) + len(held_out) == len(blocks) and len(held_out) >= 1


def test_one_rate_per_batch_and_only_eligible_tokens_masked(tokenizer):
    special = SpecialTokens.of(tokenizer)
    blocks = _blocks(tokenizer)
    collator = DiffusionCollator(special.mask, (special.start, special.pad), levels=(0.5,), prefix_max=6)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = collator(blocks.input_ids, blocks.attention_mask, g)
        assert batch.rate == 0.5
        masked = batch.labels != -100
        assert (batch.input_ids[masked] == special.mask).all()
        assert (batch.input_ids[~masked] == blocks.input_ids[~masked]).all()
        assert torch.equal(batch.labels[masked], blocks.input_ids[masked])
        assert not masked[:, 0].any()
        assert not masked[blocks.attention_mask == 0].any()
        assert masked.any(-1).all()
    share = masked[blocks.attention_mask.bool()].float().mean()
    assert 0.35 < share < 0.55


def test_prefix_is_never_masked(tokenizer):
    special = SpecialTokens.of(tokenizer)
    blocks = _blocks(tokenizer)
    collator = DiffusionCollator(special.mask, (special.start,), levels=(1.0,), prefix_max=5)
    g = torch.Generator().manual_seed(1)
    batch = collator(blocks.input_ids, blocks.attention_mask, g)
    first_masked = (batch.labels != -100).int().argmax(-1)
    assert (first_masked >= 1).all() and (first_masked <= 6).all()
    assert len(set(first_masked.tolist())) > 1, "prefix length is drawn per example"


def test_continuous_rates_cover_the_range(tokenizer):
    special = SpecialTokens.of(tokenizer)
    collator = DiffusionCollator(special.mask, (special.start,), levels=None, eps=0.05)
    g = torch.Generator().manual_seed(2)
    rates = [collator.draw_rate(g) for _ in range(500)]
    assert min(rates) >= 0.05 and max(rates) <= 1.0 and max(rates) - min(rates) > 0.8


def test_each_batch_masks_at_its_own_drawn_rate_and_every_level_is_drawn(tokenizer):
    special = SpecialTokens.of(tokenizer)
    blocks = _blocks(tokenizer)
    collator = DiffusionCollator(special.mask, (special.start, special.pad), levels=(0.1, 0.9))
    eligible = blocks.attention_mask.bool() & ~torch.isin(blocks.input_ids, torch.tensor([special.start, special.pad]))
    g = torch.Generator().manual_seed(0)
    rates = []
    for _ in range(30):
        batch = collator(blocks.input_ids, blocks.attention_mask, g)
        share = float((batch.labels != -100)[eligible].float().mean())
        assert abs(share - batch.rate) < 0.1, f"batch drawn at {batch.rate} masked {share:.2f} of its tokens"
        rates.append(batch.rate)
    assert set(rates) == {0.1, 0.9}


def test_a_row_always_has_a_masked_token_even_at_a_tiny_rate(tokenizer):
    special = SpecialTokens.of(tokenizer)
    blocks = _blocks(tokenizer)
    collator = DiffusionCollator(special.mask, (special.start, special.pad), levels=(0.001,))
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        batch = collator(blocks.input_ids, blocks.attention_mask, g)
        assert ((batch.labels != -100).sum(-1) >= 1).all(), "every row trains on at least one token"
