"""Resource planner: does a run's plan fit the cluster, and if not, what does not fit. Pure Python.

A plan is one Demand per stage (teacher pool, scorer pool, training workers, evaluator), each with a
replica count and the resources one replica reserves. All stages run at the same time in `distill
run`, so the cluster must hold their sum; and every single replica must fit on one node (a 2-GPU
engine cannot be split over two 1-GPU nodes; a custom resource such as `teacher_node` must exist on
some node with enough of the rest beside it).

Nodes are given as Ray reports them (`ray.nodes()`): {"Alive": bool, "Resources": {"CPU": 8, "GPU": 1,
"memory": ..., "node:10.0.0.1": 1, "teacher_node": 1}, "Labels": {"role": "teacher"}}. Only resources a
stage asks for are checked; a stage with a label selector may only use the nodes whose labels match.
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
    labels: dict[str, str] = field(default_factory=dict)  # node-label selector of each replica

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
    demands = [
        Demand("teacher", t.replicas_max, _res(t.num_cpus, t.num_gpus, t.resources), dict(t.labels)),
        Demand("scorer", s.replicas_max, _res(s.num_cpus, 0, s.resources), dict(s.labels)),
        Demand("train", tr.workers, _res(tr.num_cpus_per_worker, gpu_per_worker, tr.resources), dict(tr.labels)),
    ]
    if ev.has_suite():
        demands.append(Demand("eval", 1, _res(ev.num_cpus, ev.num_gpus, ev.resources), dict(ev.labels)))
    return demands


def label_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """Ray's label-selector semantics: 'v' equals, '!v' differs (or is absent), 'in(a,b)' is one of,
    '!in(a,b)' is none of (or absent)."""
    for key, want in selector.items():
        have = labels.get(key)
        negate = want.startswith("!")
        want = want[1:] if negate else want
        if want.startswith("in(") and want.endswith(")"):
            ok = have in [x.strip() for x in want[3:-1].split(",")]
        else:
            ok = have == want
        if ok == negate:
            return False
    return True


def _hosts(node: dict, d: Demand) -> bool:
    res = node.get("Resources", {})
    return all(res.get(k, 0.0) >= v for k, v in d.per_replica.items() if v) and label_matches(
        d.labels, node.get("Labels", {})
    )


def cluster_totals(nodes: list[dict]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for n in nodes:
        if n.get("Alive", True):
            for k, v in n.get("Resources", {}).items():
                totals[k] = totals.get(k, 0.0) + float(v)
    return totals


def _want(d: Demand) -> str:
    """One replica's demand, for people: 'CPU=4, GPU=1, label role=teacher'."""
    return ", ".join(
        [f"{k}={v:g}" for k, v in d.per_replica.items() if v] + [f"label {k}={v}" for k, v in d.labels.items()]
    )


def _shortfalls(demands: list[Demand], have: dict[str, float], where: str, have_name: str) -> list[str]:
    """Each resource the demands together need more of than `have`, as a sentence."""
    need: dict[str, float] = {}
    for d in demands:
        for k, v in d.total().items():
            need[k] = need.get(k, 0.0) + v
    out = []
    for k, v in sorted(need.items()):
        if v > have.get(k, 0.0) + 1e-9:
            parts = " + ".join(
                f"{d.stage} {d.replicas} x {d.per_replica[k]:g}" for d in demands if d.per_replica.get(k)
            )
            out.append(f"{k}{where}: the stages need {v:g} ({parts}) but {have_name} {have.get(k, 0.0):g}")
    return out


def check(demands: list[Demand], nodes: list[dict]) -> list[str]:
    """Every way the plan does not fit, as sentences naming the stage and the shortfall; [] if it fits."""
    alive = [n for n in nodes if n.get("Alive", True)]
    problems = [
        f"{d.stage}: no node can host one replica ({_want(d)})"  # a replica fits on one matching node
        for d in demands
        if d.replicas and not any(_hosts(node, d) for node in alive)
    ]
    # Stages with the same label selector share the matching nodes: their sum must fit there.
    selectors = []
    for d in demands:
        if d.labels and d.labels not in selectors:
            selectors.append(d.labels)
    for sel in selectors:
        pool = cluster_totals([n for n in alive if label_matches(sel, n.get("Labels", {}))])
        where = ",".join(f"{a}={b}" for a, b in sel.items())
        problems += _shortfalls(
            [d for d in demands if d.labels == sel], pool, f" on nodes labelled {where}", "those nodes have"
        )
    return problems + _shortfalls(demands, cluster_totals(nodes), "", "the cluster has")


