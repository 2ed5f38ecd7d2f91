"""unmask as an lm-evaluation-harness model: `--model unmask --model_args pretrained=PATH,...`.

Importing this module registers the model under the name "unmask" in lm_eval's registry; `unmask
lm-eval ARGS` does that, then runs lm_eval's own command line with ARGS. Needs the `eval` extra
(`pip install -e .[eval]`).

- loglikelihood: the ELBO estimate of log p(continuation | context) (likelihood.py), and whether
  greedy decoding writes the continuation;
- loglikelihood_rolling: the same bound over the text's rolling windows;
- generate_until: unmask's own generation, cut at the first stop string.
"""

import logging
import os
from dataclasses import fields, replace
from typing import Any

import torch
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from . import checkpoint
from .config import GenerationConfig
from .denoise import cut_at_stops, generate
from .errors import ConfigError
from .likelihood import SAMPLES, Pair, greedy, loglikelihoods
from .model import SpecialTokens, max_positions, pick_device, pick_dtype
from .tokenizer import chat_text

log = logging.getLogger(__name__)
_GENERATION = {f.name: f for f in fields(GenerationConfig)}


@register_model("unmask")
class UnmaskLM(TemplateLM):
    """A checkpoint unmask can load (a directory or a hub id), scored and sampled the diffusion way.

    model_args: pretrained (required), device, dtype (default UNMASK_DTYPE, else auto: bf16 where the
    device computes it), batch_size (requests scored together: a forward pass holds batch_size x
    mc_samples rows), mc_samples (masks per continuation), seed (the estimate's and generation's), and
    any GenerationConfig field (steps, block_length, remasking, cache, ...) for generate_until; steps
    defaults to one token per pass. lm_eval's TemplateLM splits context and continuation where the
    whole text tokenizes."""

    backend = "causal"  # TemplateLM's name for "encode the whole text, then split it"

    def __init__(
        self,
        pretrained: str,
        device: str | None = "auto",
        dtype: str | None = None,
        batch_size: int | str | None = 1,
        mc_samples: int | str = SAMPLES,
        seed: int | str = 0,
        max_batch_size: int | None = None,
        **generation: Any,
    ) -> None:
        super().__init__()
        self._device = _device(device)
        choice = pick_dtype(dtype or os.environ.get("UNMASK_DTYPE") or "auto", self._device)
        self.model, self.tokenizer = checkpoint.load(str(pretrained), self._device, choice.dtype)
        self.special = SpecialTokens.of(self.tokenizer)
        self.window = max_positions(self.model, self.tokenizer)
        self.pretrained = str(pretrained)
        self.samples, self.seed = int(mc_samples), int(seed)
        if self.samples < 1:
            raise ConfigError("mc_samples must be at least 1", "mc_samples")
        self.batch = max(1, int(str(batch_size))) if str(batch_size).isdigit() else 1  # "auto": one at a time
        self.rows = self.batch * self.samples
        self.generation = _generation_options(generation)
        log.info("unmask: %s on %s (%s), %d samples per continuation", pretrained, self._device, choice.reason,
                 self.samples)  # fmt: skip

    # ---- scoring ----
    @property
    def eot_token_id(self) -> int:
        return self.special.end

    @property
    def prefix_token_id(self) -> int:
        return self.special.start  # an empty context is the start token alone

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return list(self.tokenizer(string, add_special_tokens=False)["input_ids"])

    def _context(self, context: list[int]) -> list[int]:
        """A context as unmask's sequences take it: the start token opens every one already."""
        return context[1:] if context[:1] == [self.special.start] else context

    def _scores(self, pairs: list[Pair]) -> list[float]:
        return loglikelihoods(self.model, self.special, pairs, self.window, self.samples, self.seed, self.rows)

    def _loglikelihood_tokens(
        self, requests: list[tuple[tuple[str, str], list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        pairs = [Pair(self._context(context), continuation) for _, context, continuation in requests]
        scores, hits = [], []
        for start in tqdm(range(0, len(pairs), self.batch), desc="unmask loglikelihood", disable=disable_tqdm):
            part = pairs[start : start + self.batch]
            scores += self._scores(part)
            hits += greedy(self.model, self.special, part, self.window, self.rows)
        for (args, _, _), score, hit in zip(requests, scores, hits):
            self.cache_hook.add_partial("loglikelihood", args, (score, hit))
        return list(zip(scores, hits))

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        out = []
        for request in tqdm(requests, desc="unmask loglikelihood_rolling", disable=disable_tqdm):
            (text,) = request.args
            # A window's context and continuation, after the start token, fill the model's positions (a causal
            # model's windows hold one token more: its last prediction is never an input).
            windows = get_rolling_token_windows(self.tok_encode(text), self.prefix_token_id, self.window - 2, 1)
            pairs = [Pair(self._context(ctx), cont) for ctx, cont in map(make_disjoint_window, windows)]
            score = sum(self._scores(pairs))
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, score)
            out.append(score)
        return out

    # ---- generation ----
    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        out = []
        for request in tqdm(requests, desc="unmask generate_until", disable=disable_tqdm):
            context, kwargs = request.args
            config, stops = self._config(dict(kwargs))
            text, _ = cut_at_stops(generate(self.model, self.tokenizer, context, config).texts[0], stops)
            self.cache_hook.add_partial("generate_until", request.args, text)
            out.append(text)
        return out

    def _config(self, kwargs: dict[str, Any]) -> tuple[GenerationConfig, list[str]]:
        """The task's generation kwargs (until, max_gen_toks, do_sample, temperature, top_p) over model_args."""
        until = kwargs.pop("until", None) or []
        stops = [until] if isinstance(until, str) else list(until)
        options = dict(self.generation)
        tokens = int(kwargs.pop("max_gen_toks", options.get("max_new_tokens", 256)))
        options["max_new_tokens"] = tokens
        options.setdefault("steps", max(1, tokens))
        options.setdefault("seed", self.seed)
        temperature = float(kwargs.pop("temperature", options.get("temperature", 1.0)))
        if not kwargs.pop("do_sample", True) or temperature == 0:
            options["sampling"] = "greedy"
        else:
            options["temperature"] = temperature
        if "top_p" in kwargs:
            options["top_p"] = float(kwargs.pop("top_p"))
        if kwargs:
            log.warning("unmask ignores these generation kwargs: %s", ", ".join(sorted(kwargs)))
        return replace(GenerationConfig(), **options), stops

    # ---- chat ----
    @property
    def tokenizer_name(self) -> str:
        return self.pretrained.replace("/", "__")

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return chat_text(self.tokenizer, chat_history, add_generation_prompt)


def _device(name: str | None) -> torch.device:
    """lm_eval's command line defaults to cuda:0; without a GPU that default means this machine's best device."""
    if name in (None, "", "auto"):
        return pick_device("auto")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        log.warning("unmask: no CUDA GPU here; using %s instead of %s", pick_device("auto"), name)
        return pick_device("auto")
    return pick_device(str(name))


def _generation_options(given: dict[str, Any]) -> dict[str, Any]:
    """GenerationConfig fields named in model_args; anything else is a clear error."""
    unknown = sorted(set(given) - set(_GENERATION))
    if unknown:
        known = ", ".join(["device", "dtype", "batch_size", "mc_samples", "seed", *_GENERATION])
        raise ConfigError(f"unknown model_args {', '.join(unknown)}; unmask takes: {known}", unknown[0])
    GenerationConfig(**given)  # checks bounds and choices now, not at the first request (lm_eval parsed the types)
    return given


def main(argv: list[str]) -> int:
    """lm_eval's command line, with this model registered."""
    import sys

    from lm_eval.__main__ import cli_evaluate

    given, sys.argv = sys.argv, ["lm-eval", *argv]  # lm_eval reads its arguments from sys.argv
    try:
        cli_evaluate()
    finally:
        sys.argv = given
    return 0
