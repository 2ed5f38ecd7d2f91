"""/v1/chat/completions through the official openai client against a real server: the prompt is the
model's chat template, replies stream as they become final, stop strings end them."""

import copy

import openai
import pytest

from diffusion_core import checkpoint

TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory, tiny_model, tokenizer):
    chatty = copy.deepcopy(tokenizer)
    chatty.chat_template = TEMPLATE
    return checkpoint.save(tiny_model, chatty, tmp_path_factory.mktemp("chat") / "tiny-chat", {"format": 1})


@pytest.fixture
def chat(server, chat_checkpoint):
    with server(model=str(chat_checkpoint)) as (base, app):
        yield openai.OpenAI(base_url=base + "/v1", api_key="unused"), app


MESSAGES = [{"role": "system", "content": "be brief."}, {"role": "user", "content": "the quick brown fox"}]


def test_chat_returns_n_replies_from_one_batched_request_with_usage(chat):
    client, app = chat
    before = app.state.engine.stats.forward_passes
    reply = client.chat.completions.create(
        model="tiny-chat", messages=MESSAGES, n=4, max_tokens=8, seed=1, extra_body={"steps": 4, "forbid_eos": True}
    )
    assert reply.object == "chat.completion" and [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert all(c.message.role == "assistant" and c.message.content for c in reply.choices)
    prompt = "".join(f"{m['role']}: {m['content']}\n" for m in MESSAGES) + "assistant:"  # TEMPLATE, by hand
    tokenizer = app.state.registry.current.tokenizer
    assert reply.usage.prompt_tokens == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert reply.usage.completion_tokens == 4 * 8, "end tokens forbidden: every reply writes all 8"
    assert app.state.engine.stats.forward_passes - before == 4, "four replies, one pass per step"


def test_streamed_chat_sends_deltas_that_add_up_to_the_reply(chat):
    client, _ = chat
    request = dict(model="tiny-chat", messages=MESSAGES, max_completion_tokens=16, seed=3, temperature=0)
    whole = client.chat.completions.create(**request).choices[0]
    chunks = list(client.chat.completions.create(**request, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == whole.message.content and chunks[-1].choices[0].finish_reason == whole.finish_reason
    assert sum(1 for c in chunks if c.choices[0].delta.content) >= 1


def test_chat_logprobs_cover_the_reply_whole_and_streamed(chat):
    client, _ = chat
    request = dict(model="tiny-chat", messages=MESSAGES, max_tokens=16, seed=3, logprobs=True, top_logprobs=2)
    full = client.chat.completions.create(**request, extra_body={"forbid_eos": True}).choices[0]
    content = full.logprobs.content
    assert len(content) == 16 and "".join(t.token for t in content).strip() == full.message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes).decode() == t.token and len(t.top_logprobs) == 2
        assert t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob and t.top_logprobs[0].logprob >= t.logprob
    stop = " " + full.message.content.split()[2]  # the reply then ends inside a token's text, before its space
    cut = client.chat.completions.create(**request, stop=[stop], extra_body={"forbid_eos": True}).choices[0]
    kept = cut.logprobs.content
    assert cut.message.content == full.message.content[: full.message.content.find(stop)]
    assert [t.token for t in kept] == [t.token for t in content[: len(kept)]] and 0 < len(kept) < 16
    assert "".join(t.token for t in kept).strip() == cut.message.content.strip()
    streamed = [t for c in client.chat.completions.create(**request, stream=True, extra_body={"forbid_eos": True})
                if c.choices[0].logprobs for t in c.choices[0].logprobs.content]  # fmt: skip
    assert [(t.token, round(t.logprob, 4)) for t in streamed] == [(t.token, round(t.logprob, 4)) for t in content]
    assert [[a.token for a in t.top_logprobs] for t in streamed] == [[a.token for a in t.top_logprobs] for t in content]
    with pytest.raises(openai.UnprocessableEntityError, match="needs logprobs"):
        client.chat.completions.create(model="tiny-chat", messages=MESSAGES, top_logprobs=2)


def test_a_stop_string_ends_the_reply(chat):
    client, _ = chat
    request = dict(model="tiny-chat", messages=MESSAGES, max_tokens=24, seed=5, temperature=0)
    full = client.chat.completions.create(**request).choices[0].message.content
    stop = full.split()[1] if len(full.split()) > 1 else full[-2:]
    later = full[-2:]  # also a stop, met later: the reply ends at the first one met, whichever is listed first
    assert full.find(later) > full.find(stop)
    cut = client.chat.completions.create(**request, stop=[later, stop]).choices[0]
    assert cut.finish_reason == "stop" and cut.message.content == full[: full.find(stop)]


def test_a_model_without_a_chat_template_is_a_400_that_says_so(server):
    with server() as (base, _):
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="tiny", messages=MESSAGES)
    assert "chat template" in str(refused.value)


def test_the_openai_client_fills_a_gap_with_suffix(server):
    with server() as (base, _):
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        filled = client.completions.create(
            model="tiny",
            prompt="the quick",
            suffix=" over the lazy dog.",
            max_tokens=3,
            seed=1,
            extra_body={"steps": 3},
        )
    assert filled.choices[0].text and "lazy" not in filled.choices[0].text
    assert filled.usage.completion_tokens == 3


@pytest.mark.parametrize("opening", ["", "{{ bos_token }}"])
def test_the_prompt_is_the_template_less_only_a_leading_start_token(tokenizer, opening):
    """The canvas opens with the start token itself: a template that writes it first loses that copy, and
    one that does not keeps every character."""
    from types import SimpleNamespace

    from services.api.generation import chat_prompt
    from services.api.schemas import ChatMessage

    chatty = copy.deepcopy(tokenizer)
    chatty.chat_template = opening + TEMPLATE
    entry = SimpleNamespace(tokenizer=chatty, name="tiny-chat")
    prompt = chat_prompt(entry, [ChatMessage(**m) for m in MESSAGES])
    assert prompt == "system: be brief.\nuser: the quick brown fox\nassistant:"