def ensure_fits(cfg: RunConfig, nodes: list[dict], grown: list[dict] | None = None) -> list[str]:
    """Raise PlanError naming every shortfall, before anything is launched. `grown`: the cluster at the
    autoscaler's limits (grown_nodes), where it has one: a plan that fits only there is launched, and
    the stages that wait for scale-up are returned (their replicas start as nodes join)."""
    demands = plan(cfg)
    problems = check(demands, nodes)
    if not problems:
        return []
    waiting = waiting_for_scale_up(demands, nodes, grown)
    if waiting is not None:
        return waiting
    if grown is not None:
        raise PlanError(
            "the run does not fit the cluster, even grown to its autoscaler's limits:\n  "
            + "\n  ".join(check(demands, grown))
        )
    raise PlanError("the run does not fit the cluster:\n  " + "\n  ".join(problems))


def waiting_for_scale_up(demands: list[Demand], nodes: list[dict], grown: list[dict] | None) -> list[str] | None:
    """For a plan that does not fit `nodes`: the stages that wait for the autoscaler when it fits `grown`
    (the cluster at its limits), else None (no autoscaler, or too big even then)."""
    if grown is None or check(demands, grown):
        return None
    return [d.stage for d in demands if check([d], nodes)] or sorted({d.stage for d in demands})


def embedded_node(num_cpus: int) -> dict:
    """The one node of an embedded `ray.init(num_cpus=...)`, shaped like `ray.nodes()`: Ray adds the GPUs
    it detects (CUDA_VISIBLE_DEVICES, else all)."""
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count()
    except Exception:  # a CPU-only torch build, or none: no GPUs
        pass
    return {
        "NodeID": "embedded",
        "Alive": True,
        "Labels": {},
        "Resources": {"CPU": float(num_cpus), **({"GPU": float(gpus)} if gpus else {})},
    }


def _declared(node: dict) -> dict[str, float]:
    """A node's CPUs, GPUs and custom resources (what a node type declares), without Ray's own entries."""
    return {
        k: float(v)
        for k, v in node.get("Resources", {}).items()
        if k not in ("memory", "object_store_memory") and not k.startswith(("node:", "accelerator_type:"))
    }


def grown_nodes(cluster_config, alive: list[dict]) -> list[dict] | None:
    """The cluster at the autoscaler's limits, as `ray.nodes()`-shaped dicts: the alive nodes, plus each
    node group's missing nodes up to its max_count (the autoscaler's ClusterConfig in the GCS,
    `ray._private.state.state.get_cluster_config()`; None without an autoscaler). A node belongs to a
    group when its declared resources (CPU, GPU, custom; not Ray's memory or accelerator entries) are the
    group's. The config carries no node labels: a group's new nodes take those of an alive node of the
    group, else none -- a label selector is met only by a type already seen alive. The cluster-wide cap
    (`max_resources`, the launcher's max_workers) is not applied: an optimistic bound."""
    if cluster_config is None or not cluster_config.node_group_configs:
        return None
    nodes = list(alive)  # what is up stays (a node outside every group too)
    for g in cluster_config.node_group_configs:
        res = _declared({"Resources": dict(g.resources)})
        twins = [n for n in alive if _declared(n) == res]  # alive nodes of this type (same declared resources)
        limit = g.max_count if g.max_count >= 0 else len(twins) + 64  # -1: no limit; 64 more stand for it
        labels = dict(twins[0].get("Labels", {})) if twins else {}
        nodes += [
            {"NodeID": f"{g.name}-new-{i}", "Alive": True, "Resources": dict(res), "Labels": labels}
            for i in range(max(0, limit - len(twins)))
        ]
    return nodes


STANDARD_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


def node_view(node: dict) -> dict:
    """What a user needs to recognise a node: id, address, labels and custom resources."""
    res = node.get("Resources", {})
    return {
        "node_id": node.get("NodeID"),
        "address": node.get("NodeManagerAddress"),
        "labels": {k: v for k, v in node.get("Labels", {}).items() if not k.startswith("ray.io/")},
        "custom_resources": {
            k: v
            for k, v in res.items()
            if k not in STANDARD_RESOURCES and not k.startswith(("node:", "accelerator_type:"))
        },
        "head": "node:__internal_head__" in res,
    }


