"""Token-sampling rules for the masked positions of one denoising step.

Every rule maps logits (M, V) and one uniform draw per position (M,) to token ids (M,), on the
logits' device, with no host round trip on a GPU. Draws come from inverse-CDF sampling in
float64: a float32 Gumbel or categorical draw loses the tail of a 30k-50k vocabulary and quietly
lowers the effective temperature.
"""

from dataclasses import dataclass

import torch

from .draws import wide_device
from .names import lookup

NUCLEUS_CANDIDATES = (256, 2048)  # top-k sizes searched for the top-p nucleus before a full sort
CHUNK = 256  # columns per first-stage chunk of the inverse-CDF draw


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # divides the logits; ignored by greedy
    top_k: int = 0  # keep the k most likely tokens (top_k and top_p rules; 0 = off)
    top_p: float = 1.0  # keep the smallest set with this much mass, inside the top k if set (top_p rule)


def _draw(logits: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse CDF: logits (M, K) (-inf allowed), uniforms (M,) in [0, 1) -> column (M,).

    Two stages: first a chunk of CHUNK columns by its mass, then the column inside it, both
    cumulated in float64. Exact, and it passes over the (M, K) array only a few times.
    """
    m, k = logits.shape
    probs = torch.softmax(logits, -1)
    full = k // CHUNK
    masses = probs[:, : full * CHUNK].view(m, full, CHUNK).sum(-1)
    if k % CHUNK:
        masses = torch.cat([masses, probs[:, full * CHUNK :].sum(-1, keepdim=True)], dim=-1)
    wide = wide_device(probs.device)  # float64 where the device has it (not MPS)
    cdf = masses.to(wide, torch.float64).cumsum(-1)
    target = uniforms.to(wide) * cdf[:, -1]
    chunk = _first_above(cdf, target)
    before = torch.where(chunk > 0, cdf.gather(-1, (chunk - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1), 0.0)
    columns = chunk.to(probs.device).unsqueeze(-1) * CHUNK + torch.arange(CHUNK, device=probs.device)
    inner = probs.gather(-1, columns.clamp(max=k - 1)).masked_fill(columns >= k, 0.0)
    picked = chunk * CHUNK + _first_above(inner.to(wide, torch.float64).cumsum(-1), target - before)
    return picked.to(probs.device)


def _first_above(cdf: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """First column where cdf (M, N) exceeds target (M,): always a column with positive mass."""
    top = cdf[:, -1]
    target = torch.minimum(target.clamp(min=0), torch.nextafter(top, torch.zeros_like(top)))
    return torch.searchsorted(cdf, target.unsqueeze(-1), right=True).squeeze(-1)


def _scaled(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return logits if temperature == 1.0 else logits / temperature


def greedy(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The most likely token; no randomness."""
    return logits.argmax(-1)


def temperature(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Sample the full distribution softmax(logits / T)."""
    return _draw(_scaled(logits, params.temperature), uniforms)


def top_k(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Sample among the k most likely tokens only."""
    k = min(params.top_k, logits.shape[-1]) if params.top_k > 0 else logits.shape[-1]
    values, index = logits.topk(k, dim=-1)
    pick = _draw(_scaled(values, params.temperature), uniforms)
    return index.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


def top_p(logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Nucleus sampling: the smallest set of tokens whose mass reaches top_p.

    With top_k set, the nucleus is taken inside the renormalised top k (Hugging Face and TGI
    apply top-k first). On a GPU the vocabulary is sorted (no host round trip); on the CPU each
    row's nucleus is looked for among its NUCLEUS_CANDIDATES most likely tokens first, since a
    top-k there is far cheaper than a sort. Both are exact.
    """
    if params.top_k > 0:
        values, index = _scaled(logits, params.temperature).topk(min(params.top_k, logits.shape[-1]), dim=-1)
        return _nucleus_draw(torch.log_softmax(values, -1), index, uniforms, params.top_p)
    if params.top_p >= 1.0:
        return temperature(logits, uniforms, params)
    logprobs = torch.log_softmax(_scaled(logits, params.temperature), -1)
    if logprobs.device.type != "cpu":
        values, index = logprobs.sort(dim=-1, descending=True)
        return _nucleus_draw(values, index, uniforms, params.top_p)
    return _tiered_nucleus(logprobs, uniforms, params.top_p)


def _tiered_nucleus(logprobs: torch.Tensor, uniforms: torch.Tensor, top_p: float) -> torch.Tensor:
    """The CPU's nucleus: a top-k of growing size, and a full sort only for rows wider than all of them."""
    out = torch.empty(logprobs.shape[0], dtype=torch.long, device=logprobs.device)
    pending = torch.arange(logprobs.shape[0], device=logprobs.device)
    for k in NUCLEUS_CANDIDATES:
        if pending.numel() == 0 or k >= logprobs.shape[-1]:
            break
        values, index = logprobs[pending].topk(k, dim=-1)
        fits = values.exp().sum(-1) >= top_p
        rows = pending[fits]
        out[rows] = _nucleus_draw(values[fits], index[fits], uniforms[rows], top_p)
        pending = pending[~fits]
    if pending.numel():
        values, index = logprobs[pending].sort(dim=-1, descending=True)
        out[pending] = _nucleus_draw(values, index, uniforms[pending], top_p)
    return out


def _nucleus_draw(logprobs: torch.Tensor, index: torch.Tensor, uniforms: torch.Tensor, top_p: float) -> torch.Tensor:
    """Sample within the nucleus: sorted log-probs (M, K) and their vocabulary ids -> ids (M,)."""
    probs = logprobs.exp()
    outside = (probs.cumsum(-1) - probs) >= top_p
    outside[:, 0] = False  # the most likely token is always in the nucleus, however small top_p is
    pick = _draw(logprobs.masked_fill(outside, float("-inf")), uniforms)
    return index.gather(-1, pick.unsqueeze(-1)).squeeze(-1)


SAMPLERS = {f.__name__: f for f in (greedy, temperature, top_k, top_p)}


def sample(name: str, logits: torch.Tensor, uniforms: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Apply the named rule: logits (M, V), uniforms (M,) -> token ids (M,)."""
    return lookup(SAMPLERS, name, "sampling rule")(logits, uniforms, params)


def probability_of(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The model's probability of each chosen id (temperature 1, unfiltered): logits (M, V), ids (M,) -> (M,)."""
    return torch.softmax(logits, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)
