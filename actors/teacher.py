"""Teacher actors: problems in, k sampled chain-of-thought traces per problem out.

Plain callable classes for `Dataset.map_batches` (batch_format="pyarrow"); Ray resources are applied
at wiring time from config. Two backends share everything but `_generate`:

- VLLMTeacher wraps `vllm.LLM` directly rather than `ray.data.llm`'s processor, because this stage
  must (a) emit one row per *sample* with its `sample_index`, finish reason and top-k logprobs, which
  defines the deterministic trace_id, (b) quarantine prompts longer than the context before they reach
  the engine, (c) report per-batch busy time for the stage timeline, and (d) be interchangeable with
  the transformers backend below. The processor hides (a)-(c) behind its own stages.
- HFTeacher: batched `transformers.generate`, for models vLLM cannot load.
"""

from __future__ import annotations

import json
import os
import socket
import time

import pyarrow as pa

from distill.data.schema import SCHEMA_VERSION, TEACHER_INPUT, TRACE_SCHEMA, require_columns, to_table, trace_id
from distill.data.store import TraceStore
from distill.hardware import bind_cores, bind_engine, claim_slot, engine_dtype
from distill.metrics import emit
from distill.models import on_this_node
from distill.prompts import messages_for, style_of

# What the teacher stage adds to a problem row (the rest of TRACE_SCHEMA is the scorer's).
TEACHER_OUTPUT = TEACHER_INPUT + (
    "schema_version",
    "trace_id",
    "prompt",
    "teacher_model",
    "sampling",
    "sample_index",
    "text",
    "prompt_tokens",
    "completion_tokens",
    "finish_reason",
    "topk_logprobs",
    "generated_at",
)

MIN_NEW_TOKENS = 16  # a prompt leaving fewer than this for the answer is quarantined as too long


class _TeacherBase:
    def __init__(self, teacher: dict, prompt: dict, model_path: str, model_name: str, store_root: str, events=None):
        from transformers import AutoTokenizer

        self.cfg, self.style = teacher, style_of(prompt)
        model_path = on_this_node(model_path)  # the driver's cache path may not exist on this node
        self.model_path, self.model_name = model_path, model_name
        self.store = TraceStore(store_root)
        self.events = events
        self.actor = f"teacher@{socket.gethostname()}:{os.getpid()}"
        self.cores: float | None = None  # the cores this replica's engine bound (VLLMTeacher)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=teacher["trust_remote_code"])
        # The settings that, with problem and sample index, define what a trace is (its trace_id).
        self.sampling = {k: teacher[k] for k in ("temperature", "top_p", "max_tokens", "stop", "seed", "logprobs")}
        # The ledger: traces already committed to the store (a resumed run, a restarted actor, a
        # re-executed stream) are replayed from it, never generated twice.
        committed = self.store.traces()
        self.ledger = {
            r["trace_id"]: {k: r[k] for k in TEACHER_OUTPUT} for r in committed.select(list(TEACHER_OUTPUT)).to_pylist()
        }

    def _trace_ids(self, problem_id: str) -> list[str]:
        return [trace_id(problem_id, self.model_name, self.sampling, j) for j in range(self.cfg["samples"])]

    def _split_replayed(self, batch: pa.Table) -> tuple[pa.Table, list[dict]]:
        """-> (problems still to generate, committed trace rows of the others)."""
        if not self.ledger:
            return batch, []
        todo, replayed = [], []
        for i, pid in enumerate(batch.column("problem_id").to_pylist()):
            ids = self._trace_ids(pid)
            if all(t in self.ledger for t in ids):
                replayed += [self.ledger[t] for t in ids]
            else:
                todo.append(i)
        return batch.take(pa.array(todo, type=pa.int64())), replayed

    def _generate(self, prompt_ids: list[list[int]], max_new: list[int]) -> list[list[dict]]:
        """-> per prompt, `samples` dicts {text, token_ids, finish_reason, topk}."""
        raise NotImplementedError

    def _prepare(self, batch: pa.Table) -> tuple[list, list, list, list, int]:
        """Render prompts; quarantine the ones that leave no room to answer. -> kept, texts, ids, max_new."""
        require_columns("teacher", batch.column_names, TEACHER_INPUT)
        problems = batch.to_pylist()
        kept, prompts, prompt_ids, max_new, quarantined = [], [], [], [], []
        for p in problems:
            msgs = messages_for(p["question"], self.style)
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            room = self.cfg["max_model_len"] - len(ids)
            if room < MIN_NEW_TOKENS:
                quarantined.append(
                    {
                        "schema_version": SCHEMA_VERSION,
                        "stage": "teacher",
                        "key": p["problem_id"],
                        "reason": f"prompt too long: {len(ids)} tokens, context {self.cfg['max_model_len']}",
                        "payload": json.dumps({"question": p["question"][:2000]}),
                        "at": time.time(),
                    }
                )
                continue
            kept.append(p)
            prompts.append(text)
            prompt_ids.append(ids)
            max_new.append(min(self.cfg["max_tokens"], room))
        if quarantined:
            self.store.append_quarantine(quarantined)
        return kept, prompts, prompt_ids, max_new, len(quarantined)

    def _finish(
        self,
        t0: float,
        n_in: int,
        n_quarantined: int,
        kept,
        prompts,
        prompt_ids,
        outputs,
        replayed: list[dict] | None = None,
    ) -> pa.Table:
        now = time.time()
        replayed = replayed or []
        rows = list(replayed)
        for p, text, ids, samples in zip(kept, prompts, prompt_ids, outputs):
            for j, s in enumerate(samples):
                rows.append(
                    {
                        **p,
                        "schema_version": SCHEMA_VERSION,
                        "trace_id": trace_id(p["problem_id"], self.model_name, self.sampling, j),
                        "prompt": text,
                        "teacher_model": self.model_name,
                        "sampling": json.dumps(self.sampling, sort_keys=True),
                        "sample_index": j,
                        "text": s["text"],
                        "prompt_tokens": len(ids),
                        "completion_tokens": len(s["token_ids"]),
                        "finish_reason": s["finish_reason"],
                        "topk_logprobs": s.get("topk"),
                        "generated_at": now,
                    }
                )
        emit(
            self.events,
            {
                "stage": "teacher",
                "actor": self.actor,
                "t0": t0,
                "t1": time.time(),
                **({"cores": self.cores} if self.cores else {}),
                "rows_in": n_in,
                "rows_out": len(rows),
                "count/problems": n_in,
                "count/tokens_out": sum(r["completion_tokens"] for r in rows[len(replayed) :]),
                "count/replayed": len(replayed),
                "count/quarantined": n_quarantined,
            },
        )
        return to_table(rows, TRACE_SCHEMA)

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.time()
        todo, replayed = self._split_replayed(batch)
        kept, prompts, ids, max_new, nq = self._prepare(todo)
        outputs = self._generate(ids, max_new) if kept else []
        return self._finish(t0, batch.num_rows, nq, kept, prompts, ids, outputs, replayed)


