import json

import pytest

GEN = {"max_new_tokens": 8, "steps": 4, "seed": 1, "forbid_eos": True}


def test_generate_returns_text_and_details(client):
    r = client.post("/generate", json={"inputs": "the quick", "parameters": GEN})
    assert r.status_code == 200
    body = r.json()
    assert isinstance(body["generated_text"], str)
    d = body["details"]
    assert d["seed"] == 1 and d["nfe"] == 4 and d["steps"] == 4 and d["generated_tokens"] == 8
    assert d["finish_reason"] == "length" and d["timings"]["total_ms"] >= d["timings"]["forward_ms"] > 0


def test_same_seed_same_text_and_samples_come_as_a_list(client):
    a = client.post("/generate", json={"inputs": "a journey", "parameters": {**GEN, "sampling": "temperature"}}).json()
    b = client.post("/generate", json={"inputs": "a journey", "parameters": {**GEN, "sampling": "temperature"}}).json()
    assert a["generated_text"] == b["generated_text"]
    many = client.post(
        "/generate", json={"inputs": "a journey", "parameters": {**GEN, "sampling": "temperature", "num_samples": 3}}
    )
    texts = [x["generated_text"] for x in many.json()]
    assert len(texts) == 3 and texts[0] == a["generated_text"]
    assert [x["details"]["seed"] for x in many.json()] == [1, 2, 3]


def test_infilling_keeps_the_text_around_the_masks(client):
    r = client.post(
        "/generate",
        json={"inputs": "the quick <mask><mask> fox", "parameters": {"max_new_tokens": 0, "steps": 2, "seed": 0}},
    )
    text = r.json()["generated_text"]
    assert text.startswith("the quick") and text.endswith(" fox")
    middle = text[len("the quick") : -len(" fox")].strip()
    assert middle and "<mask>" not in middle, "the blanks are filled with text"
    assert r.json()["details"]["generated_tokens"] == 2


@pytest.mark.parametrize(
    "body, param",
    [
        ({"parameters": GEN}, "inputs"),
        ({"inputs": 5}, "inputs"),
        ({"inputs": "x", "parameters": {"steps": 0}}, "parameters.steps"),
        ({"inputs": "x", "parameters": {"schedule": "quadratic"}}, "parameters.schedule"),
        ({"inputs": "x", "parameters": {"sampling": "beam"}}, "parameters.sampling"),
        ({"inputs": "x", "parameters": {"remasking": "oracle"}}, "parameters.remasking"),
        ({"inputs": "x", "parameters": {"top_p": 2}}, "parameters.top_p"),
        ({"inputs": "x", "parameters": {"temperature": -1}}, "parameters.temperature"),
        ({"inputs": "x", "parameters": {"bogus": 1}}, "parameters.bogus"),
        ({"inputs": "x", "parameters": {"max_new_tokens": 513}}, "parameters.max_new_tokens"),
        ({"inputs": "x", "parameters": {"steps": 257}}, "parameters.steps"),
        ({"inputs": "x", "parameters": {"num_samples": 9}}, "parameters.num_samples"),
        ({"inputs": "x", "parameters": {"max_new_tokens": 100, "block_length": 0}}, "parameters.max_new_tokens"),
        ({"inputs": "x", "parameters": {"sampling": "top_k"}}, "parameters.top_k"),
        ({"inputs": "x", "parameters": {"repetition_penalty": 0}}, "parameters.repetition_penalty"),
        ({"inputs": "x", "parameters": {"revise": "loop"}}, "parameters.revise"),
        ({"inputs": "x", "parameters": {"cfg_scale": -1}}, "parameters.cfg_scale"),
        ({"inputs": "the quick brown fox " * 80, "parameters": GEN}, "inputs"),
    ],
)
def test_every_validation_error_names_its_field(client, body, param):
    r = client.post("/generate", json=body)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "validation_error" and error["param"] == param, error
    assert "Traceback" not in r.text


