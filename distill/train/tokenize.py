"""Student-side tokenisation: chat template, completion-only labels, end-of-turn kept, padding.

The prompt is tokenised exactly as it will be at inference (the rendered prompt with the generation
prompt), and the completion separately after it, so training sees the token boundary the student
will see when it generates. Labels cover the completion up to and including the end-of-turn token:
a student never trained on that token never learns to stop.
"""

from __future__ import annotations

from typing import Any

IGNORE = -100

# Used only when a tokenizer ships without a chat template (e.g. tiny test models).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ensure_chat_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def end_of_turn_ids(tokenizer) -> set[int]:
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
            ids.add(tid)
    return ids


def render_prompt(tokenizer, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_example(
    tokenizer, messages: list[dict], completion: str, max_len: int, prefill: str = ""
) -> dict[str, Any] | None:
    """-> {input_ids, labels} (lists of equal length), or None when it would not fit in max_len.

    `prefill`: text the assistant turn starts with. It belongs to the prompt (tokenised with it, as the
    evaluator does at inference) and is not trained; the completion continues after it."""
    prompt_text = render_prompt(tokenizer, messages) + prefill
    full_text = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": prefill + completion}], tokenize=False
    )
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "chat template renders the prompt differently with and without the reply; "
            "cannot separate prompt from completion"
        )
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    comp_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    eot = end_of_turn_ids(tokenizer)
    last = max((i for i, t in enumerate(comp_ids) if t in eot), default=None)
    if last is None:  # template without an end-of-turn token: add eos so the student learns to stop
        comp_ids = comp_ids + [tokenizer.eos_token_id]
        last = len(comp_ids) - 1
    trained = comp_ids[: last + 1]
    tail = comp_ids[last + 1 :]  # e.g. the newline after <|im_end|>: kept as input, not trained
    input_ids = prompt_ids + trained + tail
    if len(input_ids) > max_len:
        return None
    labels = [IGNORE] * len(prompt_ids) + trained + [IGNORE] * len(tail)
    return {"input_ids": input_ids, "labels": labels}


def collate(examples: list[dict], pad_id: int):
    """Right-pad to the longest example. -> input_ids [B, T], attention_mask [B, T], labels [B, T]."""
    import torch

    T = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), T), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        labels[i, :n] = torch.tensor(e["labels"])
        mask[i, :n] = 1
    return ids, mask, labels
