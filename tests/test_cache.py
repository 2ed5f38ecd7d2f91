"""The block cache: a cached pass computes what the full pass computes when the cache matches the
canvas; a stale cache is an approximation whose size is measured; other layouts run full passes."""

import logging
from dataclasses import replace

import pytest
import torch
from transformers import DistilBertConfig, DistilBertForMaskedLM

from diffusion_core import ConfigError, GenerationConfig, checkpoint, create_denoiser, generate
from diffusion_core.cache import KV, BlockCache, CacheMode, cached_logits, layers_of
from diffusion_core.denoise import StepOutputs, forward, inference
from diffusion_core.model import masked_logits
from diffusion_core.starter import STARTER_DIFFUSION


def _canvas(model, tokenizer, text: str, config: GenerationConfig, passes: int):
    """The window after `passes` uncached passes (so the canvas holds text and masks)."""
    state = create_denoiser(model, tokenizer, text, replace(config, cache="none"))
    with inference(state.device):
        for _ in range(passes):
            step = state.request()
            state.advance(step, forward(model, step))
        return state.request()


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_a_cached_pass_over_a_fresh_cache_gives_the_full_passs_logits(tiny_model, tokenizer, mode):
    config = GenerationConfig(max_new_tokens=24, steps=12, block_length=8, num_samples=3, seed=1)
    step = _canvas(tiny_model, tokenizer, "the quick brown", config, passes=5)  # second block, half written
    ids, attention = step.input_ids, step.attention_mask
    b, width = ids.shape
    block = step.cols.unique()
    start, end = int(block.min()), width if mode == "prefix" else int(block.max()) + 1
    with torch.inference_mode():
        full = masked_logits(tiny_model, ids, attention, step.rows, step.cols)
        everything = torch.arange(width).expand(b, width)
        _, kv = cached_logits(tiny_model, ids, attention, everything, None, None, step.rows, step.cols)
        outside = torch.cat([torch.arange(start), torch.arange(end, width)])
        past = type(kv)(tuple(k[:, :, outside] for k in kv.keys), tuple(v[:, :, outside] for v in kv.values))
        query = torch.arange(start, end).expand(b, end - start)
        cached, _ = cached_logits(
            tiny_model, ids, attention, query, past, attention[:, outside], step.rows, step.cols - start
        )
    assert torch.allclose(cached, full, atol=1e-4), (cached - full).abs().max()


@pytest.fixture(scope="module")
def starter():
    return checkpoint.load(STARTER_DIFFUSION, torch.device("cpu"))


def test_a_stale_cache_changes_the_logits(starter):
    """Cache the finished block while the next one is all masks, write part of the next one, and the
    cached pass no longer equals the full pass (the approximation): the change is reported."""
    model, tokenizer = starter
    config = GenerationConfig(max_new_tokens=32, steps=8, block_length=8, seed=1, forbid_eos=True)
    early = _canvas(model, tokenizer, "It was a fine morning, and", config, passes=2)
    late = _canvas(model, tokenizer, "It was a fine morning, and", config, passes=3)
    b, width = late.input_ids.shape
    start = int(late.cols.min())
    everything = torch.arange(width).expand(b, width)
    with torch.inference_mode():
        _, stale = cached_logits(
            model, early.input_ids, early.attention_mask, everything, None, None, late.rows, late.cols
        )
        full = masked_logits(model, late.input_ids, late.attention_mask, late.rows, late.cols)
        query = torch.arange(start, width).expand(b, width - start)
        past = stale.columns(0, start)
        cached, _ = cached_logits(
            model,
            late.input_ids,
            late.attention_mask,
            query,
            past,
            late.attention_mask[:, :start],
            late.rows,
            late.cols - start,
        )
    p, q = full.log_softmax(-1), cached.log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1)
    print(f"KL(full || cached) per masked slot, cache one pass stale: mean {float(kl.mean()):.4f}")
    assert float(kl.mean()) > 1e-3 and (cached.argmax(-1) == full.argmax(-1)).float().mean() > 0.5


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("text", ["the quick brown", "she sells <mask> shells by the <mask>"])
def test_with_one_pass_per_block_and_a_refresh_each_block_the_text_is_unchanged(tiny_model, tokenizer, mode, text):
    """Every pass is then a refresh: the cache's own layer loop must reproduce the model's forward."""
    base = GenerationConfig(
        max_new_tokens=24, steps=3, block_length=8, num_samples=3, seed=4, forbid_eos=True, cache="none"
    )
    plain = generate(tiny_model, tokenizer, text, base)
    cached = generate(tiny_model, tokenizer, text, GenerationConfig(**{**vars(base), "cache": mode}))
    assert cached.texts == plain.texts and cached.nfe == plain.nfe == len(
        create_denoiser(tiny_model, tokenizer, text, base).plan.blocks
    )


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_rows_that_write_their_end_token_read_the_cache_as_full_passes_would(tiny_model, tokenizer, mode):
    """With end tokens allowed some rows end early: past its end a row is padding that nothing attends
    to, in cached passes as in full ones (every pass a refresh, so the texts must agree exactly)."""
    import copy

    ending = copy.deepcopy(tiny_model)
    with torch.no_grad():
        ending.lm_head.bias[tokenizer.eos_token_id] += 4.0  # end tokens likely, not certain
    base = GenerationConfig(max_new_tokens=24, steps=3, block_length=8, num_samples=6, seed=4, cache="none")
    plain = generate(ending, tokenizer, "the quick brown", base)
    cached = generate(
        ending, tokenizer, "the quick brown", GenerationConfig(**{**vars(base), "cache": mode}), keep_frames=True
    )
    assert 0 < plain.finish_reasons.count("eos") < 6, plain.finish_reasons
    assert cached.texts == plain.texts and cached.finish_reasons == plain.finish_reasons
    last = cached.frames[-1]
    for row, reason in enumerate(cached.finish_reasons):
        ends = ((last.tokens[row] == tokenizer.eos_token_id) & last.live[row] & ~last.fixed[row]).nonzero()
        if reason == "eos":
            assert not last.live[row, int(ends[0]) + 1 :].any(), "nothing past a row's end token is part of it"


