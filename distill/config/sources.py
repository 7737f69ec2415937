"""Where problems come from, and how they are put to a model: sources, prompts, few-shot examples."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from distill.config.base import _Strict


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
