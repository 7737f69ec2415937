"""The run report: report.html (self-contained, plots embedded as PNG) and report.md (plots beside it).

Sections, in order: overview, one table per eval split (teacher / untrained / distilled student),
prompt-style heat map, does reasoning help, imitation fidelity, accuracy vs tokens, training curves
(loss and in-loop accuracy over steps), stage timeline, sample traces side by side.
Inputs are summary.json's content, the predictions per model and events.jsonl; nothing is recomputed
from models.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

SECTIONS = (
    "Verdict",
    "Overview",
    "In distribution",
    "Prompt style",
    "Related tasks",
    "Difficulty shift",
    "Does reasoning help",
    "Correction rounds",
    "Imitation fidelity",
    "Accuracy vs tokens",
    "Training curves",
    "Stage timeline",
    "Sample traces",
)
OPTIONAL_SECTIONS = ("Correction rounds",)  # only in runs that have them
LABELS = {"teacher": "teacher", "untrained": "untrained student", "student": "distilled student"}
SPLIT_SECTIONS = {
    "in_distribution": "In distribution",
    "prompt_style": "Prompt style",
    "related": "Related tasks",
    "difficulty_shift": "Difficulty shift",
}


def _label(model: str) -> str:
    return LABELS.get(model, model)


def _models(ev: dict) -> list[str]:
    order = [m for m in ("teacher", "untrained", "student") if m in ev.get("models", {})]
    return order + [m for m in ev.get("models", {}) if m not in order]


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def _acc_ci(x: dict) -> str:
    ci = x.get("ci")
    return f"{x['accuracy']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else _fmt(x.get("accuracy"))


def _overlap(a: dict, b: dict) -> bool:
    return bool(a.get("ci") and b.get("ci")) and a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1]


# -- plots -------------------------------------------------------------------------------------
def plot_headline(ev: dict, path: Path) -> Path | None:
    """Per split: each model's accuracy with its 95% interval; teacher and untrained drawn as reference
    lines across the split, so the student's position between them is what the eye reads."""
    splits = [
        s for s in ("in_distribution", "prompt_style", "related", "difficulty_shift") if s in ev.get("splits", {})
    ]
    if not splits or not any("student" in ev["splits"][s] for s in splits):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.8 + 1.9 * len(splits), 4.2))
    top = 0.0
    for i, split in enumerate(splits):
        by = ev["splits"][split]
        for model, color, ls in (("teacher", "tab:blue", "-"), ("untrained", "tab:gray", "--")):
            if model in by:
                ax.hlines(
                    by[model]["accuracy"],
                    i - 0.4,
                    i + 0.4,
                    colors=color,
                    linestyles=ls,
                    label=_label(model) if i == 0 else None,
                )
                top = max(top, by[model]["accuracy"])
        if "student" in by:
            x = by["student"]
            lo, hi = x.get("ci") or (x["accuracy"], x["accuracy"])
            ax.errorbar(
                i,
                x["accuracy"],
                yerr=[[x["accuracy"] - lo], [hi - x["accuracy"]]],
                fmt="o",
                color="tab:green",
                capsize=6,
                label=_label("student") if i == 0 else None,
            )
            top = max(top, hi)
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylim(0, min(1.0, top * 1.15 + 0.02))  # the scale of the change, not 0..1
    ax.set_ylabel("accuracy (95% interval)")
    ax.set_title("Distilled student between the untrained student and the teacher")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_style_heatmap(ev: dict, path: Path) -> Path | None:
    models = [m for m in _models(ev) if m in ev.get("prompt_style", {})]
    if not models:
        return None
    styles = list(ev["prompt_style"][models[0]]["per_style"])
    grid = [[ev["prompt_style"][m]["per_style"].get(s, float("nan")) for m in models] for s in styles]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.8 + 1.7 * len(models), 1.2 + 0.5 * len(styles)))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(models)), [_label(m) for m in models])
    ax.set_yticks(range(len(styles)), styles)
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="white" if v < 0.6 else "black")
    fig.colorbar(im, ax=ax, label="accuracy")
    ax.set_title("Accuracy by prompt style")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy_vs_tokens(ev: dict, path: Path) -> Path | None:
    splits = ev.get("splits", {})
    if not splits:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    markers = {"teacher": "s", "untrained": "o", "student": "^"}
    colors = dict(zip(list(splits) + ["direct"], plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for split, by_model in splits.items():
        for m, met in by_model.items():
            ax.scatter(met["mean_tokens"], met["accuracy"], marker=markers.get(m, "x"), color=colors[split], s=60)
    for m, r in ev.get("reasoning_help", {}).items():
        ax.scatter(
            r["direct_mean_tokens"], r["direct_accuracy"], marker=markers.get(m, "x"), color=colors["direct"], s=60
        )
    for split, c in colors.items():
        if split in splits or (split == "direct" and ev.get("reasoning_help")):
            ax.scatter([], [], color=c, label=split)
    for m, mk in markers.items():
        if m in ev.get("models", {}):
            ax.scatter([], [], color="gray", marker=mk, label=_label(m))
    ax.set_xlabel("mean generated tokens")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy vs generated tokens (colour: split, marker: model)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training_curves(events_file: Path, in_loop: list[dict], path: Path, refs: dict | None = None) -> Path | None:
    steps, losses = [], []
    if events_file.is_file():
        for line in events_file.read_text().splitlines():
            e = json.loads(line)
            if e.get("stage") == "train" and e.get("loss") is not None:
                steps.append(e["step"])
                losses.append(e["loss"])
    if not steps and not in_loop:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.plot(steps, losses, color="tab:green", alpha=0.8, label="train loss")
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (completion tokens)")
    if in_loop:
        ax2 = ax.twinx()
        keys = sorted({k for r in in_loop for k in r if k.endswith("_accuracy")})
        for k in keys:
            pts = [(r["step"], r[k]) for r in in_loop if k in r]
            ax2.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=k.replace("_accuracy", " accuracy"))
        top = max([r[k] for r in in_loop for k in keys if k in r] + [0.0])
        for name, (acc, color) in (refs or {}).items():  # where the curve should head, and where it started
            ax2.axhline(acc, color=color, ls="--", lw=1, label=f"{name} (in_distribution)")
            top = max(top, acc)
        ax2.set_ylabel("held-out accuracy")
        ax2.set_ylim(0, min(1.0, top * 1.2 + 0.02))
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Training loss and accuracy of checkpoints")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- tables ------------------------------------------------------------------------------------
def split_table(ev: dict, split: str) -> tuple[list[str], list[list[str]]]:
    by_model = ev.get("splits", {}).get(split, {})
    extra = [k for k in ("pass@k", "maj@k") if any(k in m for m in by_model.values())]
    head = [
        "model",
        "n",
        "accuracy [95% CI]",
        *extra,
        "vs untrained (paired)",
        "no-answer rate",
        "right via wrong steps",
        "mean tokens",
        "accuracy / 100 tokens",
    ]
    comp = ev.get("comparisons", {}).get("splits", {}).get(split, {})
    rows = []
    for m in _models(ev):
        if m in by_model:
            x = by_model[m]
            k = f" (k={x['k']})" if "k" in x else ""
            vs = ""
            if m == "student" and "student_vs_untrained" in comp:
                d = comp["student_vs_untrained"]
                same = (
                    " ≈ (intervals overlap)" if "untrained" in by_model and _overlap(x, by_model["untrained"]) else ""
                )
                vs = (
                    f"{100 * d['diff']:+.1f} pts [{100 * d['ci'][0]:+.1f}, {100 * d['ci'][1]:+.1f}], "
                    f"p = {d['p_mcnemar']:.3g}{same}"
                )
            rows.append(
                [
                    _label(m),
                    _fmt(x["n"]),
                    _acc_ci(x),
                    *[_fmt(x.get(e)) + k for e in extra],
                    vs,
                    _fmt(x["no_answer_rate"]),
                    _fmt(x.get("wrong_steps_rate")),
                    _fmt(x["mean_tokens"]),
                    _fmt(x["accuracy_per_100_tokens"]),
                ]
            )
            for src, sx in (x.get("by_source") or {}).items():
                rows.append(
                    [
                        f"&nbsp;&nbsp;{_label(m)} · {src}",
                        _fmt(sx["n"]),
                        _acc_ci(sx),
                        *["" for _ in extra],
                        "",
                        _fmt(sx["no_answer_rate"]),
                        _fmt(sx.get("wrong_steps_rate")),
                        _fmt(sx["mean_tokens"]),
                        _fmt(sx["accuracy_per_100_tokens"]),
                    ]
                )
    if comp.get("gap_closed", {}).get("value") is not None:
        g = comp["gap_closed"]
        ci = f" [{g['ci'][0]:.2f}, {g['ci'][1]:.2f}]" if g.get("ci") else ""
        rows.append(
            [
                "gap closed (student − untrained) / (teacher − untrained)",
                "",
                f"{g['value']:.2f}{ci}",
                *["" for _ in extra],
                "",
                "",
                "",
                "",
                "",
            ]
        )
    if comp.get("measures_nothing"):
        rows.append(["⚠ " + comp["measures_nothing"], "", "", *["" for _ in extra], "", "", "", "", ""])
    return head, rows


def style_table(ev: dict) -> tuple[list[str], list[list[str]]]:
    ps = ev.get("prompt_style", {})
    models = [m for m in _models(ev) if m in ps]
    if not models:
        return [], []
    styles = list(ps[models[0]]["per_style"])
    head = ["model", *styles, "mean", "sensitivity (std)", "answer agreement between styles [95% CI]"]

    def agree(x: dict) -> str:
        ci = x.get("agreement_ci")
        return f"{x['agreement']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")

    def cell(m: str, s: str) -> str:
        ci = ps[m].get("per_style_ci", {}).get(s)
        v = ps[m]["per_style"].get(s)
        return _fmt(v) + (f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "")

    rows = [
        [_label(m), *[cell(m, s) for s in styles], _fmt(ps[m]["mean"]), _fmt(ps[m]["sensitivity"]), agree(ps[m])]
        for m in models
    ]
    r = ev.get("comparisons", {}).get("style_retention")
    if r and r.get("value") is not None:
        ci = f" [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]" if r.get("ci") else ""
        rows.append(
            [
                "style retention: the student's gain under these styles / its gain in distribution",
                *["" for _ in styles],
                f"{r['value']:.2f}{ci}",
                "",
                "",
            ]
        )
    return head, rows


