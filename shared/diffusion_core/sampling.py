"""Token-sampling rules for the masked positions of one denoising step.

Every rule maps logits (M, V) and one uniform draw per position (M,) to token ids (M,).
Draws come from inverse-CDF sampling in float64: a float32 Gumbel or categorical draw loses
the tail of a 30k-50k vocabulary and quietly lowers the effective temperature.
"""

from dataclasses import dataclass

import torch

from .registry import lookup

NUCLEUS_CANDIDATES = 256  # tokens searched for the top-p nucleus before falling back to a full sort


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # divides the logits; ignored by greedy
    top_k: int = 0  # keep the k most likely tokens (top_k rule only; 0 = off)
    top_p: float = 1.0  # keep the smallest set with this much mass (top_p rule only)


def _draw(logprobs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse CDF: log-probs (M, K) and uniforms (M,) in [0, 1) -> column index (M,)."""
    cdf = logprobs.double().exp().cumsum(-1)
    target = uniforms.to(cdf.device).unsqueeze(-1) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, target).squeeze(-1)
    return idx.clamp_(max=logprobs.shape[-1] - 1)


def greedy(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The most likely token; no randomness."""
    return logits.argmax(-1)


def temperature(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Sample the full distribution softmax(logits / T)."""
    return _draw(torch.log_softmax(logits.float() / params.temperature, -1), uniforms)


def top_k(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Sample among the k most likely tokens only."""
    k = min(params.top_k, logits.shape[-1]) if params.top_k > 0 else logits.shape[-1]
    values, index = logits.float().topk(k, dim=-1)
    pick = _draw(torch.log_softmax(values / params.temperature, -1), uniforms)
    return index.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


def top_p(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Nucleus sampling: the smallest set of tokens whose mass reaches top_p.

    The nucleus is looked for among the NUCLEUS_CANDIDATES most likely tokens first (a top-k
    is far cheaper than sorting the vocabulary); rows whose nucleus is wider are fully sorted.
    """
    scaled = logits.float() / params.temperature
    k = min(NUCLEUS_CANDIDATES, scaled.shape[-1])
    values, index = scaled.topk(k, dim=-1)
    logprobs = values - scaled.logsumexp(-1, keepdim=True)
    wide = logprobs.exp().sum(-1) < params.top_p
    if wide.any():
        full_values, full_index = scaled[wide].sort(dim=-1, descending=True)
        return _nucleus_fill(scaled, uniforms, params, values, index, logprobs, wide, full_values, full_index)
    return _nucleus_draw(logprobs, index, uniforms, params.top_p)


def _nucleus_draw(logprobs: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor, top_p: float) -> torch.Tensor:
    """Sample within the nucleus of sorted log-probs (M, K) -> vocabulary ids (M,)."""
    probs = logprobs.exp()
    mass_before = probs.cumsum(-1) - probs
    pick = _draw(logprobs.masked_fill(mass_before >= top_p, float("-inf")), uniforms)
    return index.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


def _nucleus_fill(scaled, uniforms, params, values, index, logprobs, wide, full_values, full_index) -> torch.Tensor:
    out = torch.empty(scaled.shape[0], dtype=torch.long, device=scaled.device)
    narrow = ~wide
    if narrow.any():
        out[narrow] = _nucleus_draw(logprobs[narrow], index[narrow], uniforms[narrow], params.top_p)
    full_logprobs = full_values - full_values.logsumexp(-1, keepdim=True)
    out[wide] = _nucleus_draw(full_logprobs, full_index, uniforms[wide], params.top_p)
    return out


SAMPLERS = {f.__name__: f for f in (greedy, temperature, top_k, top_p)}


def sample(name: str, logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Apply the named rule: logits (M, V), uniforms (M,) -> token ids (M,)."""
    return lookup(SAMPLERS, name, "sampling rule")(logits, uniforms, params)


def probability_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The model's probability of each chosen id (temperature 1, unfiltered): logits (M, V), ids (M,) -> (M,)."""
    chosen = logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    return (chosen - logits.logsumexp(-1)).exp()
