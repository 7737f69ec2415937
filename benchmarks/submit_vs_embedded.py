"""Benchmark: the same recipe on embedded local Ray and submitted with `ray job submit` to a 3-node
cluster on this machine (cluster/local.py), side by side in one invocation, alternating, N rounds.

    .venv/bin/python benchmarks/submit_vs_embedded.py                  # smoke, 1 round
    .venv/bin/python benchmarks/submit_vs_embedded.py --rounds 2 --set eval.in_distribution=[]

Prints per round: the wall of the command (`distill run` / `ray job submit`, packaging and upload
included), the run's own wall_s from summary.json, and where each stage ran; then the ratios
job / embedded. Absolute times wander on a shared machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from distill.cluster.local import NodeSpec, local_cluster  # noqa: E402

BIN = Path(sys.executable).parent
PLACEMENT = [
    "--set",
    "teacher.labels.role=teacher",
    "--set",
    "train.labels.role=trainer",
    "--set",
    "eval.resources.trainer_node=1",
]


def _summary(out: Path) -> dict:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return json.loads((run / "summary.json").read_text())


def embedded(recipe: str, overrides: list[str], out: Path) -> tuple[float, dict]:
    t0 = time.time()
    r = subprocess.run(
        [str(BIN / "distill"), "run", recipe, "--set", f"output_dir={out}", *overrides], capture_output=True, text=True
    )
    wall = time.time() - t0
    if r.returncode:
        raise SystemExit(f"embedded run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall, _summary(out)


def submitted(cluster, recipe: str, overrides: list[str], out: Path) -> tuple[float, dict]:
    cmd = [
        str(BIN / "ray"),
        "job",
        "submit",
        "--address",
        cluster.dashboard,
        "--working-dir",
        str(REPO),
        "--submission-id",
        f"bench-{uuid.uuid4().hex[:8]}",
        "--",
        "distill",
        "run",
        recipe,
        "--set",
        f"output_dir={out}",
        *PLACEMENT,
        *overrides,
    ]
    t0 = time.time()
    r = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True)
    wall = time.time() - t0
    if r.returncode:
        raise SystemExit(f"ray job submit failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall, _summary(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="smoke")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument(
        "--set",
        action="append",
        default=["eval.related=[]", "eval.prompt_styles={}"],
        metavar="KEY=VALUE",
        help="overrides for both runs (default: the smoke suite without related tasks and prompt styles)",
    )
    args = ap.parse_args()
    overrides = [x for kv in args.set for x in ("--set", kv)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        t0 = time.time()
        with local_cluster(
            [
                NodeSpec(2, {"role": "teacher"}, {"teacher_node": 1}),
                NodeSpec(4, {"role": "trainer"}, {"trainer_node": 4}),
            ],
            head_cpus=1,
            bin_dir=BIN,
        ) as c:
            print(f"3-node cluster up in {time.time() - t0:.1f}s", flush=True)
            for i in range(args.rounds):
                for mode in ("embedded", "job") if i % 2 == 0 else ("job", "embedded"):
                    out = Path(tmp) / f"{mode}-{i}"
                    wall, s = (
                        embedded(args.recipe, overrides, out)
                        if mode == "embedded"
                        else submitted(c, args.recipe, overrides, out)
                    )
                    where = {
                        st: sorted({(p["labels"] or {}).get("role", "head" if p["head"] else "-") for p in ps})
                        for st, ps in s["placement"].items()
                    }
                    rows.append((i, mode, wall, s["wall_s"], where))
                    print(
                        f"round {i} {mode:<8} command {wall:6.1f}s  run wall_s {s['wall_s']:6.1f}s  "
                        f"nodes {len(s['cluster_nodes'])}  placement {where}",
                        flush=True,
                    )
    for i in range(args.rounds):
        e = next(r for r in rows if r[0] == i and r[1] == "embedded")
        j = next(r for r in rows if r[0] == i and r[1] == "job")
        print(f"round {i}: job/embedded command wall {j[2] / e[2]:.3f}, run wall_s {j[3] / e[3]:.3f}")


if __name__ == "__main__":
    main()
