"""The lm-evaluation-harness backend and the ELBO estimate under it, offline: local tasks, a tiny model."""

import json
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import lm_eval
import pytest
import torch
from lm_eval.tasks import TaskManager

import diffusion_core
from diffusion_core import GenerationConfig, checkpoint, generate
from diffusion_core.cli import main
from diffusion_core.harness import UnmaskLM
from diffusion_core.likelihood import Pair, exact_bound, greedy, loglikelihoods
from diffusion_core.model import SpecialTokens, max_positions
from diffusion_core.starter import STARTER_DIFFUSION

from .conftest import SENTENCES

CHAT = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}{% if add_generation_prompt %}<s>assistant:{% endif %}"  # noqa: E501


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_the_estimate_converges_to_the_bound_computed_over_every_mask(tiny_model, tokenizer):
    special, window = SpecialTokens.of(tokenizer), max_positions(tiny_model, tokenizer)
    pair = Pair(_ids(tokenizer, "the quick brown fox"), _ids(tokenizer, " jumps over the lazy dog, said she")[:8])
    assert len(pair.continuation) == 8
    exact = exact_bound(tiny_model, special, pair, window)  # 2^8 - 1 masks, each weighted as the bound says
    many = [loglikelihoods(tiny_model, special, [pair], window, samples=254, seed=s, batch_rows=256)[0] for s in (0, 1)]
    few = [loglikelihoods(tiny_model, special, [pair], window, samples=8, seed=s)[0] for s in range(8)]
    assert all(abs(m - exact) < 0.02 * abs(exact) for m in many) and many[0] != many[1], (exact, many)
    assert len(set(few)) == len(few), "the masks are drawn: seeds differ"
    assert abs(sum(few) / len(few) - exact) < 0.05 * abs(exact), "unbiased: the mean of small estimates is near"
    # As many samples as masks, or more: the bound itself, whatever the seed.
    assert loglikelihoods(tiny_model, special, [pair], window, samples=255, seed=7)[0] == pytest.approx(exact, abs=1e-4)


def test_a_pair_scores_the_same_alone_in_a_batch_and_in_any_order(tiny_model, tokenizer):
    special, window = SpecialTokens.of(tokenizer), max_positions(tiny_model, tokenizer)
    pairs = [Pair(_ids(tokenizer, s[:20]), _ids(tokenizer, s[20:])) for s in SENTENCES]
    together = loglikelihoods(tiny_model, special, pairs, window, samples=6, seed=3, batch_rows=5)
    alone = [loglikelihoods(tiny_model, special, [p], window, samples=6, seed=3)[0] for p in reversed(pairs)]
    assert together == pytest.approx(alone[::-1], abs=1e-4)


def test_a_context_longer_than_the_window_keeps_its_end(tiny_model, tokenizer):
    special, window = SpecialTokens.of(tokenizer), max_positions(tiny_model, tokenizer)
    context = _ids(tokenizer, " ".join(SENTENCES * 3))
    tail = _ids(tokenizer, " jumps over")
    room = window - 1 - len(tail)
    assert len(context) > room
    long, cut = Pair(context, tail), Pair(context[-room:], tail)
    assert (
        loglikelihoods(tiny_model, special, [long], window)[0] == loglikelihoods(tiny_model, special, [cut], window)[0]
    )
    assert greedy(tiny_model, special, [long, cut], window) in ([True, True], [False, False])


def test_the_model_takes_unmasks_dtype_and_the_best_device_when_lm_evals_default_gpu_is_missing(
    tiny_checkpoint, monkeypatch
):
    monkeypatch.setenv("UNMASK_DTYPE", "float16")  # not what auto picks on any machine
    lm = UnmaskLM(pretrained=str(tiny_checkpoint), device="cuda:0" if not torch.cuda.is_available() else "cpu")
    assert next(lm.model.parameters()).dtype == torch.float16 and lm.device.type == "cpu"