def observed_placement(events: dict[str, list[dict]], nodes: list[dict]) -> dict[str, list[dict]]:
    """Where each stage actually ran, from its events' `node` ids: per stage, one entry per node with
    the node's labels/custom resources, how many events it emitted and which actors emitted them."""
    by_id = {n.get("NodeID"): n for n in nodes}
    out: dict[str, list[dict]] = {}
    for stage, evs in events.items():
        per: dict[str, dict] = {}
        for e in evs:
            node = e.get("node")
            if not node:
                continue
            p = per.setdefault(node, {**node_view(by_id.get(node, {"NodeID": node})), "events": 0, "actors": []})
            p["events"] += 1
            if e.get("actor") and e["actor"] not in p["actors"]:
                p["actors"].append(e["actor"])
        if per:
            out[stage] = sorted(per.values(), key=lambda p: -p["events"])
    return out


# -- clusters described by files (before any node exists) ---------------------------------------------
def _labels_arg(s: str | None) -> dict[str, str]:
    """`ray start --labels` syntax: "k1=v1,k2=v2"."""
    return dict(kv.split("=", 1) for kv in s.split(",") if kv) if s else {}


def nodes_from_launcher(cfg: dict) -> list[dict]:
    """A Ray cluster launcher YAML (already parsed) as `ray.nodes()`-shaped dicts: the head, and every
    worker node type at its max_workers -- the largest cluster the autoscaler may build."""
    nodes = []
    types = cfg.get("available_node_types", {})
    for name, t in types.items():
        count = 1 if name == cfg.get("head_node_type") else int(t.get("max_workers", 0))
        res = {k: float(v) for k, v in t.get("resources", {}).items()}
        nodes += [
            {"NodeID": f"{name}-{i}", "Alive": True, "Resources": dict(res), "Labels": dict(t.get("labels", {}))}
            for i in range(count)
        ]
    return nodes


def cluster_config_from_launcher(cfg: dict):
    """A launcher YAML's worker node types as the autoscaler's ClusterConfig (what grown_nodes reads):
    one node group per type but the head's, with its declared resources and min/max_workers (a type
    without max_workers takes the cluster's, as Ray's autoscaler fills it). Left out, since their
    nodes' size is unknown or not expressible: a type without declared resources (the launcher fills
    them from the instance type at runtime) and one with a fractional amount (the config's counts are
    integers). Zero amounts are dropped: an alive node does not list them either."""
    from ray.core.generated import autoscaler_pb2

    cc = autoscaler_pb2.ClusterConfig()
    for name, t in (cfg.get("available_node_types") or {}).items():
        declared = {k: float(v) for k, v in (t.get("resources") or {}).items() if k != "object_store_memory"}
        res = {k: int(v) for k, v in declared.items() if v}
        if name == cfg.get("head_node_type") or not res or any(v != int(v) for v in declared.values()):
            continue
        g = cc.node_group_configs.add()
        g.name, g.min_count = name, int(t.get("min_workers", 0))
        g.max_count = int(t.get("max_workers", cfg.get("max_workers", 0)))
        g.resources.update(res)
    return cc


def nodes_from_kuberay(manifest: dict) -> list[dict]:
    """A KubeRay RayJob or RayCluster manifest as `ray.nodes()`-shaped dicts: the head group and every
    worker group at maxReplicas. Resources come from rayStartParams (num-cpus, num-gpus, resources,
    labels) and, where those are absent, from the Ray container's limits."""
    import json

    spec = manifest["spec"]
    spec = spec.get("rayClusterSpec", spec)
    groups = [("head", 1, spec["headGroupSpec"])]
    groups += [
        (g["groupName"], int(g.get("maxReplicas", g.get("replicas", 1))), g) for g in spec.get("workerGroupSpecs", [])
    ]
    nodes = []
    for name, count, g in groups:
        params = g.get("rayStartParams", {})
        limits = g["template"]["spec"]["containers"][0].get("resources", {}).get("limits", {})
        cpus = params.get("num-cpus", limits.get("cpu", 0))
        gpus = params.get("num-gpus", limits.get("nvidia.com/gpu", 0))
        res = {"CPU": float(cpus), **({"GPU": float(gpus)} if float(gpus) else {})}
        if params.get("resources"):
            res.update(
                {k: float(v) for k, v in json.loads(params["resources"].strip("'\"").replace('\\"', '"')).items()}
            )
        nodes += [
            {
                "NodeID": f"{name}-{i}",
                "Alive": True,
                "Resources": dict(res),
                "Labels": _labels_arg(params.get("labels")),
            }
            for i in range(count)
        ]
    return nodes


