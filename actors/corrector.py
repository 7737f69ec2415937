"""Correction rounds' stages (issue 14), plain callables for `Dataset.map_batches` (pyarrow batches):

    round problems -> StudentSampler -> SampleScorer -> ContinuationTeacher -> CorrectionCommit -> trainer

- StudentSampler: the current student answers, k samples a problem, on the run's evaluator engine (the
  EvalEngine actor: its weights swapped in place, no engine of its own); committed samples are replayed.
- SampleScorer: verifies and dissects every sample (the trace scorer's rules), finds where a wrong one
  first goes wrong (distill/trace/correction.py) and commits the samples to the store's samples/ table.
- ContinuationTeacher: the teacher continues each wrong sample from its own text up to that step (an
  assistant prefill: text level, so any teacher/student pair); committed corrections are replayed.
- CorrectionCommit: accepts or rejects each continuation, writes the correction rows (lineage: `parent`
  is the sample) and passes on the supervision: what `keep` names, plus SFT rows mixed in.
The pure rules are distill/trace/correction.py's; the wiring (resources, placement) pipelines/correction.py's.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from distill.config import CorrectionConfig, PromptConfig, ScorerConfig, TeacherConfig
from distill.data.schema import TRACE_SCHEMA, TRAIN_SCHEMA, stable_id, to_table, trace_id
from distill.data.store import TraceStore
from distill.faults import fault_point
from distill.prompts import style_of
from distill.trace.correction import accept_continuation, correction_point

# Columns a sample row carries from the scorer on: its trace row plus where it is cut.
CUT_COLUMNS = ("kind", "cut", "cut_reason", "prefix")


def sample_model(round_: int) -> str:
    """The `teacher_model` of a round's student samples (part of their trace_id)."""
    return f"student:round{round_}"


def correction_id(parent: str, kind: str, teacher_model: str | None) -> str:
    return stable_id("correction", parent, kind, teacher_model or "")


