import json
import random

import pytest
import torch

from diffusion_core import GenerationConfig, checkpoint, generate
from diffusion_core.errors import ConfigError, InputError
from diffusion_core.tokenizer import train_bpe
from diffusion_core.training import TrainConfig, train

PAIR = ["the quick brown fox jumps over the lazy dog", "a small grey cat sleeps under the warm sun"]


@pytest.fixture(scope="module")
def learnable(tmp_path_factory):
    """Two sentences of equal token length, each block holding exactly one."""
    root = tmp_path_factory.mktemp("learn")
    rng = random.Random(0)
    (root / "corpus.txt").write_text("\n\n".join(rng.choice(PAIR) for _ in range(400)))
    tokenizer = train_bpe(PAIR * 50, vocab_size=400, max_length=64)
    lengths = {len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in PAIR}
    assert len(lengths) == 1
    tokenizer.save_pretrained(root / "tokenizer")
    return root, lengths.pop()


@pytest.fixture(scope="module")
def trained(learnable):
    root, length = learnable
    torch.manual_seed(0)
    config = TrainConfig(
        data=(str(root / "corpus.txt"),),
        output=str(root / "model"),
        architecture="roberta-tiny",
        tokenizer=str(root / "tokenizer"),
        max_length=length + 2,
        prefix_max=4,
        batch_size=16,
        learning_rate=2e-3,
        warmup_steps=20,
        max_steps=800,
        eval_every=100,
        precision="fp32",
        held_out=0.1,
    )
    return train(config, show_progress=False)


def test_training_lowers_held_out_loss_at_every_rate(trained):
    log = [e for e in json.loads((trained / "training_log.json").read_text()) if e["eval"]]
    first, last = log[0]["eval"], log[-1]["eval"]
    for rate in first:
        assert last[rate] < 0.5 * first[rate], rate
    assert (trained / "loss.png").stat().st_size > 1000
    checkpoint.verify(trained)


def test_trained_model_completes_prompts_from_its_corpus(trained):
    model, tokenizer = checkpoint.load(trained, torch.device("cpu"))
    config = GenerationConfig(max_new_tokens=7, steps=7, sampling="greedy", seed=0)
    assert generate(model, tokenizer, "the quick brown", config).texts == ["fox jumps over the lazy dog"]
    assert generate(model, tokenizer, "a small grey", config).texts == ["cat sleeps under the warm sun"]


def test_metadata_records_data_and_training(trained):
    meta = checkpoint.read_metadata(trained)
    assert meta["data"]["documents"] == 400
    assert meta["training"]["steps"] == 800 and meta["training"]["tokens_seen"] > 0
    assert set(meta["metrics"]["held_out_loss"]) == {"0.15", "0.50", "0.90"}


def test_resume_continues_from_the_snapshot(learnable, tmp_path):
    """An interrupted run resumed from its snapshot ends with the weights of a run never interrupted:
    the step count, optimizer moments, learning-rate position and data order all come back."""
    root, length = learnable
    base = dict(
        data=(str(root / "corpus.txt"),),
        architecture="roberta-tiny",
        tokenizer=str(root / "tokenizer"),
        max_length=length + 2,
        max_steps=30,
        save_every=10,
        eval_every=10,
        precision="fp32",
    )
    straight = train(TrainConfig(**base, output=str(tmp_path / "straight")), show_progress=False)
    with pytest.raises(KeyboardInterrupt):
        calls = iter(range(100))
        config = TrainConfig(**base, output=str(tmp_path / "m"))
        train(config, show_progress=False, should_stop=lambda: next(calls) == 25 and _interrupt())
    assert (tmp_path / "m.run" / "optimizer.safetensors").is_file()
    steps_after_resume = []
    out = train(
        TrainConfig(**base, output=str(tmp_path / "m"), resume=True),
        show_progress=False,
        should_stop=lambda: steps_after_resume.append(1) and False,
    )
    assert len(steps_after_resume) == 10, "the resumed run trains steps 21-30 only (the snapshot was at 20)"
    log = json.loads((out / "training_log.json").read_text())
    assert log[0]["step"] <= 10 and log[-1]["step"] == 30
    assert checkpoint.read_metadata(out)["training"]["steps"] == 30
    assert not (tmp_path / "m.run").exists()
    resumed, _ = checkpoint.load(out, torch.device("cpu"))
    reference, _ = checkpoint.load(straight, torch.device("cpu"))
    for (name, a), b in zip(resumed.state_dict().items(), reference.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), f"{name} differs from the uninterrupted run"


def _interrupt() -> bool:
    raise KeyboardInterrupt


