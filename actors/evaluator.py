"""Evaluator actors: greedy answers of a model (student checkpoint or teacher) on held-out problems.

One vLLM engine per actor; the prompt is the student's training prompt under the model's own chat
template, so evaluation sees what training saw. Pure scoring lives in distill/ (answers, evaluate).
"""
from __future__ import annotations

import os
import time

from distill.answers import extract_answer, is_correct, verify
from distill.sources import teacher_messages


def score_prediction(problem: dict, text: str, tokens: int, finish_reason: str) -> dict:
    import json

    answer, rule = extract_answer(text)
    try:
        score = verify(answer, problem["reference_answer"], problem["verifier"],
                       json.loads(problem["metadata"] or "{}"), problem["question"])
    except Exception:  # a verifier crash scores 0 for this problem, never the whole evaluation
        score = 0.0
    return {"problem_id": problem["problem_id"], "text": text, "answer": answer, "answer_rule": rule,
            "correct": is_correct(score), "tokens": tokens, "finish_reason": finish_reason}


class Evaluator:
    def __init__(self, model_path: str, prompt: dict, max_tokens: int, max_model_len: int,
                 kv_cache_gib: int = 1, cpu_threads_bind: str | None = None, seed: int = 0):
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        if cpu_threads_bind:
            os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind
        from transformers import AutoTokenizer
        from vllm import LLM

        from distill.tokenize import ensure_chat_template

        self.prompt, self.max_tokens, self.max_model_len = prompt, max_tokens, max_model_len
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        ensure_chat_template(self.tokenizer)
        self.llm = LLM(model=model_path, max_model_len=max_model_len, seed=seed, enforce_eager=True,
                       dtype="bfloat16", disable_log_stats=True)

    def evaluate(self, problems: list[dict]) -> dict:
        """-> {"accuracy", "no_answer_rate", "mean_tokens", "wall_s", "predictions": [...]}"""
        from vllm import SamplingParams

        t0 = time.time()
        prompts, room = [], []
        for p in problems:
            msgs = teacher_messages(p["question"], self.prompt["system"], self.prompt["instruction"])
            ids = self.tokenizer(self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True),
                                 add_special_tokens=False)["input_ids"]
            prompts.append({"prompt_token_ids": ids})
            room.append(max(1, min(self.max_tokens, self.max_model_len - len(ids))))
        params = [SamplingParams(temperature=0.0, max_tokens=m) for m in room]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        preds = [score_prediction(p, o.outputs[0].text, len(o.outputs[0].token_ids), o.outputs[0].finish_reason)
                 for p, o in zip(problems, outs)]
        n = max(len(preds), 1)
        return {"accuracy": sum(x["correct"] for x in preds) / n,
                "no_answer_rate": sum(x["answer"] is None for x in preds) / n,
                "mean_tokens": sum(x["tokens"] for x in preds) / n, "n": len(preds),
                "wall_s": time.time() - t0, "predictions": preds}
