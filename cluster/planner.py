"""Resource planner: does a run's plan fit the cluster, and if not, what does not fit. Pure Python.

A plan is one Demand per stage (teacher pool, scorer pool, training workers, evaluator), each with a
replica count and the resources one replica reserves. All stages run at the same time in `distill
run`, so the cluster must hold their sum; and every single replica must fit on one node (a 2-GPU
engine cannot be split over two 1-GPU nodes; a custom resource such as `teacher_node` must exist on
some node with enough of the rest beside it).

Nodes are given as Ray reports them (`ray.nodes()`): {"Alive": bool, "Resources": {"CPU": 8, "GPU": 1,
"memory": ..., "node:10.0.0.1": 1, "teacher_node": 1}}. Only resources a stage asks for are checked.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from distill.config import RunConfig


class PlanError(ValueError):
    """The plan does not fit the cluster; the message lists every shortfall. The CLI exits 2 on it."""


@dataclass(frozen=True)
class Demand:
    stage: str
    replicas: int
    per_replica: dict[str, float] = field(default_factory=dict)

    def total(self) -> dict[str, float]:
        return {k: v * self.replicas for k, v in self.per_replica.items() if v}


def _res(cpus: float, gpus: float, custom: dict[str, float]) -> dict[str, float]:
    out = {"CPU": cpus, **custom}
    if gpus:
        out["GPU"] = gpus
    return out


def plan(cfg: RunConfig) -> list[Demand]:
    """The demands of `distill run` with this config (pools at their maximum size)."""
    t, s, tr, ev = cfg.teacher, cfg.scorer, cfg.train, cfg.eval
    gpu_per_worker = 1.0 if tr.use_gpu else 0.0
    demands = [Demand("teacher", t.replicas_max, _res(t.num_cpus, t.num_gpus, t.resources)),
               Demand("scorer", s.replicas_max, _res(s.num_cpus, 0, {})),
               Demand("train", tr.workers, _res(tr.num_cpus_per_worker, gpu_per_worker, {}))]
    if ev.has_suite():
        demands.append(Demand("eval", 1, _res(ev.num_cpus, ev.num_gpus, {})))
    return demands


def cluster_totals(nodes: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for n in nodes:
        if n.get("Alive", True):
            for k, v in n.get("Resources", {}).items():
                totals[k] = totals.get(k, 0.0) + float(v)
    return totals


def check(demands: list[Demand], nodes: list[dict]) -> list[str]:
    """Every way the plan does not fit, as sentences naming the stage and the shortfall; [] if it fits."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive", True)]
    problems = []
    for d in demands:  # each replica must fit on a single node
        if d.replicas and not any(all(node.get(k, 0.0) >= v for k, v in d.per_replica.items() if v) for node in alive):
            want = ", ".join(f"{k}={v:g}" for k, v in d.per_replica.items() if v)
            problems.append(f"{d.stage}: no node can host one replica ({want})")
    totals = cluster_totals(nodes)
    need: dict[str, float] = {}
    for d in demands:
        for k, v in d.total().items():
            need[k] = need.get(k, 0.0) + v
    for k, v in sorted(need.items()):
        have = totals.get(k, 0.0)
        if v > have + 1e-9:
            parts = " + ".join(f"{d.stage} {d.replicas} x {d.per_replica[k]:g}" for d in demands if d.per_replica.get(k))
            problems.append(f"{k}: the stages need {v:g} ({parts}) but the cluster has {have:g}")
    return problems


def ensure_fits(cfg: RunConfig, nodes: list[dict]) -> list[Demand]:
    """Raise PlanError naming every shortfall, before anything is launched; returns the plan."""
    demands = plan(cfg)
    problems = check(demands, nodes)
    if problems:
        raise PlanError("the run does not fit the cluster:\n  " + "\n  ".join(problems))
    return demands