def reasoning_table(ev: dict) -> tuple[list[str], list[list[str]]]:
    rh = ev.get("reasoning_help", {})
    head = [
        "model",
        "n",
        "direct accuracy",
        "reasoning accuracy",
        "delta (reasoning − direct)",
        "direct tokens",
        "reasoning tokens",
    ]
    rows = [
        [
            _label(m),
            _fmt(r["n"]),
            _fmt(r["direct_accuracy"]),
            _fmt(r["reasoning_accuracy"]),
            _fmt(r["delta"]),
            _fmt(r["direct_mean_tokens"]),
            _fmt(r["reasoning_mean_tokens"]),
        ]
        for m in _models(ev)
        if (r := rh.get(m))
    ]
    return head, rows


def fidelity_table(ev: dict) -> tuple[list[str], list[list[str]]]:
    fi = ev.get("imitation_fidelity", {})
    ind = ev.get("splits", {}).get("in_distribution", {})
    head = ["model", "n", "ROUGE-L vs teacher", "token F1 vs teacher", "in_distribution accuracy"]
    rows = [
        [_label(m), _fmt(f["n"]), _fmt(f["rouge_l"]), _fmt(f["token_f1"]), _fmt(ind.get(m, {}).get("accuracy"))]
        for m in _models(ev)
        if (f := fi.get(m))
    ]
    return head, rows


