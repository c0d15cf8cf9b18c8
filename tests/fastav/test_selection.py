import torch

from fastav import selection


def rows(*values):
    return torch.tensor(values)


def test_keep_first_keeps_earliest_prunable_per_row():
    prunable = rows([0, 1, 1, 1, 1, 0], [1, 1, 0, 1, 1, 0]).bool()
    drop = selection.keep_first(prunable, torch.tensor([2, 1]))
    assert drop.long().tolist() == [[0, 0, 0, 1, 1, 0], [0, 1, 0, 1, 1, 0]]


def test_global_keep_from_cut_or_ratio():
    assert selection.global_keep(4, before_cut=2, keep_ratio=0.9) == 2
    assert selection.global_keep(4, before_cut=None, keep_ratio=0.5) == 2
    assert selection.global_keep(5, before_cut=None, keep_ratio=0.5) == 2  # round half to even, as torch.round


def test_drop_lowest_respects_prunable_and_counts():
    scores = rows([0.5, 0.1, 0.4, 0.05, 0.3, 0.0], [0.2, 0.2, 0.1, 0.9, 0.2, 0.0])
    prunable = rows([1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]).bool()
    drop = selection.drop_lowest(scores, prunable, torch.tensor([2, 3]))
    assert drop.long().tolist() == [[0, 1, 0, 1, 0, 0], [1, 1, 1, 0, 0, 0]]  # ties: earlier first
    drop = selection.drop_lowest(scores, prunable, torch.tensor([4, 4]))  # keep the top one
    assert (~drop & prunable).long().tolist() == [[1, 0, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0]]


def test_drop_count_is_floor():
    assert [selection.drop_count(n, 0.2) for n in (0, 4, 5, 10)] == [0, 0, 1, 2]


def test_keep_random_is_seeded_and_batch_independent():
    prunable = torch.ones(3, 20, dtype=torch.bool)
    prunable[2, :4] = False  # a row with fewer candidates draws its own permutation of them
    drop = selection.keep_random(prunable, [5, 5, 5], [20, 20, 16], seed=3)
    assert drop.sum(-1).tolist() == [15, 15, 11]
    assert torch.equal(drop[0], drop[1]) and not drop[2, :4].any()
    alone = selection.keep_random(prunable[:1], [5], [20], seed=3)
    assert torch.equal(alone[0], drop[0])
    assert not torch.equal(selection.keep_random(prunable[:1], [5], [20], seed=4)[0], drop[0])


def test_compact_right_aligns_kept_slots_with_leading_fillers():
    keep = rows([1, 0, 1, 1], [0, 0, 1, 1]).bool()
    order, valid = selection.compact(keep, width=3)
    assert order.tolist() == [[0, 2, 3], [1, 2, 3]]
    assert valid.tolist() == [[True, True, True], [False, True, True]]
