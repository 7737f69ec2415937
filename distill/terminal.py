"""What `distill run` prints when it is done: its summary.json read back as a few lines for the terminal.

Per stage (teacher, scorer, train) what it did and how fast, the overlap and core use; on a cluster,
where each stage ran; with an eval suite, accuracy per split and model, the verdicts and the report.
"""

from __future__ import annotations


def summary_lines(s: dict) -> list[str]:
    """The lines printed at the end of a run, from its summary (summary.json's contents)."""
    return [*stage_lines(s), *placement_lines(s), *eval_lines(s)]


def stage_lines(s: dict) -> list[str]:
    st = s["stages"]
    return [
        f"\n[distill] done in {s['wall_s']:.0f}s  run dir: {s['run_dir']}",
        f"  teacher: {st['teacher']['problems']} problems, {st['teacher']['tokens_out']} tokens, "
        f"{st['teacher']['tokens_per_s']} tok/s (busy {st['teacher']['busy_s']}s, ended at {st['teacher']['end']}s)",
        f"  scorer : {st['scorer']['accepted']} accepted / {st['scorer']['rejected']} rejected "
        f"(accept rate {st['scorer']['accept_rate']}), {st['scorer']['quarantined']} quarantined",
        f"  train  : {st['train']['steps']} steps, {st['train']['tokens']} tokens, "
        f"{st['train']['tokens_per_s']} tok/s, first step at {st['train']['first_step_at']}s, "
        f"final loss {st['train']['final_loss']}",
        f"  overlap ratio wall/(sum of busy) = {s['overlap_ratio']}   core utilisation = "
        f"{s.get('core_utilisation')} (core-seconds computed / wall x {s.get('machine_cores')} cores)   "
        f"student: {s['student_checkpoint']}",
    ]


def placement_lines(s: dict) -> list[str]:
    """On a cluster (more than one node): the nodes each stage ran on, with their labels and events."""
    if len(s.get("cluster_nodes", [])) <= 1:
        return []
    return [
        f"  {stage:<8}ran on "
        + "; ".join(
            " ".join(
                [
                    p["node_id"][:8],
                    *(str(d) for d in (p["labels"], p["custom_resources"]) if d),
                    f"({p['events']} events)",
                ]
            )
            for p in where
        )
        for stage, where in s["placement"].items()
    ]


def eval_lines(s: dict) -> list[str]:
    """Accuracy [95% CI] n per split and model, the comparisons' verdicts, where answers came from."""
    ev = s.get("eval")
    if not ev:
        return []
    models = [m for m in ("teacher", "untrained", "student") if m in ev["models"]]
    lines = ["  eval accuracy [95% CI] n   " + "".join(f"{m:>30}" for m in models)]
    for split, by_model in ev["splits"].items():
        # each cell carries its own n: the teacher's in_distribution may come from its generation (other problems)
        cells = [
            f"{by_model[m]['accuracy']:.3f} [{by_model[m]['ci'][0]:.2f},{by_model[m]['ci'][1]:.2f}] n={by_model[m]['n']}"
            if m in by_model
            else "-"
            for m in models
        ]
        lines.append(f"    {split:<25}" + "".join(f"{c:>30}" for c in cells))
    lines += [f"  {v}" for v in ev.get("comparisons", {}).get("verdicts", [])]
    lines += correction_lines(ev.get("correction"))
    lines += [f"  {m} answers: {src}" for m, src in ev.get("sources", {}).items()]
    lines.append(f"  report: {s['run_dir']}/report.html")
    return lines


def correction_lines(c: dict | None) -> list[str]:
    """Correction rounds: what each made, and the final student against the SFT one, paired per split."""
    if not c:
        return []
    lines = [
        f"  correction round {r['round']}: {r['samples_correct']}/{r['samples']} samples right, "
        f"{r['corrections_accepted']}/{r['corrections']} corrections accepted, {r['self_accepted']} self, "
        f"{r['teacher_tokens']} teacher tokens, {r['steps']} steps"
        for r in c.get("rounds", [])
    ]
    lines += [f"  {split}: {d['verdict']}" for split, d in c.get("student_vs_sft", {}).items()]
    for a in c.get("arms", []):
        lines.append(f"  comparison arm {a['arm']}: {a['teacher_tokens']} teacher tokens, {a['steps']} steps")
    # the arms on in_distribution only (every split is in the report)
    return lines + [
        f"  in_distribution: {by_split['in_distribution']['verdict']}"
        for name, by_split in c.items()
        if name not in ("student_vs_sft", "rounds", "arms") and "in_distribution" in by_split
    ]
