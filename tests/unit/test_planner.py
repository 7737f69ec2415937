"""The resource planner on hand-made clusters: what fits, and what it says when something does not."""

import os
from pathlib import Path

import pytest
import yaml

from distill.cluster.planner import Demand, check, cluster_totals, plan
from distill.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _node(cpu, gpu=0, **custom):
    res = {"CPU": cpu, "memory": 1e10, **custom}
    if gpu:
        res["GPU"] = gpu
    return {"Alive": True, "Resources": res}


def test_shipped_recipes_fit_the_embedded_ray():
    for recipe in ("smoke", "quickstart"):
        cfg = load_config(recipe)
        embedded = [_node(cfg.ray.num_cpus)]
        assert check(plan(cfg), embedded) == [], recipe
        assert {d.stage for d in plan(cfg)} == {"teacher", "scorer", "train", "eval"}


def test_gpu_sum_over_stages_is_checked_and_explained():
    cfg = load_config(
        "quickstart",
        ["teacher.num_gpus=1", "teacher.replicas_max=3", "train.use_gpu=true", "train.workers=2", "eval.num_gpus=1"],
    )
    nodes = [_node(16, 4), _node(16, 0)]
    problems = check(plan(cfg), nodes)
    assert problems == ["GPU: the stages need 6 (teacher 3 x 1 + train 2 x 1 + eval 1 x 1) but the cluster has 4"]
    cfg.teacher.replicas_max = 1  # scaling the teacher pool is the only change needed
    assert check(plan(cfg), nodes) == []


def test_a_replica_must_fit_on_one_node():
    two_one_gpu_nodes = [_node(8, 1), _node(8, 1)]
    assert check([Demand("teacher", 1, {"CPU": 1, "GPU": 2})], two_one_gpu_nodes) == [
        "teacher: no node can host one replica (CPU=1, GPU=2)"
    ]


def test_custom_resources_place_stages_on_labelled_nodes():
    nodes = [_node(4, teacher_node=1), _node(4, train_node=1), {"Alive": False, "Resources": {"CPU": 64}}]
    assert cluster_totals(nodes)["CPU"] == 8  # dead nodes do not count
    ok = [Demand("teacher", 1, {"CPU": 1, "teacher_node": 0.5}), Demand("train", 1, {"CPU": 1, "train_node": 0.5})]
    assert check(ok, nodes) == []
    bad = [Demand("teacher", 3, {"CPU": 1, "teacher_node": 0.5})]
    assert check(bad, nodes) == ["teacher_node: the stages need 1.5 (teacher 3 x 0.5) but the cluster has 1"]
    assert check([Demand("train", 1, {"CPU": 1, "gpu_node": 1})], nodes) == [
        "train: no node can host one replica (CPU=1, gpu_node=1)",
        "gpu_node: the stages need 1 (train 1 x 1) but the cluster has 0",
    ]


def test_ensure_fits_raises_with_every_shortfall():
    import pytest

    from distill.cluster.planner import PlanError, ensure_fits

    cfg = load_config("smoke", ["teacher.num_gpus=1"])
    with pytest.raises(PlanError, match="does not fit the cluster:\n  teacher: no node can host one replica"):
        ensure_fits(cfg, [_node(8)])
    assert ensure_fits(cfg, [_node(8, 1)]) == []  # fits now: nothing waits


def _labelled(cpu, gpu, **labels):
    return {**_node(cpu, gpu), "Labels": labels}


def test_label_selectors_follow_rays_syntax():
    from distill.cluster.planner import label_matches

    node = {"role": "teacher", "zone": "a"}
    assert label_matches({}, node) and label_matches({"role": "teacher"}, node)
    assert not label_matches({"role": "trainer"}, node) and not label_matches({"gpu": "a10g"}, node)
    assert label_matches({"role": "!trainer"}, node) and not label_matches({"role": "!teacher"}, node)
    assert label_matches({"role": "!trainer", "gpu": "!x"}, node)  # absent counts as "not x"
    assert label_matches({"zone": "in(a, b)"}, node) and not label_matches({"zone": "in(b,c)"}, node)
    assert label_matches({"zone": "!in(b,c)"}, node) and not label_matches({"zone": "!in(a)"}, node)


