"""Metrics mirrored to shared storage by fsspec URL: what is copied, when, and what is not."""

import os
import time

import pytest

from distill.config import ConfigError, load_config
from distill.mirror import Mirror


def _run_dir(tmp_path):
    run = tmp_path / "runs" / "r1"
    (run / "tensorboard").mkdir(parents=True)
    (run / "store" / "traces").mkdir(parents=True)
    (run / "summary.json").write_text('{"a": 1}')
    (run / "tensorboard" / "events.out.tfevents.1").write_bytes(b"x" * 10)
    (run / "store" / "traces" / "part-1.parquet").write_bytes(b"big")
    (run / "student").mkdir()
    (run / "student" / "model.safetensors").write_bytes(b"weights")
    return run


def test_changed_metric_files_are_copied_and_nothing_else(tmp_path):
    run = _run_dir(tmp_path)
    m = Mirror(f"file://{tmp_path}/shared", run, "r1", every_s=3600)
    assert m.url == f"file://{tmp_path}/shared/r1" and (tmp_path / "shared" / "r1").is_dir()  # made at once
    assert m.sync() == 2
    dest = tmp_path / "shared" / "r1"
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "summary.json",
        "tensorboard/events.out.tfevents.1",
    ]  # not the store, not the student
    assert m.sync() == 0  # unchanged files are not copied again
    ev = run / "tensorboard" / "events.out.tfevents.1"
    ev.write_bytes(b"x" * 20)
    os.utime(ev, ns=(time.time_ns(), time.time_ns() + 10**9))
    (run / "report.html").write_text("<html>")
    assert m.sync() == 2 and (dest / "tensorboard" / "events.out.tfevents.1").read_bytes() == b"x" * 20
    assert (dest / "report.html").read_text() == "<html>"


def test_background_passes_and_the_final_pass(tmp_path):
    run = _run_dir(tmp_path)
    m = Mirror(str(tmp_path / "plain-path"), run, "r1", every_s=0.2).start()  # a plain path works too
    t_end = time.time() + 10
    while not (tmp_path / "plain-path" / "r1" / "summary.json").exists() and time.time() < t_end:
        time.sleep(0.1)
    assert (tmp_path / "plain-path" / "r1" / "summary.json").read_text() == '{"a": 1}'
    (run / "summary.json").write_text('{"a": 2, "final": true}')
    os.utime(run / "summary.json", ns=(time.time_ns(), time.time_ns() + 10**9))
    m.close()
    assert not m._thread.is_alive()
    assert (tmp_path / "plain-path" / "r1" / "summary.json").read_text() == '{"a": 2, "final": true}'


def test_storage_and_placement_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"storage\.uri: .*no protocol 'nosuch'"):
        load_config("smoke", ["storage.uri=nosuch://bucket/x"])
    with pytest.raises(ConfigError, match=r"train\.resources: .*\['GPU'\] must be custom resources"):
        load_config("smoke", ["train.resources.GPU=1"])
    with pytest.raises(ConfigError, match=r"scorer\.labels\.role"):
        load_config("smoke", ["scorer.labels.role=[a, b]"])
    cfg = load_config(
        "smoke", ["storage.uri=s3://bucket/distill", "eval.labels.role=trainer", "scorer.resources.cpu_node=0.5"]
    )
    assert cfg.storage.uri == "s3://bucket/distill" and cfg.eval.labels == {"role": "trainer"}


def test_a_ray_job_refuses_a_relative_output_dir(monkeypatch):
    from distill.pipelines.run import check_output_dir

    cfg = load_config("smoke")
    check_output_dir(cfg)  # outside a job: runs/ under the current directory is fine
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    with pytest.raises(ConfigError, match="output_dir: 'runs' is relative, and this is a Ray job"):
        check_output_dir(cfg)
    check_output_dir(load_config("smoke", ["output_dir=/mnt/shared/runs"]))