class VLLMTeacher(_TeacherBase):
    """One vLLM engine per actor, driven asynchronously.

    `__call__` is a coroutine, so Ray Data runs several small batches on one actor at once
    (max_concurrent_calls_per_actor) and the engine batches all their requests continuously: small
    batches give early traces (overlap with training) without giving up the throughput of many
    requests in flight (measured: batch 4 alone 26 tok/s, 16 in flight 107 tok/s on one core).
    """

    def __init__(self, teacher: dict, prompt: dict, model_path: str, model_name: str, store_root: str, events=None):
        super().__init__(teacher, prompt, model_path, model_name, store_root, events)
        # Must be set before the engine starts; without it vLLM-CPU reserves ~92% of RAM and refuses to
        # start inside a Ray worker.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(teacher["kv_cache_gib"]))
        bind = teacher.get("cpu_threads_bind")
        if teacher.get("replica_binds"):  # this replica's own cores: the first binding no live replica holds
            from distill.data.schema import stable_id

            binds = teacher["replica_binds"]
            bind = binds[claim_slot("teacher-" + stable_id(os.path.abspath(store_root)), len(binds))]
        if bind:
            bind_engine(bind)  # the engine's worker threads and its engine-core process on these cores
            self.cores = bind_cores(bind, 1)
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=self.model_path,
            dtype=engine_dtype(teacher["dtype"], bool(teacher.get("num_gpus"))),
            max_model_len=teacher["max_model_len"],
            seed=teacher["seed"],  # global seed: per-request seeds crash the CPU engine
            enforce_eager=teacher["enforce_eager"],
            trust_remote_code=teacher["trust_remote_code"],
            disable_log_stats=True,
            **({"gpu_memory_utilization": teacher["gpu_memory_utilization"]} if teacher.get("num_gpus") else {}),
        )
        self.engine = AsyncLLM.from_engine_args(args)
        self._n = 0
        # When the pool ends, Ray exits the actor's process without deleting the UDF: its engine core (a
        # child process) then dies under a live AsyncLLM, which logs EngineDeadError and a __del__
        # traceback at interpreter teardown. atexit runs first (before multiprocessing reaps children).
        import atexit
        import weakref

        ref = weakref.ref(self)  # no strong reference: deleting the UDF still shuts the engine down at once
        atexit.register(lambda: (lambda t: t and t.__del__())(ref()))

    def __del__(self):
        # End the engine's core process before the actor exits under it (which vLLM reports as a dead
        # engine, with tracebacks): on graceful UDF deletion, and at exit (registered above).
        engine = getattr(self, "engine", None)
        if engine is not None:
            try:
                engine.shutdown()
            except Exception:  # already gone
                pass
            self.engine = None

    async def _one(self, ids: list[int], max_new: int) -> list[dict]:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        c = self.cfg
        params = SamplingParams(
            n=c["samples"],
            temperature=c["temperature"],
            top_p=c["top_p"],
            max_tokens=max_new,
            stop=c["stop"] or None,
            logprobs=c["logprobs"],
            ignore_eos=c.get("ignore_eos", False),
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        self._n += 1
        final = None
        async for out in self.engine.generate({"prompt_token_ids": ids}, params, f"{self.actor}-{self._n}"):
            final = out
        samples = []
        for o in sorted(final.outputs, key=lambda o: o.index):
            topk = None
            if c["logprobs"] and o.logprobs:
                # per generated token: {token_id: Logprob}; keep the top-k by rank
                topk = [
                    [
                        {"token_id": int(t), "logprob": float(lp.logprob)}
                        for t, lp in sorted(step.items(), key=lambda kv: kv[1].rank or 0)[: c["logprobs"]]
                    ]
                    for step in o.logprobs
                ]
            samples.append(
                {
                    "text": o.text,
                    "token_ids": list(o.token_ids),
                    "finish_reason": o.finish_reason or "stop",
                    "topk": topk,
                }
            )
        return samples

    async def __call__(self, batch: pa.Table) -> pa.Table:
        import asyncio

        t0 = time.time()
        todo, replayed = self._split_replayed(batch)
        kept, prompts, ids, max_new, nq = self._prepare(todo)
        outputs = await asyncio.gather(*(self._one(i, m) for i, m in zip(ids, max_new)))
        return self._finish(t0, batch.num_rows, nq, kept, prompts, ids, outputs, replayed)


class HFTeacher(_TeacherBase):
    def __init__(self, teacher: dict, prompt: dict, model_path: str, model_name: str, store_root: str, events=None):
        super().__init__(teacher, prompt, model_path, model_name, store_root, events)
        import torch
        from transformers import AutoModelForCausalLM

        dtype = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
            engine_dtype(teacher["dtype"], torch.cuda.is_available())
        ]
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=dtype, trust_remote_code=teacher["trust_remote_code"]
        ).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch.manual_seed(teacher["seed"])

    def _generate(self, prompt_ids, max_new):
        import torch

        c, tok = self.cfg, self.tokenizer
        k, T = c["samples"], max(len(ids) for ids in prompt_ids)
        # Left padding so every row's continuation starts at the same position.
        ids = torch.full((len(prompt_ids), T), tok.pad_token_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompt_ids):
            ids[i, T - len(p) :] = torch.tensor(p)
            mask[i, T - len(p) :] = 1
        sample = c["temperature"] > 0
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(max_new),
                num_return_sequences=k,
                do_sample=sample,
                temperature=c["temperature"] if sample else None,
                top_p=c["top_p"] if sample else None,
                stop_strings=c["stop"] or None,
                tokenizer=tok if c["stop"] else None,
                pad_token_id=tok.pad_token_id,
                return_dict_in_generate=True,
                output_scores=bool(c["logprobs"]),
            )
        seqs = out.sequences[:, T:]  # [B*k, new]
        gen_eos = self.model.generation_config.eos_token_id
        eos = {tok.eos_token_id} | set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        result = []
        for i in range(len(prompt_ids)):
            samples = []
            for j in range(k):
                r = i * k + j
                toks = seqs[r].tolist()
                stop_at = next((n for n, t in enumerate(toks) if t in eos), None)
                finish = "stop" if stop_at is not None else "length"
                toks = toks[: stop_at + 1] if stop_at is not None else toks[: max_new[i]]
                text = tok.decode(toks, skip_special_tokens=True)
                if c["stop"]:
                    cut = min((text.find(s) for s in c["stop"] if s in text), default=-1)
                    if cut >= 0:
                        text, finish = text[:cut], "stop"
                topk = None
                if c["logprobs"]:
                    topk = []
                    for n in range(len(toks)):
                        lp = torch.log_softmax(out.scores[n][r].float(), dim=-1)  # [V]
                        v, idx = lp.topk(c["logprobs"])
                        topk.append([{"token_id": int(a), "logprob": float(b)} for a, b in zip(idx, v)])
                samples.append({"text": text, "token_ids": toks, "finish_reason": finish, "topk": topk})
            result.append(samples)
        return result


BACKENDS = {"vllm": VLLMTeacher, "transformers": HFTeacher}
