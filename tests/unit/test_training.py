"""The training plan (distill/train/schedule.py): schedule, epoch order, micro-batches; and the trainer's use of it."""

import math

import pytest

from distill.train.schedule import epoch_rows, lr_multiplier, micro_batches, optimizer_steps, steps_per_epoch


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


def test_prompt_pool_is_deterministic_by_trace_and_keeps_its_share():
    from distill.prompts import pick_style

    base = {"system": None, "instruction": "Let's think step by step.", "examples": [], "prefill": ""}
    pool = {"calc": {"instruction": "Compute."}, "sys": {"system": "You are a tutor.", "instruction": ""}}
    picks = [pick_style(f"t{i}", base, pool, 0.5)[0] for i in range(2000)]
    assert picks == [pick_style(f"t{i}", base, pool, 0.5)[0] for i in range(2000)]  # every epoch, every rank
    share = sum(p != "student prompt" for p in picks) / len(picks)
    assert 0.46 < share < 0.54 and {"calc", "sys", "student prompt"} == set(picks)
    assert all(pick_style(f"t{i}", base, pool, 0.0)[0] == "student prompt" for i in range(50))
    assert pick_style("t1", base, {}, 1.0) == ("student prompt", base)


def test_a_pool_style_identical_to_an_eval_style_is_a_config_error_naming_both():
    from distill.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"train.prompt_pool.mine is identical to eval.prompt_styles.terse"):
        load_config("smoke", ["train.prompt_pool={mine: {instruction: '  Solve. '}}"])  # whitespace does not hide it
    with pytest.raises(ConfigError, match=r"train.prompt_pool.d is identical to eval.direct"):
        load_config(
            "smoke",
            [
                "train.prompt_pool={d: {instruction: 'Reply with only the final answer, no working.', "
                "prefill: 'The answer is'}}"
            ],
        )
    cfg = load_config("smoke", ["train.prompt_pool={other: {instruction: 'Solve it.'}}"])  # a near miss is fine
    assert list(cfg.train.prompt_pool) == ["other"]


def test_prefilled_training_prompt_is_tokenised_as_at_inference():
    from transformers import AutoTokenizer

    from distill.models import resolve_model
    from distill.prompts import messages_for
    from distill.train.loss_weights import token_weights
    from distill.train.tokenize import IGNORE, render_prompt

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    msgs = messages_for("3 + 4 =", {"system": None, "instruction": "Go.", "examples": [], "prefill": ""})
    ex = token_weights(tok, msgs, " 3 + 4 = 7\nAnswer: 7", [], {}, 256, prefill="Let me compute:")
    prompt_ids = tok(render_prompt(tok, msgs) + "Let me compute:", add_special_tokens=False)["input_ids"]
    assert ex["input_ids"][: len(prompt_ids)] == prompt_ids  # the evaluator tokenises prompt + prefill as one
    first = next(i for i, lab in enumerate(ex["labels"]) if lab != IGNORE)
    assert first == len(prompt_ids)  # the prefill is prompt, not target
    assert tok.decode(ex["input_ids"][first:]).startswith(" 3 + 4 = 7")


def test_only_rechecked_variants_train_in_every_epoch(tmp_path):
    from distill.actors.train_loop import StreamHorizon, store_training_rows
    from distill.data.store import TraceStore
    from distill.trace.variants import choose_variant

    store = TraceStore(tmp_path)
    sup = {"full": 1.0}
    rows = []
    for i in range(6):
        tid = f"t{i}"
        for v in ("full", "answer_only"):
            rows.append(
                {
                    "variant_id": f"{tid}-{v}",
                    "parent_trace_id": tid,
                    "problem_id": f"p{i}",
                    "question": "q",
                    "variant": v,
                    "text": "x",
                    "student_tokens": 3,
                    "chars": 1,
                    "ok": not (i == 2 and v == "full"),
                    "spans": [],
                    "created_at": 0.0,
                }
            )
    store.append_variants(rows)
    assert store_training_rows(str(tmp_path), sup) == []  # their traces are not committed yet: no rows
    store.append_traces(
        [{"trace_id": f"t{i}", "problem_id": f"p{i}", "scored_at": 0.0, "verdict": "accepted"} for i in range(10)]
    )
    got = sorted(r["trace_id"] for r in store_training_rows(str(tmp_path), sup))
    assert got == ["t0", "t1", "t3", "t4", "t5"]  # t2's chosen variant failed its re-check: not in any epoch
    assert all(choose_variant(t, sup) == "full" for t in got)
    # the horizon estimate while epoch 1 streams: 5 training rows from 10 of 40 expected traces -> 20
    assert StreamHorizon(str(tmp_path), sup, expected_traces=40).epoch_rows() == pytest.approx(20.0)


def _listing_rank(rank: int, port: int, roots: list[str], out: str) -> None:
    import json

    import torch.distributed as dist

    from distill.actors.train_loop import shared_store_rows

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    rows = shared_store_rows(roots[rank], {"full": 1.0}, rank, 2)
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(sorted(r["trace_id"] for r in rows), f)


def test_later_epochs_list_the_store_once_and_every_rank_trains_that_list(tmp_path):
    """Rank 1 is given a store path that lists nothing (a stale NFS view at its worst): with the listing
    broadcast from rank 0, both ranks still hold rank 0's rows, so their steps stay equal."""
    import json
    import socket

    import torch.multiprocessing as mp

    from distill.data.store import TraceStore

    store = TraceStore(tmp_path / "store")
    store.append_traces(
        [{"trace_id": f"t{i}", "problem_id": f"p{i}", "scored_at": 0.0, "verdict": "accepted"} for i in range(3)]
    )
    store.append_variants(
        [
            {
                "variant_id": f"t{i}-full",
                "parent_trace_id": f"t{i}",
                "problem_id": f"p{i}",
                "question": "q",
                "variant": "full",
                "text": "x",
                "student_tokens": 1,
                "chars": 1,
                "ok": True,
                "spans": [],
                "created_at": 0.0,
            }
            for i in range(3)
        ]
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path / "rows")
    mp.start_processes(
        _listing_rank, args=(port, [str(store.root), str(tmp_path / "empty")], out), nprocs=2, start_method="spawn"
    )
    assert [json.load(open(f"{out}.{r}")) for r in (0, 1)] == [["t0", "t1", "t2"]] * 2
