"""`unmask eval`: likelihood per masking rate, and a grid of decoding settings against a causal LM.

Samples continue held-out prompts; a reference causal LM scores them (gen-PPL), next to
diversity (unigram entropy, distinct-2/3, 4-gram repetition), forward passes and tokens/s. The
autoregressive model's own samples are measured the same way in the same run. Sampling draws
its uniforms in float64 (see sampling.py): float32 draws lower the effective temperature and
flatter gen-PPL.
"""

import math
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from .autoregressive import perplexity
from .autoregressive import sample as ar_sample
from .collator import DiffusionCollator
from .config import GenerationConfig
from .data import Blocks
from .denoise import generate
from .errors import ConfigError
from .evaluation import distinct_n, elbo_nll, elbo_rates, masked_token_loss, repetition_rate, unigram_entropy
from .model import SpecialTokens
from .plots import scatter_chart

NEW_TOKENS = 64
PROMPT_TOKENS = 16


def grid(new_tokens: int = NEW_TOKENS) -> dict[str, GenerationConfig]:
    """The decoding settings `unmask eval` compares: steps, schedule, remasking, spacing, temperature,
    top-p and the block cache. The default writes 4 tokens per step in blocks of 16 (16 steps for 64
    tokens), keeping a step's tokens 3 columns apart, with the dual cache."""
    steps = max(1, new_tokens // 4)
    base = GenerationConfig(max_new_tokens=new_tokens, steps=steps, forbid_eos=True)
    one_per_step = new_tokens
    return {
        f"{steps} steps (default)": base,
        f"{2 * steps} steps": replace(base, steps=2 * steps),
        f"{one_per_step} steps (one token per step)": replace(base, steps=one_per_step),
        f"{steps} steps, spacing 1 (neighbours together)": replace(base, spacing=1),
        f"{2 * steps} steps, spacing 1": replace(base, steps=2 * steps, spacing=1),
        f"{steps} steps, spacing 5": replace(base, spacing=5),
        f"{steps} steps, linear": replace(base, schedule="linear"),
        f"{steps} steps, no future masks": replace(base, future_masks=False),
        "threshold 0.9": replace(base, steps=one_per_step, remasking="threshold", threshold=0.9),
        "threshold 0.7": replace(base, steps=one_per_step, remasking="threshold", threshold=0.7),
        f"{steps} steps, top_p 0.8": replace(base, top_p=0.8),
        f"{steps} steps, temperature 0.8": replace(base, sampling="temperature", temperature=0.8),
        f"{steps} steps, prefix cache": replace(base, cache="prefix"),
        f"{steps} steps, no cache": replace(base, cache="none"),
        f"{steps} steps, dual cache, refresh every 4 blocks": replace(base, cache="dual", cache_refresh=4),
        **steering(base, steps),
    }


def steering(base: GenerationConfig, steps: int) -> dict[str, GenerationConfig]:
    """Penalties, guidance and revision, at the default's passes and at 1.5x them."""
    more = steps * 3 // 2
    return {
        f"{steps} steps, repetition penalty 1.1": replace(base, repetition_penalty=1.1),
        f"{steps} steps, repetition penalty 1.2": replace(base, repetition_penalty=1.2),
        f"{steps} steps, frequency penalty 0.5": replace(base, frequency_penalty=0.5),
        f"{steps} steps, presence penalty 0.5": replace(base, presence_penalty=0.5),
        f"{steps} steps, guidance 0.5": replace(base, cfg_scale=0.5),
        f"{steps} steps, guidance 1.5": replace(base, cfg_scale=1.5),
        f"{more} steps, repetition penalty 1.1": replace(base, steps=more, repetition_penalty=1.1),
        f"{more} steps, presence penalty 0.3": replace(base, steps=more, presence_penalty=0.3),
        f"{more} steps, guidance 0.5": replace(base, steps=more, cfg_scale=0.5),
        f"{steps} steps, revise cap 0.5": replace(base, revise="cap", revise_eta=0.5),
        f"{steps} steps, revise rescale 0.5": replace(base, revise="rescale", revise_eta=0.5),
        f"{steps} steps, revise conf 0.5": replace(base, revise="conf", revise_eta=0.5),
        f"{more} steps, revise conf 0.5": replace(base, steps=more, revise="conf", revise_eta=0.5),
        f"{more} steps, revise conf 1.0": replace(base, steps=more, revise="conf", revise_eta=1.0),
        f"{steps} steps, edit margin 0.3": replace(base, edit_margin=0.3),
        f"{more} steps, edit margin 0.3": replace(base, steps=more, edit_margin=0.3),
        f"{more} steps": replace(base, steps=more),
    }


def chosen(settings: dict[str, GenerationConfig], only: list[str] | None) -> dict[str, GenerationConfig]:
    """The settings whose names contain one of `only` (all of them when it is empty)."""
    if not only:
        return settings
    kept = {name: config for name, config in settings.items() if any(text in name for text in only)}
    if not kept:
        raise ConfigError(f"--only {' '.join(only)} matches none of: {'; '.join(settings)}", "only")
    return kept


@dataclass(frozen=True)
class Scores:
    gen_ppl: float
    unigram_entropy: float
    distinct_2: float
    distinct_3: float
    repetition_4: float
    nfe_per_sample: float
    tokens_per_s: float


def prompts_from(blocks: Blocks, tokenizer: PreTrainedTokenizerBase, count: int, length: int = PROMPT_TOKENS):
    """The first `length` tokens of `count` held-out blocks, as text (one prompt per block)."""
    special = SpecialTokens.of(tokenizer)
    prompts = []
    for row in blocks.input_ids[:count]:
        ids = [i for i in row.tolist()[1 : length + 1] if i not in (special.end, special.pad)]
        prompts.append(str(tokenizer.decode(ids)).strip())
    return [p for p in prompts if p]


def likelihood(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, held_out: Blocks) -> dict[str, Any]:
    """Held-out masked-token loss at ten masking rates, and the ELBO bound built from them."""
    special = SpecialTokens.of(tokenizer)
    collator = DiffusionCollator(special.mask, (special.start, special.pad))
    losses = {r: masked_token_loss(model, held_out, collator, r) for r in tqdm(elbo_rates(), desc="likelihood")}
    nll = elbo_nll(losses)
    return {
        "masked_token_loss": {f"{r:.2f}": round(v, 4) for r, v in losses.items()},
        "elbo_nll_per_token": round(nll, 4),
        "elbo_ppl_bound": round(math.exp(nll), 2),
    }


def score(
    reference: PreTrainedModel,
    reference_tokenizer: PreTrainedTokenizerBase,
    count_tokens: Any,
    prompts: list[str],
    texts: list[str],
    seconds: float,
    nfe: int,
) -> Scores:
    tokens = sum(count_tokens(t) for t in texts)
    return Scores(
        gen_ppl=round(perplexity(reference, reference_tokenizer, prompts, texts), 2),
        unigram_entropy=round(unigram_entropy(texts), 3),
        distinct_2=round(distinct_n(texts, 2), 3),
        distinct_3=round(distinct_n(texts, 3), 3),
        repetition_4=round(repetition_rate(texts), 3),
        nfe_per_sample=round(nfe / max(1, len(texts)), 1),
        tokens_per_s=round(tokens / seconds, 1),
    )


def diffusion_run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: GenerationConfig,
    bar=None,
    seed: int = 0,
) -> tuple[list[str], float, int]:
    """One sample per prompt (prompt i with seed + i): texts, seconds, forward passes."""
    texts, nfe = [], 0
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        result = generate(model, tokenizer, prompt, replace(config, seed=seed + i))
        texts.append(result.texts[0])
        nfe += result.nfe
        if bar is not None:
            bar.update(1)
    return texts, time.perf_counter() - started, nfe


