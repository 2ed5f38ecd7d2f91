"""Log-probabilities through the official clients: TGI's details (huggingface_hub) and OpenAI's logprobs,
each the probability the token had when the pass that wrote it drew it."""

import copy

import httpx
import openai
import pytest
import torch
from huggingface_hub import InferenceClient

from diffusion_core import GenerationConfig, checkpoint, create_denoiser, run
from services.api import logprobs
from services.api.schemas import Token

PROMPT = "the quick brown"


def _core(path, config: GenerationConfig, top: int):
    """The same request run by the core alone: what the server must report."""
    model, tokenizer = checkpoint.load(path, torch.device("cpu"))
    state = create_denoiser(model, tokenizer, PROMPT, config, top_logprobs=top)
    for _ in run(model, state, every_step=False):
        pass
    return state.result(), tokenizer


def test_tgi_details_list_every_token_with_its_logprob_its_alternatives_and_the_prompt(server, tiny_checkpoint):
    with server() as (base, _):
        out = InferenceClient(model=base + "/generate").text_generation(
            PROMPT, max_new_tokens=8, seed=3, details=True, decoder_input_details=True, top_n_tokens=3
        )
    result, tokenizer = _core(tiny_checkpoint, GenerationConfig(max_new_tokens=8, seed=3), top=3)
    details = out.details
    assert [t.id for t in details.tokens] == result.written[0] and details.generated_tokens == len(result.written[0])
    assert [t.logprob for t in details.tokens] == pytest.approx(result.logprobs[0], abs=1e-4)
    assert "".join(t.text for t in details.tokens).strip() == out.generated_text
    assert details.seed == 3 and details.finish_reason == "length"
    assert [t.id for t in details.prefill] == tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    assert all(t.logprob is None for t in details.prefill), "a diffusion model does not score its prompt"
    assert len(details.top_tokens) == len(details.tokens)
    for token, top in zip(details.tokens, details.top_tokens):
        logprobs = [t["logprob"] if isinstance(t, dict) else t.logprob for t in top]
        assert len(top) == 3 and logprobs == sorted(logprobs, reverse=True) and token.logprob <= logprobs[0] + 1e-5
    expected = [[(i, pytest.approx(lp, abs=1e-4)) for i, lp in row] for row in result.top_logprobs[0]]
    got = [[(t["id"], t["logprob"]) if isinstance(t, dict) else (t.id, t.logprob) for t in top]
           for top in details.top_tokens]  # fmt: skip
    assert got == expected


def test_tgi_finish_reason_names_the_end_token(server, tmp_path, tiny_model, tokenizer):
    ending = copy.deepcopy(tiny_model)
    with torch.no_grad():
        ending.lm_head.bias[tokenizer.eos_token_id] += 4.0  # end tokens likely, not certain
    path = checkpoint.save(ending, tokenizer, tmp_path / "ending", {"format": 1})
    params = {"max_new_tokens": 24, "steps": 3, "block_length": 8, "num_samples": 6, "seed": 4}
    with server(model=str(path)) as (base, _):
        replies = httpx.post(base + "/generate", json={"inputs": PROMPT, "parameters": params}, timeout=60).json()
    result, _ = _core(path, GenerationConfig(**params), top=0)
    reasons = [r["details"]["finish_reason"] for r in replies]
    assert reasons == ["eos_token" if r == "eos" else "length" for r in result.finish_reasons]
    assert 0 < reasons.count("eos_token") < 6
    for reply in replies:
        details = reply["details"]
        assert (details["generated_tokens"] < 24) == (details["finish_reason"] == "eos_token")
        assert len(details["tokens"]) == details["generated_tokens"]


def test_openai_completion_logprobs_follow_the_text(server):
    with server() as (base, _):
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        reply = client.completions.create(
            model="tiny", prompt=PROMPT, max_tokens=8, temperature=0, logprobs=2, extra_body={"forbid_eos": True}
        )
        bare = client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, seed=1, logprobs=0)
        with pytest.raises(openai.UnprocessableEntityError):
            client.completions.create(model="tiny", prompt=PROMPT, max_tokens=8, logprobs=6)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == 8 and "".join(lp.tokens).strip() == choice.text
    for lp in (choice.logprobs, bare.choices[0].logprobs):
        assert lp.text_offset[0] == len(PROMPT)
        assert all(b - a == len(t) for a, b, t in zip(lp.text_offset, lp.text_offset[1:], lp.tokens))
    assert max(map(len, bare.choices[0].logprobs.tokens)) > 1, "offsets count characters, not tokens"
    lp = choice.logprobs
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
        # Greedy: the written token is the most likely one, so it leads its alternatives.
        assert logprob < 0 and top[token] == logprob == max(top.values()) and 1 <= len(top) <= 3
    # logprobs=0: no alternatives, but each position still names the token written and its log-prob.
    lp0 = bare.choices[0].logprobs
    assert [list(top) for top in lp0.top_logprobs] == [[t] for t in lp0.tokens]
    assert [top[t] for top, t in zip(lp0.top_logprobs, lp0.tokens)] == lp0.token_logprobs


def test_a_reply_cut_at_a_stop_string_keeps_the_logprobs_of_the_tokens_it_shows():
    words = [Token(id=i, text=t, logprob=-1.0) for i, t in enumerate([" the", " quick", " brown", " fox"])]
    reply = "".join(t.text for t in words).strip()  # replies are stripped: "the quick brown fox"
    for stop in (" brown", "brown", " fox"):
        shown = reply[: reply.find(stop)]
        kept = logprobs.covering(words, len(shown))
        assert "".join(t.text for t in words[:kept]).strip() == shown.strip(), stop
