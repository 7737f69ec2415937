"""Run configuration: one pydantic model per component, YAML + `--set key=value` overrides.

Every model forbids unknown keys, so a typo in a recipe is an error naming the field, not a silent
default. Cross-field rules live in validators. The resolved config is written into the run dir.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

# pipelines/recipes/ in a source tree, distill/pipelines/recipes/ in an install (found without importing pipelines)
RECIPE_DIR = Path(importlib.util.find_spec("distill.pipelines").submodule_search_locations[0]) / "recipes"


def _core_bind(v: Any) -> Any:
    """A VLLM_CPU_OMP_THREADS_BIND value (`--set x.cpu_threads_bind=0` parses as a YAML int), checked
    by the parser that later reads it, so a malformed one ('0-x', '3-1') is a config error naming the
    field, not a ValueError inside a running engine."""
    from distill.hardware import core_set

    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if isinstance(v, str):  # anything else: pydantic's own str check names the type
        core_set(v)
    return v


CoreBind = Annotated[str, BeforeValidator(_core_bind)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    kind: Literal["reasoning_gym", "file", "hf_dataset", "bigbench"] = Field(
        description="reasoning_gym: a procedural task by name; file: local JSONL/Parquet; "
        "hf_dataset: a `datasets` dataset saved on local disk (save_to_disk) or a local data dir; "
        "bigbench: a BIG-bench task.json (`task` names one in the BIG-bench release, fetched and "
        "sha256-verified on first use; or `path` to a task.json)."
    )
    task: str | None = Field(
        None,
        description="reasoning-gym task name (kind=reasoning_gym), e.g. chain_sum; "
        "BIG-bench task dir (kind=bigbench), e.g. arithmetic/3_digit_addition.",
    )
    size: int = Field(64, ge=1, description="How many problems to take from this source.")
    seed: int = Field(
        11,
        description="Seed of the procedural generator (reasoning_gym), or of the sample "
        "drawn from a BIG-bench task's examples.",
    )
    task_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra keyword arguments of the reasoning-gym task config."
    )
    path: str | None = Field(None, description="Local path (kind=file or hf_dataset).")
    split: str | None = Field(None, description="Split of a DatasetDict (kind=hf_dataset).")
    question_field: str = Field("question", description="Column holding the problem text.")
    answer_field: str = Field("answer", description="Column holding the reference answer.")
    id_field: str | None = Field(
        None, description="Column holding a stable id; else one is derived from the source name, question and answer."
    )
    verifier: Literal["auto", "reasoning_gym", "math", "exact"] = Field(
        "auto",
        description="How answers are checked. auto: reasoning-gym's score_answer for its tasks, "
        "math-verify for numeric/LaTeX references, exact match otherwise.",
    )

    @model_validator(mode="after")
    def _needs(self) -> "SourceConfig":
        if self.kind == "reasoning_gym" and not self.task:
            raise ValueError("kind=reasoning_gym needs `task` (a reasoning-gym task name)")
        if self.kind in ("file", "hf_dataset") and not self.path:
            raise ValueError(f"kind={self.kind} needs `path`")
        if self.kind == "bigbench" and not (self.task or self.path):
            raise ValueError("kind=bigbench needs `task` (a BIG-bench task dir) or `path` (a task.json)")
        return self


class FewShotExample(_Strict):
    question: str = Field(description="A demonstration problem (user turn).")
    answer: str = Field(description="Its worked answer (assistant turn).")


class PromptStyle(_Strict):
    """One way of asking a problem: system message, instruction, few-shot turns, assistant prefill."""

    system: str | None = Field(None, description="System message (None: none).")
    instruction: str = Field("", description="Appended to the question after a blank line ('' = bare question).")
    examples: list[FewShotExample] = Field(
        default_factory=list, description="Few-shot demonstrations, given as earlier user/assistant turns."
    )
    prefill: str = Field(
        "",
        description="Text the assistant turn starts with (e.g. 'The answer is' to force "
        "a direct answer); kept in the scored text.",
    )


class PromptConfig(PromptStyle):
    """The task prompt: what the student is asked at inference, so what it trains on and what the
    in_distribution split asks. The teacher is asked the same unless `teacher.prompt` says otherwise."""

    instruction: str = Field(
        "Let's think step by step.",
        description="Appended to every question. Measured on chain_sum with the Qwen 0.5B teacher: this wording "
        "got 10/16 right, an explicit 'Answer: <answer>' format demand 3-6/16 (the model then skips its "
        "reasoning).",
    )


def _check_k_samples(samples: int, temperature: float, hint: str = "") -> None:
    """k samples per problem need sampling: at temperature 0 they would all be the same."""
    if samples > 1 and temperature == 0:
        raise ValueError(f"samples={samples} at temperature 0: greedy samples are all the same{hint}")


class _Placement(_Strict):
    """Where a stage's replicas may run: custom Ray resources and a node-label selector."""

    resources: dict[str, float] = Field(
        default_factory=dict,
        description="Custom Ray resources per replica, e.g. {teacher_node: 1} when "
        "inference nodes are started with `ray start --resources '{\"teacher_node\": 8}'`.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Node-label selector per replica, e.g. {role: teacher} for nodes "
        "started with `ray start --labels role=teacher`. Values: 'v', '!v', 'in(a,b)', '!in(a,b)'.",
    )

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, x in v.items() if x < 0 or k in ("CPU", "GPU", "memory", "object_store_memory")]
        if bad:
            raise ValueError(f"{bad} must be custom resources with amounts >= 0 (CPUs and GPUs have their own fields)")
        return v

    def placement_options(self) -> dict:
        """Ray options placing this stage's replicas: its custom resources and node-label selector."""
        out: dict = {}
        if self.resources:
            out["resources"] = dict(self.resources)
        if self.labels:
            out["label_selector"] = dict(self.labels)
        return out


