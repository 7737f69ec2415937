"""Comparisons between models on the transfer suite: did the student gain, by how much, is it real?

Pure Python over scored predictions (distill/eval/suite.py). Every comparison is paired on the same
problems (and the same prompt style): the student against the untrained student (difference with
Newcombe's interval, exact McNemar test), the share of the teacher-untrained gap it closed (bootstrap
interval), and how much of its in-distribution gain it keeps under reworded prompts. The verdicts
are the sentences a reader gets at a glance in the report and the terminal.
"""

from __future__ import annotations

from distill.eval.stats import gap_closed, paired_diff, ratio_of_gains

SPLITS = ("in_distribution", "prompt_style", "related", "difficulty_shift")


def _key(p: dict) -> tuple[str, str]:
    return p["problem_id"], p.get("style") or ""


def _by_key(preds: list[dict], split: str) -> dict[tuple[str, str], dict]:
    return {_key(p): p for p in preds if p["split"] == split}


def pts(x: float) -> str:
    """A difference of accuracies in percentage points, signed."""
    return f"{100 * x:+.1f}"


def verdict(name: str, other: str, d: dict) -> str:
    lo, hi = d["ci"]
    tell = "distinguishable" if lo > 0 or hi < 0 else "not distinguishable"
    return (
        f"{name} vs {other} {pts(d['diff'])} pts [{pts(lo)}, {pts(hi)}], McNemar p = {d['p_mcnemar']:.3g}, "
        f"n = {d['n']}: {tell}"
    )


def split_comparison(
    preds: dict[str, list[dict]],
    split: str,
    student: str = "student",
    untrained: str = "untrained",
    teacher: str = "teacher",
    seed: int = 0,
) -> dict | None:
    """Student vs untrained (paired), student vs teacher (paired where they share problems), gap closed."""
    s, u, t = (_by_key(preds.get(m, []), split) for m in (student, untrained, teacher))
    out: dict = {}
    accs = {
        m: [p["correct"] for p in rows.values()] for m, rows in ((student, s), (untrained, u), (teacher, t)) if rows
    }
    if accs and all(not any(v) for v in accs.values()):
        out["measures_nothing"] = (
            f"every model scores 0 on {split} ({', '.join(accs)}): the split measures nothing at this difficulty"
        )
    if s and u:
        keys = sorted(s.keys() & u.keys())
        d = paired_diff([s[k]["correct"] for k in keys], [u[k]["correct"] for k in keys])
        out["student_vs_untrained"] = {**d, "verdict": verdict(student, untrained, d)}
        if t:
            paired = set(t) >= set(keys)
            teacher_correct = [t[k]["correct"] for k in keys] if paired else [p["correct"] for p in t.values()]
            g = gap_closed(
                [s[k]["correct"] for k in keys],
                [u[k]["correct"] for k in keys],
                teacher_correct,
                teacher_paired=paired,
                seed=seed,
            )
            out["gap_closed"] = {**g, "teacher_paired": paired}
    if s and t:
        keys = sorted(s.keys() & t.keys())
        if keys:
            d = paired_diff([s[k]["correct"] for k in keys], [t[k]["correct"] for k in keys])
            out["student_vs_teacher"] = {**d, "verdict": verdict(student, teacher, d)}
    return out or None


