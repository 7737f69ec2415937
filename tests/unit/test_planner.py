"""The resource planner on hand-made clusters: what fits, and what it says when something does not."""
from cluster.planner import Demand, check, cluster_totals, plan
from distill.config import load_config


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
    cfg = load_config("quickstart", ["teacher.num_gpus=1", "teacher.replicas_max=3", "train.use_gpu=true",
                                     "train.workers=2", "eval.num_gpus=1"])
    nodes = [_node(16, 4), _node(16, 0)]
    problems = check(plan(cfg), nodes)
    assert problems == ["GPU: the stages need 6 (teacher 3 x 1 + train 2 x 1 + eval 1 x 1) but the cluster has 4"]
    cfg.teacher.replicas_max = 1  # scaling the teacher pool is the only change needed
    assert check(plan(cfg), nodes) == []


def test_a_replica_must_fit_on_one_node():
    two_one_gpu_nodes = [_node(8, 1), _node(8, 1)]
    assert check([Demand("teacher", 1, {"CPU": 1, "GPU": 2})], two_one_gpu_nodes) == [
        "teacher: no node can host one replica (CPU=1, GPU=2)"]


def test_custom_resources_place_stages_on_labelled_nodes():
    nodes = [_node(4, teacher_node=1), _node(4, train_node=1), {"Alive": False, "Resources": {"CPU": 64}}]
    assert cluster_totals(nodes)["CPU"] == 8  # dead nodes do not count
    ok = [Demand("teacher", 1, {"CPU": 1, "teacher_node": 0.5}), Demand("train", 1, {"CPU": 1, "train_node": 0.5})]
    assert check(ok, nodes) == []
    bad = [Demand("teacher", 3, {"CPU": 1, "teacher_node": 0.5})]
    assert check(bad, nodes) == ["teacher_node: the stages need 1.5 (teacher 3 x 0.5) but the cluster has 1"]
    assert check([Demand("train", 1, {"CPU": 1, "gpu_node": 1})], nodes) == [
        "train: no node can host one replica (CPU=1, gpu_node=1)",
        "gpu_node: the stages need 1 (train 1 x 1) but the cluster has 0"]


def test_ensure_fits_raises_with_every_shortfall():
    import pytest

    from cluster.planner import PlanError, ensure_fits

    cfg = load_config("smoke", ["teacher.num_gpus=1"])
    with pytest.raises(PlanError, match="does not fit the cluster:\n  teacher: no node can host one replica"):
        ensure_fits(cfg, [_node(8)])
    assert [d.stage for d in ensure_fits(cfg, [_node(8, 1)])] == ["teacher", "scorer", "train", "eval"]