class _ActorPool(_Placement):
    """An actor pool: size min..max, autoscaled by Ray Data between the two."""

    replicas_min: int = Field(1, ge=1, description="Actor pool minimum size.")
    replicas_max: int = Field(1, ge=1, description="Actor pool maximum size.")

    @model_validator(mode="after")
    def _pool(self):
        if self.replicas_min > self.replicas_max:
            raise ValueError(f"replicas_min ({self.replicas_min}) > replicas_max ({self.replicas_max})")
        return self


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
        """Ray options of a scorer pool's actors: placement, and the allocator their processes start on."""
        from distill.hardware import allocator_env

        env = allocator_env(self.allocator)
        return {**self.placement_options(), **({"runtime_env": {"env_vars": env}} if env else {})}


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


class EvalConfig(_Placement):
    in_distribution: list[SourceConfig] = Field(
        default_factory=list,
        description="Held-out problems of the training tasks. Any problem_id also in "
        "the training problems is dropped and counted (the split is checked by problem_id).",
    )
    related: list[SourceConfig] = Field(
        default_factory=list,
        description="Tasks the student never trained "
        "on from the same family: reasoning-gym tasks and BIG-bench task.json.",
    )
    difficulty_shift: list[SourceConfig] = Field(
        default_factory=list,
        description="The training tasks at harder settings (task_kwargs: more terms, more digits).",
    )
    validation: list[SourceConfig] = Field(
        default_factory=list,
        description="Problems of the training tasks kept for choosing a recipe (`distill "
        "sweep` compares its arms here, in-loop evaluation may use it): never any of the test splits above, "
        "which must stay an honest test. Checked by problem_id against training and test problems.",
    )
    prompt_styles: dict[str, PromptStyle] = Field(
        default_factory=dict,
        description="prompt_style split: the first `style_problems` in_distribution "
        "problems asked in each of these styles (name -> style). Empty: no prompt_style split.",
    )
    style_problems: int = Field(32, ge=1, description="How many in_distribution problems the prompt styles use.")
    direct: PromptStyle = Field(
        default_factory=lambda: PromptStyle(
            instruction="Reply with only the final answer, no working.", prefill="The answer is"
        ),
        description="'Does reasoning help': the in_distribution problems asked so that the model must answer "
        "at once (compared with the training prompt, which lets it reason).",
    )
    direct_max_tokens: int = Field(16, ge=1, description="Max new tokens of a direct answer.")
    samples: int = Field(
        1,
        ge=1,
        le=64,
        description="k > 1: also draw k samples per in_distribution problem "
        "at `temperature` for pass@k and maj@k (greedy pass@1 is always reported).",
    )
    temperature: float = Field(0.7, ge=0.0, description="Sampling temperature of the k samples.")
    baselines: list[Literal["teacher", "untrained"]] = Field(
        default_factory=lambda: ["teacher", "untrained"],
        description="Reference models evaluated on the same suite as the distilled student.",
    )
    in_loop: bool = Field(
        True,
        description="`distill run`: evaluate every saved checkpoint on the `in_loop_splits` "
        "asynchronously while training goes on (Ray Train validation tasks).",
    )
    in_loop_splits: list[Literal["validation", "in_distribution", "related", "difficulty_shift"]] = Field(
        default_factory=lambda: ["in_distribution"], description="Splits evaluated on each checkpoint in-loop."
    )
    backend: Literal["vllm", "transformers"] = Field(
        "vllm", description="Evaluator engine; transformers is the fallback for models vLLM cannot load."
    )
    max_tokens: int = Field(384, ge=1, description="Max new tokens per evaluated answer.")
    max_model_len: int = Field(
        1024, ge=64, description="Evaluator engine context length (longer prompts are skipped and counted)."
    )
    kv_cache_gib: int = Field(1, ge=1, description="vLLM CPU KV cache of an evaluator engine, GiB.")
    dtype: Literal["bfloat16", "float16", "float32"] | None = Field(
        None,
        description="Evaluator engine dtype. None: bfloat16 where its machine computes it natively, else "
        "float32 (see teacher.dtype).",
    )
    num_cpus: float = Field(1.0, gt=0, description="Logical CPUs per evaluator actor.")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per evaluator actor.")
    cpu_threads_bind: CoreBind | None = Field(None, description="VLLM_CPU_OMP_THREADS_BIND of the evaluator engine.")
    teacher_splits: list[Literal["in_distribution", "prompt_style", "related", "difficulty_shift", "direct"]] | None = (
        Field(
            None,
            description="Splits the teacher baseline answers (None: all). The targets need only its "
            "in_distribution accuracy (the gap the student closes); on 2 CPU cores its other splits cost more than "
            "training, so a small recipe may leave them out (they are cached after the first run anyway).",
        )
    )
    teacher_from_generation: bool = Field(
        True,
        description="Take the teacher's in_distribution accuracy from the traces it already generated on the "
        "training problems, when that decoding is the evaluation's (greedy, one sample, the same max_tokens, no "
        "stop strings): the teacher never trained on them, so they are fresh problems of the same distribution, "
        "and many more than the split holds. Otherwise the teacher answers the in_distribution split (in its own "
        "prompt).",
    )
    cache: bool = Field(
        True,
        description="Cache baseline predictions (teacher, untrained student) by the model "
        "files' content, the request list, the decoding settings and the engine version, under "
        "$DISTILL_EVAL_CACHE or ~/.cache/distill/eval: later runs of a recipe pay only for their "
        "student. `--no-eval-cache` turns it off for one run.",
    )
    samples_in_report: int = Field(
        2, ge=0, description="Side-by-side teacher/student samples per outcome (right, wrong) in the report."
    )

    def has_suite(self) -> bool:
        return bool(self.in_distribution or self.related or self.difficulty_shift)

    def in_loop_wanted(self) -> list[str]:
        """The in-loop splits this suite has."""
        return [s for s in self.in_loop_splits if getattr(self, s)]

    @model_validator(mode="after")
    def _styles(self) -> "EvalConfig":
        _check_k_samples(self.samples, self.temperature)
        if self.prompt_styles and not self.in_distribution:
            raise ValueError("prompt_styles ask the in_distribution problems: set eval.in_distribution")
        return self