def test_unknown_model_is_404_and_too_large_is_413(client):
    r = client.post("/generate", json={"inputs": "x", "parameters": {**GEN, "model": "gpt-9"}})
    assert r.status_code == 404 and r.json()["error"] == {
        "message": "unknown model 'gpt-9'; available: tiny",
        "type": "not_found",
        "param": "parameters.model",
    }
    r = client.post("/generate", content=b"{" + b" " * 70_000 + b"}", headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    assert client.get("/nope").json()["error"]["type"] == "not_found"


def test_not_ready_is_503_with_the_reason(make_client, tmp_path):
    with make_client(model=str(tmp_path / "missing")) as client:
        import time

        for _ in range(100):
            if client.get("/info").json()["model_error"]:
                break
            time.sleep(0.05)
        r = client.get("/ready")
        assert r.status_code == 503 and "no such checkpoint directory" in r.json()["error"]["message"]
        assert client.post("/generate", json={"inputs": "x"}).status_code == 503
        assert client.get("/health").status_code == 200


def test_info_lists_model_and_limits_and_metrics_count_work(client):
    client.post("/generate", json={"inputs": "the", "parameters": GEN})
    info = client.get("/info").json()
    assert info["model"]["id"] == "tiny" and len(info["model"]["version"]) == 12
    assert info["limits"]["max_new_tokens"] == 512 and info["limits"]["max_concurrent_requests"] == 16
    text = client.get("/metrics").text
    assert 'unmask_request_seconds_count{route="/generate"} 1.0' in text
    assert "unmask_denoising_steps_total 4.0" in text
    assert "unmask_generated_tokens_total 8.0" in text


def test_openai_completions_and_models(client):
    models = client.get("/v1/models").json()
    assert models["data"][0]["id"] == "tiny"
    r = client.post(
        "/v1/completions",
        json={"model": "tiny", "prompt": ["the", "a"], "max_tokens": 5, "n": 2, "seed": 3, "steps": 3},
    )
    body = r.json()
    assert body["object"] == "text_completion" and [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert 1 <= body["usage"]["completion_tokens"] <= 20 and body["usage"]["prompt_tokens"] == 2
    assert all(c["finish_reason"] in ("length", "stop") for c in body["choices"])
    request = {"prompt": "the", "max_tokens": 5, "n": 2, "steps": 2, "seed": 4}
    whole = client.post("/v1/completions", json=request).json()
    stream = client.post("/v1/completions", json={**request, "stream": True})
    lines = [line[len("data: ") :] for line in stream.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert chunks and all(c["object"] == "text_completion" for c in chunks)
    streamed = {choice["index"]: choice["text"] for c in chunks for choice in c["choices"]}
    assert streamed == {c["index"]: c["text"] for c in whole["choices"]}, "the stream carries the same texts"
    assert client.post("/v1/completions", json={"prompt": "x", "model": "nope"}).status_code == 404


def test_api_key_dependency_compares_bearer_keys(tiny_checkpoint):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from services.api import errors
    from services.api.config import Settings
    from services.api.deps import ApiKeyDep

    app = FastAPI()
    errors.install(app)
    app.state.settings = Settings(api_key="k" * 32)

    @app.post("/write", dependencies=[ApiKeyDep])
    def write() -> dict:
        return {"ok": True}

    c = TestClient(app)
    assert c.post("/write").status_code == 401
    assert c.post("/write", headers={"Authorization": "Bearer wrong"}).json()["error"]["type"] == "authentication_error"
    assert c.post("/write", headers={"Authorization": "Bearer " + "k" * 32}).json() == {"ok": True}


def test_infilling_counts_only_the_filled_tokens(client):
    r = client.post(
        "/generate", json={"inputs": "the quick <mask><mask><mask> fox", "parameters": {"max_new_tokens": 0}}
    )
    assert r.json()["details"]["generated_tokens"] == 3
    text = r.json()["generated_text"]
    assert text.startswith("the quick") and text.endswith(" fox") and text[len("the quick") : -len(" fox")].strip()


def test_completions_with_a_suffix_fill_the_gap_between_prompt_and_suffix(client):
    """OpenAI's `suffix`: max_tokens blanks between prompt and suffix; the text returned is the gap only."""
    body = {"prompt": "the quick", "suffix": " over the lazy dog.", "max_tokens": 3, "seed": 2, "steps": 3}
    r = client.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["text"] and "lazy dog" not in choice["text"] and "quick" not in choice["text"]
    assert r.json()["usage"]["completion_tokens"] == 3
    supplied = client.app.state.registry.current.tokenizer("the quick over the lazy dog.", add_special_tokens=False)
    assert r.json()["usage"]["prompt_tokens"] == len(supplied["input_ids"]), "prompt and suffix, blanks not counted"
    greedy = client.post("/v1/completions", json={**body, "temperature": 0}).json()["choices"][0]["text"]
    blanks = "the quick<mask><mask><mask> over the lazy dog."
    same = {"inputs": blanks, "parameters": {"max_new_tokens": 0, "steps": 3, "sampling": "greedy"}}
    filled = client.post("/generate", json=same).json()["generated_text"]
    gap = filled.removeprefix("the quick").removesuffix("over the lazy dog.").strip()
    assert gap == greedy, "the blanks sit between the prompt and the suffix"
    too_long = client.post("/v1/completions", json={**body, "max_tokens": 10**6})
    assert too_long.status_code == 422 and too_long.json()["error"]["param"] == "max_tokens"


def test_completions_at_temperature_0_are_greedy_whatever_the_seed(client):
    body = {"prompt": "the quick", "max_tokens": 6, "temperature": 0, "steps": 3}
    texts = {client.post("/v1/completions", json={**body, "seed": s}).json()["choices"][0]["text"] for s in (1, 2, 3)}
    assert len(texts) == 1


def test_openai_penalties_and_unmasks_steering_reach_the_step(client):
    """OpenAI's frequency and presence penalties (and unmask's own steering fields) change the greedy text;
    out of OpenAI's bounds they are refused by name."""
    body = {"prompt": "the quick", "max_tokens": 16, "temperature": 0, "steps": 8}

    def text(**extra) -> str:
        r = client.post("/v1/completions", json={**body, **extra})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    plain = text()
    assert text(frequency_penalty=2.0) != plain and text(presence_penalty=2.0) != plain
    assert text(repetition_penalty=3.0) != plain and text(cfg_scale=2.0) != plain
    refused = client.post("/v1/completions", json={**body, "presence_penalty": 2.5})
    assert refused.status_code == 422 and refused.json()["error"]["param"] == "presence_penalty"


@pytest.mark.parametrize("value, field", [("NaN", "temperature"), ("Infinity", "top_p"), ("-Infinity", "cfg_scale")])
def test_a_number_that_is_not_finite_is_refused_as_such(client, value, field):
    """Python's JSON reader takes NaN and Infinity; the API says what is wrong with them."""
    body = '{"inputs": "x", "parameters": {"' + field + '": ' + value + "}}"
    r = client.post("/generate", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["param"] == f"parameters.{field}"
    assert "finite" in r.json()["error"]["message"]
