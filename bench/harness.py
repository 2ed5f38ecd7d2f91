"""The starter and its twin through lm-evaluation-harness, on local tasks cut from the held-out split.

Three tasks, built here as JSONL + YAML from the 5% of the starter corpus that neither model trained on:
- heldout_cloze (LAMBADA's form): a passage without its last word; perplexity of the word, and acc (greedy
  decoding writes it);
- heldout_order: the passage's last eight words in order against the same words shuffled; acc;
- heldout_text: the passages whole, word perplexity (loglikelihood_rolling).
The diffusion starter runs through unmask's backend (the ELBO estimate, a bound: its perplexities are upper
bounds), twice with the same seed to show the score repeats; the twin through lm_eval's own HF backend.

    python bench/harness.py [--limit 100] [--mc-samples 32]
"""

import argparse
import contextlib
import io
import json
import os
import random
import re
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the tasks are local files: never ask the hub

import lm_eval  # noqa: E402
import lm_eval.models  # noqa: E402  # registers lm_eval's own backends (hf)
from common import record
from lm_eval.tasks import TaskManager

from diffusion_core import starter
from diffusion_core.harness import UnmaskLM
from diffusion_core.model import SpecialTokens, load_tokenizer

WORKDIR = Path(__file__).resolve().parents[1] / "runs" / "starter"  # where unmask eval keeps the corpus
TASKS = {
    "heldout_cloze": 'output_type: loglikelihood\ndoc_to_text: "{{context}}"\ndoc_to_target: "{{word}}"\n'
    "metric_list:\n  - {metric: perplexity, aggregation: perplexity, higher_is_better: false}\n"
    "  - {metric: acc, aggregation: mean, higher_is_better: true}\n",
    "heldout_order": 'output_type: multiple_choice\ndoc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\n'
    'doc_to_target: "{{answer}}"\nmetric_list:\n  - {metric: acc, aggregation: mean, higher_is_better: true}\n',
    "heldout_text": 'output_type: loglikelihood_rolling\ndoc_to_text: ""\ndoc_to_target: "{{text}}"\n'
    "metric_list:\n  - {metric: word_perplexity, aggregation: weighted_perplexity, higher_is_better: false}\n",
}
METRICS = {"heldout_cloze": ("perplexity", "acc"), "heldout_order": ("acc",), "heldout_text": ("word_perplexity",)}


def passages(limit: int) -> list[str]:
    """Held-out blocks as text: the longest run between end tokens, from its first whole word to its last
    full stop."""
    tokenizer = load_tokenizer(starter.STARTER_DIFFUSION)
    end = SpecialTokens.of(tokenizer).end
    out = []
    for ids in starter.held_out_blocks(starter.corpus_folder(WORKDIR), tokenizer).input_ids.tolist():
        runs, run = [], []
        for i in ids[1:]:
            if i == end:
                runs, run = [*runs, run], []
            else:
                run.append(i)
        text = tokenizer.decode(max([*runs, run], key=len), skip_special_tokens=True)
        text = text.split(" ", 1)[-1]  # a block starts inside a word
        text = text[: text.rfind(". ") + 1] if ". " in text else ""
        if len(text.split()) >= 24 and re.search(r" ([a-z]{3,})\.$", text):
            out.append(text)
    return out[:limit]


def write_tasks(folder: Path, texts: list[str]) -> None:
    chooser = random.Random(0)
    docs: dict[str, list[dict]] = {name: [] for name in TASKS}
    for text in texts:
        head, word = re.match(r"(.*) ([a-z]{3,})\.$", text).groups()  # type: ignore[union-attr]
        docs["heldout_cloze"].append({"context": head, "word": " " + word})
        words = text.split()
        ending = words[-8:]
        shuffled = ending[:]
        while shuffled == ending:
            chooser.shuffle(shuffled)
        answer = chooser.randrange(2)
        choices = [" " + " ".join(ending), " " + " ".join(shuffled)][:: 1 if answer == 0 else -1]
        docs["heldout_order"].append({"context": " ".join(words[:-8]), "choices": choices, "answer": answer})
        docs["heldout_text"].append({"text": text})
    for name, spec in TASKS.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs[name]))
        head = f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
        (folder / f"{name}.yaml").write_text(head + spec)


def scores(**kwargs: object) -> dict[tuple[str, str], tuple[float, float]]:
    """(task, metric) -> (value, its standard error), lm_eval's own printing kept out of the record."""
    with contextlib.redirect_stdout(io.StringIO()):
        results = lm_eval.simple_evaluate(**kwargs)["results"]  # type: ignore[arg-type]
    return {(t, m): (results[t][f"{m},none"], results[t][f"{m}_stderr,none"]) for t, ms in METRICS.items() for m in ms}


def cell(value: float, stderr: float | str) -> str:
    return f"{value:.4g} ± {stderr:.2g}" if isinstance(stderr, float) else f"{value:.4g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=100, help="passages per task")
    parser.add_argument("--mc-samples", type=int, default=32, help="masks per continuation for the starter")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, record("harness", "lm-evaluation-harness: the starter and its twin"):
        texts = passages(args.limit)
        write_tasks(Path(tmp), texts)
        manager = TaskManager(include_path=tmp)
        tasks = list(TASKS)
        runs, seconds = [], []
        for _ in range(2):
            started = time.perf_counter()
            lm = UnmaskLM(pretrained=str(starter.STARTER_DIFFUSION), device="cpu", dtype="float32",
                          batch_size=8, mc_samples=args.mc_samples)  # fmt: skip
            runs.append(scores(model=lm, tasks=tasks, task_manager=manager))
            seconds.append(time.perf_counter() - started)
        # The twin's tokenizer is BERT's: with its special tokens every context would end in [SEP], so they are
        # left out, and [CLS] opens the rolling windows only (unmask's sequences always open with it).
        start = SpecialTokens.of(load_tokenizer(starter.STARTER_AR)).start
        started = time.perf_counter()
        twin_args = f"pretrained={starter.STARTER_AR},dtype=float32,add_bos_token=False,prefix_token_id={start}"
        twin = scores(model="hf", model_args=twin_args, tasks=tasks, task_manager=manager, device="cpu", batch_size=8)
        twin_s = time.perf_counter() - started
        print(f"{len(texts)} held-out passages per task; starter: unmask backend, {args.mc_samples} masks per")
        print("continuation (ELBO: perplexities are upper bounds); twin: lm_eval's hf backend (exact).")
        print()
        print("| task | metric | starter (unmask) | twin (hf) |")
        print("|---|---|---:|---:|")
        for (task, metric), value in runs[0].items():
            print(f"| {task} | {metric} | {cell(*value)} | {cell(*twin[(task, metric)])} |")
        print()
        same = [v for v, _ in runs[0].values()] == [v for v, _ in runs[1].values()]
        print(f"starter, second run with the same seed: {'the same scores' if same else runs[1]}")
        print(f"wall time: starter {seconds[0]:.0f} s and {seconds[1]:.0f} s, twin {twin_s:.0f} s")


if __name__ == "__main__":
    main()
