"""The training plan (distill/training.py): schedule, epoch order, micro-batches; and the trainer's use of it."""
import math

import pytest

from distill.training import epoch_rows, lr_multiplier, micro_batches, optimizer_steps, steps_per_epoch


def test_lr_schedules_by_hand():
    # 10 steps, warm-up ceil(0.2 * 10) = 2 steps: 1/2, 2/2; then decay over steps 2..9 (span 7)
    assert [lr_multiplier(s, 10, "constant", 0.2) for s in range(10)] == [0.5] + [1.0] * 9
    lin = [lr_multiplier(s, 10, "linear", 0.2) for s in range(10)]
    assert lin[:2] == [0.5, 1.0] and lin[9] == 0.0 and lin[2] == 1.0
    assert lin[5] == pytest.approx(1 - 3 / 7)
    cos = [lr_multiplier(s, 10, "cosine", 0.2) for s in range(10)]
    assert cos[2] == 1.0 and cos[9] == pytest.approx(0.0, abs=1e-12)
    assert cos[5] == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 7)))
    # the floor: decay ends at min_lr_ratio, and an estimate that came out short stays there
    assert lr_multiplier(9, 10, "cosine", 0.0, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(50, 10, "linear", 0.0, 0.1) == pytest.approx(0.1)
    assert lr_multiplier(0, 10, "cosine") == 1.0  # no warm-up: the first step at the peak
    with pytest.raises(ValueError, match="unknown lr schedule"):
        lr_multiplier(0, 10, "step")


def test_epoch_order_is_seeded_the_same_on_every_rank_with_equal_shards():
    rows = [{"trace_id": f"t{i:02d}"} for i in range(11)]
    shards = [epoch_rows(rows, 2, seed=0, rank=r, world=3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]  # 11 // 3: the remainder is dropped, steps stay equal
    ids = [r["trace_id"] for s in shards for r in s]
    assert len(set(ids)) == 9  # disjoint shards
    # every rank computes the same permutation on its own (input order does not matter)
    again = [epoch_rows(list(reversed(rows)), 2, seed=0, rank=r, world=3) for r in range(3)]
    assert again == shards
    # a new epoch reshuffles; another seed too; shuffle=False keeps the canonical order
    assert epoch_rows(rows, 3, 0, 0, 1) != epoch_rows(rows, 2, 0, 0, 1)
    assert epoch_rows(rows, 2, 1, 0, 1) != epoch_rows(rows, 2, 0, 0, 1)
    assert [r["trace_id"] for r in epoch_rows(rows, 2, 0, 0, 1, shuffle=False)] == sorted(r["trace_id"] for r in rows)


def test_micro_batches_plain_and_length_grouped():
    rows = [{"trace_id": str(i), "n": n} for i, n in enumerate([5, 1, 9, 3, 7, 2, 8])]
    assert [len(b) for b in micro_batches(rows, 3)] == [3, 3, 1]
    grouped = micro_batches(rows, 2, length=lambda r: r["n"], seed=0)
    assert sorted(r["trace_id"] for b in grouped for r in b) == sorted(r["trace_id"] for r in rows)
    # within the window, batches hold neighbours in length: the longest two together, ...
    assert sorted(sorted(r["n"] for r in b) for b in grouped) == [[1], [2, 3], [5, 7], [8, 9]]
    assert micro_batches(rows, 2, length=lambda r: r["n"], seed=0) == grouped  # seeded
    # padding: summed (max length in batch) x batch size is lower when grouped
    def padded(bs):
        return sum(max(r["n"] for r in b) * len(b) for b in bs)
    assert padded(grouped) < padded(micro_batches(rows, 2))


def test_optimizer_steps_and_steps_per_epoch():
    groups = list(optimizer_steps([[1], [2], [3], [4], [5]], 2))
    assert groups == [[[1], [2]], [[3], [4]], [[5]]]
    assert steps_per_epoch(rows=100, world=1, batch_size=8, grad_accum=2) == 7  # 13 micro-batches
    assert steps_per_epoch(rows=100, world=3, batch_size=8, grad_accum=1) == 5  # 33 rows per rank
