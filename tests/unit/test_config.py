import re
import subprocess
import sys

import pytest

from distill.config import ConfigError, RunConfig, apply_overrides, load_config


def test_shipped_recipes_validate():
    for name in ("smoke", "quickstart"):
        cfg = load_config(name)
        assert isinstance(cfg, RunConfig)
        assert cfg.teacher.model == "qwen2.5-coder-0.5b-instruct"
        assert cfg.train.student == "smollm2-135m-instruct"


def test_overrides_parse_yaml_scalars_and_list_indices():
    cfg = load_config(
        "smoke",
        [
            "teacher.samples=3",
            "teacher.temperature=0.5",
            "sources.0.size=5",
            'teacher.stop=["\\n\\n"]',
            "ray.address=null",
        ],
    )
    assert cfg.teacher.samples == 3 and cfg.teacher.temperature == 0.5
    assert cfg.sources[0].size == 5 and cfg.teacher.stop == ["\n\n"] and cfg.ray.address is None


@pytest.mark.parametrize(
    "override, field",
    [
        ("teacher.samples=0", "teacher.samples"),
        ("train.bogus=1", "train.bogus"),
        ("teacher.temperature=hot", "teacher.temperature"),
        ("scorer.policy=best", "scorer.policy"),
        ("sources.0.kind=web", "sources.0.kind"),
    ],
)
def test_invalid_values_name_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", [override])
    assert field in str(e.value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="replicas_min"):
        load_config("smoke", ["teacher.replicas_min=4"])
    with pytest.raises(ConfigError, match="needs `task`"):
        load_config("smoke", ["sources.0.task=null"])


def test_bad_override_syntax_and_unknown_recipe():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["teacher.samples"])
    with pytest.raises(ConfigError, match="shipped recipes"):
        load_config("no-such-recipe")


def test_set_paths_that_cannot_be_are_config_errors_naming_the_key():
    cfg = load_config("smoke", ["sources.0.size=5", "storage=null", "storage.uri=file:///tmp/m"])
    assert cfg.sources[0].size == 5 and cfg.storage.uri == "file:///tmp/m"  # a null mapping is filled in
    for bad, says in (
        ("sources.3.size=5", "'sources.3' is not an index of a 1-item list"),
        ("sources.-1.size=5", "'sources.-1' is not an index"),  # never counted from the end
        ("sources.first.size=5", "'sources.first' is not an index"),
        ("train.lr.x=1", "'train.lr' is a value"),
        ("name.x=1", "'name' is a value"),
    ):
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_config("smoke", [bad])
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "plan", "smoke", "--set", "sources.-1.size=5"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "sources.-1" in r.stderr and "Traceback" not in r.stderr


def test_yaml_file_with_unknown_top_level_key(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(
        "name: x\nsources: [{kind: reasoning_gym, task: chain_sum}]\nteacher: {model: m}\n"
        "train: {student: s}\nwhatever: 1\n"
    )
    with pytest.raises(ConfigError, match="whatever"):
        load_config(str(p))


def test_cli_exits_2_naming_the_field():
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", "smoke", "--set", "train.lr=-1"], capture_output=True, text=True
    )
    assert r.returncode == 2
    assert "train.lr" in r.stderr and "greater than 0" in r.stderr


def test_every_command_has_help():
    for argv in (
        ["--help"],
        ["run", "--help"],
        ["models", "--help"],
        ["models", "fetch", "--help"],
        ["models", "list", "--help"],
        ["eval", "--help"],
        ["sweep", "--help"],
    ):
        r = subprocess.run([sys.executable, "-m", "distill.cli", *argv], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: distill" in r.stdout


def test_missing_model_path_exits_2_before_creating_a_run(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "run",
            "smoke",
            "--set",
            "teacher.model=/no/such/model",
            "--set",
            f"output_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "model path '/no/such/model' does not exist" in r.stderr
    assert not list(tmp_path.iterdir())


def test_resume_needs_a_run_directory(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "distill.cli", "run", "--resume", str(tmp_path / "nope")], capture_output=True, text=True
    )
    assert r.returncode == 2 and "--resume: no run directory" in r.stderr
    r = subprocess.run([sys.executable, "-m", "distill.cli", "run"], capture_output=True, text=True)
    assert r.returncode == 2 and "RECIPE_OR_YAML is required" in r.stderr


def test_resume_finds_the_run_under_output_dir_and_refuses_ledger_changes(tmp_path):
    import yaml

    run = tmp_path / "out" / "smoke-20260101-000000-abcdef"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(
        yaml.safe_dump(load_config("smoke", [f"output_dir={tmp_path / 'out'}"]).model_dump())
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "distill.cli",
            "run",
            "--resume",
            run.name,
            "--set",
            f"output_dir={tmp_path / 'out'}",
            "--set",
            "teacher.temperature=0.3",
            "--set",
            "sources.0.size=9",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stderr
    assert "sources, teacher.temperature" in r.stderr and "Traceback" not in r.stderr  # found, then refused


def test_k_greedy_samples_are_rejected():
    with pytest.raises(ConfigError, match="samples=2 at temperature 0"):
        load_config("smoke", ["teacher.samples=2", "teacher.temperature=0"])
    with pytest.raises(ConfigError, match="samples=3 at temperature 0"):
        load_config("smoke", ["eval.samples=3", "eval.temperature=0"])


def test_core_bindings_given_as_numbers_are_strings():
    from distill.config import load_config

    cfg = load_config(
        "smoke",
        [
            "teacher.cpu_threads_bind=0",
            "eval.cpu_threads_bind=1",
            "teacher.replica_binds=[0, 1]",
            "teacher.replicas_max=2",
            "stages=sequential",
        ],
    )
    assert (cfg.teacher.cpu_threads_bind, cfg.eval.cpu_threads_bind, cfg.teacher.replica_binds) == (
        "0",
        "1",
        ["0", "1"],
    )
    assert cfg.stages == "sequential"


@pytest.mark.parametrize(
    "field,value",
    [
        ("teacher.cpu_threads_bind", "0-x"),
        ("eval.cpu_threads_bind", "3-1"),
        ("teacher.replica_binds", "[0, 'a']"),
        ("teacher.cpu_threads_bind", "0,,1"),
    ],
)
def test_malformed_core_binding_is_a_config_error_naming_the_field(field, value):
    from distill.config import load_config

    with pytest.raises(ConfigError, match=field.split(".")[-1]):
        load_config("smoke", [f"{field}={value}", "teacher.replicas_max=2"])


def test_well_formed_core_bindings_pass():
    from distill.config import load_config

    for bind in ("0", "0-1", "0, 2", "0-1|2-3", "auto", "nobind"):
        assert load_config("smoke", [f"teacher.cpu_threads_bind={bind}"]).teacher.cpu_threads_bind == bind


def test_a_trainer_bound_to_fewer_cores_than_its_threads_is_a_config_error():
    with pytest.raises(ConfigError, match="cpu_threads_bind"):
        load_config("smoke", ["train.cpu_threads_bind=1", "train.torch_threads=2"])
    assert load_config("smoke", ["train.cpu_threads_bind=0-1", "train.torch_threads=2"]).train.torch_threads == 2
