"""The transfer suite's config, and a sweep's arms."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from distill.config.base import CoreBind, _check_k_samples, _Placement, _Strict
from distill.config.sources import PromptStyle, SourceConfig
from distill.config.stages import _variant_names


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
    yield_to_training: bool = Field(
        True,
        description="The student's evaluator engine (untrained, in-loop, final: one engine for the run) computes "
        "at the lowest CPU priority (SCHED_IDLE) when it runs on CPU: on a core it shares with the trainer it "
        "uses only the time training leaves idle, instead of halving the trainer's speed. Its results come "
        "later; the run's wall does not (measured on 2 cores, README). False: equal priority.",
    )
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