def test_stages_sharing_a_label_selector_must_fit_together_on_those_nodes():
    cfg = load_config(
        "quickstart",
        [
            "teacher.num_gpus=1",
            "teacher.replicas_max=3",
            "teacher.labels.role=teacher",
            "eval.num_gpus=1",
            "eval.labels.role=teacher",
            "train.use_gpu=true",
            "train.labels.role=trainer",
        ],
    )
    nodes = [_labelled(16, 4, role="teacher"), _labelled(16, 2, role="trainer")]
    assert check(plan(cfg), nodes) == []  # 3 + 1 GPUs on the teacher node, 1 on the trainer node
    cfg.teacher.replicas_max = 4  # 5 GPUs wanted where there are 4, though the cluster has 6 in all
    assert check(plan(cfg), nodes) == [
        "GPU on nodes labelled role=teacher: the stages need 5 (teacher 4 x 1 + eval 1 x 1) but those nodes have 4"
    ]
    cfg.train.labels = {"role": "gpu-box"}
    assert "train: no node can host one replica (CPU=1, GPU=1, label role=gpu-box)" in check(plan(cfg), nodes)


def test_observed_placement_names_each_stages_nodes():
    from distill.cluster.planner import observed_placement

    nodes = [
        {
            "NodeID": "n1",
            "NodeManagerAddress": "10.0.0.1",
            "Alive": True,
            "Resources": {"CPU": 4, "teacher_node": 1, "node:10.0.0.1": 1},
            "Labels": {"role": "teacher", "ray.io/node-id": "n1"},
        },
        {
            "NodeID": "n2",
            "NodeManagerAddress": "10.0.0.2",
            "Alive": False,
            "Resources": {"CPU": 4, "node:__internal_head__": 1},
            "Labels": {},
        },
    ]
    events = {
        "teacher": [{"actor": "t@h:1", "node": "n1"}, {"actor": "t@h:2", "node": "n1"}],
        "train": [{"actor": "w@h:3", "node": "n2"}, {"actor": "w@h:3", "node": "n2"}, {"actor": "x"}],
    }
    got = observed_placement(events, nodes)
    assert got["teacher"] == [
        {
            "node_id": "n1",
            "address": "10.0.0.1",
            "labels": {"role": "teacher"},
            "custom_resources": {"teacher_node": 1},
            "head": False,
            "events": 2,
            "actors": ["t@h:1", "t@h:2"],
        }
    ]
    assert got["train"][0]["node_id"] == "n2" and got["train"][0]["head"] and got["train"][0]["events"] == 2


def test_plan_without_a_cluster_checks_the_embedded_ray_and_joins_nothing(capsys, monkeypatch):
    from distill.cli import main

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert main(["plan", "smoke"]) == 0
    out = capsys.readouterr().out
    assert "embedded Ray" in out and "fits" in out and "joined the Ray cluster" not in out
    assert main(["plan", "smoke", "--set", "teacher.num_gpus=1"]) == 2
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "teacher" in out