class StudentSampler:
    """Problems -> the current student's k samples each (trace rows), answered on the EvalEngine actor."""

    def __init__(
        self, engine, model_dir: str, prompt: PromptConfig, correction: CorrectionConfig, round_: int, store_root: str
    ):
        self.engine, self.model_dir, self.cfg, self.round = engine, model_dir, correction, round_
        self.style = style_of(prompt)  # the student is asked as it will be at inference
        self.model = sample_model(round_)
        self.sampling = {"temperature": correction.temperature, "max_tokens": correction.max_tokens, "round": round_}
        self.committed: dict[str, dict] = {r["trace_id"]: r for r in TraceStore(store_root).samples().to_pylist()}

    def ids(self, problem_id: str) -> list[str]:
        return [trace_id(problem_id, self.model, self.sampling, j) for j in range(self.cfg.samples)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        from distill.eval.suite import eval_request

        problems = batch.to_pylist()
        # replayed: a problem whose k samples are all committed (a resumed or retried round) is not asked again
        todo = [p for p in problems if not all(i in self.committed for i in self.ids(p["problem_id"]))]
        reqs = [
            eval_request(
                "correction",
                "student prompt",
                self.style,
                p,
                self.cfg.max_tokens,
                self.cfg.samples,
                self.cfg.temperature,
            )
            for p in todo
        ]
        outs = ray.get(self.engine.sample.remote(self.model_dir, reqs))["outputs"] if reqs else []
        fresh = {p["problem_id"]: o for p, o in zip(todo, outs)}
        now, rows = time.time(), []
        for p in problems:
            for j, tid in enumerate(self.ids(p["problem_id"])):
                if p["problem_id"] not in fresh:
                    rows.append(self.committed[tid])
                    continue
                text, tokens, finish = fresh[p["problem_id"]][j]
                rows.append(
                    {
                        **p,
                        "trace_id": tid,
                        "teacher_model": self.model,
                        "sampling": json.dumps(self.sampling, sort_keys=True),
                        "sample_index": j,
                        "text": text,
                        "completion_tokens": tokens,
                        "finish_reason": finish,
                        "generated_at": now,
                    }
                )
        return to_table(rows, TRACE_SCHEMA)


class SampleScorer:
    """Sample rows -> scored, dissected, committed to samples/; each with its `kind` (self: right;
    cut: wrong, cut at `cut`; none: wrong with nothing that localises the error)."""

    def __init__(self, scorer: ScorerConfig, store_root: str):
        self.cfg, self.store = scorer, TraceStore(store_root)
        self.committed = set(self.store.samples().column("trace_id").to_pylist())

    def __call__(self, batch: pa.Table) -> pa.Table:
        from distill.trace.scoring import score_rows

        fields = set(TRACE_SCHEMA.names)
        rows = score_rows([{k: v for k, v in r.items() if k in fields} for r in batch.to_pylist()], self.cfg)
        for r in rows:
            r.pop("_anatomy", None)
            r.pop("_ok", None)
        new = [r for r in rows if r["trace_id"] not in self.committed]
        if new:
            self.store.append_samples(new)
            self.committed |= {r["trace_id"] for r in new}
        out = []
        for r in rows:
            cut = None if r["correct"] else correction_point(r["text"] or "", r["reference_answer"])
            kind = "self" if r["correct"] else ("cut" if cut else "none")
            out.append(
                {
                    "trace_id": r["trace_id"],
                    "problem_id": r["problem_id"],
                    "question": r["question"],
                    "reference_answer": r["reference_answer"],
                    "text": r["text"],
                    "first_error_step": r["first_error_step"],
                    "kind": kind,
                    "cut": cut.cut if cut else None,
                    "cut_reason": cut.reason if cut else None,
                    "prefix": cut.prefix if cut else None,
                }
            )
        return pa.Table.from_pylist(out, schema=CUT_SCHEMA)


CUT_SCHEMA = pa.schema(
    [
        ("trace_id", pa.string()),
        ("problem_id", pa.string()),
        ("question", pa.string()),
        ("reference_answer", pa.string()),
        ("text", pa.string()),
        ("first_error_step", pa.int32()),
        ("kind", pa.string()),
        ("cut", pa.int32()),
        ("cut_reason", pa.string()),
        ("prefix", pa.string()),
    ]
)
CONTINUED_SCHEMA = pa.schema([*CUT_SCHEMA, ("continuation", pa.string()), ("teacher_tokens", pa.int32())])


def continuation_prompt(tokenizer, question: str, style: dict, prefix: str) -> str:
    """The teacher's prompt text: the problem in the student's style, the assistant turn opened with the
    style's prefill and the student's own text (the teacher continues it)."""
    from distill.trace.correction import continuation_request

    msgs, prefill = continuation_request(question, style, prefix)
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + prefill


def _continuation_class():
    """ContinuationTeacher, made on first use: it subclasses the vLLM teacher (imports vLLM lazily)."""
    from distill.actors.teacher import VLLMTeacher

    class ContinuationTeacher(VLLMTeacher):
        """Cut rows -> the teacher's continuation of each wrong sample (greedy at the teacher's temperature,
        one sample); other rows pass through. Committed corrections are replayed, not asked again."""

        def __init__(
            self,
            teacher: TeacherConfig,
            prompt: PromptConfig,
            correction: CorrectionConfig,
            model_path: str,
            model_name: str,
            store_root: str,
        ):
            super().__init__(teacher, prompt, model_path, model_name, store_root, None)
            self.max_tokens = correction.max_tokens
            done = TraceStore(store_root).corrections()
            self.replay = {r["correction_id"]: r for r in done.to_pylist() if r["kind"] == "correction"}

        async def _continue(self, prompt: str) -> tuple[str, int]:
            from vllm import SamplingParams
            from vllm.sampling_params import RequestOutputKind

            ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            room = min(self.max_tokens, self.cfg.max_model_len - len(ids) - 1)
            if room < 1:
                return "", 0  # no room to continue: rejected as an empty continuation
            params = SamplingParams(
                n=1,
                temperature=self.cfg.temperature,
                top_p=self.cfg.top_p,
                max_tokens=room,
                output_kind=RequestOutputKind.FINAL_ONLY,
            )
            self._n += 1
            final = None
            async for out in self.engine.generate({"prompt_token_ids": ids}, params, f"{self.actor}-c{self._n}"):
                final = out
            o = final.outputs[0]
            return o.text, len(o.token_ids)

        async def __call__(self, batch: pa.Table) -> pa.Table:
            import asyncio

            rows = batch.to_pylist()
            jobs = {}
            for i, r in enumerate(rows):
                r["continuation"], r["teacher_tokens"] = None, 0
                if r["kind"] != "cut":
                    continue
                done = self.replay.get(correction_id(r["trace_id"], "correction", self.model_name))
                if done is not None:
                    r["continuation"], r["teacher_tokens"] = done["continuation"], done["teacher_tokens"]
                else:
                    jobs[i] = self._continue(
                        continuation_prompt(self.tokenizer, r["question"], self.style, r["prefix"])
                    )
            for i, (text, n) in zip(jobs, await asyncio.gather(*jobs.values())):
                rows[i]["continuation"], rows[i]["teacher_tokens"] = text, n
            return pa.Table.from_pylist(rows, schema=CONTINUED_SCHEMA)

    return ContinuationTeacher


class CorrectionCommit:
    """Continued rows -> correction rows written to the store (self and correction alike, accepted or not),
    and the round's supervision: the kinds in `keep`, plus `mix` SFT rows per problem of the block."""

    def __init__(
        self,
        correction: CorrectionConfig,
        round_: int,
        teacher_model: str,
        store_root: str,
        sft_rows: list[dict],
        seed: int,
        continued: bool = True,
    ):
        self.cfg, self.round, self.teacher_model = correction, round_, teacher_model
        self.store, self.sft, self.seed = TraceStore(store_root), sft_rows, seed
        self.continued = continued  # False: no continuation stage upstream (self-samples only), cut rows skipped
        self.committed = set(self.store.corrections().column("correction_id").to_pylist())

    def rows(self, batch: list[dict], now: float) -> list[dict]:
        out = []
        for r in batch:
            if r["kind"] == "none" or (r["kind"] == "cut" and not self.continued):
                continue
            own = r["kind"] == "self"
            model = None if own else self.teacher_model
            if own:
                ok, reason = True, ""
            else:
                ok, reason = accept_continuation(r["prefix"], r["continuation"] or "", r["reference_answer"])
            out.append(
                {
                    "correction_id": correction_id(r["trace_id"], "self" if own else "correction", model),
                    "kind": "self" if own else "correction",
                    "parent": r["trace_id"],
                    "round": self.round,
                    "problem_id": r["problem_id"],
                    "question": r["question"],
                    "reference_answer": r["reference_answer"],
                    "student_text": r["text"],
                    "cut": r["cut"],
                    "cut_reason": r["cut_reason"],
                    "first_error_step": r["first_error_step"],
                    "prefix": "" if own else r["prefix"],
                    "continuation": r["text"] if own else r["continuation"],
                    "teacher_model": model,
                    "teacher_tokens": r["teacher_tokens"] or 0,
                    "verdict": "accepted" if ok else "rejected",
                    "reason": "" if ok else reason,
                    "created_at": now,
                }
            )
        return out

    def mixed(self, problem_ids: list[str]) -> list[dict]:
        return mix_rows(self.sft, self.cfg.mix, self.seed, self.round, problem_ids)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for r in rows:  # no continuation stage upstream: the columns it would add
            r.setdefault("continuation", None)
            r.setdefault("teacher_tokens", 0)
        made = self.rows(rows, time.time())
        new = [c for c in made if c["correction_id"] not in self.committed]
        if new:
            self.store.append_corrections(new)
            self.committed |= {c["correction_id"] for c in new}
        # killed here, the retried block finds its corrections committed: written and trained once
        fault_point("correction.after_commit")
        train = [
            {
                "trace_id": c["correction_id"],
                "problem_id": c["problem_id"],
                "question": c["question"],
                "variant": c["kind"],
                "text": c["continuation"],
                "spans": [],
                "prefix": c["prefix"] or None,
            }
            for c in made
            if c["verdict"] == "accepted" and c["kind"] in self.cfg.keep
        ]
        return to_table(train + self.mixed([r["problem_id"] for r in rows]), TRAIN_SCHEMA)


def mix_rows(sft_rows: list[dict], mix: float, seed: int, round_: int, problem_ids: list[str]) -> list[dict]:
    """`mix` SFT rows per problem, drawn by hash (with replacement), each under an id of its own; the
    same rows for the same round and problems in every stream that mixes them in (the comparison arms)."""
    if not sft_rows:
        return []
    out = []
    for pid in dict.fromkeys(problem_ids):
        n = int(mix) + (int(stable_id("mix-frac", seed, round_, pid), 16) / 16**16 < mix % 1)
        for j in range(n):
            k = int(stable_id("mix", seed, round_, pid, j), 16) % len(sft_rows)
            out.append({**sft_rows[k], "trace_id": stable_id("mix", round_, pid, j), "prefix": None})
    return out
