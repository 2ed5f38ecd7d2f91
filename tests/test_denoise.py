import math
from dataclasses import replace

import pytest
import torch

from diffusion_core import (
    ConfigError,
    GenerationConfig,
    InputError,
    StepOutputs,
    create_denoiser,
    denoising,
    generate,
)
from diffusion_core.model import SpecialTokens


def _frames(model, tokenizer, prompt, **kw):
    return list(denoising(model, tokenizer, prompt, GenerationConfig(**kw)))


def test_prompt_tokens_never_change_and_no_mask_remains(tiny_model, tokenizer):
    frames = _frames(tiny_model, tokenizer, "the quick brown", max_new_tokens=12, steps=6, seed=0, forbid_eos=True)
    start = SpecialTokens.of(tokenizer).start
    prompt = torch.tensor([start, *tokenizer("the quick brown", add_special_tokens=False)["input_ids"]])
    n = len(prompt)
    for frame in frames:
        assert torch.equal(frame.tokens[0, :n], prompt) and frame.prompt_length == n
        assert not frame.masked[0, :n].any() and frame.fixed[0, :n].all() and not frame.fixed[0, n:].any()
    assert frames[-1].done and not frames[-1].masked.any()
    assert len(frames) == 6


def test_same_seed_same_text_other_seed_other_text(tiny_model, tokenizer):
    config = dict(max_new_tokens=16, steps=4, seed=7, sampling="temperature", forbid_eos=True)
    a = generate(tiny_model, tokenizer, "the quick", GenerationConfig(**config)).texts
    b = generate(tiny_model, tokenizer, "the quick", GenerationConfig(**config)).texts
    c = generate(tiny_model, tokenizer, "the quick", GenerationConfig(**{**config, "seed": 8})).texts
    assert a == b
    assert a != c


def test_num_samples_run_as_one_batch_each_with_its_own_seed(tiny_model, tokenizer):
    config = GenerationConfig(
        max_new_tokens=10, steps=5, seed=3, num_samples=4, sampling="temperature", forbid_eos=True
    )
    out = generate(tiny_model, tokenizer, "a journey", config, keep_frames=True)
    assert len(out.texts) == 4 and out.nfe == 5
    assert out.frames[0].tokens.shape[0] == 4
    assert len(set(out.texts)) > 1
    solo = generate(
        tiny_model, tokenizer, "a journey", GenerationConfig(**{**vars(config), "num_samples": 1, "seed": 5})
    )
    assert solo.texts[0] == out.texts[2], "sample i uses seed + i, whatever it is batched with"


@pytest.mark.parametrize("schedule", ["linear", "cosine", "exponential", "loglinear"])
def test_reveal_counts_follow_the_schedule(tiny_model, tokenizer, schedule):
    frames = _frames(
        tiny_model,
        tokenizer,
        "the",
        max_new_tokens=20,
        steps=5,
        schedule=schedule,
        seed=0,
        forbid_eos=True,
        block_length=0,
    )
    remaining = [int(f.masked.sum()) for f in frames]
    gamma = {  # docs/guide.md's table, written out here rather than taken from schedules.py
        "linear": lambda r: 1 - r,
        "cosine": lambda r: math.cos(math.pi * r / 2),
        "exponential": lambda r: 1 - (math.exp(4 * r) - 1) / (math.exp(4) - 1),
        "loglinear": lambda r: 1 - math.log(1 + 20 * r) / math.log(21),
    }[schedule]
    expected, left = [], 20
    for step in range(1, 6):  # floor(20 * gamma(step / 5)) stay masked, and each step reveals at least one
        left = min(math.floor(20 * gamma(step / 5) + 1e-9), left - 1)
        expected.append(max(left, 0))
    assert remaining == expected


