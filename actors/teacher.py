"""Teacher actors: problems in, k sampled chain-of-thought traces per problem out.

Plain callable classes for `Dataset.map_batches` (batch_format="pyarrow"); Ray resources are applied
at wiring time from config. Two backends share everything but how the engine is asked: `_open` and
`_close` are the one implementation of a call around it (ledger replay, prompt-length quarantine,
decode post-processing: pure rules in distill/data/ledger.py and distill/generate/).

- VLLMTeacher drives a vLLM `AsyncLLM` (a TeacherEngine: its own, or one the run prewarmed) directly
  rather than `ray.data.llm`'s processor, because this stage must (a) emit one row per *sample* with its
  `sample_index`, finish reason and top-k logprobs, which defines the deterministic trace_id, (b) quarantine
  prompts longer than the context before they reach the engine, (c) report per-batch busy time for the
  stage timeline, and (d) be interchangeable with the transformers backend below. The processor hides
  (a)-(c) behind its own stages.
- HFTeacher: batched `transformers.generate`, for models vLLM cannot load.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass, field

import pyarrow as pa

from distill.config import PromptConfig, TeacherConfig
from distill.data.ledger import split_replayed, teacher_ledger
from distill.data.schema import TEACHER_INPUT, TRACE_SCHEMA, require_columns, to_table
from distill.data.store import TraceStore
from distill.events import StageEvent
from distill.generate.decode import cut_at_eos, cut_at_stop, engine_samples, trace_rows
from distill.generate.room import room_to_answer, too_long
from distill.hardware import bind_cores, bind_engine, claim_slot, cpu_engine_options, engine_dtype
from distill.metrics import emit
from distill.models import on_this_node
from distill.prompts import messages_for, style_of
from distill.reaper import descendants, reap_orphans

# Seconds the teacher's engine core gets to exit once asked (SIGTERM), before it is killed. It leaves its
# loop at once with nothing in flight, then spent 3 s tearing down what its process exit frees anyway
# (vLLM's default grace is 5 s), on the core the teacher baseline's evaluation starts on right then.
ENGINE_GRACE_S = 0.5


@dataclass
class _Call:
    """One batch between its preparation and the engine's outputs."""

    t0: float
    rows_in: int
    replayed: list[dict]
    quarantined: int = 0
    problems: list[dict] = field(default_factory=list)  # the ones to generate, in order
    prompts: list[str] = field(default_factory=list)
    prompt_ids: list[list[int]] = field(default_factory=list)
    max_new: list[int] = field(default_factory=list)


class _TeacherBase:
    def __init__(
        self,
        teacher: TeacherConfig,
        prompt: PromptConfig,
        model_path: str,
        model_name: str,
        store_root: str,
        events=None,
    ):
        from transformers import AutoTokenizer

        self.cfg, self.style = teacher, style_of(prompt)
        model_path = on_this_node(model_path)  # the driver's cache path may not exist on this node
        self.model_path, self.model_name = model_path, model_name
        self.store = TraceStore(store_root)
        self.events = events
        self.actor = f"teacher@{socket.gethostname()}:{os.getpid()}"
        self.cores: float | None = None  # the cores this replica's engine bound (VLLMTeacher)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=teacher.trust_remote_code)
        # The settings that, with problem and sample index, define what a trace is (its trace_id).
        self.sampling = {
            k: getattr(teacher, k) for k in ("temperature", "top_p", "max_tokens", "stop", "seed", "logprobs")
        }
        # The ledger: traces already committed to the store (a resumed run, a restarted actor, a
        # re-executed stream) are replayed from it, never generated twice.
        self.ledger = teacher_ledger(self.store.traces())

    def _open(self, batch: pa.Table, t0: float) -> _Call:
        """Replay what the ledger holds, render the rest's prompts, quarantine the ones that leave no
        room to answer (appended to the store now)."""
        pids = batch.column("problem_id").to_pylist()
        todo, replayed = split_replayed(pids, self.ledger, self.model_name, self.sampling, self.cfg.samples)
        call = _Call(t0, batch.num_rows, replayed)
        if len(todo) < batch.num_rows:
            batch = batch.take(pa.array(todo, type=pa.int64()))
        require_columns("teacher", batch.column_names, TEACHER_INPUT)
        quarantined = []
        for p in batch.to_pylist():
            msgs = messages_for(p["question"], self.style)
            text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            room = room_to_answer(len(ids), self.cfg.max_model_len, self.cfg.max_tokens)
            if room is None:
                quarantined.append(too_long(p, len(ids), self.cfg.max_model_len, time.time()))
                continue
            call.problems.append(p)
            call.prompts.append(text)
            call.prompt_ids.append(ids)
            call.max_new.append(room)
        if quarantined:
            self.store.append_quarantine(quarantined)
        call.quarantined = len(quarantined)
        return call

    def _close(self, call: _Call, outputs: list[list[dict]]) -> pa.Table:
        """The call's trace rows (replayed first, then generated), and its stage event."""
        fresh = trace_rows(
            call.problems, call.prompts, call.prompt_ids, outputs, self.model_name, self.sampling, time.time()
        )
        rows = call.replayed + fresh
        emit(
            self.events,
            StageEvent(
                "teacher",
                self.actor,
                call.t0,
                time.time(),
                rows_in=call.rows_in,
                rows_out=len(rows),
                counts={
                    "problems": call.rows_in,
                    "tokens_out": sum(r["completion_tokens"] for r in fresh),
                    "replayed": len(call.replayed),
                    "quarantined": call.quarantined,
                    # answered by the engine the run prewarmed (TeacherEngine actor), not one of its own
                    "prewarmed_batches": int(getattr(self, "remote", None) is not None),
                },
                cores=self.cores or None,
            ),
        )
        return to_table(rows, TRACE_SCHEMA)