def test_student_memory_estimate_by_hand_and_the_gpu_recipe_fits_24_gb():
    from distill.cluster.planner import student_memory, train_memory_gib

    gib = 2**30
    # by hand: 10 params, 2 layers, hidden 4, vocab 8, 6 tokens (3 labels), fp32, nothing saved
    e = train_memory_gib(10, 2, 4, 8, 6, 3, packing=False, checkpointing=False, bf16=False)
    assert e["state"] == round(160 / gib, 1) and e["total"] == 0.0  # bytes: far below 0.1 GiB
    big = dict(n_params=1e9, layers=10, hidden=1000, vocab=100_000, tokens=10_000, label_tokens=5_000, bf16=True)
    e = train_memory_gib(**big, packing=False, checkpointing=False)
    assert e["state"] == round(18e9 / gib, 1)  # 16 bytes/param fp32 state + 2 bf16 copies
    assert e["activations"] == round(10 * 34 * 10_000 * 1000 / gib, 1)
    assert e["logits"] == round(2 * 10_000 * 100_000 * 10 / gib, 1)
    ck = train_memory_gib(**big, packing=True, checkpointing=True)
    assert ck["activations"] == round((10 * 2 + 34) * 10_000 * 1000 / gib, 1)
    assert ck["logits"] == round((2 * 5_000 * 100_000 * 2 + 1024 * 100_000 * 8) / gib, 1)
    # The gpu recipe's student, Qwen2.5-0.5B-Instruct (its published config: hidden 896, 24 layers, 14 heads
    # / 2 KV heads of 64, MLP 4864, vocab 151,936, tied embeddings), 4 x 3,584 tokens, bf16 on the GPU:
    qwen = 24 * (2 * 896**2 + 2 * 896 * 128 + 3 * 896 * 4864) + 151_936 * 896
    assert round(qwen / 1e6) == 494
    plain = train_memory_gib(qwen, 24, 896, 151_936, 4 * 3584, 2 * 3584, packing=False, checkpointing=False, bf16=True)
    shipped = train_memory_gib(qwen, 24, 896, 151_936, 4 * 3584, 2 * 3584, packing=True, checkpointing=True, bf16=True)
    assert plain["total"] > 22 > shipped["total"]  # an A10G's 24 GB (22.3 GiB): only the shipped settings fit
    cfg = load_config("gpu")
    assert (
        cfg.train.packing
        and cfg.train.gradient_checkpointing
        and cfg.train.batch_size * cfg.train.max_seq_len == 4 * 3584
    )
    # the embedded student is readable here: the estimate comes from its own config.json
    m = student_memory(load_config("quickstart"))
    assert abs(m["params_m"] - 135) <= 1 and m["tokens_per_micro_batch"] == 8 * 512  # 134.5M: norms left out


def test_an_autoscaling_cluster_is_checked_at_its_limits_and_says_which_stages_wait():
    """The autoscaler's own ClusterConfig type (what Ray keeps in the GCS): a GPU group at 0 nodes now,
    up to 2; the head alive. The gpu-needing teacher waits for scale-up; beyond the limits, exit 2."""
    from ray.core.generated import autoscaler_pb2

    from distill.cluster.planner import PlanError, ensure_fits, grown_nodes

    cc = autoscaler_pb2.ClusterConfig(
        node_group_configs=[
            autoscaler_pb2.NodeGroupConfig(name="head", resources={"CPU": 8}, min_count=1, max_count=1),
            # as the launcher and KubeRay write it: memory (and an accelerator type) beside the declared resources
            autoscaler_pb2.NodeGroupConfig(
                name="gpu",
                resources={"CPU": 8, "GPU": 1, "memory": 10**10, "accelerator_type:A10G": 1},
                min_count=0,
                max_count=2,
            ),
        ]
    )
    alive = [_node(8)]
    cfg = load_config("smoke", ["teacher.num_gpus=1", "teacher.replicas_min=2", "teacher.replicas_max=2"])
    grown = grown_nodes(cc, alive)
    assert len(grown) == 3 and sum(n["Resources"].get("GPU", 0) for n in grown) == 2
    assert ensure_fits(cfg, alive, grown) == ["teacher"]  # launched; the teacher waits for the GPU nodes
    with pytest.raises(PlanError, match="even grown to its autoscaler's limits"):
        ensure_fits(
            load_config("smoke", ["teacher.num_gpus=1", "teacher.replicas_min=3", "teacher.replicas_max=3"]),
            alive,
            grown,
        )
    with pytest.raises(PlanError, match="does not fit the cluster:"):  # no autoscaler: alive nodes only
        ensure_fits(cfg, alive, grown_nodes(None, alive))
    # labels: a group takes those of an alive node of its type; a selector no alive type has is not met
    labelled = [_node(8), {**_node(8, 1), "Labels": {"role": "teacher"}}]
    assert [n.get("Labels", {}) for n in grown_nodes(cc, labelled)] == [{}, {"role": "teacher"}, {"role": "teacher"}]
    assert grown_nodes(cc, alive)[1]["Labels"] == {}  # no GPU node alive yet: its labels are unknown