def test_a_rolling_score_is_the_bound_of_the_text_after_the_start_token(tiny_checkpoint):
    lm = UnmaskLM(pretrained=str(tiny_checkpoint), device="cpu", dtype="float32", mc_samples=8, seed=2)
    text = SENTENCES[0]
    (rolling,) = lm.loglikelihood_rolling([SimpleNamespace(args=(text,))], disable_tqdm=True)
    direct = loglikelihoods(lm.model, lm.special, [Pair([], _ids(lm.tokenizer, text))], lm.window, 8, 2)[0]
    assert rolling == pytest.approx(direct, abs=1e-6)
    # Past the window: every token scored once, each window's sequence within the model's positions.
    long = _ids(lm.tokenizer, " ".join(SENTENCES * 4))
    assert len(long) > lm.window
    seen: list[Pair] = []
    scores = lm._scores
    lm._scores = lambda pairs: seen.extend(pairs) or scores(pairs)  # type: ignore[method-assign]
    (whole,) = lm.loglikelihood_rolling([SimpleNamespace(args=(" ".join(SENTENCES * 4),))], disable_tqdm=True)
    assert len(seen) > 1 and [t for p in seen for t in p.continuation] == long
    assert all(1 + len(p.context) + len(p.continuation) <= lm.window for p in seen)
    assert whole == pytest.approx(sum(scores(seen)), abs=1e-6)


def test_the_starter_scores_real_text_above_the_same_words_shuffled():
    model, tokenizer = checkpoint.load(STARTER_DIFFUSION, torch.device("cpu"))
    special, window = SpecialTokens.of(tokenizer), max_positions(model, tokenizer)
    texts = [
        ("This program is free software; you can redistribute it and/or modify it", " under the terms of the GNU"),
        ("To install the package, run", " the following command as root"),
        ("See the manual page for more", " information about the available options"),
        ("The configuration file is read at startup, and", " changes take effect after a restart"),
        ("If you find a bug, please report it", " to the Debian bug tracking system"),
    ]
    real, shuffled = [], []
    for context, continuation in texts:
        head = _ids(tokenizer, context)
        tail = _ids(tokenizer, context + continuation)[len(head) :]
        mixed = tail[:]
        random.Random(0).shuffle(mixed)
        assert mixed != tail
        real.append(Pair(head, tail))
        shuffled.append(Pair(head, mixed))
    scores = loglikelihoods(model, special, real + shuffled, window, samples=32)
    assert all(r > s for r, s in zip(scores[: len(texts)], scores[len(texts) :])), scores
    # Greedy decoding writes what the model likes best, the most confident position first: its own greedy
    # text is greedy; the text written strictly left to right (blocks of one token) and shuffled words are not.
    config = GenerationConfig(max_new_tokens=6, steps=6, sampling="greedy", block_length=0, spacing=1, forbid_eos=True)
    context = texts[1][0]

    def pair(text: str) -> Pair:
        return Pair(real[1].context, _ids(tokenizer, context + " " + text)[len(real[1].context) :])

    own = generate(model, tokenizer, context, config).texts[0]
    in_order = generate(model, tokenizer, context, replace(config, block_length=1)).texts[0]
    assert own != in_order
    assert greedy(model, special, [pair(own), pair(in_order), shuffled[1]], window) == [True, False, False]


def _tasks(folder: Path, stop: str = " a") -> Path:
    """Four local tasks, one per request type, on JSONL files: nothing is downloaded."""
    rows = {
        "choice": [{"q": s[:20], "choices": [s[20:], " ".join(reversed(s[20:].split()))], "a": 0} for s in SENTENCES],
        "cloze": [{"text": s.rsplit(" ", 1)[0], "word": " " + s.rsplit(" ", 1)[1]} for s in SENTENCES],
        "write": [{"prompt": s[:16], "target": s[16:]} for s in SENTENCES[:2]],
        "whole": [{"text": s} for s in SENTENCES[:2]],
    }
    specs = {
        "choice": 'output_type: multiple_choice\ndoc_to_text: "{{q}}"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{a}}"\nmetric_list:\n  - metric: acc\n',
        "cloze": 'output_type: loglikelihood\ndoc_to_text: "{{text}}"\ndoc_to_target: "{{word}}"\n'
        "metric_list:\n  - metric: perplexity\n  - metric: acc\n",
        "write": 'output_type: generate_until\ndoc_to_text: "{{prompt}}"\ndoc_to_target: "{{target}}"\n'
        f"generation_kwargs:\n  until: [{json.dumps(stop)}]\n  max_gen_toks: 6\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n",
        "whole": 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
        "metric_list:\n  - metric: word_perplexity\n",
    }
    for name, docs in rows.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        head = f"task: tiny_{name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        head += "test_split: test\n"
        (folder / f"{name}.yaml").write_text(head + specs[name])
    return folder


