import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_core import GenerationConfig, create_denoiser, generate
from diffusion_core.config import SCHEDULES
from diffusion_core.errors import ConfigError
from diffusion_core.plan import Plan


def _walk(plan: Plan) -> list[tuple[int, int, int]]:
    """(block, step, masks left) of every pass the plan makes when each keeps what it planned."""
    passes, now = [], plan.first()
    while now is not None:
        passes.append((now.block, now.step, now.left))
        now = plan.after(now)
    return passes


@settings(max_examples=200, deadline=None)
@given(
    new=st.integers(1, 120),
    prompt=st.integers(0, 8),
    steps=st.integers(1, 70),
    block_length=st.integers(0, 40),
    schedule=st.sampled_from(SCHEDULES),
)
def test_a_plan_fills_every_slot_keeping_at_least_one_per_pass_within_the_steps(
    new, prompt, steps, block_length, schedule
):
    masked = [False] * (1 + prompt) + [True] * new
    config = GenerationConfig(max_new_tokens=new, steps=steps, block_length=block_length, schedule=schedule)
    plan = Plan.of(masked, config, window=512)
    passes = _walk(plan)
    assert sum(len(b.columns) for b in plan.blocks) == new
    assert len(passes) <= max(steps, len(plan.blocks)), "never more passes than steps (one per block at least)"
    for index, block in enumerate(plan.blocks):
        lefts = [left for b, _, left in passes if b == index]
        assert lefts[0] == len(block.columns) and 1 <= len(lefts) <= block.steps
        kept = [a - b for a, b in zip(lefts, lefts[1:] + [0])]
        assert all(k >= 1 for k in kept), "every pass commits something"


def test_a_canvas_longer_than_the_model_slides_each_blocks_window_to_end_at_the_block():
    masked = [False] * 5 + [True] * 100
    plan = Plan.of(masked, GenerationConfig(max_new_tokens=100, steps=10, block_length=20), window=64)
    for block in plan.blocks:
        assert block.end == block.columns[-1] + 1 and block.end - block.start + 1 <= 64
        assert block.to_window(block.columns[0]) >= 1 and block.to_window(block.columns[-1]) == block.end - block.start
    with pytest.raises(ConfigError) as caught:
        Plan.of(masked, GenerationConfig(max_new_tokens=100, steps=10, block_length=80), window=64)
    assert caught.value.param == "block_length"


@pytest.mark.parametrize("forbid_eos", [True, False])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_every_step_commits_what_the_plan_says(tiny_model, tokenizer, forbid_eos, schedule):
    """The rows on the device and the plan on the host keep the same counts; a request that watches for
    its end token reads the count after each pass instead, and agrees with the plan until a row ends."""
    config = GenerationConfig(
        max_new_tokens=24, steps=10, block_length=8, num_samples=2, seed=3, schedule=schedule, forbid_eos=forbid_eos
    )
    state = create_denoiser(tiny_model, tokenizer, "the quick", config)
    assert state.watch is not forbid_eos
    planned = _walk(state.plan)
    frames = generate(tiny_model, tokenizer, "the quick", config, keep_frames=True).frames
    before = [None, *frames[:-1]]  # the state each pass started from
    for (block, _, left), frame, after in zip(planned, before, frames):
        if after.ended.any():
            break
        columns = list(state.plan.blocks[block].columns)
        masks = len(columns) if frame is None else int(frame.masked[:, columns].sum(-1).max())
        assert masks == left
    if forbid_eos:
        assert len(frames) == len(planned) and not frames[-1].masked.any()


def test_the_last_frame_says_which_rows_ended(tiny_model, tokenizer):
    config = GenerationConfig(max_new_tokens=16, steps=8, num_samples=6, seed=0)
    out = generate(tiny_model, tokenizer, "the", config, keep_frames=True)
    assert out.frames[-1].ended.tolist() == [r == "eos" for r in out.finish_reasons]
    forbidden = generate(tiny_model, tokenizer, "the", GenerationConfig(**{**vars(config), "forbid_eos": True}))
    assert forbidden.finish_reasons == ["length"] * 6