class SweepConfig(_Strict):
    variants: list[str] = Field(
        default_factory=lambda: ["answer_only", "decision_points", "plan", "full"],
        description="Supervision variants to train one student each on (when `arms` is empty).",
    )
    arms: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Named training recipes to compare on the same traces, each a set of "
        "`train` fields over the recipe's (e.g. {lr_hi: {lr: 3.0e-4}, long: {epochs: 6}}). Empty: one arm per "
        "variant in `variants`.",
    )
    seeds: int = Field(
        1,
        ge=1,
        le=20,
        description="Training seeds per arm: mean and interval per arm, and every "
        "arm compared with the best, paired on the same validation problems.",
    )
    parallel: int = Field(1, ge=1, description="Students trained at the same time (Ray Tune trials).")
    threads_per_trial: int = Field(2, ge=1, description="torch threads per training trial.")

    @model_validator(mode="after")
    def _known(self) -> "SweepConfig":
        names = _variant_names()
        bad = [v for v in self.variants if v not in names]
        if bad or not self.variants:
            raise ValueError(f"unknown variant(s) {bad}; expected some of {list(names)}")
        return self

    def arm_overrides(self) -> dict[str, dict[str, Any]]:
        """Arm name -> `train` fields it changes."""
        return dict(self.arms) or {v: {"supervision": {v: 1.0}} for v in self.variants}


