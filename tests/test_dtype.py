"""`--dtype auto`: bfloat16 where the device computes it natively, float32 elsewhere, and it says why."""

import json

import pytest
import torch

from diffusion_core import model as core_model
from diffusion_core.cli import main
from diffusion_core.errors import ConfigError
from diffusion_core.model import pick_dtype
from tests.conftest import wait_ready

CPU = torch.device("cpu")


@pytest.fixture
def bf16_cpu(monkeypatch):
    """A CPU that computes bf16 natively, as this project's AVX512-BF16 machines do."""
    monkeypatch.setattr(core_model, "cpu_bf16", lambda: "AVX512-BF16")


@pytest.fixture
def plain_cpu(monkeypatch):
    monkeypatch.setattr(core_model, "cpu_bf16", lambda: None)


def test_auto_takes_bfloat16_on_a_cpu_that_computes_it_and_says_why(bf16_cpu):
    choice = pick_dtype("auto", CPU)
    assert choice.dtype == torch.bfloat16 and choice.name == "bfloat16"
    assert choice.reason == "auto: this CPU computes bf16 natively (AVX512-BF16)"


def test_a_cpu_without_bf16_or_a_forced_float32_stays_in_float32(plain_cpu):
    choice = pick_dtype("auto", CPU)
    assert choice.dtype == torch.float32 and "no native bf16" in choice.reason
    assert pick_dtype("float32", CPU).dtype == torch.float32 and pick_dtype("float32", CPU).reason == "asked for"
    with pytest.raises(ConfigError, match="unknown dtype 'int4'"):
        pick_dtype("int4", CPU)


def test_generate_json_names_the_dtype_and_the_reason(bf16_cpu, tiny_checkpoint, capsys, monkeypatch):
    monkeypatch.delenv("UNMASK_DTYPE")
    argv = ["generate", "the quick", "--model", str(tiny_checkpoint), "--max-new-tokens", "4", "--steps", "2"]
    assert main([*argv, "--seed", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dtype"] == "bfloat16" and "AVX512-BF16" in result["dtype_reason"]
    monkeypatch.setenv("UNMASK_DTYPE", "float32")
    assert main([*argv, "--seed", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dtype"] == "float32"


def test_the_server_serves_in_bfloat16_on_such_a_cpu_and_info_says_so(bf16_cpu, make_client):
    with make_client(dtype="auto") as client:
        wait_ready(client)
        model = client.get("/info").json()["model"]
        assert model["dtype"] == "bfloat16" and model["dtype_reason"].startswith("auto: this CPU computes bf16")
        response = client.post("/generate", json={"inputs": "the", "parameters": {"max_new_tokens": 4, "seed": 0}})
        assert response.status_code == 200 and response.json()["generated_text"]
    with make_client(dtype="float32") as client:
        wait_ready(client)
        assert client.get("/info").json()["model"]["dtype"] == "float32"
