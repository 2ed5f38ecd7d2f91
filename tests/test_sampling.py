import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffusion_core.sampling import SamplingParams, sample


def test_greedy_is_argmax():
    logits = torch.randn(20, 50)
    assert torch.equal(
        sample("greedy", logits, torch.rand(20, dtype=torch.float64), SamplingParams()), logits.argmax(-1)
    )


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 10), seed=st.integers(0, 10_000))
def test_top_k_never_samples_outside_the_top_k(k, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, 100, generator=g)
    ids = sample("top_k", logits, torch.rand(64, generator=g, dtype=torch.float64), SamplingParams(top_k=k))
    allowed = logits.topk(k, dim=-1).indices
    assert (allowed == ids.unsqueeze(-1)).any(-1).all()


@settings(max_examples=40, deadline=None)
@given(p=st.floats(0.05, 0.95), seed=st.integers(0, 10_000))
def test_top_p_stays_inside_the_nucleus(p, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, 100, generator=g) * 3
    ids = sample("top_p", logits, torch.rand(64, generator=g, dtype=torch.float64), SamplingParams(top_p=p))
    probs = logits.softmax(-1)
    chosen = probs.gather(-1, ids.unsqueeze(-1))
    mass_above = (probs * (probs > chosen)).sum(-1)
    assert (mass_above < p + 1e-5).all()


def test_temperature_sampling_follows_the_distribution():
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).repeat(20_000, 1)
    g = torch.Generator().manual_seed(0)
    ids = sample("temperature", logits, torch.rand(20_000, generator=g, dtype=torch.float64), SamplingParams())
    freq = torch.bincount(ids, minlength=3).double() / 20_000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), atol=0.02)


def test_low_temperature_concentrates_on_the_mode():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]])).repeat(2_000, 1)
    u = torch.rand(2_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ids = sample("temperature", logits, u, SamplingParams(temperature=0.1))
    assert (ids == 0).double().mean() > 0.95


def test_top_p_with_a_nucleus_wider_than_the_candidate_set():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(200, 2000, generator=g) * 0.1
    logits[:100, 0] = 20.0  # half the rows are peaked, half are nearly flat
    ids = sample("top_p", logits, torch.rand(200, generator=g, dtype=torch.float64), SamplingParams(top_p=0.9))
    assert (ids[:100] == 0).all()
    probs = logits[100:].softmax(-1)
    chosen = probs.gather(-1, ids[100:].unsqueeze(-1))
    assert ((probs * (probs > chosen)).sum(-1) < 0.9 + 1e-5).all()
    ranks = (probs > chosen).sum(-1)
    assert (ranks >= 256).any(), "flat rows sample beyond the first candidates"


def test_top_p_one_is_plain_temperature_sampling():
    logits = torch.randn(50, 300)
    u = torch.rand(50, dtype=torch.float64)
    assert torch.equal(
        sample("top_p", logits, u, SamplingParams(top_p=1.0)), sample("temperature", logits, u, SamplingParams())
    )


def test_a_vanishingly_small_top_p_still_samples_the_most_likely_token():
    logits = torch.randn(8, 600)
    for p in (5e-324, 1e-40):
        ids = sample("top_p", logits, torch.rand(8, dtype=torch.float64), SamplingParams(top_p=p))
        assert torch.equal(ids, logits.argmax(-1))


def test_top_p_is_exact_through_every_candidate_tier():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 5000, generator=g) * 0.05  # flat rows: nucleus wider than 2048, full sort
    logits[:100, 7] = 30.0  # peaked rows: nucleus of one token
    logits[100:200] = torch.randn(100, 5000, generator=g) * 3  # in between
    ids = sample("top_p", logits, torch.rand(300, generator=g, dtype=torch.float64), SamplingParams(top_p=0.9))
    probs = logits.softmax(-1)
    chosen = probs.gather(-1, ids.unsqueeze(-1))
    assert (ids[:100] == 7).all()
    assert ((probs * (probs > chosen)).sum(-1) < 0.9 + 1e-5).all()
    assert (probs > chosen).sum(-1)[200:].max() > 2048


@settings(max_examples=30, deadline=None)
@given(k=st.integers(1, 40), p=st.floats(0.05, 0.99), seed=st.integers(0, 10_000))
def test_top_k_with_top_p_keeps_what_hugging_face_keeps(k, p, seed):
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(64, 100, generator=g) * 2
    allowed = TopPLogitsWarper(p)(None, TopKLogitsWarper(k)(None, logits.clone())).isfinite()  # top-k, then top-p
    ids = sample("top_p", logits, torch.rand(64, generator=g, dtype=torch.float64), SamplingParams(top_k=k, top_p=p))
    assert allowed.gather(-1, ids.unsqueeze(-1)).all()


def test_top_k_with_top_p_draws_from_the_renormalised_filtered_distribution():
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    logits = torch.log(torch.tensor([[0.4, 0.25, 0.15, 0.1, 0.06, 0.04]])).repeat(40_000, 1)
    want = TopPLogitsWarper(0.7)(None, TopKLogitsWarper(4)(None, logits[:1].clone())).softmax(-1)[0].double()
    u = torch.rand(40_000, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    ids = sample("top_p", logits, u, SamplingParams(top_k=4, top_p=0.7))
    freq = torch.bincount(ids, minlength=6).double() / 40_000
    assert torch.allclose(freq, want, atol=0.01)