def engine_name(store_root: str, slot: int) -> str:
    """The Ray name of a run's prewarmed teacher engine for replica slot `slot` (one trace store, one run)."""
    from distill.data.schema import stable_id

    return f"distill-teacher-{stable_id(os.path.abspath(store_root))}-{slot}"


class TeacherEngine:
    """One teacher vLLM engine (`AsyncLLM`), bound to its cores.

    It lives in the teacher actor's own process, or -- prewarmed -- as a Ray actor of its own that the run
    starts with the Ray session, before Ray Train and Ray Data have started the stream (measured on 2 cores:
    the pool's actor starts ~13 s into a streamed run, after the trainer's controller, worker and split
    coordinator; its engine is up ~21 s later). The teacher actor that claims its slot then drives it
    (`VLLMTeacher`), and the run ends it once generation is done (pipelines/stages.py TeacherEngines)."""

    def __init__(self, teacher: TeacherConfig, model_path: str, bind: str | None):
        # Must be set before the engine starts; without it vLLM-CPU reserves ~92% of RAM and refuses to
        # start inside a Ray worker.
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(teacher.kv_cache_gib))
        self.cfg, self.n_cores = teacher, None
        self.model_path = on_this_node(model_path)  # the driver's cache path may not exist on this node
        if bind:
            bind_engine(bind)  # the engine's worker threads and its engine-core process on these cores
            self.n_cores = bind_cores(bind, 1)
        from vllm import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=self.model_path,
            dtype=engine_dtype(teacher.dtype, bool(teacher.num_gpus)),
            max_model_len=teacher.max_model_len,
            seed=teacher.seed,  # the traces keep the global seed (per-request seeds: evaluate, below)
            enforce_eager=teacher.enforce_eager,
            trust_remote_code=teacher.trust_remote_code,
            disable_log_stats=True,
            **({"gpu_memory_utilization": teacher.gpu_memory_utilization} if teacher.num_gpus else {}),
            **cpu_engine_options(bool(teacher.num_gpus)),  # CPU: the model worker in the engine core's process
        )
        self.engine = AsyncLLM.from_engine_args(args)
        # The engine's processes die with this process even when it dies without running Python (SIGKILL,
        # its driver killed): Ray's own child killing is off for the teacher (pipelines/stages.py).
        reap_orphans(descendants())
        # When a Ray Data pool ends, Ray exits the actor's process without deleting the UDF: its engine core
        # (a child process) then dies under a live AsyncLLM, which logs EngineDeadError and a __del__
        # traceback at interpreter teardown. atexit runs first (before multiprocessing reaps children).
        import atexit
        import weakref

        ref = weakref.ref(self)  # no strong reference: deleting the owner still shuts the engine down at once
        atexit.register(lambda: (lambda e: e and e.close())(ref()))

    def cores(self) -> float | None:
        return self.n_cores

    def pid(self) -> int:
        return os.getpid()

    async def generate(self, ids: list[int], max_new: int, request_id: str) -> list[dict]:
        """One prompt's `samples` samples."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        c = self.cfg
        params = SamplingParams(
            n=c.samples,
            temperature=c.temperature,
            top_p=c.top_p,
            max_tokens=max_new,
            stop=c.stop or None,
            logprobs=c.logprobs,
            ignore_eos=c.ignore_eos,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        return engine_samples((await self._final(ids, params, request_id)).outputs, c.logprobs)

    async def _final(self, ids: list[int], params, request_id: str):
        """One request's final output (its `params` ask for the final output only)."""
        final = None
        async for out in self.engine.generate({"prompt_token_ids": ids}, params, request_id):
            final = out
        return final

    async def evaluate(self, requests: list[dict], options: dict) -> dict:
        """The teacher baseline's answers from this engine, as an evaluator given `options`
        (pipelines/evaluate.py evaluator_options) would answer them: the same rendering, context check,
        per-request sampling and scoring (actors/evaluator.py), without an engine started for them."""
        import asyncio

        import ray
        from vllm.sampling_params import RequestOutputKind

        from distill.actors.evaluator import answers, eval_tokenizer, fitting, prompt_ids, sampling

        t0, n = time.time(), options["max_model_len"]
        tok = eval_tokenizer(self.model_path, options["trust_remote_code"])
        ids = [prompt_ids(tok, r) for r in requests]
        fits = fitting(ids, n)

        async def one(i: int) -> list[tuple[str, int, str]]:
            params = sampling(requests[i], ids[i], n, options["seed"])
            params.output_kind = RequestOutputKind.FINAL_ONLY
            final = await self._final(ids[i], params, f"eval-{t0}-{i}")
            return [(c.text, len(c.token_ids), c.finish_reason) for c in final.outputs]

        outs = dict(zip(fits, await asyncio.gather(*(one(i) for i in fits))))
        node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
        return {**answers(requests, fits, outs, t0), "node": node}

    def close(self) -> None:
        """End the engine's core process before this process exits under it (which vLLM reports as a dead
        engine, with tracebacks): on the owner's deletion, at exit (registered above), or when asked."""
        engine = getattr(self, "engine", None)
        if engine is not None:
            t0 = time.time()
            try:
                engine.shutdown(timeout=ENGINE_GRACE_S)
            except Exception:  # already gone
                pass
            self.engine = None
            print(f"[distill] teacher engine shut down in {time.time() - t0:.1f}s", flush=True)

    def __del__(self):
        self.close()


