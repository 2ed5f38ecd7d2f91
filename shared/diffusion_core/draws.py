"""Counter-based random numbers: each uniform is a pure function of (seed, step, position, stream).

There are no generator objects to carry, advance or copy: a draw is computed where it is used,
with integer tensor ops, so a request gives the same numbers on the CPU and on a GPU, alone or
inside any batch, and the denoising step never leaves the model's device to draw them.

The hash is SplitMix64's finalizer (Steele, Lea & Flood 2014), applied once per counter field
in wrapping int64 arithmetic; the top 53 bits of the result make a float64 in [0, 1).
"""

import torch

SAMPLE = 0  # stream of the token draws (sampling.py's inverse CDF)
REMASK = 1  # stream of the scores of random remasking
REVISE = 2  # stream of the scores that pick committed tokens to mask again (revision.py)

_U64 = 1 << 64
_GOLDEN = 0x9E3779B97F4A7C15  # 2**64 / golden ratio: spreads consecutive counters apart
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB


def _signed(value: int) -> int:
    """An unsigned 64-bit constant as the int64 with the same bits."""
    value %= _U64
    return value - _U64 if value >= 1 << 63 else value


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch's >> is arithmetic: it copies the sign bit)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finalizer: every output bit depends on every input bit."""
    x = (x ^ _shr(x, 30)) * _signed(_M1)
    x = (x ^ _shr(x, 27)) * _signed(_M2)
    return x ^ _shr(x, 31)


def wide_device(device: torch.device) -> torch.device:
    """Where float64 work runs: the device itself, or the CPU for one without float64 (MPS)."""
    return torch.device("cpu") if device.type == "mps" else device


def uniforms(
    seed: torch.Tensor, position: torch.Tensor, step: int | torch.Tensor, stream: int = SAMPLE
) -> torch.Tensor:
    """Float64 uniforms in [0, 1) of the broadcast shape of seed and position (and step, if a tensor).

    seed: int64, e.g. (B, 1) one per row; position: int64, e.g. (1, L) canvas columns; step: the
    request's own step counter. Equal inputs give equal outputs on every device.
    """
    device = wide_device(seed.device)
    golden = _signed(_GOLDEN)
    key = _mix(seed.to(device, torch.int64) * golden + stream)
    if isinstance(step, torch.Tensor):
        key = _mix(key + step.to(device, torch.int64) * golden)
    else:
        key = _mix(key + _signed(step * _GOLDEN))
    bits = _mix(key + position.to(device, torch.int64) * golden)
    return _shr(bits, 11).double() * 2.0**-53
