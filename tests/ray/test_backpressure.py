"""Backpressure: a slow trainer against a fast teacher. The teacher must pause, not buffer everything.

Measured on a real local Ray: how far the teacher runs ahead of the consumer (traces generated but not
yet consumed) and the object store in use, sampled at every consumer step.
"""

import json
import re
import time

import pytest

from distill.config import load_config

pytestmark = pytest.mark.ray

N = 160


def _plasma_mib() -> float:
    import ray
    from ray._private.internal_api import memory_summary

    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
    m = re.search(r"Plasma memory usage (\d+(?:\.\d+)?) MiB", text)
    # a format Ray changed must fail the test, not read as 0 MiB (which would always pass the bound)
    assert m, f"no 'Plasma memory usage' in Ray's memory summary:\n{text[:1000]}"
    return float(m.group(1))


def _ray_rss_mib() -> float:
    """Host RAM of this driver and every Ray worker process (actors and tasks) right now."""
    import psutil

    total = psutil.Process().memory_info().rss
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            if (p.info["name"] or "").startswith("ray::") or any("ray::" in c for c in p.info["cmdline"] or []):
                total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _stream_lead(tiny_model, tmp_path, buffer_mib):
    from ray.util.queue import Queue

    from distill.cluster.session import ray_session
    from distill.data.sources import load_problems
    from distill.pipelines.stages import teacher_stream

    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"question": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(N))
    )
    cfg = load_config(
        "smoke",
        [
            "sources=[{kind: file, path: '%s', size: %d}]" % (problems, N),
            "source_blocks=%d" % (N // 4),
            "teacher.backend=transformers",
            f"teacher.model={tiny_model}",
            "teacher.max_tokens=8",
            "teacher.temperature=1.0",
            "teacher.max_model_len=512",
            "teacher.batch_size=4",
            f"train.student={tiny_model}",
            "ray.num_cpus=4",
            f"ray.stream_buffer_mib={'null' if buffer_mib is None else buffer_mib}",
        ],
    )
    loaded = load_problems(cfg.sources).problems
    leads, plasma, rss = [], [], []
    with ray_session(cfg.ray):
        q = Queue(actor_options={"num_cpus": 0})
        # The teacher stage alone: its every row reaches the consumer (a random tiny model's traces would
        # all be rejected by the scorer, leaving nothing to consume).
        ds = teacher_stream(cfg, loaded, tiny_model, str(tmp_path / "store"), q)
        generated = consumed = 0
        # The trainer stand-in: one batch of 4 traces every 0.5 s, much slower than the tiny teacher
        # (about 0.2 s a batch): without backpressure the teacher would finish far ahead of it.
        for batch in ds.iter_batches(batch_size=4, batch_format="pyarrow"):
            consumed += batch.num_rows
            n = q.size()
            generated += sum(e.rows_out for e in (q.get_nowait_batch(n) if n else []) if e.stage == "teacher")
            leads.append(generated - consumed)
            plasma.append(_plasma_mib())
            rss.append(_ray_rss_mib())
            time.sleep(0.5)
    # host RAM: growth from the first sample (engines loaded, stream started) to the peak
    return consumed, max(leads), max(plasma), max(rss) - rss[0]


def test_slow_trainer_pauses_the_teacher_and_memory_stays_bounded(tiny_model, tmp_path):
    # A 10 KB stream budget is about four blocks of these traces (2.4 KB each).
    consumed, lead, plasma, rss_growth = _stream_lead(tiny_model, tmp_path, buffer_mib=0.01)
    print(
        f"backpressure: max teacher lead {lead} traces of {N}, peak plasma {plasma} MiB, "
        f"host RAM growth {rss_growth:.0f} MiB"
    )
    assert consumed == N  # nothing lost to the pauses
    assert lead <= 32, f"the teacher ran {lead} traces ahead of a slow trainer: no backpressure"
    assert plasma < 64 and rss_growth < 512
