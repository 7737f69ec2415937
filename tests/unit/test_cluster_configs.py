"""Every YAML the project ships parses and validates: recipes against the config model, the Ray cluster
launcher file against Ray's own schema, the KubeRay RayJob against what KubeRay requires and what the
recipe asks of it; and the `gpu` recipe fits both clusters by the planner."""

import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

from distill.cluster.planner import check, nodes_from_kuberay, nodes_from_launcher, plan
from distill.config import RECIPE_DIR, load_config

REPO = Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "cluster" / "ray-cluster.yaml"
RAYJOB = REPO / "cluster" / "kuberay-rayjob.yaml"


def test_every_shipped_yaml_parses_and_every_recipe_validates():
    files = sorted(REPO.glob("cluster/*.yaml")) + sorted(RECIPE_DIR.glob("*.yaml"))
    assert {p.name for p in files} >= {"ray-cluster.yaml", "kuberay-rayjob.yaml", "gpu.yaml", "smoke.yaml"}
    for p in files:
        assert isinstance(yaml.safe_load(p.read_text()), dict), p
    for p in RECIPE_DIR.glob("*.yaml"):
        load_config(p.stem)


def test_launcher_yaml_passes_rays_schema_and_places_stages_by_label():
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load(LAUNCHER.read_text())
    validate_config(prepare_config(raw))  # Ray's own json-schema of cluster launcher configs
    types = raw["available_node_types"]
    assert raw["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}")
    assert types["teacher_gpu"]["labels"] == {"role": "teacher"} and types["trainer_gpu"]["labels"] == {
        "role": "trainer"
    }
    assert "GPU" not in types[raw["head_node_type"]]["resources"]
    # token authentication on every node, the token shipped to each, the dashboard on loopback only
    starts = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    assert all(c.startswith("RAY_AUTH_MODE=token ray start") for c in starts if "ray start" in c)
    assert raw["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "--dashboard-host=127.0.0.1" in " ".join(raw["head_start_ray_commands"])


def test_rayjob_manifest_is_a_complete_rayjob_for_the_gpu_recipe():
    m = yaml.safe_load(RAYJOB.read_text())
    assert m["apiVersion"] == "ray.io/v1" and m["kind"] == "RayJob" and m["metadata"]["name"]
    spec = m["spec"]
    assert spec["entrypoint"].startswith("distill run gpu")
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict)
    rc = spec["rayClusterSpec"]
    assert rc["rayVersion"] == ray.__version__
    assert rc["authOptions"] == {"mode": "token"}  # KubeRay makes the token and sets it on every container
    head = rc["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert {p["containerPort"] for p in head["ports"]} >= {6379, 8265}
    groups = {g["groupName"]: g for g in rc["workerGroupSpecs"]}
    assert set(groups) == {"teacher-gpu", "trainer-gpu"}
    for name, g in groups.items():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        c = g["template"]["spec"]["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == g["rayStartParams"]["num-gpus"]  # Ray sees what k8s gives
        assert all(isinstance(v, str) for v in g["rayStartParams"].values())  # KubeRay wants strings
        mounts = {v["mountPath"] for v in c["volumeMounts"]}
        assert "/mnt/shared" in mounts, f"{name}: the shared output_dir must be mounted on every node"
    assert groups["teacher-gpu"]["rayStartParams"]["labels"] == "role=teacher"
    assert groups["trainer-gpu"]["rayStartParams"]["labels"] == "role=trainer"


@pytest.mark.parametrize("path,reader", [(LAUNCHER, nodes_from_launcher), (RAYJOB, nodes_from_kuberay)])
def test_gpu_recipe_fits_each_cluster_and_scaling_the_teacher_is_one_field(path, reader):
    nodes = reader(yaml.safe_load(path.read_text()))
    cfg = load_config("gpu")
    assert cfg.teacher.num_gpus == 1 and cfg.train.use_gpu and cfg.output_dir.startswith("/")
    assert check(plan(cfg), nodes) == []
    teacher_nodes = [n for n in nodes if n["Labels"].get("role") == "teacher"]
    gpus = sum(n["Resources"]["GPU"] for n in teacher_nodes)
    assert gpus == 8
    # Scaling the teacher pool: one field; only the teacher's demand changes, and the planner says
    # exactly when the pool outgrows its nodes (the evaluator shares them).
    bigger = load_config("gpu", ["teacher.replicas_max=7"])
    before, after = plan(cfg), plan(bigger)
    assert [d for d in before if d.stage != "teacher"] == [d for d in after if d.stage != "teacher"]
    assert check(after, nodes) == []
    too_big = plan(load_config("gpu", ["teacher.replicas_max=8"]))
    assert check(too_big, nodes)[0] == (
        "GPU on nodes labelled role=teacher: the stages need 9 (teacher 8 x 1 + eval 1 x 1) but those nodes have 8"
    )


def test_distill_plan_command_exits_2_naming_the_shortfall():
    ok = subprocess.run(
        [sys.executable, "-m", "distill.cli", "plan", "gpu", "--cluster", str(RAYJOB)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and ok.stdout.strip().endswith("fits"), ok.stdout + ok.stderr
    assert "teacher           6  CPU=4, GPU=1, label role=teacher" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "distill.cli", "plan", "gpu", "--cluster", str(LAUNCHER), "--set", "train.workers=5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "GPU on nodes labelled role=trainer: the stages need 5 (train 5 x 1) but those nodes have 4" in bad.stdout


def test_kuberay_custom_resources_in_ray_start_params_are_read():
    m = yaml.safe_load(RAYJOB.read_text())
    g = m["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    g["rayStartParams"]["resources"] = '"{\\"teacher_node\\": 4}"'  # KubeRay's quoting of a JSON string
    nodes = nodes_from_kuberay(m)
    assert [n["Resources"].get("teacher_node") for n in nodes if n["NodeID"].startswith("teacher-gpu")] == [4.0, 4.0]
    assert nodes[0]["NodeID"] == "head-0" and nodes[0]["Resources"] == {"CPU": 16.0}