def ar_run(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    new_tokens: int,
    bar=None,
    top_p: float = 0.9,
    seed: int = 0,
) -> tuple[list[str], float, int]:
    """The causal LM's sample per prompt (seed + i), nucleus sampling: texts, seconds, forward passes."""
    texts, nfe = [], 0
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        ids = [ids for ids, _ in ar_sample(model, tokenizer, prompt, new_tokens, top_p=top_p, seed=seed + i)][-1]
        texts.append(str(tokenizer.decode(ids, skip_special_tokens=True)).strip())
        nfe += len(ids)
        if bar is not None:
            bar.update(1)
    return texts, time.perf_counter() - started, nfe


def assess(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    reference: PreTrainedModel,
    reference_tokenizer: PreTrainedTokenizerBase,
    ar_model: PreTrainedModel | None,
    ar_tokenizer: PreTrainedTokenizerBase | None,
    held_out: Blocks,
    prompts: int = 20,
    new_tokens: int = NEW_TOKENS,
    settings: dict[str, GenerationConfig] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Everything `unmask eval` reports, as one JSON-ready dict; prompt i is sampled with seed + i."""
    settings = settings or grid(new_tokens)
    chosen = prompts_from(held_out, tokenizer, prompts)
    count = _counter(tokenizer)
    report: dict[str, Any] = {
        "likelihood": likelihood(model, tokenizer, held_out), "prompts": len(chosen), "seed": seed,
    }  # fmt: skip
    total = len(chosen) * (len(settings) + (ar_model is not None))
    rows: dict[str, Any] = {}
    samples: dict[str, list[str]] = {}
    with tqdm(total=total, desc="samples", unit="sample") as bar:
        if ar_model is not None and ar_tokenizer is not None:
            texts, seconds, nfe = ar_run(ar_model, ar_tokenizer, chosen, new_tokens, bar, seed=seed)
            rows["autoregressive, top_p 0.9"] = asdict(
                score(reference, reference_tokenizer, _counter(ar_tokenizer), chosen, texts, seconds, nfe)
            )
            samples["autoregressive, top_p 0.9"] = texts
        for name, config in settings.items():
            texts, seconds, nfe = diffusion_run(model, tokenizer, chosen, config, bar, seed=seed)
            rows[name] = {**asdict(score(reference, reference_tokenizer, count, chosen, texts, seconds, nfe)),
                          "config": _config(config)}  # fmt: skip
            samples[name] = texts
    report["decoding"] = rows
    report["examples"] = {"prompt": chosen[0], **{name: texts[0] for name, texts in samples.items()}}
    report["environment"] = environment(next(model.parameters()).device)
    return report


def _counter(tokenizer: PreTrainedTokenizerBase) -> Any:
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _config(config: GenerationConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if k not in ("seed", "num_samples")}


def environment(device: torch.device) -> dict[str, str]:
    """Where the figures come from: a result without its machine is not a result."""
    import transformers

    return {
        "date": time.strftime("%Y-%m-%d"),
        "device": str(device),
        "hardware": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "threads": str(torch.get_num_threads()),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def cpu_name() -> str:
    """The processor's marketing name where Linux tells it, else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def markdown(report: dict[str, Any]) -> str:
    """The report as the tables docs/results.md and `unmask eval` print."""
    like = report["likelihood"]
    env = report["environment"]
    lines = [
        f"Held-out masked-token loss (nats) by masking rate; ELBO bound {like['elbo_nll_per_token']} nats/token "
        f"(perplexity <= {like['elbo_ppl_bound']}).",
        "",
        "| rate | " + " | ".join(like["masked_token_loss"]) + " |",
        "|---|" + "---|" * len(like["masked_token_loss"]),
        "| loss | " + " | ".join(f"{v:.3f}" for v in like["masked_token_loss"].values()) + " |",
        "",
        f"{report['prompts']} held-out prompts; gen-PPL under the reference; "
        f"{env['device']} ({env['hardware']}, {env['threads']} threads), weights in {env.get('dtype', 'float32')},"
        f" torch {env['torch']}, {env['date']}; prompt i sampled with seed {report.get('seed', 0)} + i.",
        "",
        "| setting | gen-PPL | unigram H | distinct-2 | distinct-3 | rep-4 | NFE/sample | tokens/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["decoding"].items():
        lines.append(
            f"| {name} | {r['gen_ppl']:.1f} | {r['unigram_entropy']:.2f} | {r['distinct_2']:.3f} | "
            f"{r['distinct_3']:.3f} | {r['repetition_4']:.3f} | {r['nfe_per_sample']:.1f} | {r['tokens_per_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the settings no other beats on both speed (x, higher) and gen-PPL (y, lower)."""
    return [
        name
        for name, (x, y) in points.items()
        if not any(ox >= x and oy <= y and (ox, oy) != (x, y) for ox, oy in points.values())
    ]


def plot(report: dict[str, Any], path: str | Path) -> Path:
    points = {name: (r["tokens_per_s"], r["gen_ppl"]) for name, r in report["decoding"].items()}
    front = pareto_front(points)
    return scatter_chart(points, front, path, "quality vs speed (the line joins the Pareto front)",
                         "tokens/s", "gen-PPL (lower is better)")  # fmt: skip
