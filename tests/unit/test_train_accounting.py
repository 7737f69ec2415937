"""What the trainer counts (distill/train/accounting.py): trained weight, the schedule's horizon, empty steps."""

import math

from distill.train.accounting import (
    agreed_horizon,
    empty_step_metrics,
    estimated_horizon,
    exact_horizon,
    trained_weight,
)
from distill.train.tokenize import IGNORE


def test_trained_weight_sums_weights_at_trained_labels_past_the_first():
    a = {"labels": [5, IGNORE, 7, 8], "weights": [9.0, 3.0, 0.5, 2.0]}  # first position never trained
    b = {"labels": [IGNORE, IGNORE], "weights": [1.0, 1.0]}
    assert trained_weight([a, b]) == 2.5
    assert trained_weight(iter([a, a])) == 5.0 and trained_weight([]) == 0


def test_agreed_horizon_takes_the_ranks_sum_but_never_ends_before_the_next_step():
    assert agreed_horizon(0.0, steps=3, current=10) == 10  # no news: unchanged
    assert agreed_horizon(12.4, steps=3, current=10) == 12
    assert agreed_horizon(2.0, steps=3, current=10) == 4  # an estimate already passed: the next step


def test_horizons_estimated_and_exact():
    # 10.9 rows estimated -> 10, 5 a rank, micro-batches of 2: 3 (the last short), 2 per step: 2 steps an epoch
    assert estimated_horizon(10.9, epochs=3, world=2, batch_size=2, grad_accum=2) == 6
    assert estimated_horizon(0.0, epochs=3, world=1, batch_size=2, grad_accum=1) == 0
    # epoch 1 took 5 steps; 8 stored rows on one rank in micro-batches of 2, 2 per step: 2 steps an epoch
    assert exact_horizon(5, later_rows=8, epochs=3, world=1, batch_size=2, grad_accum=2) == 9
    assert exact_horizon(5, later_rows=8, epochs=1, world=1, batch_size=2, grad_accum=2) == 5


def test_empty_step_metrics():
    m = empty_step_metrics(n_rows=3, skipped=3, lr=0.1)
    assert math.isnan(m["loss"]) and not m["stepped"]
    assert {k: v for k, v in m.items() if k != "loss"} == {
        "tokens": 0,
        "trained_tokens": 0,
        "examples": 0,
        "skipped": 3,
        "lr": 0.1,
        "stepped": False,
    }