def test_threshold_reveals_at_least_one_per_step_and_can_finish_early(tiny_model, tokenizer):
    frames = _frames(
        tiny_model,
        tokenizer,
        "the",
        max_new_tokens=8,
        steps=8,
        remasking="threshold",
        threshold=1.0,
        seed=0,
        forbid_eos=True,
    )
    assert all(f.revealed.sum() >= 1 for f in frames)
    loose = _frames(
        tiny_model,
        tokenizer,
        "the",
        max_new_tokens=8,
        steps=8,
        remasking="threshold",
        threshold=1e-9,
        seed=0,
        forbid_eos=True,
    )
    assert len(loose) == 1


def test_infilling_fills_each_blank_in_place_and_keeps_the_text_around_it(tiny_model, tokenizer):
    text = "the quick <mask><mask> fox jumps"
    config = GenerationConfig(max_new_tokens=0, steps=2, seed=0)
    state = create_denoiser(tiny_model, tokenizer, text, config)
    blanks = state.masked[0].nonzero().flatten().tolist()
    before = state.tokens[0].clone()
    frames = list(denoising(tiny_model, tokenizer, text, config))
    after = frames[-1].tokens[0]
    filled = after[blanks].tolist()
    assert len(blanks) == 2 and not set(filled) & set(tokenizer.all_special_ids), "both blanks hold real tokens"
    others = [i for i in range(len(after)) if i not in blanks]
    assert after[others].tolist() == before[others].tolist(), "the text around the blanks is as given"
    out = generate(tiny_model, tokenizer, text, config).texts[0]
    middle = tokenizer.decode(filled).strip()
    assert middle and out.startswith("the quick") and out.endswith(" fox jumps") and middle in out


def test_blocks_slide_past_the_position_limit(tiny_model, tokenizer):
    frames = _frames(
        tiny_model, tokenizer, "the", max_new_tokens=100, steps=10, block_length=16, seed=0, forbid_eos=True
    )
    assert frames[-1].tokens.shape[1] > 64
    assert not frames[-1].masked.any()
    blocks = [f.block for f in frames]
    assert blocks == sorted(blocks) and blocks[-1] == 6


def test_too_long_without_blocks_names_the_fix(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match="block_length"):
        _frames(tiny_model, tokenizer, "the", max_new_tokens=100, steps=10, block_length=0)


def test_prompt_longer_than_the_model_is_refused(tiny_model, tokenizer):
    with pytest.raises(InputError, match="prompt is"):
        _frames(tiny_model, tokenizer, "the quick brown fox " * 30, max_new_tokens=4, block_length=4)


def test_generation_stops_at_the_first_committed_end_token(tiny_model, tokenizer):
    special = SpecialTokens.of(tokenizer)
    state = create_denoiser(
        tiny_model, tokenizer, "the", GenerationConfig(max_new_tokens=10, steps=10, seed=0, sampling="greedy")
    )
    vocab = tiny_model.config.vocab_size
    step = state.request()
    logits = torch.zeros(step.rows.numel(), vocab)
    logits[:, special.end] = -5.0
    logits[3, special.end] = 10.0  # one confident end token in the 4th generated slot
    state.advance(step, StepOutputs(logits))
    frame = state.frame()
    generated = frame.tokens[0, 2:]
    assert generated[3] == special.end and (generated[4:] == special.pad).all()
    assert int(frame.masked.sum()) == 3, "only the slots before the end token are left to fill"
    while not state.finished:
        step = state.request()
        state.advance(
            step,
            StepOutputs(logits[: step.rows.numel()].clone().fill_(0).index_fill_(1, torch.tensor([special.end]), -5.0)),
        )
    result = state.result()
    assert result.finish_reasons == ["eos"] and state.frame().ended.tolist() == [True]
    assert len(result.ids[0]) == 3 and special.mask not in result.ids[0], "the slots before it filled"
    assert result.nfe > 1, "a row that wrote its end token goes on filling the slots before it"


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"schedule": "quadratic"}, "schedule"),
        ({"sampling": "beam"}, "sampling"),
        ({"remasking": "oracle"}, "remasking"),
        ({"steps": 0}, "steps"),
        ({"top_p": 1.5}, "top_p"),
        ({"temperature": 0}, "temperature"),
        ({"num_samples": 0}, "num_samples"),
    ],
)
def test_bad_options_name_the_option(kw, field):
    with pytest.raises(ConfigError, match=field):
        GenerationConfig(**kw)


