import torch

from fastav import selection


def rows(*values):
    return torch.tensor(values)


def test_keep_first_keeps_earliest_prunable_per_row():
    prunable = rows([0, 1, 1, 1, 1, 0], [1, 1, 0, 1, 1, 0]).bool()
    drop = selection.keep_first(prunable, torch.tensor([2, 1]))
    assert drop.long().tolist() == [[0, 0, 0, 1, 1, 0], [0, 1, 0, 1, 1, 0]]


def test_global_budget_from_cut_or_ratio():
    prunable = rows([0, 1, 1, 1, 1, 0]).bool()
    positions = torch.arange(6)[None]
    assert selection.global_budget(prunable, positions, cut=3, keep_ratio=0.9).tolist() == [2]
    assert selection.global_budget(prunable, positions, cut=None, keep_ratio=0.5).tolist() == [2]


def test_drop_lowest_respects_prunable_and_counts():
    scores = rows([0.5, 0.1, 0.4, 0.05, 0.3, 0.0], [0.2, 0.2, 0.1, 0.9, 0.2, 0.0])
    prunable = rows([1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]).bool()
    drop = selection.drop_lowest(scores, prunable, torch.tensor([2, 3]))
    assert drop.long().tolist() == [[0, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0]]  # ties: earlier first
    keep = selection.keep_top(scores, prunable, torch.tensor([1, 1]))
    assert (~keep & prunable).long().tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]]


def test_drop_count_is_floor():
    assert selection.drop_count(torch.tensor([0, 4, 5, 10]), 0.2).tolist() == [0, 0, 1, 2]


def test_keep_random_is_seeded_and_batch_independent():
    prunable = torch.ones(3, 20, dtype=torch.bool)
    drop = selection.keep_random(prunable, torch.tensor([5, 5, 5]), seed=3)
    assert drop.sum(-1).tolist() == [15, 15, 15]
    assert torch.equal(drop[0], drop[1])
    alone = selection.keep_random(prunable[:1], torch.tensor([5]), seed=3)
    assert torch.equal(alone[0], drop[0])
    assert not torch.equal(selection.keep_random(prunable[:1], torch.tensor([5]), seed=4)[0], drop[0])


def test_compact_right_aligns_kept_slots_with_leading_fillers():
    keep = rows([1, 0, 1, 1], [0, 0, 1, 1]).bool()
    order, valid = selection.compact(keep)
    assert order.tolist() == [[0, 2, 3], [1, 2, 3]]
    assert valid.tolist() == [[True, True, True], [False, True, True]]