class VLLMTeacher(_TeacherBase):
    """One vLLM engine per actor, driven asynchronously: its own, or the run's prewarmed one for its slot.

    `__call__` is a coroutine, so Ray Data runs several small batches on one actor at once
    (max_concurrent_calls_per_actor) and the engine batches all their requests continuously: small
    batches give early traces (overlap with training) without giving up the throughput of many
    requests in flight (measured: batch 4 alone 26 tok/s, 16 in flight 107 tok/s on one core).

    `prewarmed`: the run started engines for this store (TeacherEngine actors named `engine_name`): the
    actor drives the one of the slot it claims. Without one -- none was started, it is gone (ended after
    generation, killed), or all slots are held -- the actor starts its own engine in its process.
    """

    def __init__(
        self,
        teacher: TeacherConfig,
        prompt: PromptConfig,
        model_path: str,
        model_name: str,
        store_root: str,
        events=None,
        prewarmed: bool = False,
    ):
        super().__init__(teacher, prompt, model_path, model_name, store_root, events)
        self.bind, self.slot = teacher.cpu_threads_bind, None
        if teacher.replica_binds or prewarmed:
            # this replica's slot: the first no live replica holds (a replacement takes a dead one's); with
            # replica_binds, also its own cores
            from distill.data.schema import stable_id

            n = max(len(teacher.replica_binds), teacher.replicas_max)
            try:
                self.slot = claim_slot("teacher-" + stable_id(os.path.abspath(store_root)), n)
            except RuntimeError:
                if teacher.replica_binds:
                    raise
            if teacher.replica_binds and self.slot is not None:
                self.bind = teacher.replica_binds[self.slot]
        self.remote = self.own = self.engine = None
        self._n = 0
        if prewarmed and self.slot is not None:
            import ray
            from ray.exceptions import RayActorError

            try:
                self.remote = ray.get_actor(engine_name(store_root, self.slot))
                self.cores = ray.get(self.remote.cores.remote())
            except (ValueError, RayActorError):  # none started for this slot, or gone
                self.remote = None
        if self.remote is None:
            self._start_own()

    def _start_own(self) -> None:
        self.own = TeacherEngine(self.cfg, self.model_path, self.bind)
        self.engine, self.cores = self.own.engine, self.own.cores()

    def __del__(self):
        own = getattr(self, "own", None)
        if own is not None:
            own.close()

    async def _one(self, ids: list[int], max_new: int) -> list[dict]:
        """One prompt's `samples` samples, from the prewarmed engine while it lives, else from our own."""
        self._n += 1
        rid = f"{self.actor}-{self._n}"
        if self.remote is not None:
            from ray.exceptions import RayActorError

            try:
                return await self.remote.generate.remote(ids, max_new, rid)
            except RayActorError:  # ended or killed under us: this call's work is lost, not its trace
                if self.remote is not None:  # the first of the calls in flight to see it starts our own engine
                    self.remote = None
                    self._start_own()
        return await self.own.generate(ids, max_new, rid)

    async def __call__(self, batch: pa.Table) -> pa.Table:
        import asyncio

        call = self._open(batch, time.time())
        return self._close(
            call, await asyncio.gather(*(self._one(i, m) for i, m in zip(call.prompt_ids, call.max_new)))
        )