class RayConfig(_Strict):
    address: str | None = Field(
        None, description="Ray address ('auto' for `ray start`); None starts an embedded local Ray."
    )
    num_cpus: int | None = Field(
        8,
        ge=1,
        description="Logical CPUs of the embedded Ray (ignored with an "
        "address). More logical than physical CPUs lets all stages co-exist on a "
        "small machine; threads are pinned per stage instead.",
    )
    dashboard: bool = Field(True, description="Start the Ray dashboard (embedded Ray).")
    verbose: bool = Field(
        False,
        description="Stream every Ray worker's output (vLLM, Ray Train, transformers) to "
        "the terminal. Off: the terminal shows distill's progress, plan and summary, and the "
        "workers' output is copied to runs/<id>/logs/ at the end (`--verbose` turns it on).",
    )
    dashboard_host: str = Field("127.0.0.1", description="Dashboard bind address.")
    stream_buffer_mib: float | None = Field(
        512,
        gt=0,
        description="Object-store budget of the trace stream (Ray Data resource limit): when the "
        "trainer is slower than the teacher, finished traces wait in at most about this much memory and the "
        "teacher pauses (backpressure) instead of buffering without bound. None: Ray Data's default share.",
    )


class StorageConfig(_Strict):
    uri: str | None = Field(
        None,
        description="Shared storage for the run's metrics: a path or any fsspec URL (s3://bucket/distill, "
        "gs://..., file:///mnt/shared). TensorBoard logs, summary.json, events, timeline, report and the "
        "resolved config are mirrored to <uri>/<run_id>/ while the run goes (every sync_every_s) and at its "
        "end, so they do not stay on whichever node the driver ran on. None: only output_dir.",
    )
    sync_every_s: float = Field(30.0, gt=0, description="Seconds between mirror passes during a run.")

    @field_validator("uri")
    @classmethod
    def _known_protocol(cls, v: str | None) -> str | None:
        if v:
            import fsspec
            from fsspec.registry import known_implementations, registry

            protocol = fsspec.utils.get_protocol(v)
            if protocol not in known_implementations and protocol not in registry:
                raise ValueError(f"fsspec knows no protocol {protocol!r}") from None
        return v  # the protocol's package (s3fs, gcsfs, ...) is checked when the run starts


class RunConfig(_Strict):
    name: str = Field("run", description="Recipe name; prefix of the run id.")
    output_dir: str = Field(
        "runs",
        description="Where <run_id>/ is written. On a multi-node cluster, an absolute "
        "path every node mounts (the trace store is written by scorers on any node and "
        "read by trainers on any node).",
    )
    seed: int = Field(0, description="Seed for everything that draws random numbers.")
    sources: list[SourceConfig] = Field(min_length=1, description="Problem sources, concatenated.")
    source_blocks: int = Field(
        8, ge=1, description="Blocks the problem dataset is cut into; one block would defeat streaming."
    )
    prompt: PromptConfig = Field(
        default_factory=PromptConfig,
        description="The task prompt: what the student "
        "is asked at inference and trains on, and what the in_distribution split asks. "
        "The teacher is asked the same unless teacher.prompt is set.",
    )
    stages: Literal["streamed", "sequential"] = Field(
        "streamed",
        description="streamed: generation, scoring, training and evaluation at once (the product). "
        "sequential: generation and scoring run to their end (the stream materialised), then training, then "
        "every evaluation (eval.in_loop is skipped: it would overlap training): the baseline `distill bench`'s "
        "overlap arms measure streaming against.",
    )
    teacher: TeacherConfig = Field(description="Teacher generation.")
    scorer: ScorerConfig = Field(default_factory=ScorerConfig, description="Verification and selection.")
    train: TrainConfig = Field(description="Student training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation of students.")
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="`distill sweep`: one student per variant.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Ray connection.")
    storage: StorageConfig = Field(default_factory=StorageConfig, description="Where metrics are mirrored.")

    def teacher_prompt(self) -> PromptConfig:
        """How the teacher is asked: its own prompt, or the task prompt."""
        return self.teacher.prompt or self.prompt

    @model_validator(mode="after")
    def _arms_valid(self) -> "RunConfig":
        for name, over in self.sweep.arms.items():
            try:
                TrainConfig.model_validate({**self.train.model_dump(), **over})
            except ValidationError as e:
                raise ValueError(
                    f"sweep.arms.{name}: "
                    + "; ".join(
                        f"{'.'.join(str(x) for x in err['loc']) or 'train'}: {err['msg']}" for err in e.errors()
                    )
                ) from None
        return self

    @model_validator(mode="after")
    def _pool_unseen(self) -> "RunConfig":
        from distill.prompts import pool_clashes

        clashes = pool_clashes(self.train.prompt_pool, {**self.eval.prompt_styles, "direct": self.eval.direct})
        if clashes:
            raise ValueError(
                "; ".join(
                    f"train.prompt_pool.{p} is identical to eval.{'direct' if e == 'direct' else 'prompt_styles.' + e}"
                    for p, e in clashes
                )
                + ": a style trained on would no longer test robustness to an unseen prompt"
            )
        return self


