"""The BERT-family layouts people use, each built tiny in-process: BERT, RoBERTa, DistilBERT and
ModernBERT (the BERT-Chat base). Each generates, fills blanks and fine-tunes the same way."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    DistilBertConfig,
    DistilBertForMaskedLM,
    ModernBertConfig,
    ModernBertForMaskedLM,
    RobertaConfig,
    RobertaForMaskedLM,
)

from diffusion_core import GenerationConfig, TokenizerError, checkpoint, create_denoiser, generate, run
from diffusion_core.model import SpecialTokens, masked_logits, split_head
from diffusion_core.training import TrainConfig, train


def _family(name: str, tokenizer):
    v, pad = len(tokenizer), tokenizer.pad_token_id
    small = dict(vocab_size=v, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(0)
    if name == "bert":
        return BertForMaskedLM(BertConfig(**small, max_position_embeddings=64, pad_token_id=pad))
    if name == "roberta":
        return RobertaForMaskedLM(RobertaConfig(**small, max_position_embeddings=64 + pad + 1, pad_token_id=pad))
    if name == "distilbert":
        config = DistilBertConfig(vocab_size=v, dim=32, hidden_dim=64, n_layers=2, n_heads=2, pad_token_id=pad)
        return DistilBertForMaskedLM(config)
    special = SpecialTokens.of(tokenizer)
    config = ModernBertConfig(
        **small, max_position_embeddings=64, pad_token_id=pad, bos_token_id=special.start, eos_token_id=special.end,
        cls_token_id=special.start, sep_token_id=special.end, global_attn_every_n_layers=1, local_attention=16,
    )  # fmt: skip
    return ModernBertForMaskedLM(config)


FAMILIES = ["bert", "roberta", "distilbert", "modernbert"]


@pytest.fixture(params=FAMILIES)
def family(request, tokenizer):
    return _family(request.param, tokenizer).eval()


def test_the_head_runs_on_the_masked_positions_only_and_agrees_with_the_full_model(family, tokenizer):
    assert split_head(family) is not None, "each family's LM head is found"
    ids = torch.tensor([tokenizer("the quick brown fox jumps")["input_ids"]] * 2)
    attention = torch.ones_like(ids)
    rows, cols = torch.tensor([0, 1, 1]), torch.tensor([1, 2, 3])
    with torch.no_grad():
        full = family(input_ids=ids, attention_mask=attention).logits[rows, cols]
        assert torch.allclose(masked_logits(family, ids, attention, rows, cols), full, atol=1e-5)


def test_each_family_generates_and_fills_blanks_in_place(family, tokenizer):
    config = GenerationConfig(max_new_tokens=8, steps=4, block_length=4, seed=0, forbid_eos=True, cache="dual")
    state = create_denoiser(family, tokenizer, "the quick", config)
    assert state.masked.sum() == 8
    list(run(family, state))
    written = state.result().written[0]
    special = set(tokenizer.all_special_ids)
    assert state.result().nfe == 4 and len(written) == 8 and not special & set(written), "8 real tokens in 4 passes"
    infill = GenerationConfig(max_new_tokens=0, steps=2)
    blanks = create_denoiser(family, tokenizer, "the <mask> brown <mask> jumps", infill)
    before = blanks.tokens[0].clone()
    list(run(family, blanks))
    after, holes = blanks.tokens[0], before == tokenizer.mask_token_id
    assert int(holes.sum()) == 2 and torch.equal(after[~holes], before[~holes]), "the text around the blanks stays"
    assert not special & set(after[holes].tolist()), "each blank holds a real token"


def test_each_family_fine_tunes_from_a_checkpoint(family, tokenizer, corpus_file, tmp_path):
    base = checkpoint.save(family, tokenizer, tmp_path / "base", {"format": 1})
    config = TrainConfig(
        data=(str(corpus_file),), base=str(base), output=str(tmp_path / "tuned"), max_length=32,
        batch_size=4, max_steps=3, eval_every=3, precision="fp32",
    )  # fmt: skip
    tuned, _ = checkpoint.load(train(config, show_progress=False), torch.device("cpu"))
    assert type(tuned) is type(family)
    moved = [name for name, p in tuned.named_parameters() if not torch.equal(p, family.get_parameter(name))]
    assert len(moved) > len(list(tuned.parameters())) // 2, "three optimizer steps changed the weights"
    assert checkpoint.read_metadata(tmp_path / "tuned")["training"]["steps"] == 3
    assert generate(tuned, tokenizer, "the", GenerationConfig(max_new_tokens=4, steps=2, seed=0)).nfe >= 1


def test_a_tokenizer_without_a_mask_token_is_named_in_the_error(tokenizer):
    import copy

    plain = copy.deepcopy(tokenizer)
    plain.mask_token = None
    with pytest.raises(TokenizerError, match="no mask token"):
        SpecialTokens.of(plain)