def describe(demands: list[Demand], nodes: list[dict]) -> str:
    """The plan and the cluster as a table for people (`distill plan`)."""
    lines = ["stage      replicas  per replica", "-" * 60]
    for d in demands:
        lines.append(f"{d.stage:<10} {d.replicas:>8}  {_want(d)}")
    totals = cluster_totals(nodes)
    shown = {
        k: v for k, v in totals.items() if k not in ("memory", "object_store_memory") and not k.startswith("node:")
    }
    lines.append(
        f"cluster: {sum(1 for n in nodes if n.get('Alive', True))} node(s); "
        + ", ".join(f"{k}={v:g}" for k, v in sorted(shown.items()))
    )
    return "\n".join(lines)


# ------------------------------------------------------------------ the student's training memory


def train_memory_gib(
    n_params: float,
    layers: int,
    hidden: int,
    vocab: int,
    tokens: int,
    label_tokens: int,
    packing: bool,
    checkpointing: bool,
    bf16: bool,
    chunk: int = 1024,
) -> dict[str, float]:
    """Estimated peak memory of one training worker (GiB), by part. A planning figure, not a measurement:
    - state: fp32 master weights, fp32 grads, AdamW's two moments = 16 bytes/param (+ 2 for bf16 copies);
    - activations kept for backward: ~34 bytes per token, layer and hidden unit in bf16 (Korthikanti et
      al. 2022, attention by SDPA/flash: no score matrix), or with checkpointing the layers' inputs
      (2 bytes) plus one layer's full set;
    - logits: without packing, [tokens x vocab] in the compute dtype plus the loss's fp32 copy and
      log-softmax (4 + 4 bytes) and their grads; packed, only the label positions' logits (and grad)
      and one fp32 chunk of them."""
    gib = 2**30
    act_b = 2 if bf16 else 4
    state = n_params * (16 + (2 if bf16 else 0))
    per_layer = 34 / 2 * act_b * tokens * hidden
    acts = (layers * act_b * tokens * hidden + per_layer) if checkpointing else layers * per_layer
    if packing:
        logits = 2 * label_tokens * vocab * act_b + min(chunk, label_tokens) * vocab * 8
    else:
        logits = 2 * tokens * vocab * (act_b + 8)
    parts = {"state": state / gib, "activations": acts / gib, "logits": logits / gib}
    return {**{k: round(v, 1) for k, v in parts.items()}, "total": round(sum(parts.values()), 1)}


def student_memory(cfg: RunConfig) -> dict | None:
    """`train_memory_gib` for the recipe's student at its longest micro-batch (batch_size x max_seq_len
    tokens, half of them labels), from the model's config.json; None where that config is not readable
    here (a hub model not yet downloaded, offline)."""
    t = cfg.train
    try:
        from transformers import AutoConfig

        from distill.models import resolve_model

        c = AutoConfig.from_pretrained(
            resolve_model(t.student, auto_fetch=False), trust_remote_code=t.trust_remote_code, local_files_only=True
        )  # planning never downloads
        c = getattr(c, "text_config", c)
        h, layers, vocab, inter = c.hidden_size, c.num_hidden_layers, c.vocab_size, c.intermediate_size
        kv = getattr(c, "num_key_value_heads", c.num_attention_heads) * getattr(
            c, "head_dim", h // c.num_attention_heads
        )
    except Exception:  # no config here: the plan says so instead of guessing
        return None
    n_params = layers * (2 * h * h + 2 * h * kv + 3 * h * inter) + vocab * h * (1 if c.tie_word_embeddings else 2)
    tokens = t.batch_size * t.max_seq_len
    bf16 = t.bf16 if t.bf16 is not None else t.use_gpu
    est = train_memory_gib(n_params, layers, h, vocab, tokens, tokens // 2, t.packing, t.gradient_checkpointing, bf16)
    return {"params_m": round(n_params / 1e6), "tokens_per_micro_batch": tokens, **est}
