"""Evaluator: one model (student checkpoint, untrained student or teacher) answering suite requests.

vLLM (one offline engine, all requests submitted at once so it batches them continuously), or
transformers `generate` as the fallback for models vLLM cannot load. Each request carries its chat
messages (from distill/eval/suite.py) and is rendered with the model's own chat template, plus an
optional assistant prefill. Scoring is pure and lives in distill/eval/suite.py.
"""

from __future__ import annotations

import os
import time

from distill.eval.suite import predictions
from distill.models import on_this_node


class Evaluator:
    def __init__(
        self,
        model_path: str,
        backend: str = "vllm",
        max_model_len: int = 1024,
        kv_cache_gib: int = 1,
        cpu_threads_bind: str | None = None,
        seed: int = 0,
        trust_remote_code: bool = False,
        dtype: str | None = None,
    ):
        model_path = on_this_node(str(model_path))  # the driver's cache path may not exist on this node
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        # `load` sends a function of ours (retie_lm_head) to the engine's worker, which vLLM refuses to
        # unpickle without this; it is our own process tree, nothing from outside is deserialized.
        os.environ["VLLM_ALLOW_INSECURE_SERIALIZATION"] = "1"
        if cpu_threads_bind:
            from distill.hardware import bind_engine

            bind_engine(cpu_threads_bind)  # worker threads and engine-core process on these cores
        self.backend, self.max_model_len, self.seed = backend, max_model_len, seed
        self.model_path, self.trust_remote_code = str(model_path), trust_remote_code
        import torch

        from distill.hardware import cpu_engine_options, engine_dtype

        self.dtype = engine_dtype(dtype, torch.cuda.is_available())
        self.tokenizer = self._tokenizer(model_path)
        if backend == "vllm":
            from vllm import LLM

            self.llm = LLM(
                model=model_path,
                max_model_len=max_model_len,
                seed=seed,
                enforce_eager=True,
                dtype=self.dtype,
                disable_log_stats=True,
                trust_remote_code=trust_remote_code,
                **cpu_engine_options(torch.cuda.is_available()),  # one process, not three
            )
        else:
            self.model = self._hf_model(model_path)

    def _tokenizer(self, model_path: str):
        return eval_tokenizer(model_path, self.trust_remote_code)

    def _hf_model(self, model_path: str):
        """The transformers backend's model, in this evaluator's dtype."""
        import torch
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(
            model_path, dtype=getattr(torch, self.dtype), trust_remote_code=self.trust_remote_code
        ).eval()

    def can_load(self, model_path: str) -> bool:
        """Whether `model_path` fits this engine as it is (same architecture and shapes): then `load`
        swaps the weights in place instead of starting a new engine."""
        return same_architecture(self.model_path, on_this_node(model_path))

    def load(self, model_path: str) -> float:
        """Swap in another checkpoint of the same architecture, in place (no new engine process):
        -> seconds it took. vLLM's worker `reload_weights` reads the safetensors from `model_path`;
        the prefix cache is reset so no KV computed with the old weights is reused."""
        t0 = time.time()
        model_path = on_this_node(str(model_path))
        self.tokenizer = self._tokenizer(model_path)
        if self.backend == "vllm":
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_path)})
            self.llm.collective_rpc(retie_lm_head)
            self.llm.reset_prefix_cache()
        else:
            self.model = self._hf_model(model_path)
        self.model_path = str(model_path)
        return time.time() - t0

    def close(self) -> None:
        """End the engine's core process now (not at interpreter exit, where it can print tracebacks)."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # already gone: nothing to end
                pass
            self.llm = None

    def prompt_ids(self, request: dict) -> list[int]:
        return prompt_ids(self.tokenizer, request)

    def run(self, requests: list[dict]) -> dict:
        """-> {"predictions": [...], "outputs" (raw generations), "wall_s", "tokens", "skipped_too_long"}
        (same order as requests)."""
        t0 = time.time()
        ids = [self.prompt_ids(r) for r in requests]
        fits = fitting(ids, self.max_model_len)
        outs: dict[int, list[tuple[str, int, str]]] = {}
        if fits:
            gen = self._vllm if self.backend == "vllm" else self._hf
            outs = dict(zip(fits, gen([requests[i] for i in fits], [ids[i] for i in fits])))
        return answers(requests, fits, outs, t0)

    def _room(self, r: dict, ids: list[int]) -> int:
        return room(r, ids, self.max_model_len)

    def _vllm(self, requests: list[dict], ids: list[list[int]]) -> list[list[tuple[str, int, str]]]:
        params = [sampling(r, x, self.max_model_len, self.seed) for r, x in zip(requests, ids)]
        outs = self.llm.generate([{"prompt_token_ids": x} for x in ids], params, use_tqdm=False)
        return [[(c.text, len(c.token_ids), c.finish_reason) for c in o.outputs] for o in outs]

    def _hf(self, requests: list[dict], ids: list[list[int]]) -> list[list[tuple[str, int, str]]]:
        import torch

        tok, out = self.tokenizer, []
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # One request at a time: the fallback is for correctness on odd models, not for speed.
        for r, x in zip(requests, ids):
            inp = torch.tensor([x])
            with torch.no_grad():
                g = self.model.generate(
                    inp,
                    attention_mask=torch.ones_like(inp),
                    max_new_tokens=self._room(r, x),
                    do_sample=r["temperature"] > 0,
                    temperature=r["temperature"] or None,
                    num_return_sequences=r["n"],
                    pad_token_id=pad,
                )
            res = []
            for seq in g[:, len(x) :].tolist():
                finish = "stop" if tok.eos_token_id in seq else "length"
                seq = seq[: seq.index(tok.eos_token_id)] if tok.eos_token_id in seq else seq
                res.append((tok.decode(seq, skip_special_tokens=True), len(seq), finish))
            out.append(res)
        return out


# An evaluation's rules apart from its engine: shared by Evaluator (an offline `LLM`) and the teacher's
# prewarmed engine (actors/teacher.py TeacherEngine.evaluate, an `AsyncLLM`), which answer alike.


def eval_tokenizer(model_path: str, trust_remote_code: bool = False):
    """The model's tokenizer, with a chat template and a pad token where the model has none."""
    from transformers import AutoTokenizer

    from distill.train.tokenize import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    ensure_chat_template(tokenizer)
    return tokenizer


