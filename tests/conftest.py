"""Shared fixtures: tiny models saved to disk by the tests (fast stand-ins where real ones are slow)."""

from __future__ import annotations

import os
import tempfile

import pytest

# The baseline cache of this test session starts empty (and subprocesses inherit it): runs in the
# tests hit only what earlier tests of the same session stored.
os.environ["DISTILL_EVAL_CACHE"] = tempfile.mkdtemp(prefix="distill-eval-cache-")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A 2-layer Llama with SmolLM2's real tokenizer and chat template, random weights, on disk.

    head_dim is 64 (128 / 2 heads): vLLM's CPU attention has no kernel for smaller heads."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)
