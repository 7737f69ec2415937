"""A real multi-node Ray cluster on one machine, and `distill run smoke` submitted to it as a Ray job.

Three separate `ray start` processes (cluster/local.py): a 1-CPU head, a node labelled role=teacher
(custom resource teacher_node) and a node labelled role=trainer (custom resource trainer_node). The job
is submitted with `ray job submit --working-dir <repo>` and placement comes only from config overrides:
teacher and training by node label, the evaluator by custom resource. What the job reports about where
each stage ran is checked against the node ids Ray's state API gives for the nodes this test started.

The nodes are as separate as one machine allows (`own_homes`): each its own home directory and model
cache -- the head's holds both models, the teacher node's and the trainer node's only the teacher, each
at its own path, so the driver's resolved paths exist nowhere else and the student must be fetched on
the node that trains it -- and token authentication made as a user makes it (`ray get-auth-token
--generate`, the file copied to every node), not handed to the processes by the test.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from distill.cluster.local import NodeSpec, can_hide_homes, local_cluster
from distill.config import load_config

pytestmark = [pytest.mark.ray, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv whose `ray` and `distill` the cluster runs


_SMOKE = load_config("smoke")
TEACHER, STUDENT = _SMOKE.teacher.model, _SMOKE.train.student


@pytest.fixture(scope="module")
def cluster():
    if not can_hide_homes():
        pytest.skip("nodes with their own homes need mount namespaces (`unshare --mount`: root or CAP_SYS_ADMIN)")
    # The head has room for no stage that asks for a label or a custom resource.
    with local_cluster(
        [
            NodeSpec(2, {"role": "teacher"}, {"teacher_node": 1}, models=(TEACHER,)),
            NodeSpec(4, {"role": "trainer"}, {"trainer_node": 4}, models=(TEACHER,)),
        ],
        head_cpus=1,
        bin_dir=BIN,
        own_homes=True,
        head_models=(TEACHER, STUDENT),
    ) as c:
        yield c


def _cache(home: Path) -> Path:
    return home / ".cache" / "distill" / "models"


def test_the_cluster_takes_only_the_token_a_user_made(cluster, tmp_path):
    """Auth is on from the token file `ray get-auth-token --generate` wrote, not from an env var: the same
    query is answered from the head's home and refused from a home without the token."""
    assert "RAY_AUTH_TOKEN" not in cluster.env and cluster.env["RAY_AUTH_MODE"] == "token"
    head, *others = cluster.homes
    token = (head / ".ray" / "auth_token").read_text()
    assert len(token.strip()) >= 32 and all((h / ".ray" / "auth_token").read_text() == token for h in others)
    query = [str(BIN / "ray"), "list", "nodes", "--address", cluster.dashboard, "--format", "json"]
    ok = subprocess.run(query, env=cluster.env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and len(json.loads(ok.stdout)) == 3, ok.stderr[-2000:]
    stranger = subprocess.run(query, env={**cluster.env, "HOME": str(tmp_path)}, capture_output=True, text=True)
    assert stranger.returncode != 0, "a client without the token was let in"


def _job_info(dashboard: str, job_id: str, env: dict) -> dict:
    """Status, runtime_env and logs of a job, from Ray's job client (run with the cluster's token)."""
    code = (
        "import json, sys; from ray.job_submission import JobSubmissionClient as C; c = C(sys.argv[1]); "
        "i = c.get_job_info(sys.argv[2]); print(json.dumps({'status': str(i.status), "
        "'runtime_env': i.runtime_env, 'logs': c.get_job_logs(sys.argv[2])}))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code, dashboard, job_id], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_smoke_via_ray_job_submit_places_each_stage_on_its_node(cluster, tmp_path):
    out, shared = tmp_path / "runs", tmp_path / "shared-metrics"
    assert not (_cache(cluster.homes[2]) / STUDENT).exists()  # the trainer node starts without the student
    job_id = f"distill-multinode-{uuid.uuid4().hex[:8]}"
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--working-dir",
        str(REPO),
        "--submission-id",
        job_id,
        # as the shipped RayJob and gpu.yaml do: a job env var that distill also sets for its workers
        "--runtime-env-json",
        json.dumps({"env_vars": {"HF_HUB_OFFLINE": "1", "DISTILL_JOB_MARK": "x"}}),
        "--",
        "distill",
        "run",
        "smoke",
        "--set",
        f"output_dir={out}",
        "--set",
        f"storage.uri=file://{shared}",
        "--set",
        "teacher.labels.role=teacher",
        "--set",
        "train.labels.role=trainer",
        "--set",
        "eval.resources.trainer_node=1",
        # A smaller suite than the recipe's: placement, not evaluation, is under test here.
        "--set",
        "eval.related=[]",
        "--set",
        "eval.prompt_styles={}",
        "--set",
        "eval.difficulty_shift=[]",
        "--set",
        "eval.in_loop=false",
        "--set",
        "eval.samples=1",
    ]
    for attempt in range(6):
        t0 = time.time()
        r = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
        wall = time.time() - t0
        # The head's job agent registers a little after its node is alive; on a loaded machine the first
        # submit can come before it (Ray: "No available agent to submit job, please try again later").
        if r.returncode == 0 or "No available agent to submit job" not in r.stdout + r.stderr:
            break
        time.sleep(10)
    logs = r.stdout + r.stderr
    assert r.returncode == 0, logs[-6000:]

    info = _job_info(cluster.dashboard, job_id, cluster.env)
    assert info["status"] == "SUCCEEDED"
    # The project went to the cluster as a runtime_env package, not from this checkout's path.
    assert info["runtime_env"]["working_dir"].startswith("gcs://")
    assert info["runtime_env"]["env_vars"] == {"HF_HUB_OFFLINE": "1", "DISTILL_JOB_MARK": "x"}
    assert re.search(r"\[distill\] joined the Ray cluster at \S+: 3 node\(s\)", info["logs"]), info["logs"][-3000:]

    (run,) = [p for p in out.iterdir() if p.is_dir()]
    s = json.loads((run / "summary.json").read_text())
    teacher_node, trainer_node = cluster.node_id(role="teacher"), cluster.node_id(role="trainer")
    place = s["placement"]
    print(
        f"\nsmoke via ray job submit: {wall:.0f}s wall (summary wall_s {s['wall_s']}); placement "
        + json.dumps({st: [(p["node_id"][:8], p["labels"], p["events"]) for p in ps] for st, ps in place.items()})
    )
    assert len(s["cluster_nodes"]) == 3
    assert [p["node_id"] for p in place["teacher"]] == [teacher_node]  # every teacher event, one node
    assert place["teacher"][0]["labels"] == {"role": "teacher"}
    assert sum(p["events"] for p in place["teacher"]) >= 6  # 24 problems in batches of 4
    assert [p["node_id"] for p in place["train"]] == [trainer_node]
    assert place["train"][0]["events"] == s["stages"]["train"]["steps"] > 0
    assert {p["node_id"] for p in place["eval"]} == {trainer_node}  # by custom resource trainer_node
    assert {m for m in s["eval"]["models"]} >= {"teacher", "untrained", "student"}
    assert s["stages"]["teacher"]["problems"] == 24 and s["stored_traces"] == 24
    assert (run / "student" / "config.json").is_file()

    # Each node loaded its models from its own cache: the student was fetched on the trainer node, where no
    # copy was (the driver's resolved paths, under the head's home, exist on no other node).
    trainer_home = cluster.homes[2]
    assert (_cache(trainer_home) / STUDENT / "config.json").is_file()

    # Metrics reached the shared storage named by config, not only the driver's run dir.
    mirrored = shared / run.name
    assert json.loads((mirrored / "summary.json").read_text())["run_id"] == s["run_id"]
    assert s["metrics_uri"] == f"file://{shared}/{run.name}"
    assert list((mirrored / "tensorboard").glob("events.out.tfevents.*"))
    assert (mirrored / "report.html").is_file() and (mirrored / "events.jsonl").is_file()
