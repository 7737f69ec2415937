"""The lines `distill run` prints when done (distill/terminal.py), from a summary like summary.json's."""

from distill.terminal import summary_lines

STAGES = {
    "teacher": {"problems": 12, "tokens_out": 900, "tokens_per_s": 30.5, "busy_s": 29.5, "end": 41.0},
    "scorer": {"accepted": 10, "rejected": 2, "accept_rate": 0.833, "quarantined": 1},
    "train": {"steps": 6, "tokens": 4000, "tokens_per_s": 120.0, "first_step_at": 45.2, "final_loss": 1.25},
}


def _summary(**extra) -> dict:
    return {
        "wall_s": 100.4,
        "run_dir": "/runs/r1",
        "stages": STAGES,
        "overlap_ratio": 0.8,
        "core_utilisation": 0.6,
        "machine_cores": 2,
        "student_checkpoint": "/runs/r1/student",
        **extra,
    }


def test_stages_only_on_one_node_without_eval():
    lines = summary_lines(_summary(cluster_nodes=[{"node": 1}]))
    assert lines == [
        "\n[distill] done in 100s  run dir: /runs/r1",
        "  teacher: 12 problems, 900 tokens, 30.5 tok/s (busy 29.5s, ended at 41.0s)",
        "  scorer : 10 accepted / 2 rejected (accept rate 0.833), 1 quarantined",
        "  train  : 6 steps, 4000 tokens, 120.0 tok/s, first step at 45.2s, final loss 1.25",
        "  overlap ratio wall/(sum of busy) = 0.8   core utilisation = 0.6 (core-seconds computed / wall x 2 cores)"
        "   student: /runs/r1/student",
    ]


def test_placement_on_a_cluster():
    where = [
        {"node_id": "abcdef0123", "labels": {"role": "gpu"}, "custom_resources": {}, "events": 7},
        {"node_id": "9876543210", "labels": {}, "custom_resources": {}, "events": 2},
    ]
    s = _summary(cluster_nodes=[{}, {}], placement={"teacher": where})
    assert summary_lines(s)[5:] == ["  teacher ran on abcdef01 {'role': 'gpu'} (7 events); 98765432 (2 events)"]


def test_eval_table_verdicts_sources_and_report():
    cell = {"accuracy": 0.5, "ci": [0.25, 0.75], "n": 8}
    ev = {
        "models": {"student": "/s", "teacher": "/t"},
        "splits": {"in_distribution": {"student": cell}},
        "comparisons": {"verdicts": ["student beats untrained"]},
        "sources": {"teacher": "cache"},
    }
    lines = summary_lines(_summary(eval=ev))[5:]
    assert lines[0] == "  eval accuracy [95% CI] n   " + f"{'teacher':>30}{'student':>30}"
    assert lines[1] == f"    {'in_distribution':<25}" + f"{'-':>30}" + f"{'0.500 [0.25,0.75] n=8':>30}"
    assert lines[2:] == ["  student beats untrained", "  teacher answers: cache", "  report: /runs/r1/report.html"]
