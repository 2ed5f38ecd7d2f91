"""Penalties, guidance and revision (re-masking, editing): each does what it says, and each keeps the
request's seeded text independent of what it is batched with."""

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from diffusion_core import ConfigError, GenerationConfig, create_denoiser, generate
from diffusion_core.passes import forward, inference
from diffusion_core.penalties import Penalties, penalize
from diffusion_core.revision import remask_choice, remask_counts

BASE = dict(max_new_tokens=24, steps=12, block_length=8, num_samples=2, seed=5, forbid_eos=True)


def test_the_repetition_penalty_matches_hugging_faces_and_tgis():
    torch.manual_seed(0)
    logits = torch.randn(3, 50) * 3
    tokens = torch.tensor([[1, 7, 7, 9, 4], [2, 3, 3, 3, 0]])
    in_text = torch.tensor([[True, True, True, True, False], [True, True, False, True, True]])
    rows = torch.tensor([0, 0, 1])
    ours = penalize(logits, rows, tokens, in_text, in_text, Penalties(repetition=1.7))
    context = [[1, 7, 7, 9], [2, 3, 3, 0]]  # what each row's text holds (the masked column left out)
    reference = RepetitionPenaltyLogitsProcessor(1.7)
    expected = torch.cat([reference(torch.tensor([context[r]]), logits[i : i + 1].clone()) for i, r in enumerate(rows)])
    assert torch.allclose(ours, expected)


def test_frequency_and_presence_penalties_subtract_per_time_written_and_once():
    """Each prediction is penalised by its own row's text: row 0 wrote 4 three times and 6 once, row 1 wrote 7."""
    logits = torch.zeros(3, 10)
    tokens = torch.tensor([[0, 4, 4, 4, 6, 8], [0, 7, 2, 2, 2, 8]])
    written = torch.tensor([[False, True, True, True, True, False], [False, True, False, False, False, False]])
    rows = torch.tensor([0, 1, 1])
    out = penalize(logits, rows, tokens, written | True, written, Penalties(frequency=0.5, presence=0.25))
    first, second = torch.zeros(10), torch.zeros(10)
    first[4], first[6], second[7] = -(3 * 0.5 + 0.25), -(0.5 + 0.25), -(0.5 + 0.25)  # 2 and 8: not written
    assert torch.equal(out[0], first) and torch.equal(out[1], second) and torch.equal(out[2], second)


def _repeats(texts: list[list[int]]) -> int:
    return sum(len(ids) - len(set(ids)) for ids in texts)


def test_penalties_make_a_greedy_sample_repeat_itself_less(tiny_model, tokenizer):
    config = GenerationConfig(**{**BASE, "sampling": "greedy"})
    plain = create_denoiser(tiny_model, tokenizer, "the quick", config)
    penalised = create_denoiser(
        tiny_model, tokenizer, "the quick", GenerationConfig(**{**vars(config), "repetition_penalty": 3.0})
    )
    frequent = create_denoiser(
        tiny_model, tokenizer, "the quick", GenerationConfig(**{**vars(config), "frequency_penalty": 2.0})
    )
    counts = []
    for state in (plain, penalised, frequent):
        for _ in _run(tiny_model, state):
            pass
        counts.append(_repeats(state.result().written))
    assert counts[0] > 4, "greedy decoding of this model repeats itself"
    assert counts[1] < counts[0] / 2 and counts[2] < counts[0] / 2, counts


def _run(model, state):
    with inference(state.device):
        while not state.finished:
            step = state.request()
            state.advance(step, forward(model, step))
            yield state.frame()


def test_guidance_runs_the_prompt_masked_beside_the_request_and_moves_its_logits(tiny_model, tokenizer):
    config = GenerationConfig(**{**BASE, "cfg_scale": 1.5, "cache": "none"})
    state = create_denoiser(tiny_model, tokenizer, "the quick brown", config)
    step = state.request()
    b = config.num_samples
    conditional, unconditional = step.input_ids[:b], step.input_ids[b:]
    prompt = slice(1, state.prompt_length)
    assert (unconditional[:, prompt] == tokenizer.mask_token_id).all() and torch.equal(
        conditional[:, prompt], state.tokens[:, prompt]
    )
    assert torch.equal(unconditional[:, 0], conditional[:, 0]), "the start token stays"
    assert step.rows.numel() == 2 * step.slots.numel()
    plain = generate(tiny_model, tokenizer, "the quick brown", GenerationConfig(**{**BASE, "cache": "none"}))
    guided = generate(tiny_model, tokenizer, "the quick brown", config)
    assert guided.texts != plain.texts and guided.nfe == plain.nfe


@pytest.mark.parametrize("strategy", ["cap", "rescale", "conf"])
def test_remasking_takes_back_committed_tokens_without_adding_passes(tiny_model, tokenizer, strategy):
    config = GenerationConfig(**{**BASE, "revise": strategy, "revise_eta": 0.5})
    frames = list(_run(tiny_model, create_denoiser(tiny_model, tokenizer, "the quick", config)))
    plain = generate(tiny_model, tokenizer, "the quick", GenerationConfig(**BASE))
    assert len(frames) == plain.nfe and not frames[-1].masked.any()
    taken_back = sum(int((~a.masked & b.masked).sum()) for a, b in zip(frames, frames[1:]))
    assert taken_back > 0, "some committed slot was masked again"
    for a, b in zip(frames, frames[1:]):
        again = ~a.masked & b.masked
        assert not (again & b.fixed).any(), "the prompt is never taken back"
        assert (b.tokens[again] == tokenizer.mask_token_id).all()
    plain_frames = generate(tiny_model, tokenizer, "the quick", GenerationConfig(**BASE), keep_frames=True).frames
    assert [int(f.masked.sum()) for f in frames] == [int(f.masked.sum()) for f in plain_frames], "the schedule holds"


def test_remask_counts_follow_remdms_bounds():
    committed, target = torch.tensor([10, 10, 2, 0]), torch.tensor([3, 8, 8, 5])
    assert remask_counts("cap", 0.5, committed, target).tolist() == [3, 5, 1, 0]
    assert remask_counts("rescale", 0.5, committed, target).tolist() == [1, 4, 1, 0]


def test_conf_takes_back_the_least_confident_tokens_first():
    eligible = torch.tensor([[True, True, True, False]])
    confidence = torch.tensor([[0.9, 0.2, 0.5, 0.01]])
    chosen = remask_choice("conf", eligible, torch.tensor([2]), confidence, torch.rand(1, 4))
    assert chosen.tolist() == [[False, True, True, False]]


def test_editing_replaces_committed_tokens_and_marks_them(tiny_model, tokenizer):
    config = GenerationConfig(**{**BASE, "edit_margin": 1e-6, "sampling": "temperature"})
    frames = list(_run(tiny_model, create_denoiser(tiny_model, tokenizer, "the quick", config)))
    edited = [(i, f.edited) for i, f in enumerate(frames) if f.edited.any()]
    assert edited, "this model's predictions for committed slots differ from them"
    for i, mask in edited:
        before, after = frames[i - 1], frames[i]
        assert not (mask & (before.masked | after.masked | after.fixed)).any(), "only committed text is edited"
        assert (before.tokens[mask] != after.tokens[mask]).all()
    assert not frames[-1].masked.any()


def test_an_unknown_revision_names_its_field():
    with pytest.raises(ConfigError) as caught:
        GenerationConfig(revise="loop")
    assert caught.value.param == "revise"
    with pytest.raises(ConfigError) as caught:
        GenerationConfig(frequency_penalty=3)
    assert caught.value.param == "frequency_penalty"