def test_bad_training_input_names_the_problem(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(InputError, match="no text"):
        train(TrainConfig(data=(str(tmp_path / "empty.txt"),), output=str(tmp_path / "o"), architecture="roberta-tiny"))
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(InputError, match="bad.jsonl:2"):
        train(TrainConfig(data=(str(tmp_path / "bad.jsonl"),), output=str(tmp_path / "o"), architecture="roberta-tiny"))
    with pytest.raises(ConfigError, match="exactly one"):
        TrainConfig(data=("x",), output="o")
    with pytest.raises(ConfigError, match="unknown architecture 'gpt-9'.*roberta-small"):
        TrainConfig(data=("x",), output="o", architecture="gpt-9")


def test_a_continued_checkpoint_records_every_stage_its_weights_went_through(trained, learnable, tmp_path):
    root, length = learnable
    config = TrainConfig(
        data=(str(root / "corpus.txt"),), base=str(trained), output=str(tmp_path / "more"),
        max_length=length + 2, max_steps=5, eval_every=5, precision="fp32",
    )  # fmt: skip
    stages = checkpoint.read_metadata(train(config, show_progress=False))["stages"]
    first = checkpoint.read_metadata(trained)["stages"]
    assert len(first) == 1 and first[0]["steps"] == 800 and first[0]["base"] is None
    assert stages[:1] == first and stages[1]["steps"] == 5 and stages[1]["base"] == str(trained)
    assert set(stages[1]["held_out_loss"]) == {"0.15", "0.50", "0.90"}


def test_the_starter_recipe_follows_the_device_and_takes_overrides():
    from diffusion_core.starter import recipe_for

    gpu = recipe_for(torch.device("cuda"))
    assert (gpu.batch_size, gpu.learning_rate, gpu.warmup_steps, gpu.max_steps) == (256, 2e-4, 50, 4530)
    cpu = recipe_for(torch.device("cpu"), batch_size=8, max_steps=None)
    assert (cpu.batch_size, cpu.learning_rate, cpu.max_steps, cpu.minutes) == (8, 3e-4, 0, 75.0)


def test_the_starter_twin_continued_from_its_snapshot_carries_its_curve_and_stages(tiny_model, tokenizer, tmp_path):
    from diffusion_core.autoregressive import TwinTraining
    from diffusion_core.starter import train_ar_twin

    checkpoint.save(tiny_model, tokenizer, tmp_path / "out" / "diffusion", {"format": 1, "data": {"tokens": 1}})
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "text.txt").write_text("\n\n".join(PAIR * 150))
    out = tmp_path / "out"
    first = checkpoint.read_metadata(train_ar_twin(corpus, out, TwinTraining(max_passes=1, evals_per_pass=1)))
    steps = first["training"]["steps"]
    assert [p["passes"] for p in first["training"]["curve"]] == [0, 1.0]
    more = TwinTraining(max_passes=2, evals_per_pass=1)
    training = checkpoint.read_metadata(train_ar_twin(corpus, out, more, start_from=out / "ar"))["training"]
    assert [p["passes"] for p in training["curve"]] == [0, 1.0, 2.0]
    assert training["steps"] == 2 * steps and len(training["stages"]) == 2
    assert training["stages"][0]["steps"] == steps and "curve" not in training["stages"][0]
    assert training["stages"][1]["continued_from"]["step"] == steps
    with pytest.raises(InputError, match="no best snapshot"):
        train_ar_twin(corpus, out, more, start_from=out / "diffusion")


def test_a_loss_that_stops_being_a_number_ends_the_run_saying_so(tmp_path, tiny_checkpoint):
    """Weights that hold a NaN (or a learning rate that blows up) must not train on, nor publish."""
    from diffusion_core.training import Diverged

    model, tokenizer = checkpoint.load(tiny_checkpoint, torch.device("cpu"))
    with torch.no_grad():
        model.get_input_embeddings().weight[5] = float("nan")
    base = checkpoint.save(model, tokenizer, tmp_path / "base", {"name": "nan"})
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog\n\n" * 40)
    config = TrainConfig(
        data=(str(tmp_path / "corpus.txt"),),
        output=str(tmp_path / "out"),
        base=str(base),
        max_steps=5,
        batch_size=4,
        max_length=32,
    )
    with pytest.raises(Diverged) as caught:
        train(config, show_progress=False)
    assert "step 1" in str(caught.value) and caught.value.param == "learning_rate"
    assert not (tmp_path / "out").exists()


def test_the_head_runs_on_a_few_sizes_however_many_positions_a_batch_masks(tmp_path, tiny_checkpoint, corpus_file):
    """Each batch masks a different number of positions. A CPU keeps a compiled matmul plan per shape,
    so a head run on every exact count grew a fine-tune by gigabytes (bench/train_memory.py); rounded
    to quarter-octave sizes it sees a handful, and the loss still counts only the masked positions."""
    from diffusion_core.model import head_rows

    vocab = checkpoint.load(tiny_checkpoint, torch.device("cpu"))[0].config.vocab_size
    rows: list[int] = []

    def seen(module: torch.nn.Module, args: tuple) -> None:
        if isinstance(module, torch.nn.Linear) and module.out_features == vocab:
            rows.append(args[0].shape[0])

    config = TrainConfig(data=(str(corpus_file),), output=str(tmp_path / "out"), base=str(tiny_checkpoint),
                         max_steps=20, batch_size=4, max_length=32, eval_every=10**6)  # fmt: skip
    hook = torch.nn.modules.module.register_module_forward_pre_hook(seen)
    try:
        train(config, show_progress=False)
    finally:
        hook.remove()
    allowed = {head_rows(m) for m in range(1, 4 * 32 + 1)}
    assert len(rows) >= 20 and set(rows) <= allowed and len(allowed) <= 12, sorted(set(rows))
    assert all(head_rows(m) - m <= max(7, m // 4) for m in range(1, 5000)), "at most a quarter more rows"