@pytest.mark.parametrize("mode", ["prefix", "dual"])
def test_when_the_window_slides_the_cache_starts_afresh(tiny_model, tokenizer, mode):
    """Past the model's positions each block sees a window that starts later: cached keys and values
    belong to other columns then, so the block's first pass recomputes everything, whatever `refresh`."""
    positions = tiny_model.config.max_position_embeddings - 2
    config = GenerationConfig(max_new_tokens=positions + 48, steps=(positions + 48) // 4, block_length=16, seed=1,
                              forbid_eos=True, cache=mode, cache_refresh=100)  # fmt: skip
    state = create_denoiser(tiny_model, tokenizer, "the quick brown", config)
    firsts = []
    with inference(state.device):
        while not state.finished:
            step = state.request()
            block = state.plan.blocks[state.now.block]
            if step.cache is not None and step.cache.store:
                firsts.append((block.start > 1, step.cache.full))
            state.advance(step, forward(tiny_model, step))
    slid = [full for moved, full in firsts if moved]
    assert len(slid) >= 2 and all(slid), firsts
    if mode == "prefix":  # (a canvas past the positions has no future masks: the dual cache has no suffix to keep)
        assert not all(full for moved, full in firsts if not moved), "before it slides, the prefix is reused"


@pytest.mark.parametrize("mode", ["prefix", "dual"])
@pytest.mark.parametrize("refresh", [1, 2, 100])
def test_cached_generation_fills_every_slot_in_the_planned_passes(tiny_model, tokenizer, mode, refresh):
    config = GenerationConfig(
        max_new_tokens=32,
        steps=16,
        block_length=8,
        num_samples=2,
        seed=7,
        forbid_eos=True,
        cache=mode,
        cache_refresh=refresh,
        future_masks=refresh != 2,
    )
    state = create_denoiser(tiny_model, tokenizer, "a journey of", config)
    with inference(state.device):
        while not state.finished:
            step = state.request()
            state.advance(step, forward(tiny_model, step))
    result = state.result()
    assert result.nfe == 16 and not state.masked.any()
    assert all(n == 32 for n in result.generated_tokens)


@pytest.mark.parametrize("mode", [CacheMode.PREFIX, CacheMode.DUAL])
def test_a_later_pass_reads_cached_columns_masked_as_the_window_is_now(mode):
    """A row that ended since the block's first pass is padding past its end: the cached keys and values
    of those columns are masked by the window's attention now, before and after the block."""
    cache = BlockCache(mode, refresh=100)
    first = cache.plan(True, True, start=4, end=8, width=12)
    assert first is not None and first.full
    computed = KV((torch.randn(2, 1, 12 - first.lo, 2),), (torch.randn(2, 1, 12 - first.lo, 2),))
    cache.keep(first, computed)
    later = cache.plan(False, True, start=4, end=8, width=12)
    attention = torch.ones(2, 12, dtype=torch.long)
    attention[1, 2:4] = 0  # row 1: padding before the block (a joined batch)
    attention[1, 10:] = 0  # and past its end token, after the block
    past, mask = cache.past(later, attention)
    read = [*range(0, 4), *(range(8, 12) if mode is CacheMode.DUAL else [])]
    assert past is not None and past.length == len(read)
    assert torch.equal(mask, attention[:, read].bool()), "the mask of the columns read, as the window is now"