class ConfigError(ValueError):
    """Invalid config: message names the field and what was expected. The CLI exits 2 on it."""


def _format_validation(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        got_s = "" if isinstance(got, dict) else f" (got {json.dumps(got, default=str)[:80]})"
        lines.append(f"  {loc}: {e['msg']}{got_s}")
    return "invalid config:\n" + "\n".join(lines)


def _parse_value(raw: str) -> Any:
    # YAML scalars: 3 -> int, 0.5 -> float, true -> bool, [a, b] -> list, null -> None.
    return yaml.safe_load(raw)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """`--set a.b.0.c=value`: dotted keys into mappings, non-negative indices into lists. A bad path is
    a ConfigError naming the key (exit 2), never a traceback or a silent write elsewhere."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        node: Any = data
        parts = key.strip().split(".")
        for depth, p in enumerate(parts):
            where = ".".join(parts[: depth + 1])
            last = depth == len(parts) - 1
            if isinstance(node, list):
                if not p.isdigit() or int(p) >= len(node):  # "-1" is not a digit string: no counting from the end
                    raise ConfigError(
                        f"--set {key}: {where!r} is not an index of a {len(node)}-item list (0..{len(node) - 1})"
                    )
                if last:
                    node[int(p)] = _parse_value(raw)
                else:
                    node = node[int(p)]
            elif isinstance(node, dict):
                if last:
                    node[p] = _parse_value(raw)
                else:
                    if node.get(p) is None:  # absent or null: a new mapping
                        node[p] = {}
                    node = node[p]
            else:
                raise ConfigError(
                    f"--set {key}: {'.'.join(parts[:depth])!r} is a value "
                    f"({json.dumps(node, default=str)[:40]}), not a mapping or list"
                )
    return data


def read_recipe(path: Path, seen: tuple[str, ...] = ()) -> dict:
    """A recipe's mapping; `extends: <recipe>` starts from that recipe (a shipped name, or a path relative
    to this file) and merges this one over it: mappings key by key, anything else (lists too) replaced."""
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    base = data.pop("extends", None)
    if base is None:
        return data
    local = path.parent / str(base)
    parent = local if local.suffix in (".yaml", ".yml") and local.exists() else recipe_path(str(base))
    if str(parent.resolve()) in seen or parent.resolve() == path.resolve():
        raise ConfigError(f"{path}: extends {base!r} extends itself ({' -> '.join([*seen, str(parent)])})")
    return _merged(read_recipe(parent, (*seen, str(path.resolve()))), data)


def _merged(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def recipe_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"recipe file not found: {p}")
        return p
    cand = RECIPE_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        known = ", ".join(sorted(x.stem for x in RECIPE_DIR.glob("*.yaml")))
        raise ConfigError(f"unknown recipe {name_or_path!r}; shipped recipes: {known}")
    return cand


def load_config(name_or_path: str, overrides: list[str] | None = None) -> RunConfig:
    data = read_recipe(recipe_path(name_or_path))
    data = apply_overrides(data, overrides or [])
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation(e)) from None
