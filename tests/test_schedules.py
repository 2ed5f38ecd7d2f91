import pytest
import torch

from diffusion_core.errors import ConfigError
from diffusion_core.schedules import SCHEDULES, masked_after


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_starts_full_ends_empty_and_never_rises(name):
    total = torch.tensor([50, 7])
    counts = [masked_after(name, s, 10, total) for s in range(11)]
    assert torch.equal(counts[0], total)
    assert torch.equal(counts[-1], torch.zeros_like(total))
    for before, after in zip(counts, counts[1:]):
        assert (after <= before).all()


def test_schedules_differ_in_how_fast_they_start():
    total = torch.tensor([100])
    first = {name: int(total - masked_after(name, 1, 10, total)) for name in SCHEDULES}
    assert first["exponential"] < first["cosine"] < first["linear"] < first["loglinear"]


def test_unknown_schedule_names_the_known_ones():
    with pytest.raises(ConfigError, match="cosine"):
        masked_after("quadratic", 1, 10, torch.tensor([10]))