def overview_rows(s: dict) -> list[list[str]]:
    rows = [["run", s.get("run_id", "")], ["wall", f"{s.get('wall_s', 0):.0f} s"]]
    st = s.get("stages")
    if st:
        rows += [
            [
                "teacher",
                f"{st['teacher']['problems']} problems, {st['teacher']['tokens_out']} tokens, "
                f"{st['teacher']['tokens_per_s']} tok/s",
            ],
            [
                "scorer",
                f"{st['scorer']['accepted']} accepted / {st['scorer']['rejected']} rejected "
                f"(accept rate {st['scorer']['accept_rate']})",
            ],
            [
                "train",
                f"{st['train']['steps']} steps, {st['train']['tokens_per_s']} tok/s, "
                f"final loss {_fmt(st['train']['final_loss'])}",
            ],
        ]
    ev = s.get("eval", {})
    for m in _models(ev):
        rows.append([_label(m), ev["models"][m]])
    for split, c in ev.get("problems", {}).items():
        rows.append([f"{split} problems", f"{c['n']} ({c['dropped_overlap']} dropped: seen in training)"])
    for m, e in ev.get("errors", {}).items():
        rows.append([f"{_label(m)} evaluation failed", e])
    return rows


# -- writers -----------------------------------------------------------------------------------
def _md_table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "_not measured in this run (not configured, or no model evaluated)._\n"
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("&nbsp;", " ").replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out) + "\n"


