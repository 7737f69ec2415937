"""report.html / report.md from a hand-made summary: every section, embedded plots, side-by-side samples."""

import json
import re

from distill.eval.report import OPTIONAL_SECTIONS, SECTIONS, write_report
from distill.eval.suite import summarize


def _p(split, pid, correct, answer, tokens, text, style="training prompt"):
    return {
        "split": split,
        "style": style,
        "problem_id": pid,
        "correct": correct,
        "answer": answer,
        "tokens": tokens,
        "text": text,
        "source": "reasoning_gym:chain_sum",
        "question": f"question {pid} <b>",
        "reference": "3",
    }


def _preds(acc_b: bool):
    out = [
        _p("in_distribution", "a", True, "3", 20, "1 + 2 = 3"),
        _p("in_distribution", "b", acc_b, "4", 30, "2 + 2 = 4"),
        _p("direct", "a", False, "5", 3, "The answer is 5"),
        _p("direct", "b", False, "6", 3, "The answer is 6"),
        _p("related", "r", True, "9", 12, "9"),
        _p("difficulty_shift", "d", False, None, 50, "..."),
    ]
    for style in ("terse", "boxed"):
        out += [
            _p("prompt_style", "a", True, "3", 10, "3", style),
            _p("prompt_style", "b", style == "terse", "4", 10, "4", style),
        ]
    return out


def test_report_has_every_section_plots_and_samples(tmp_path):
    preds = {"teacher": _preds(True), "untrained": _preds(False), "student": _preds(False)}
    ev = summarize(preds)
    ev.update(
        models={"teacher": "/m/t", "untrained": "/m/u", "student": "/m/s"},
        problems={"in_distribution": {"n": 2, "dropped_overlap": 1, "quarantined": 0}},
        in_loop=[
            {"step": 2, "epoch": 1, "in_distribution_accuracy": 0.25},
            {"step": 4, "epoch": 2, "in_distribution_accuracy": 0.5},
        ],
    )
    (tmp_path / "events.jsonl").write_text(
        "".join(json.dumps({"stage": "train", "step": i, "loss": 2.0 / i}) + "\n" for i in range(1, 5))
    )
    summary = {"run_id": "r1", "wall_s": 12.0, "eval": ev}
    html_path, md_path = write_report(tmp_path, summary, preds, per_outcome=1)
    page, md = html_path.read_text(), md_path.read_text()
    for sec in (x for x in SECTIONS if x not in OPTIONAL_SECTIONS):  # a run without correction rounds
        assert f">{sec}</h2>" in page and f"## {sec}" in md, sec
    assert "## Correction rounds" not in md  # no empty section for what the run did not do
    # headline, heat map, accuracy vs tokens and training curves are embedded; the timeline is missing here
    assert len(re.findall(r'src="data:image/png;base64,iVBORw0KGgo', page)) == 4
    assert "no data for Stage timeline" in page
    for f in ("headline.png", "prompt_style_heatmap.png", "accuracy_vs_tokens.png", "training_curves.png"):
        assert f"(report_files/{f})" in md and (tmp_path / "report_files" / f).read_bytes()[:4] == b"\x89PNG"
    # the verdict opens the report: student vs untrained paired, not distinguishable on 2 problems
    verdict = page.split('id="verdict"')[1].split("<h2")[0]
    assert "in_distribution: student vs untrained +0.0 pts" in verdict and "not distinguishable" in verdict
    assert "gap closed 0.00" in verdict
    # one table row per model, with its accuracy and Wilson interval (2/2: [0.342, 1.000]; 1/2: [0.095, 0.905])
    assert re.search(r"<td>teacher</td><td>2</td><td>1.000 \[0.342, 1.000\]</td>", page)
    assert re.search(r"<td>distilled student</td><td>2</td><td>0.500 \[0.095, 0.905\]</td><td>\+0.0 pts", page)
    assert "≈ (intervals overlap)" in page
    assert "| distilled student | 2 | 0.000 | 0.500 | 0.500 |" in md  # reasoning help: direct, reasoning, delta
    # side by side: one right and one wrong student answer, escaped
    assert page.count('class="sample"') == 2 and "question a &lt;b&gt;" in page and "<b>" not in page.split("<body>")[1]
    assert "student right" in md and "student wrong" in md


def test_report_without_eval_says_what_is_missing(tmp_path):
    html_path, md_path = write_report(tmp_path, {"run_id": "r2", "wall_s": 1.0}, {})
    md = md_path.read_text()
    assert md.count("_not measured in this run") >= 6 and "no samples" in md
    assert "<html" in html_path.read_text()