def test_a_model_of_another_layout_runs_full_passes_with_one_notice(tokenizer, caplog, monkeypatch):
    monkeypatch.setattr("diffusion_core.cache._warned", set())  # as in a fresh process
    config = DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=32,
        hidden_dim=64,
        n_layers=1,
        n_heads=2,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = DistilBertForMaskedLM(config).eval()
    assert layers_of(model) is None
    request = GenerationConfig(max_new_tokens=8, steps=4, block_length=4, seed=0, forbid_eos=True, cache="none")
    with caplog.at_level(logging.WARNING, logger="unmask"):
        cached = [
            generate(model, tokenizer, "the", GenerationConfig(**{**vars(request), "cache": "dual"})) for _ in range(2)
        ]
    assert cached[0].texts == generate(model, tokenizer, "the", request).texts
    notices = [r.getMessage() for r in caplog.records if "full passes" in r.getMessage()]
    assert len(notices) == 1 and "DistilBertForMaskedLM" in notices[0]


def test_an_unknown_cache_mode_names_the_field():
    with pytest.raises(ConfigError) as caught:
        GenerationConfig(cache="kv")
    assert caught.value.param == "cache"
    with pytest.raises(ConfigError) as caught:
        GenerationConfig(cache="dual", cache_refresh=0)
    assert caught.value.param == "cache_refresh"


def test_steps_outputs_split_by_request_keep_each_requests_rows(tiny_model, tokenizer):
    """Two cached requests joined in one pass get back their own keys and values."""
    from diffusion_core.denoise import StepInputs

    configs = [
        GenerationConfig(max_new_tokens=n, steps=4, block_length=4, num_samples=k, seed=0, cache="dual")
        for n, k in ((8, 2), (12, 1))
    ]
    states = [create_denoiser(tiny_model, tokenizer, t, c) for t, c in zip(["the", "a journey of a"], configs)]
    with inference(states[0].device):
        inputs = [s.request() for s in states]
        parts = forward(tiny_model, StepInputs.join(inputs, pad=tokenizer.pad_token_id)).split(inputs)
        alone = [forward(tiny_model, i) for i in inputs]
    assert [p.kv.keys[0].shape[0] for p in parts] == [2, 1]
    for part, solo, step in zip(parts, alone, inputs):
        assert isinstance(part, StepOutputs) and torch.allclose(part.logits, solo.logits, atol=1e-5)
        width = step.query.shape[1]  # the joined batch pads each request's queries to the longest
        for ours, theirs in zip(
            part.kv.columns(0, width).keys + part.kv.columns(0, width).values, solo.kv.keys + solo.kv.values
        ):
            assert torch.allclose(ours, theirs, atol=1e-5), "each request gets its own keys and values back"


@pytest.mark.parametrize("refresh", [1, 3])
def test_the_cache_refreshes_at_the_first_pass_of_every_nth_block(refresh):
    """A refresh computes every column from 0; another block's first pass starts where the cache ends.
    Planning a pass changes nothing: only keep() with the planned pass does."""
    from diffusion_core.cache import BlockCache, CacheMode

    cache = BlockCache(CacheMode.DUAL, refresh)
    width, starts = 100, [10, 26, 42, 58, 74, 90]
    for index, start in enumerate(starts):
        now = cache.plan(True, True, start, start + 16, width)
        assert now is not None and cache.plan(True, True, start, start + 16, width) == now, "planning is a read"
        full = index % refresh == 0
        assert (now.lo, now.hi) == ((0, width) if full else (starts[index - 1], start + 16)), index
        assert (cache.past(now, torch.ones(1, width, dtype=torch.long))[0] is None) == full, "a refresh reads nothing"
        layers = KV((torch.zeros(1, 1, now.hi - now.lo, 2),), (torch.zeros(1, 1, now.hi - now.lo, 2),))
        cache.keep(now, layers)
        assert cache.prefix_end == start and cache.prefix.length == start
        later = cache.plan(False, True, start, start + 16, width)
        assert later is not None and (later.lo, later.hi) == (start, start + 16), "later passes: the block"
        cache.keep(later, layers)
        assert cache.prefix_end == start, "only a block's first pass is kept"


def test_without_a_cache_every_pass_is_full(tiny_model, tokenizer):
    from diffusion_core.cache import BlockCache, CacheMode

    assert BlockCache(CacheMode.NONE, 1).plan(True, True, 1, 9, 20) is None
    config = GenerationConfig(max_new_tokens=16, steps=4, block_length=8, seed=0, cache="none")
    step = create_denoiser(tiny_model, tokenizer, "the", config).request()
    assert step.query is None and step.past is None and step.cache is None
