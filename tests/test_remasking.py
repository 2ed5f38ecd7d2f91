import torch

from diffusion_core.remasking import Spacing, keep_mask


def _conf(rows, cols, masked_cols):
    conf = torch.full((rows, cols), float("-inf"))
    conf[:, masked_cols] = torch.rand(rows, len(masked_cols))
    return conf


def test_low_confidence_keeps_exactly_the_requested_count_most_confident_first():
    conf = _conf(3, 10, [2, 3, 4, 5, 6])
    keep = keep_mask("low_confidence", conf, torch.tensor([1, 2, 5]), torch.zeros(3, 10), 0.9)
    assert keep.sum(-1).tolist() == [1, 2, 5]
    for row in range(3):
        kept_min = conf[row][keep[row]].min()
        dropped = conf[row][~keep[row] & torch.isfinite(conf[row])]
        assert (dropped <= kept_min).all()


def test_random_keeps_the_count_and_only_predicted_positions():
    conf = _conf(2, 8, [1, 2, 3])
    keep = keep_mask("random", conf, torch.tensor([2, 3]), torch.rand(2, 8), 0.9)
    assert keep.sum(-1).tolist() == [2, 3]
    assert not keep[:, [0, 4, 5, 6, 7]].any()


def test_threshold_keeps_confident_ones_and_always_at_least_one():
    conf = torch.full((2, 4), float("-inf"))
    conf[0, :3] = torch.tensor([0.95, 0.2, 0.99])
    conf[1, :3] = torch.tensor([0.1, 0.3, 0.2])
    keep = keep_mask("threshold", conf, torch.tensor([1, 1]), torch.zeros(2, 4), 0.9)
    assert keep[0].tolist() == [True, False, True, False]
    assert keep[1].tolist() == [False, True, False, False]


def test_kept_slots_lie_apart_best_first_and_the_count_is_made_up_when_room_runs_out():
    conf = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5, 0.4]]).repeat(2, 1)
    columns = torch.tensor([[10, 11, 12, 13, 14, 15], [10, 11, 14, 15, 20, 21]])  # row 1: finished text between
    counts = torch.tensor([2, 2])

    def keep(count, spacing, rule="low_confidence"):
        apart = Spacing(columns, spacing, most=count)
        return keep_mask(rule, conf, torch.tensor([count, count]), -conf, 0.9, apart).int().tolist()

    assert keep(2, 1) == [[1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0]]  # neighbours together: the old rule
    assert keep(2, 3) == [[1, 0, 0, 1, 0, 0], [1, 0, 1, 0, 0, 0]]  # columns 10 and 13; 10 and 14
    assert keep(3, 3) == [[1, 1, 0, 1, 0, 0], [1, 0, 1, 0, 1, 0]]  # row 0 runs out of room: 11 by confidence
    assert keep(2, 3, "random") == [[0, 0, 1, 0, 0, 1], [0, 0, 0, 1, 0, 1]]  # scores -conf: best last
    assert keep_mask("low_confidence", conf, counts, conf, 0.9, Spacing(columns, 3, most=1)).sum().item() == 4
