"""The step on a CUDA GPU: the same text as on the CPU, and no host round trip inside a step."""

import pytest
import torch

from diffusion_core import GenerationConfig, StepOutputs, create_denoiser, generate
from diffusion_core.draws import uniforms
from diffusion_core.model import masked_logits

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU; this machine has none")


@pytest.fixture(scope="module")
def gpu_model(tiny_model):
    import copy

    return copy.deepcopy(tiny_model).to("cuda")


def test_draws_are_bit_identical_on_the_gpu():
    seeds, positions = torch.arange(1000).unsqueeze(-1), torch.arange(300).unsqueeze(0)
    assert torch.equal(uniforms(seeds, positions, 9), uniforms(seeds.cuda(), positions.cuda(), 9).cpu())


@pytest.mark.parametrize("sampling", ["greedy", "top_p"])
def test_same_seed_same_text_on_cpu_and_cuda(tiny_model, gpu_model, tokenizer, sampling):
    config = GenerationConfig(max_new_tokens=24, steps=8, block_length=8, sampling=sampling, num_samples=3, seed=4)
    on_cpu = generate(tiny_model, tokenizer, "the quick", config).texts
    assert generate(gpu_model, tokenizer, "the quick", config).texts == on_cpu


@pytest.mark.parametrize("sampling", ["top_p", "temperature", "greedy"])
def test_a_step_whose_length_the_plan_knows_never_waits_for_the_host(gpu_model, tokenizer, sampling):
    """request() and advance() raise on any synchronising call (the model's own forward is not ours)."""
    config = GenerationConfig(
        max_new_tokens=32, steps=8, block_length=16, num_samples=4, seed=0, forbid_eos=True, sampling=sampling
    )
    state = create_denoiser(gpu_model, tokenizer, "the quick", config)
    with torch.inference_mode():
        while not state.finished:
            torch.cuda.set_sync_debug_mode("error")
            try:
                step = state.request()
            finally:
                torch.cuda.set_sync_debug_mode("default")
            logits = masked_logits(gpu_model, step.input_ids, step.attention_mask, step.rows, step.cols)
            torch.cuda.set_sync_debug_mode("error")
            try:
                state.advance(step, StepOutputs(logits))
            finally:
                torch.cuda.set_sync_debug_mode("default")
    assert not state.masked.any()
