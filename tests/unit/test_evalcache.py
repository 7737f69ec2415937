"""The baseline cache key: model files' content, the requests, the decoding, the engine version."""

import json

import pytest

from distill.eval import cache as evalcache


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_EVAL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights-v1")
    (model / "config.json").write_text(json.dumps({"a": 1}))
    (model / "README.md").write_text("a model card is not part of the model")
    return model


REQS = [{"split": "in_distribution", "problem": {"problem_id": "p1", "question": "1 + 2 ="}, "max_tokens": 8, "n": 1}]
DEC = {"backend": "vllm", "dtype": "float32", "max_model_len": 1024, "seed": 0}


def test_same_inputs_same_key_and_a_stored_entry_loads(cache):
    k = evalcache.cache_key(str(cache), REQS, DEC)
    assert k == evalcache.cache_key(str(cache), json.loads(json.dumps(REQS)), dict(DEC))
    assert evalcache.load(k) is None  # a miss
    evalcache.store(k, {"outputs": [[["3", 1, "stop"]]], "wall_s": 1.0})
    assert evalcache.load(k)["outputs"] == [[["3", 1, "stop"]]]


def test_a_changed_model_file_request_or_setting_misses(cache):
    k = evalcache.cache_key(str(cache), REQS, DEC)
    (cache / "README.md").write_text("edited card")  # not a model file: same key
    assert evalcache.cache_key(str(cache), REQS, DEC) == k
    (cache / "model.safetensors").write_bytes(b"weights-v2")  # same size, other content
    k2 = evalcache.cache_key(str(cache), REQS, DEC)
    assert k2 != k
    (cache / "config.json").write_text(json.dumps({"a": 2}))
    assert evalcache.cache_key(str(cache), REQS, DEC) != k2
    other = [{**REQS[0], "max_tokens": 9}]
    assert evalcache.cache_key(str(cache), other, DEC) != evalcache.cache_key(str(cache), REQS, DEC)
    assert evalcache.cache_key(str(cache), REQS, {**DEC, "dtype": "bfloat16"}) != evalcache.cache_key(
        str(cache), REQS, DEC
    )


def test_engine_version_is_part_of_the_key(cache, monkeypatch):
    k = evalcache.cache_key(str(cache), REQS, DEC)
    monkeypatch.setattr(evalcache, "engine_version", lambda backend: "vllm==99.0")
    assert evalcache.cache_key(str(cache), REQS, DEC) != k