def _html_table(head: list[str], rows: list[list[str]]) -> str:
    if not rows:
        return "<p><em>not measured in this run (not configured, or no model evaluated).</em></p>"
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if c.startswith('&nbsp;') else html.escape(c)}</td>" for c in r) + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img_html(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return f"<p><em>no data for {html.escape(alt)}.</em></p>"
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def _img_md(path: Path | None, alt: str, run_dir: Path) -> str:
    if path is None or not path.is_file():
        return f"_no data for {alt}._\n"
    return f"![{alt}]({path.relative_to(run_dir)})\n"


NOTES = {
    "Prompt style": "The same held-out problems asked in each configured style (none of them trained on). "
    "Sensitivity is the standard deviation of accuracy across styles; answer agreement the mean share "
    "of style pairs that give the same answer to a problem (no answer agrees with nothing).",
    "Verdict": "Every accuracy is greedy pass@1 with its 95% Wilson interval. The student and the untrained "
    "student answer the same problems, so their difference is paired (Newcombe's interval, exact McNemar "
    "test); 'distinguishable' means the interval of the difference excludes zero.",
    "Does reasoning help": "The same model on the same in_distribution problems, forced to answer at once vs "
    "allowed to reason (the training prompt). A positive delta means reasoning raises "
    "accuracy, not only length.",
    "Correction rounds": "The student after its correction rounds against the same run's student before "
    "them (SFT only), on the same problems and prompts: paired difference with Newcombe's 95% interval and "
    "McNemar's exact test.",
    "Imitation fidelity": "How closely the student's text copies the teacher's on the same problems. Reported "
    "beside transfer to show the difference; never used to select anything.",
}


def correction_table(c: dict) -> tuple[list[str], list[list[str]]]:
    """The student after its correction rounds vs the same run's SFT student, paired per split; then what
    each round made (samples right, corrections accepted, the teacher tokens they cost)."""
    head = ["comparison (a vs b)", "split", "a", "b", "a − b (paired)"]
    rows = []
    for name, by_split in c.items():
        if not name.endswith("_vs_sft") and not name.startswith("student_vs_"):
            continue
        a, b = (_ARM_LABEL.get(x, x) for x in name.split("_vs_"))
        for split, d in by_split.items():
            lo, hi = d["ci"]
            acc = [v for k, v in d.items() if k.endswith("_accuracy")]
            rows.append(
                [
                    f"{a} vs {b}",
                    split,
                    f"{acc[0]:.3f}",
                    f"{acc[1]:.3f}",
                    f"{100 * d['diff']:+.1f} pts [{100 * lo:+.1f}, {100 * hi:+.1f}], p = {d['p_mcnemar']:.3g}, "
                    f"n = {d['n']}",
                ]
            )
    for r in c.get("rounds", []):
        rows.append(
            [
                f"round {r['round']}",
                "",
                f"{r['samples_correct']}/{r['samples']} samples right",
                f"{r['corrections_accepted']}/{r['corrections']} corrections, {r['self_accepted']} self",
                f"{r['teacher_tokens']} teacher tokens, {r['steps']} steps",
            ]
        )
    for a in c.get("arms", []):
        rows.append([f"arm {a['arm']}", "", "", "", f"{a['teacher_tokens']} teacher tokens, {a['steps']} steps"])
    return head, rows


_ARM_LABEL = {"student": "after rounds", "sft": "SFT", "self": "self-samples", "teacher": "more teacher traces"}


