"""Where a restarted training worker resumes (distill/train/resume.py), on hand-made positions."""

from distill.train.resume import (
    checkpoint_due,
    epoch_start,
    epochs_to_run,
    fresh_position,
    in_step,
    merged_ids,
    position_record,
    resume_message,
    untrained,
)


def pos(epoch, done, batches=0, ids=()):
    return {"epoch": epoch, "epoch_done": done, "batches": batches, "trained_ids": list(ids)}


def test_a_fresh_run_trains_every_epoch_from_the_start():
    p = fresh_position()
    assert list(epochs_to_run(p, 3)) == [1, 2, 3]
    assert [epoch_start(p, e) for e in (1, 2, 3)] == [(0, [])] * 3


def test_mid_epoch_1_resumes_by_trace_id_on_every_rank():
    p = pos(1, False, batches=3, ids=["a", "b", "c"])
    assert list(epochs_to_run(p, 2)) == [1, 2]
    assert epoch_start(p, 1) == (0, ["a", "b", "c"])  # the stream replays them: skipped by id
    recorded = position_record(1, False, 3, ["a", "b", "c"], None)
    assert epoch_start(recorded, 1, world=2) == (0, ["a", "b", "c"])  # gathered from every rank
    assert epoch_start(p, 1, world=2) == (0, [])  # an older checkpoint (rank 0's ids): epoch 1 again
    assert epoch_start(p, 2) == (0, [])  # the next epoch starts whole
    got = epoch_start(p, 1)[1]
    got.append("d")
    assert p["trained_ids"] == ["a", "b", "c"]  # a copy: the position is not grown as training goes on


def test_mid_later_epoch_skips_the_store_batches_done():
    p = pos(2, False, batches=5)
    assert list(epochs_to_run(p, 3)) == [2, 3]
    assert epoch_start(p, 2) == (5, [])
    assert epoch_start(p, 2) == (5, [])  # the store order is seeded: the same skip on every rank
    assert epoch_start(p, 3) == (0, [])


def test_an_epoch_boundary_resumes_at_the_next_epoch_and_a_finished_run_has_none_left():
    p = pos(1, True, batches=7)
    assert list(epochs_to_run(p, 2)) == [2]
    assert epoch_start(p, 2) == (0, [])  # the batches count was epoch 1's
    assert list(epochs_to_run(pos(2, True, batches=4), 2)) == []


def test_untrained_drops_rows_trained_before_and_micro_batches_left_empty():
    batches = [[{"trace_id": "a"}, {"trace_id": "b"}], [{"trace_id": "c"}], [], [{"trace_id": "d"}]]
    assert list(untrained(iter(batches), {"a", "c"})) == [[{"trace_id": "b"}], [{"trace_id": "d"}]]
    assert list(untrained(iter(batches), set())) == [b for b in batches if b]


def test_position_record_keeps_trace_ids_only_while_epoch_1_is_unfinished():
    assert position_record(1, False, 3, ["a"], None) == {
        "epoch": 1,
        "epoch_done": False,
        "batches": 3,
        "trained_ids": ["a"],
        "ids_of": "all ranks",
        "epoch1_steps": None,
    }
    assert position_record(1, True, 4, ["a"], 2)["trained_ids"] == []
    assert position_record(2, False, 1, ["a"], 2) == {
        "epoch": 2,
        "epoch_done": False,
        "batches": 1,
        "trained_ids": [],
        "ids_of": "all ranks",
        "epoch1_steps": 2,
    }


def test_a_recorded_position_resumes_where_it_was_written():
    mid = position_record(2, False, 6, [], 4)
    assert list(epochs_to_run(mid, 3)) == [2, 3] and epoch_start(mid, 2) == (6, [])
    end = position_record(2, True, 9, [], 4)
    assert list(epochs_to_run(end, 3)) == [3] and epoch_start(end, 3) == (0, [])


def test_checkpoint_due_every_n_steps_and_never_inside_an_epoch_with_0():
    assert [s for s in range(1, 8) if checkpoint_due(s, 3)] == [3, 6]
    assert not any(checkpoint_due(s, 0) for s in range(1, 8))


def test_resume_message():
    assert resume_message(4, pos(2, False, 1)) == "[distill] train: resumed at step 4 (epoch 2, 1 batches in)"
    assert resume_message(6, pos(1, True, 6)) == "[distill] train: resumed at step 6 (epoch 1, done)"
    got = resume_message(2, pos(1, False, 2, ids=["a", "b", "c", "d"]))
    assert got == "[distill] train: resumed at step 2 (epoch 1, 2 batches in, 4 traces trained)"


def test_merged_ids_are_every_ranks_ids_once_in_rank_order():
    assert merged_ids([["a", "b"], ["c", "a"], [], ["d"]]) == ["a", "b", "c", "d"]
    assert merged_ids([]) == []


def _ranks(streams, chunk_reduce_log):
    """Run in_step on one thread per rank with a real summing collective (a barrier), as DDP ranks would."""
    import threading

    world = len(streams)
    barrier = threading.Barrier(world)
    box: list[list[float]] = []
    lock = threading.Lock()
    out: list[list] = [None] * world

    def reduce(xs):
        with lock:
            box.append(xs)
        barrier.wait()
        total = [sum(v) for v in zip(*box)]
        if barrier.wait() == 0:  # one thread (the barrier picks it) logs and clears for the next call
            chunk_reduce_log.append(total)
            box.clear()
        barrier.wait()
        return total

    def rank(r):
        out[r] = list(in_step(iter(streams[r]), reduce))

    threads = [threading.Thread(target=rank, args=(r,), daemon=True) for r in range(world)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert not any(th.is_alive() for th in threads), "a rank hung: the collectives were not called alike"
    return out


def test_in_step_gives_every_rank_as_many_micro_batches_as_the_longest_with_empty_ones_after_its_end():
    a, b, c = [{"trace_id": "a"}], [{"trace_id": "b"}], [{"trace_id": "c"}]
    log: list = []
    out = _ranks([[a, b, c], [b], []], log)
    assert out == [[a, b, c], [b, [], []], [[], [], []]]
    assert [x[0] for x in log] == [2.0, 1.0, 1.0, 0.0]  # one collective per micro-batch, and the one that ends
    assert _ranks([[], []], []) == [[], []]  # nothing anywhere: no step at all
