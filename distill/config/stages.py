"""The stages' configs: the teacher, the scorer, the student's training and its correction rounds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from distill.config.base import CoreBind, _ActorPool, _check_k_samples, _Placement, _Strict
from distill.config.sources import PromptConfig, PromptStyle


class TeacherConfig(_ActorPool):
    backend: Literal["vllm", "transformers"] = Field(
        "vllm",
        description="vllm: one vLLM engine per actor; transformers: batched `generate`, for models vLLM cannot load.",
    )
    model: str = Field(description="Embedded model name (see `distill models list`), HF model id, or local path.")
    prompt: PromptConfig | None = Field(
        None,
        description="The teacher's own prompt (system, instruction, few-shot examples), when it should be "
        "asked differently from the student, e.g. for a format that makes good supervision (context "
        "distillation: the student trains on the plain task prompt `prompt`). None: the same as `prompt`.",
    )
    samples: int = Field(1, ge=1, le=64, description="k: samples per problem.")
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_tokens: int = Field(320, ge=1, description="Max new tokens per sample.")
    stop: list[str] = Field(default_factory=list, description="Stop strings.")
    ignore_eos: bool = Field(
        False,
        description="Generate exactly max_tokens per sample, past the end of turn "
        "(`distill bench`: equal work for every engine compared; never for real traces).",
    )
    logprobs: int | None = Field(None, ge=1, le=20, description="Keep top-k logprobs per generated token.")
    seed: int = Field(0, description="Global sampling seed of each engine.")
    batch_size: int = Field(
        4,
        ge=1,
        description="Problems per batch: the unit that streams on to the "
        "scorer, so small batches give early traces (time-to-first-trace).",
    )
    concurrent_batches: int = Field(
        4,
        ge=1,
        description="Batches in flight per teacher actor (vllm: all "
        "share one continuously-batching engine). Requests in flight = "
        "batch_size x concurrent_batches x replicas.",
    )
    num_cpus: float = Field(1.0, gt=0, description="Logical CPUs reserved per teacher actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per teacher actor (engine).")
    gpu_memory_utilization: float = Field(
        0.9,
        gt=0,
        le=1,
        description="Share of its GPU's memory a teacher engine may take (weights + KV cache); GPU engines only.",
    )
    max_model_len: int = Field(1024, ge=64, description="Engine context length; longer prompts are quarantined.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] | None = Field(
        None,
        description="Engine dtype. None: bfloat16 where the teacher's machine computes it natively (a GPU, "
        "or a CPU with AVX-512 BF16 / AMX), else float32 (an AVX2-only CPU emulates bf16 about 4x slower).",
    )
    kv_cache_gib: int = Field(2, ge=1, description="vLLM CPU KV cache in GiB (VLLM_CPU_KVCACHE_SPACE).")
    cpu_threads_bind: CoreBind | None = Field(
        None,
        description="VLLM_CPU_OMP_THREADS_BIND, e.g. '0' to pin the engine to core 0 so the "
        "trainer keeps the other core.",
    )
    replica_binds: list[CoreBind] = Field(
        default_factory=list,
        description="Per-replica VLLM_CPU_OMP_THREADS_BIND, e.g. ['0-7', '8-15']: each "
        "teacher actor claims the first binding no live replica on its node holds (a replacement for a dead "
        "actor takes the one it freed), so replicas never share cores. Overrides cpu_threads_bind; needs "
        "replicas_max <= its length.",
    )
    enforce_eager: bool = Field(
        True,
        description="Skip vLLM's torch.compile: engine start 21-25 s instead "
        "of ~80 s on 2 CPU cores; turn off for long runs on GPUs.",
    )
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code.")

    @model_validator(mode="after")
    def _k_samples(self) -> "TeacherConfig":
        _check_k_samples(self.samples, self.temperature, "; set temperature > 0 or samples: 1")
        if self.prompt is not None and self.prompt.prefill:
            raise ValueError("prompt.prefill: a teacher prefill is not supported (the trace would not hold it)")
        return self

    @model_validator(mode="after")
    def _binds(self):
        if self.replica_binds and self.replicas_max > len(self.replica_binds):
            raise ValueError(
                f"replica_binds has {len(self.replica_binds)} binding(s) for up to replicas_max = "
                f"{self.replicas_max} replicas: give one per replica"
            )
        return self


class ScorerConfig(_ActorPool):
    policy: Literal["all_correct", "first_correct", "shortest_correct"] = Field(
        "all_correct", description="Which verified samples of a problem are kept for training."
    )
    reject_flags: list[Literal["truncated", "empty", "repetitive", "wrong_intermediate"]] = Field(
        default_factory=lambda: ["truncated", "empty", "repetitive"],
        description="Flags that reject a sample even when its answer is correct. wrong_intermediate: a "
        "step's arithmetic is wrong though the final answer is right (it teaches the wrong structure).",
    )
    repetition_ngram: int = Field(8, ge=2, description="n-gram size for the repetition detector.")
    repetition_threshold: float = Field(
        0.5, gt=0, le=1, description="Share of repeated n-grams that flags an output as repetitive."
    )
    num_cpus: float = Field(0.25, gt=0, description="Logical CPUs per scorer actor.")
    allocator: Literal["jemalloc", "system"] = Field(
        "jemalloc",
        description="Memory allocator of the scorer actors' processes: jemalloc (the one the ray wheel ships, "
        "preloaded) or system (glibc malloc). jemalloc scores ~10-20% more traces per core (`distill bench`).",
    )

    def actor_options(self) -> dict:
        """Ray options of a scorer pool's actors: their CPUs, placement, and the allocator their processes
        start on (scored_stream's pool and the correction rounds' take them all from here)."""
        from distill.hardware import allocator_env

        env = allocator_env(self.allocator)
        opts = {"num_cpus": self.num_cpus, **self.placement_options()}
        return {**opts, **({"runtime_env": {"env_vars": env}} if env else {})}


def _variant_names() -> tuple[str, ...]:
    """The supervision variants distill/trace/variants.py builds (imported when a config is checked, not when
    this module loads: variants pulls in the scorer's parsers and pyarrow)."""
    from distill.trace.variants import VARIANTS

    return VARIANTS


ROLE_NAMES = ("plan", "compute", "check", "answer", "filler")


class CorrectionConfig(_Strict):
    """On-policy correction rounds after the SFT epochs: the student answers training problems, the
    scorer finds where each wrong answer first goes wrong, the teacher continues the student's own text
    from there (an assistant prefill: any teacher/student pair), and the student trains on what was
    accepted (its prefix as context, the continuation as target) mixed with SFT examples."""

    rounds: int = Field(1, ge=1, le=20, description="Correction rounds, each a sample -> correct -> train pass.")
    problems: int = Field(64, ge=1, description="Training problems the student answers per round.")
    samples: int = Field(2, ge=1, le=16, description="Student samples per problem (k > 1 needs temperature > 0).")
    temperature: float = Field(0.7, ge=0.0, description="The student's sampling temperature.")
    max_tokens: int = Field(256, ge=16, description="Max new tokens of a student sample and of a continuation.")
    keep: list[Literal["correction", "self"]] = Field(
        default_factory=lambda: ["correction"],
        description="What becomes supervision: `correction` (the teacher's continuation of a wrong answer "
        "from its first wrong step) and/or `self` (the student's own right answers: rejection sampling).",
    )
    mix: float = Field(
        1.0,
        ge=0.0,
        description="SFT examples (the picked variants of the teacher's accepted traces) mixed into each "
        "round, per round problem: 1.0 with 64 problems adds 64, spread over the round's blocks.",
    )
    arms: list[Literal["correction", "self", "teacher"]] = Field(
        default_factory=list,
        description="Comparison students, each trained from the same SFT student on round 1 alone and evaluated "
        "on the whole suite: correction (accepted corrections), self (the student's right answers: no teacher "
        "tokens), teacher (fresh teacher traces on new training-distribution problems, as many as cost the "
        "teacher tokens round 1's continuations cost). Each arm gets the same SFT rows mixed in.",
    )
    lr: float | None = Field(None, gt=0, description="The rounds' constant learning rate (None: train.lr / 2).")
    batch_size: int = Field(4, ge=1, description="Problems per block through the round's stages.")
    cpu_threads_bind: CoreBind | None = Field(
        None,
        description="Cores of the continuation teacher's engine (None: teacher.cpu_threads_bind). The "
        "student samples on the run's evaluator engine, on eval.cpu_threads_bind.",
    )

    @model_validator(mode="after")
    def _k(self) -> "CorrectionConfig":
        _check_k_samples(self.samples, self.temperature, " (train.correction.temperature)")
        if not self.keep:
            raise ValueError("keep: name at least one of correction, self")
        if len(set(self.arms)) < len(self.arms):
            raise ValueError(f"arms: each arm once, got {self.arms}")
        return self


class TrainConfig(_Placement):
    student: str = Field(description="Embedded model name, HF model id, or local path of the student.")
    supervision: dict[str, float] = Field(
        default_factory=lambda: {"full": 1.0},
        description="Which supervision variant to train on, or a mixture {variant: share}. Each accepted "
        "trace contributes one variant, chosen deterministically by its trace_id in these proportions.",
    )
    role_weights: dict[str, float] = Field(
        default_factory=dict,
        description="Per-role loss weights, e.g. {compute: 2.0, filler: 0.2}; "
        "roles: plan, compute, check, answer, filler (default 1).",
    )
    path_weight: float | None = Field(
        None, gt=0, description="Extra loss weight on decision-point tokens (steps on the answer's dependency path)."
    )
    workers: int = Field(1, ge=1, description="Ray Train workers (data parallel).")
    num_cpus_per_worker: float = Field(1.0, gt=0, description="Logical CPUs per training worker.")
    use_gpu: bool = Field(False, description="Train on GPUs (nccl) instead of CPU (gloo).")
    torch_threads: int = Field(
        1, ge=1, description="torch intra-op threads per worker (CPU) while the teacher is generating (epoch 1)."
    )
    torch_threads_later: int | None = Field(
        None,
        ge=1,
        description="torch threads from epoch 2 on, when the teacher's cores are free (None: keep torch_threads).",
    )
    cpu_threads_bind: CoreBind | None = Field(
        None,
        description="Cores a training worker computes on while the teacher generates (epoch 1), e.g. '1' beside "
        "a teacher bound to '0': unbound, its thread drifts onto the teacher's or evaluator's core. From epoch 2 "
        "on, with torch_threads_later set, it gets back all the cores it started with. Applied where this node "
        "has those cores, with one worker only (several would share them). None: unbound.",
    )
    epochs: int = Field(2, ge=1, description="Epoch 1 streams from the live pipeline; later ones read the store.")
    batch_size: int = Field(4, ge=1, description="Examples per micro-batch per worker.")
    grad_accum: int = Field(
        1,
        ge=1,
        description="Micro-batches per optimizer step: the effective batch is "
        "batch_size x grad_accum x workers examples.",
    )
    lr: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field(
        "cosine",
        description="Learning-rate shape after warm-up, over all optimizer steps of the run: constant, "
        "linear decay or cosine decay, down to lr x min_lr_ratio. The run's length is known once epoch 1 ends; "
        "during epoch 1 (the live stream) it is estimated from the share of the stream consumed.",
    )
    warmup_ratio: float = Field(
        0.0,
        ge=0,
        le=0.5,
        description="Share of all optimizer steps spent warming the learning rate up linearly from 0.",
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="Floor of the decay, as a share of lr.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    shuffle: bool = Field(
        True,
        description="Reshuffle the examples of every epoch >= 2 (read from the store) "
        "with a seeded permutation, the same on every rank. Epoch 1 follows the stream.",
    )
    packing: bool = Field(
        False,
        description="Pack each micro-batch's examples into as few rows of pack_len as "
        "fit (per-example position ids: attention never crosses examples) and compute the LM head "
        "only at label positions, instead of right-padding every example to the longest.",
    )
    pack_len: int = Field(
        2048,
        ge=16,
        description="With packing: the longest packed row (tokens; at least "
        "max_seq_len is used). A micro-batch that fits is one row, no padding; attention costs "
        "grow with the square of a row's length, so this caps it.",
    )
    packed_attention: Literal["per_example", "block_mask"] = Field(
        "per_example",
        description="With packing: attention computed per example (causal SDPA over each "
        "example's own tokens) or SDPA over the whole row with a block-diagonal mask (dense: it computes the "
        "row x row scores, which on a CPU costs what the padding did). Both keep examples apart.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch examples of similar length together (less padding): "
        "sorted by length within windows of 64 micro-batches, batch order shuffled.",
    )
    prompt_pool: dict[str, PromptStyle] = Field(
        default_factory=dict,
        description="Prompt styles the student also trains in (robustness is trained, not "
        "only measured): each example is asked in one of them for a `prompt_pool_share` of examples, else in "
        "`prompt`, chosen deterministically by trace_id. A style identical to an eval prompt style is an error: "
        "the prompt_style split must stay unseen.",
    )
    prompt_pool_share: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Share of training examples asked in a prompt_pool style (the rest in the student prompt).",
    )
    max_seq_len: int = Field(
        512,
        ge=16,
        description="Examples longer than this are skipped (counted), "
        "never cut: a cut completion would lose its end-of-turn token.",
    )
    bf16: bool | None = Field(
        None,
        description="bf16 autocast (fp32 master weights; the student is saved in bf16). None: on where the "
        "training worker's hardware computes bf16 natively (a GPU, or a CPU with AVX-512 BF16 / AMX: about 2x "
        "faster than fp32 there); an AVX2-only CPU emulates it, 29x slower than fp32 (measured), so off there.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each decoder layer's activations in the "
        "backward pass instead of keeping them: about a third more compute, "
        "activations cut from ~34 to ~2 bytes per token, layer and hidden unit "
        "(`distill plan` prints the estimate).",
    )
    checkpoint_every: int = Field(0, ge=0, description="Save a checkpoint every N steps (0: each epoch end).")
    max_failures: int = Field(
        3,
        ge=-1,
        description="Worker-group failures Ray Train recovers from (restart "
        "from the latest checkpoint with its data position); -1: no limit.",
    )
    trust_remote_code: bool = Field(False, description="Allow model repos to run their own code.")
    correction: CorrectionConfig | None = Field(
        None, description="On-policy correction rounds after the SFT epochs (None: none); see CorrectionConfig."
    )

    @model_validator(mode="after")
    def _supervision(self) -> "TrainConfig":
        names = _variant_names()
        bad = [v for v in self.supervision if v not in names]
        if bad or not self.supervision:
            raise ValueError(f"supervision: unknown variant(s) {bad}; expected some of {list(names)}")
        if any(w < 0 for w in self.supervision.values()) or sum(self.supervision.values()) <= 0:
            raise ValueError("supervision: shares must be >= 0 and sum to more than 0")
        bad = [r for r in self.role_weights if r not in ROLE_NAMES]
        if bad or any(w < 0 for w in self.role_weights.values()):
            raise ValueError(f"role_weights: unknown role(s) {bad} or a negative weight; roles: {list(ROLE_NAMES)}")
        from distill.hardware import bind_cores

        bound = bind_cores(self.cpu_threads_bind, 0)
        if bound and self.torch_threads > bound:  # more compute threads than cores: each step several times slower
            raise ValueError(
                f"cpu_threads_bind {self.cpu_threads_bind!r} names {bound} core(s) for torch_threads = "
                f"{self.torch_threads}: bind as many cores as threads, or none"
            )
        return self