def prompt_ids(tokenizer, request: dict) -> list[int]:
    """A request rendered with the model's own chat template, plus its assistant prefill."""
    text = tokenizer.apply_chat_template(request["messages"], tokenize=False, add_generation_prompt=True)
    return tokenizer(text + request["prefill"], add_special_tokens=False)["input_ids"]


def fitting(ids: list[list[int]], max_model_len: int) -> list[int]:
    """The requests whose prompt leaves room to answer (the others are scored as no answer)."""
    return [i for i, x in enumerate(ids) if len(x) < max_model_len - 1]


def room(r: dict, ids: list[int], max_model_len: int) -> int:
    return max(1, min(r["max_tokens"], max_model_len - len(ids)))


def sampling(r: dict, ids: list[int], max_model_len: int, seed: int):
    """A request's vLLM SamplingParams: its own seed when it samples several answers, so they are the same
    answers on every engine and every run."""
    from vllm import SamplingParams

    return SamplingParams(
        n=r["n"],
        temperature=r["temperature"],
        max_tokens=room(r, ids, max_model_len),
        seed=seed if r["n"] > 1 else None,
    )


def answers(requests: list[dict], fits: list[int], outs: dict[int, list], t0: float) -> dict:
    """Raw generations per request index -> the evaluation's result (see Evaluator.run)."""
    # A prompt longer than the context is answered by nobody: scored as no answer, and counted.
    raw = [outs.get(i) or [("", 0, "prompt_too_long")] * r["n"] for i, r in enumerate(requests)]
    preds = predictions(requests, raw)
    return {
        "predictions": preds,
        "outputs": raw,
        "wall_s": round(time.time() - t0, 2),
        "tokens": sum(p["tokens"] for p in preds),
        "skipped_too_long": len(requests) - len(fits),
    }


def retie_lm_head(worker) -> bool:
    """After vLLM's in-place `reload_weights` (0.32), a tied lm_head still holds the old embedding
    matrix (and, on CPU, a GEMM handle packed from it): the reload replaces embed_tokens' parameter
    but not the tie. Tie it again and re-pack; -> whether the model was tied. (Measured: without this
    a reloaded tied model generates other tokens than a fresh engine on the same checkpoint.)"""
    model = worker.model_runner.get_model()
    if not getattr(worker.model_config.hf_config, "tie_word_embeddings", False):
        return False
    lm, emb = model.lm_head, model.model.embed_tokens
    lm.weight = emb.weight
    lm.quant_method.process_weights_after_loading(lm)
    return True


ARCH_KEYS = (
    "architectures",
    "model_type",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "tie_word_embeddings",
    "max_position_embeddings",
)


def same_architecture(a: str, b: str) -> bool:
    """Two HF directories whose weights are interchangeable in one engine (config.json shape keys equal)."""
    import json
    from pathlib import Path

    try:
        ca, cb = (json.loads((Path(p) / "config.json").read_text()) for p in (a, b))
    except (OSError, ValueError):
        return False
    return all(ca.get(k) == cb.get(k) for k in ARCH_KEYS)
