"""One evaluator engine for a run's student family: weights swapped in place give exactly what a
freshly started engine on that checkpoint gives (real vLLM CPU engine, no Ray)."""

import gc

import pytest

from distill.config import load_config
from distill.data.sources import load_problems
from distill.eval.suite import build_requests
from distill.pipelines.evaluate import EvalEngine, evaluator_options

pytestmark = pytest.mark.e2e


def _save_variant(src: str, dst, seed: int, **overrides) -> str:
    """A model of `src`'s tokenizer with fresh random weights (and optionally other shapes)."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    cfg = AutoConfig.from_pretrained(src)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return str(dst)


def test_engine_reloads_weights_in_place_as_a_fresh_engine_would(tiny_model, tmp_path):
    cfg = load_config("smoke", ["eval.max_tokens=12", "eval.max_model_len=256"])
    problems = load_problems(cfg.sources).problems[:6]
    reqs = build_requests({"problems": {"in_distribution": problems}}, cfg.eval, cfg.prompt, ["in_distribution"])
    # tied embeddings, as SmolLM2's: the case vLLM's own reload gets wrong (see retie_lm_head)
    other = _save_variant(tiny_model, tmp_path / "other", seed=1)
    opts = evaluator_options(cfg.eval, cfg.seed)

    def texts(res):
        return [o[0][0] for o in res["outputs"]]

    eng = EvalEngine(opts)
    try:
        a = eng.evaluate_dir(tiny_model, reqs)
        b = eng.evaluate_dir(other, reqs)  # same shapes: swapped in place
    finally:
        eng.close()
    fresh = EvalEngine(opts)
    try:
        b_fresh = fresh.evaluate_dir(other, reqs)
    finally:
        fresh.close()
        gc.collect()
    assert [h["engine"] for h in eng.history()] == ["started", "reloaded"]
    assert texts(b) == texts(b_fresh)  # in place == a fresh engine on that checkpoint
    assert texts(b) != texts(a)  # ... and the weights really changed
    assert all(r["tokens"] > 0 for r in (a, b))
    assert eng.history()[1]["load_s"] < eng.history()[0]["load_s"] / 3  # a reload is a fraction of a start


def test_only_the_same_architecture_is_swapped_in(tiny_model, tmp_path):
    from distill.actors.evaluator import same_architecture

    assert same_architecture(tiny_model, _save_variant(tiny_model, tmp_path / "same", seed=3))
    assert not same_architecture(
        tiny_model, _save_variant(tiny_model, tmp_path / "wider", seed=2, intermediate_size=512)
    )
    assert not same_architecture(tiny_model, str(tmp_path / "missing"))