def _widths(model, tokenizer, text: str, config: GenerationConfig) -> list[int]:
    from diffusion_core.denoise import run

    state = create_denoiser(model, tokenizer, text, config)
    widths = []
    original = state.request

    def spy():
        inputs = original()
        widths.append(inputs.input_ids.shape[1])
        return inputs

    state.request = spy  # type: ignore[method-assign]
    list(run(model, state))
    assert not state.masked.any()
    return widths


def test_without_future_masks_each_pass_covers_the_text_so_far_and_this_block(tiny_model, tokenizer):
    config = GenerationConfig(max_new_tokens=24, steps=6, block_length=8, seed=0, forbid_eos=True)
    prompt = len(create_denoiser(tiny_model, tokenizer, "the quick", config).tokens[0]) - 24
    assert set(_widths(tiny_model, tokenizer, "the quick", config)) == {prompt + 24}
    short = _widths(tiny_model, tokenizer, "the quick", replace(config, future_masks=False))
    assert short == [prompt + 8] * 2 + [prompt + 16] * 2 + [prompt + 24] * 2


def test_without_future_masks_infilling_still_sees_the_text_after_each_blank(tiny_model, tokenizer):
    text = "the <mask> <mask> fox jumps over the <mask> dog."
    config = GenerationConfig(max_new_tokens=0, steps=3, block_length=1, seed=0, future_masks=False)
    full = len(create_denoiser(tiny_model, tokenizer, text, config).tokens[0])
    assert set(_widths(tiny_model, tokenizer, text, config)) == {full}


def test_every_pass_commits_at_least_one_token_even_when_the_schedule_asks_for_none(tiny_model, tokenizer):
    """3 tokens in 8 cosine steps: floor(3 * gamma) stays at 2 for the first steps, yet each pass commits
    one, so the block is done in 3 passes with nothing left masked."""
    frames = _frames(tiny_model, tokenizer, "the", max_new_tokens=3, steps=8, seed=0, forbid_eos=True, block_length=0)
    assert [int(f.masked.sum()) for f in frames] == [2, 1, 0]


def test_threshold_remasking_fills_every_slot_by_the_last_planned_pass(tiny_model, tokenizer):
    """A threshold the tiny model never reaches still leaves no mask: the last planned pass of a block
    commits whatever is left."""
    config = dict(max_new_tokens=8, steps=2, seed=0, forbid_eos=True, remasking="threshold", threshold=0.999)
    frames = _frames(tiny_model, tokenizer, "the", block_length=0, **config)
    assert len(frames) == 2 and int(frames[0].masked.sum()) == 7 and not frames[-1].masked.any()


@pytest.mark.parametrize("remasking", ["low_confidence", "random"])
def test_the_first_pass_of_a_block_keeps_its_slots_apart(tiny_model, tokenizer, remasking):
    """Four of a block's 16 slots per pass: the first pass has room to keep all four 3 columns apart;
    every pass still keeps the schedule's count."""
    config = dict(max_new_tokens=32, steps=8, block_length=16, schedule="linear", remasking=remasking, forbid_eos=True)
    for seed in range(4):
        frames = _frames(tiny_model, tokenizer, "the", seed=seed, **config)
        plain = _frames(tiny_model, tokenizer, "the", seed=seed, spacing=1, **config)
        assert [int(f.revealed.sum()) for f in frames] == [int(f.revealed.sum()) for f in plain]
        for first in (frames[0], frames[4]):
            columns = first.revealed[0].nonzero().flatten()
            assert len(columns) == 4 and (columns.diff() >= 3).all(), columns.tolist()
