"""The counter-based draws: the definition, uniformity and independence along every counter."""

import math

import pytest
import torch

from diffusion_core.draws import REMASK, SAMPLE, uniforms

N = 1_000_000
U64 = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & U64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & U64
    return x ^ (x >> 31)


def _reference(seed: int, position: int, step: int, stream: int) -> float:
    """The same hash in Python's unbounded integers, masked to 64 bits by hand."""
    golden = 0x9E3779B97F4A7C15
    key = _splitmix((seed * golden + stream) & U64)
    key = _splitmix((key + step * golden) & U64)
    return (_splitmix((key + position * golden) & U64) >> 11) * 2.0**-53


def test_tensor_draws_equal_the_unbounded_integer_reference():
    seeds, positions = [0, 5, 2**31 - 1], [0, 1, 300, 4095]
    got = uniforms(torch.tensor(seeds).unsqueeze(-1), torch.tensor(positions).unsqueeze(0), 77, REMASK)
    want = [[_reference(s, p, 77, REMASK) for p in positions] for s in seeds]
    assert got.dtype == torch.float64
    assert got.tolist() == want


def test_a_tensor_of_steps_draws_what_each_step_would_alone():
    """The step may come as a tensor (one per row): the same hash as the integer path, row by row."""
    seeds, positions, steps = torch.tensor([[3], [9], [2**31 - 1]]), torch.tensor([[0, 7, 4095]]), [0, 41, 2**40]
    got = uniforms(seeds, positions, torch.tensor(steps).unsqueeze(-1), SAMPLE)
    for row, step in enumerate(steps):
        assert got[row].tolist() == uniforms(seeds[row : row + 1], positions, step, SAMPLE)[0].tolist()
        assert got[row].tolist() == [_reference(int(seeds[row]), p, step, SAMPLE) for p in positions[0].tolist()]


def _assert_uniform(u: torch.Tensor) -> None:
    n = u.numel()
    assert 0 <= float(u.min()) and float(u.max()) < 1
    counts = torch.bincount((u * 1000).long(), minlength=1000).double()  # chi-square, 999 degrees of freedom
    chi2 = float(((counts - n / 1000) ** 2 / (n / 1000)).sum())
    assert chi2 < 999 + 6 * math.sqrt(2 * 999), f"chi-square {chi2:.0f} over 1000 bins"
    ordered = u.sort().values
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = float(torch.maximum(ecdf - ordered, ordered - (ecdf - 1 / n)).max())
    assert ks < 1.95 / math.sqrt(n), f"Kolmogorov-Smirnov distance {ks:.5f}"  # p ~ 0.001


def _assert_independent(a: torch.Tensor, b: torch.Tensor) -> None:
    """Pairs (a[i], b[i]) fill the unit square evenly: no correlation, flat 32 x 32 histogram."""
    r = float(torch.corrcoef(torch.stack([a, b]))[0, 1])
    assert abs(r) < 5 / math.sqrt(a.numel()), f"correlation {r:.5f}"
    cells = (a * 32).long() * 32 + (b * 32).long()
    counts = torch.bincount(cells, minlength=1024).double()
    expected = a.numel() / 1024
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 1023 + 6 * math.sqrt(2 * 1023), f"pair chi-square {chi2:.0f}"


def _along(axis: str, seed: int = 7) -> torch.Tensor:
    counter = torch.arange(N)
    one = torch.tensor([[5]])
    if axis == "rows":
        return uniforms(counter.unsqueeze(-1) + seed, one, 3).flatten()  # row i draws with seed + i
    if axis == "positions":
        return uniforms(torch.tensor([[seed]]), counter.unsqueeze(0), 3).flatten()
    return uniforms(torch.tensor([[seed]]), one, counter.unsqueeze(0)).flatten()


@pytest.mark.parametrize("axis", ["rows", "positions", "steps"])
def test_draws_are_uniform_and_independent_along_each_counter(axis):
    u = _along(axis)
    _assert_uniform(u)
    _assert_independent(u[:-1], u[1:])  # neighbours along the axis


@pytest.mark.parametrize("axis", ["positions", "steps"])
def test_another_seed_changes_every_draw(axis):
    a, b = _along(axis, seed=7), _along(axis, seed=8)
    assert not (a == b).any()
    _assert_independent(a, b)


def test_the_remasking_stream_is_independent_of_the_sampling_stream():
    seeds, positions = torch.tensor([[11]]), torch.arange(N).unsqueeze(0)
    _assert_independent(
        uniforms(seeds, positions, 0, SAMPLE).flatten(), uniforms(seeds, positions, 0, REMASK).flatten()
    )