def write_report(run_dir: Path, summary: dict, preds: dict[str, list[dict]], per_outcome: int = 2) -> tuple[Path, Path]:
    """Write report.html and report.md into run_dir; returns their paths."""
    from distill.eval.suite import side_by_side

    run_dir = Path(run_dir)
    ev = summary.get("eval", {})
    figs = run_dir / "report_files"
    figs.mkdir(exist_ok=True)
    ind = ev.get("splits", {}).get("in_distribution", {})
    refs = {
        _label(m): (ind[m]["accuracy"], c) for m, c in (("teacher", "tab:blue"), ("untrained", "tab:gray")) if m in ind
    }
    plots = {
        "Verdict": plot_headline(ev, figs / "headline.png"),
        "Prompt style": plot_style_heatmap(ev, figs / "prompt_style_heatmap.png"),
        "Accuracy vs tokens": plot_accuracy_vs_tokens(ev, figs / "accuracy_vs_tokens.png"),
        "Training curves": plot_training_curves(
            run_dir / "events.jsonl", ev.get("in_loop", []), figs / "training_curves.png", refs
        ),
        "Stage timeline": run_dir / "timeline.png",
    }
    verdicts = ev.get("comparisons", {}).get("verdicts", [])
    tables = {"Verdict": (["verdict"], [[v] for v in verdicts]), "Overview": (["", ""], overview_rows(summary))}
    for split, sec in SPLIT_SECTIONS.items():
        tables[sec] = split_table(ev, split)
    tables["Does reasoning help"] = reasoning_table(ev)
    tables["Imitation fidelity"] = fidelity_table(ev)
    if ev.get("correction"):
        tables["Correction rounds"] = correction_table(ev["correction"])
    style_head, style_rows = style_table(ev)
    student = "student" if "student" in preds else next(iter(preds), "")
    samples = side_by_side(preds, student, "teacher", per_outcome) if "teacher" in preds else []

    md = [f"# distill report — {summary.get('run_id', '')}", ""]
    body = []
    for sec in SECTIONS:
        if sec in OPTIONAL_SECTIONS and sec not in tables:
            continue
        md += [f"## {sec}", ""]
        body.append(f'<h2 id="{sec.lower().replace(" ", "-")}">{html.escape(sec)}</h2>')
        if sec in NOTES:
            md += [NOTES[sec], ""]
            body.append(f"<p>{html.escape(NOTES[sec])}</p>")
        if sec in tables:
            md.append(_md_table(*tables[sec]))
            body.append(_html_table(*tables[sec]))
        if sec == "Prompt style":
            md.append(_md_table(style_head, style_rows))
            body.append(_html_table(style_head, style_rows))
        if sec in plots:
            md.append(_img_md(plots[sec], sec, run_dir))
            body.append(_img_html(plots[sec], sec))
        if sec == "Sample traces":
            md_s, html_s = _samples(samples)
            md.append(md_s)
            body.append(html_s)
    md_path, html_path = run_dir / "report.md", run_dir / "report.html"
    md_path.write_text("\n".join(md) + "\n")
    html_path.write_text(
        _PAGE.format(title=html.escape(f"distill report — {summary.get('run_id', '')}"), body="\n".join(body))
    )
    return html_path, md_path


def _samples(samples: list[dict]) -> tuple[str, str]:
    if not samples:
        return (
            "_no samples: needs the teacher and a student evaluated on in_distribution._\n",
            "<p><em>no samples: needs the teacher and a student evaluated on in_distribution.</em></p>",
        )
    md, h = [], []
    for s in samples:
        verdict = "student right" if s["student_correct"] else "student wrong"
        title = (
            f"{verdict} — reference {s['reference_answer']}; teacher answered {s['teacher_answer']}, "
            f"student answered {s['student_answer']}"
        )
        md += [
            f"### {title}",
            "",
            "**Problem:** " + s["question"].replace("\n", " "),
            "",
            "**Teacher:**",
            "",
            "```",
            s["teacher_text"].strip(),
            "```",
            "",
            "**Student:**",
            "",
            "```",
            s["student_text"].strip(),
            "```",
            "",
        ]
        h.append(
            f'<div class="sample"><h3>{html.escape(title)}</h3><p>{html.escape(s["question"])}</p>'
            f'<div class="pair"><div><h4>teacher</h4><pre>{html.escape(s["teacher_text"].strip())}</pre></div>'
            f"<div><h4>distilled student</h4><pre>{html.escape(s['student_text'].strip())}</pre></div></div></div>"
        )
    return "\n".join(md), "\n".join(h)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.92em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
.pair {{ display: grid; grid-template-columns: 1fr 1fr; gap: 1em; }}
pre {{ white-space: pre-wrap; background: #f7f7f7; padding: 0.6em; font-size: 0.85em; max-height: 28em; overflow: auto; }}
.sample {{ border-top: 1px solid #ddd; margin-top: 1em; }}
</style></head><body>
<h1>{title}</h1>
{body}
</body></html>
"""