def style_retention(
    preds: dict[str, list[dict]], student: str = "student", untrained: str = "untrained", seed: int = 0
) -> dict | None:
    """The student's gain under the prompt styles / its gain in distribution, with a bootstrap interval
    that resamples problems (the style problems are in-distribution problems asked another way)."""
    ind_s, ind_u = (
        _by_key(preds.get(student, []), "in_distribution"),
        _by_key(preds.get(untrained, []), "in_distribution"),
    )
    ps_s, ps_u = _by_key(preds.get(student, []), "prompt_style"), _by_key(preds.get(untrained, []), "prompt_style")
    ids = sorted({pid for pid, _ in ind_s} & {pid for pid, _ in ind_u})
    if not ids or not ps_s or not ps_u:
        return None
    index = {pid: i for i, pid in enumerate(ids)}
    den = (
        [ind_s[(pid, s)]["correct"] for pid, s in sorted(ind_s) if pid in index],
        [ind_u[(pid, s)]["correct"] for pid, s in sorted(ind_s) if pid in index],
    )
    styles = sorted({st for _, st in ps_s})
    pairs, groups = [], None
    for st in styles:
        keys = sorted(k for k in ps_s if k[1] == st and k in ps_u and k[0] in index)
        pairs.append(([ps_s[k]["correct"] for k in keys], [ps_u[k]["correct"] for k in keys]))
        g = [index[k[0]] for k in keys]
        if groups is not None and g != groups:
            return None  # styles asked on different problems: not one resampling unit
        groups = g
    r = ratio_of_gains(pairs, den, groups or [], seed=seed)
    gain_style = sum(sum(a) - sum(b) for a, b in pairs) / max(sum(len(a) for a, _ in pairs), 1)
    gain_ind = (sum(den[0]) - sum(den[1])) / len(den[0])
    return {
        **r,
        "gain_styles": gain_style,
        "gain_in_distribution": gain_ind,
        "styles": styles,
        "n_problems": len(groups or []),
    }


def compare(preds: dict[str, list[dict]], seed: int = 0) -> dict:
    """The `comparisons` object of summary.json: per split, and style retention."""
    out = {"splits": {}}
    for split in SPLITS:
        c = split_comparison(preds, split, seed=seed)
        if c:
            out["splits"][split] = c
    r = style_retention(preds, seed=seed)
    if r:
        out["style_retention"] = r
    out["verdicts"] = headline(out)
    return out


def _ratio_text(name: str, r: dict | None) -> str | None:
    if not r or r.get("value") is None:
        return None
    ci = r.get("ci")
    return f"{name} {r['value']:.2f}" + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else " [interval undefined]")


def headline(c: dict) -> list[str]:
    """The sentences that open the report: per split, student vs untrained and gap closed."""
    lines = []
    for split, x in c["splits"].items():
        parts = []
        if "student_vs_untrained" in x:
            parts.append(x["student_vs_untrained"]["verdict"])
        if g := _ratio_text("gap closed", x.get("gap_closed")):
            parts.append(
                g
                + (
                    ""
                    if x["gap_closed"]["teacher_paired"]
                    else f" (teacher on {x['gap_closed']['n_teacher']} other problems)"
                )
            )
        if "measures_nothing" in x:
            parts.append(x["measures_nothing"])
        if parts:
            lines.append(f"{split}: " + "; ".join(parts))
    if r := _ratio_text(
        "style retention (gain under reworded prompts / gain in distribution)", c.get("style_retention")
    ):
        lines.append(r)
    return lines


def paired_models(preds: dict[str, list[dict]], a: str, b: str, splits=SPLITS + ("validation",)) -> dict:
    """Per split: `a` vs `b` paired on the problems (and prompt styles) both answered, with both accuracies."""
    out = {}
    for split in splits:
        x, y = _by_key(preds.get(a, []), split), _by_key(preds.get(b, []), split)
        keys = sorted(x.keys() & y.keys())
        if not keys:
            continue
        d = paired_diff([x[k]["correct"] for k in keys], [y[k]["correct"] for k in keys])
        out[split] = {
            **d,
            f"{a}_accuracy": sum(x[k]["correct"] for k in keys) / len(keys),
            f"{b}_accuracy": sum(y[k]["correct"] for k in keys) / len(keys),
            "verdict": verdict(a, b, d),
        }
    return out


def correction_comparison(preds: dict[str, list[dict]], arms: list[str] = ()) -> dict:
    """Correction rounds: the final student against the same run's SFT student (before the rounds), and
    each comparison arm's student against the SFT student and against the final student (the rounds'
    `keep`), paired per split on the whole transfer suite."""
    out = {"student_vs_sft": paired_models(preds, "student", "student_sft")}
    for arm in arms:
        out[f"{arm}_vs_sft"] = paired_models(preds, f"student_{arm}", "student_sft")
        out[f"student_vs_{arm}"] = paired_models(preds, "student", f"student_{arm}")
    return out