@pytest.fixture(scope="module")
def chat_checkpoint(tmp_path_factory, tiny_checkpoint) -> Path:
    model, tokenizer = checkpoint.load(tiny_checkpoint, torch.device("cpu"))  # a copy, given a template
    tokenizer.chat_template = CHAT
    return checkpoint.save(model, tokenizer, tmp_path_factory.mktemp("chat") / "tiny", {"format": 1})


def test_local_tasks_run_through_lm_eval_and_score_the_same_twice(tmp_path, chat_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    model, tokenizer = checkpoint.load(chat_checkpoint, torch.device("cpu"))
    config = GenerationConfig(max_new_tokens=6, steps=3, sampling="greedy", seed=0)
    full = generate(model, tokenizer, SENTENCES[0][:16], config).texts[0]  # what the first writing task gets
    stop = full[len(full) // 2 :][:2]  # a stop string the greedy text is sure to meet, halfway
    manager = TaskManager(include_path=str(_tasks(tmp_path, stop)))
    names = ["tiny_choice", "tiny_cloze", "tiny_write", "tiny_whole"]

    def evaluate(**kwargs):
        lm = UnmaskLM(pretrained=str(chat_checkpoint), device="cpu", dtype="float32", mc_samples=4, steps=3)
        return lm_eval.simple_evaluate(model=lm, tasks=names, task_manager=manager, log_samples=True, **kwargs)

    assert lm_eval.api.registry.get_model("unmask") is UnmaskLM, "importing the backend registers it by name"
    first, second = evaluate(), evaluate()
    assert first["results"] == second["results"]
    results = first["results"]
    assert 0 <= results["tiny_choice"]["acc,none"] <= 1 and results["tiny_cloze"]["perplexity,none"] > 1
    assert results["tiny_whole"]["word_perplexity,none"] > 1
    # generate_until: unmask's greedy text, cut before the task's stop string.
    written = {s["arguments"][0][0]: s["resps"][0][0] for s in first["samples"]["tiny_write"]}
    assert written[SENTENCES[0][:16]] == full[: full.find(stop)] and len(written[SENTENCES[0][:16]]) < len(full)
    for prompt, text in written.items():
        whole = generate(model, tokenizer, prompt, config).texts[0]
        assert text == whole.split(stop)[0]
    # A chat template, when the task asks for one, wraps the prompt in the model's template.
    chat = evaluate(apply_chat_template=True, limit=1)
    prompt = chat["samples"]["tiny_write"][0]["arguments"][0][0]
    assert prompt.startswith("user: ") and prompt.endswith("<s>assistant:")


def test_unmask_lm_eval_runs_the_harness_command_on_the_documented_example(tiny_checkpoint, capsys, monkeypatch):
    root = Path(__file__).resolve().parents[1]  # the example's data paths are relative to the repository
    args = ["--model", "unmask", "--model_args", f"pretrained={tiny_checkpoint},mc_samples=2,dtype=float32,steps=2"]
    args += ["--tasks", "heldout_order,heldout_cloze", "--include_path", "docs/examples/lm_eval", "--limit", "2"]
    env = {"HF_DATASETS_OFFLINE": "1", "PATH": str(Path(sys.executable).parent)}
    run = [sys.executable, "-m", "diffusion_core.cli", "lm-eval"]
    done = subprocess.run([*run, *args], capture_output=True, text=True, env=env, cwd=root, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "|heldout_order|" in done.stdout and "|heldout_cloze|" in done.stdout and "perplexity" in done.stdout
    monkeypatch.chdir(root)
    args[3] = f"pretrained={tiny_checkpoint},stepz=4"
    assert main(["lm-eval", *args]) == 2
    printed = capsys.readouterr().err
    assert "unknown model_args stepz" in printed and "Traceback" not in printed


def test_without_the_eval_extra_unmask_lm_eval_says_what_to_install(monkeypatch, capsys):
    for name in [n for n in sys.modules if n.split(".")[0] == "lm_eval"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if lm-evaluation-harness were not installed
    monkeypatch.delitem(sys.modules, "diffusion_core.harness")
    monkeypatch.delattr(diffusion_core, "harness")
    assert main(["lm-eval", "--tasks", "x"]) == 2
    assert "pip install -e '.[eval]'" in capsys.readouterr().err