class HFTeacher(_TeacherBase):
    def __init__(
        self,
        teacher: TeacherConfig,
        prompt: PromptConfig,
        model_path: str,
        model_name: str,
        store_root: str,
        events=None,
    ):
        super().__init__(teacher, prompt, model_path, model_name, store_root, events)
        import torch
        from transformers import AutoModelForCausalLM

        dtype = {"auto": "auto", "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[
            engine_dtype(teacher.dtype, torch.cuda.is_available())
        ]
        self.model = AutoModelForCausalLM.from_pretrained(
            self.model_path, dtype=dtype, trust_remote_code=teacher.trust_remote_code
        ).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        torch.manual_seed(teacher.seed)

    def __call__(self, batch: pa.Table) -> pa.Table:
        call = self._open(batch, time.time())
        return self._close(call, self._generate(call.prompt_ids, call.max_new) if call.problems else [])

    def _run_generate(self, prompt_ids: list[list[int]], max_new: list[int]):
        """One batched `generate` of all prompts, `samples` each -> its output (sequences include the
        left-padded prompts, `T` wide; scores per new token when logprobs are kept), T."""
        import torch

        c, tok = self.cfg, self.tokenizer
        T = max(len(ids) for ids in prompt_ids)
        # Left padding so every row's continuation starts at the same position.
        ids = torch.full((len(prompt_ids), T), tok.pad_token_id, dtype=torch.long)  # [B, T]
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompt_ids):
            ids[i, T - len(p) :] = torch.tensor(p)
            mask[i, T - len(p) :] = 1
        sample = c.temperature > 0
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(max_new),
                num_return_sequences=c.samples,
                do_sample=sample,
                temperature=c.temperature if sample else None,
                top_p=c.top_p if sample else None,
                stop_strings=c.stop or None,
                tokenizer=tok if c.stop else None,
                pad_token_id=tok.pad_token_id,
                return_dict_in_generate=True,
                output_scores=bool(c.logprobs),
            )
        return out, T

    def _generate(self, prompt_ids: list[list[int]], max_new: list[int]) -> list[list[dict]]:
        """-> per prompt, `samples` samples {text, token_ids, finish_reason, topk}."""
        import torch

        c, tok, k = self.cfg, self.tokenizer, self.cfg.samples
        out, T = self._run_generate(prompt_ids, max_new)
        seqs = out.sequences[:, T:]  # [B*k, new]
        gen_eos = self.model.generation_config.eos_token_id
        eos = {tok.eos_token_id} | set(gen_eos if isinstance(gen_eos, list) else [gen_eos])
        result = []
        for i in range(len(prompt_ids)):
            samples = []
            for r in range(i * k, (i + 1) * k):
                toks, finish = cut_at_eos(seqs[r].tolist(), eos, max_new[i])
                text, finish = cut_at_stop(tok.decode(toks, skip_special_tokens=True), c.stop, finish)
                topk = None
                if c.logprobs:
                    topk = []
                    for n in range(len(toks)):
                        lp = torch.log_softmax(out.scores[n][r].float(), dim=-1)  # [V]
                        v, idx = lp.topk(c.logprobs)
                        topk.append([{"token_id": int(a), "logprob": float(b)} for a, b in zip(idx, v)])
                samples.append({"text": text, "token_ids": toks, "finish_reason": finish, "topk": topk})
            result.append(samples)
        return result


BACKENDS = {"vllm": VLLMTeacher, "transformers": HFTeacher}