def test_a_launcher_yaml_becomes_the_autoscalers_node_groups():
    """What `ray up` hands its autoscaler (--autoscaling-config): worker types with declared resources;
    the head type and a type whose size the launcher only learns from the instance type are left out."""
    from distill.cluster.planner import cluster_config_from_launcher, grown_nodes

    launcher = yaml.safe_load((ROOT / "cluster" / "ray-cluster.yaml").read_text())
    launcher["available_node_types"]["auto_sized"] = {"node_config": {}, "max_workers": 3}
    launcher["available_node_types"]["half"] = {"resources": {"CPU": 2, "slot": 0.5}, "max_workers": 3}
    launcher["available_node_types"]["cpu"] = {"resources": {"CPU": 8, "GPU": 0}}  # max_workers: the cluster's
    cc = cluster_config_from_launcher(launcher)
    groups = {g.name: (dict(g.resources), g.min_count, g.max_count) for g in cc.node_group_configs}
    assert groups["teacher_gpu"] == ({"CPU": 48, "GPU": 4, "teacher_node": 4}, 1, 2)
    assert groups["cpu"] == ({"CPU": 8}, 0, launcher["max_workers"])  # GPU: 0 dropped, as alive nodes list it
    assert "head" not in groups and "auto_sized" not in groups and "half" not in groups
    del launcher["available_node_types"]["cpu"]
    cc = cluster_config_from_launcher(launcher)
    grown = grown_nodes(cc, [_node(16)])  # the head alive, no worker yet: every group at its max_workers
    assert sum(n["Resources"].get("teacher_node", 0) for n in grown) == 8


def test_the_autoscaling_config_is_found_on_the_command_line_of_the_autoscaler_serving_this_cluster(tmp_path):
    """Ray 2.60 keeps no ClusterConfig in the GCS: the monitor's --autoscaling-config is read from /proc,
    for the monitor whose --gcs-address is this cluster's (two clusters on one machine: the right one)."""
    from distill.cluster.session import autoscaling_config_path

    def proc(pid, *args):
        (tmp_path / pid).mkdir()
        (tmp_path / pid / "cmdline").write_bytes(b"\0".join(a.encode() for a in args) + b"\0")

    proc(
        "10",
        "python",
        "-u",
        "/ray/autoscaler/_private/monitor.py",
        "--gcs-address=10.0.0.1:6379",
        "--autoscaling-config=/a/other.yaml",
    )
    proc(
        "11",
        "python",
        "-u",
        "/ray/autoscaler/v2/monitor.py",
        "--gcs-address=10.0.0.2:6379",
        "--autoscaling-config",
        "~/ray_bootstrap_config.yaml",
    )
    proc("12", "raylet", "--gcs-address=10.0.0.2:6379")
    (tmp_path / "self").mkdir()  # not a pid
    proc("13", "python", "monitor.py", "--gcs-address=10.0.0.4:6379", "--autoscaling-config=conf/a.yaml")
    (tmp_path / "13" / "cwd").symlink_to("/srv/ray")  # a relative path is the autoscaler's, not ours
    assert autoscaling_config_path("10.0.0.4:6379", str(tmp_path)) == "/srv/ray/conf/a.yaml"
    assert autoscaling_config_path("10.0.0.2:6379", str(tmp_path)) == os.path.expanduser("~/ray_bootstrap_config.yaml")
    assert autoscaling_config_path("10.0.0.1:6379", str(tmp_path)) == "/a/other.yaml"
    assert autoscaling_config_path("10.0.0.3:6379", str(tmp_path)) is None  # a fixed `ray start` cluster
