"""Mirror a run's metrics to shared storage: any path or fsspec URL (`storage.uri`).

On a cluster the driver runs on whichever node `ray job submit` put it on; what people look at --
TensorBoard logs, summary.json, the event log, the timeline, the report, the resolved config -- must
not stay there. A background thread copies the files that changed since its last pass every
`sync_every_s`, and `close()` makes a final pass once the run has written everything.

fsspec rather than hand-written uploaders: one API for local paths, file://, s3://, gs://, az://,
hdfs://... (the protocol's own package, e.g. s3fs, must be installed; config validation says so).
The trace store, checkpoints and the student are not mirrored: they live in `output_dir`, which a
multi-node cluster must share anyway.
"""

from __future__ import annotations

import fnmatch
import threading
from pathlib import Path

# Paths relative to the run dir (fnmatch patterns; `*` also matches `/`).
METRIC_FILES = (
    "config.yaml",
    "summary.json",
    "events.jsonl",
    "timeline.png",
    "report.html",
    "report.md",
    "report_files/*",
    "tensorboard/*",
    "eval/in_loop/*",
)


class Mirror:
    def __init__(
        self, uri: str, run_dir: Path, run_id: str, every_s: float = 30.0, patterns: tuple[str, ...] = METRIC_FILES
    ):
        import fsspec

        self.fs, root = fsspec.core.url_to_fs(uri)
        self.dest = f"{root.rstrip('/')}/{run_id}"
        self.url = f"{uri.rstrip('/')}/{run_id}"
        self.run_dir, self.every_s, self.patterns = Path(run_dir), every_s, patterns
        self._sent: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) last copied
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="distill-mirror", daemon=True)
        self.fs.makedirs(self.dest, exist_ok=True)  # fails now, not at the end, if the storage is unusable

    def start(self) -> "Mirror":
        self._thread.start()
        return self

    def _wanted(self, rel: str) -> bool:
        return any(fnmatch.fnmatch(rel, p) for p in self.patterns)

    def sync(self) -> int:
        """Copy every wanted file that is new or changed; returns how many were copied."""
        with self._lock:
            copied = 0
            for path in sorted(self.run_dir.rglob("*")):
                rel = path.relative_to(self.run_dir).as_posix()
                if not path.is_file() or not self._wanted(rel):
                    continue
                st = path.stat()
                key = (st.st_size, st.st_mtime_ns)
                if self._sent.get(rel) == key:
                    continue
                target = f"{self.dest}/{rel}"
                self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(str(path), target)
                self._sent[rel] = key
                copied += 1
            return copied

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.sync()
            except Exception as e:  # storage hiccups must not take the run down; the final pass retries
                print(f"[distill] metrics mirror: {type(e).__name__}: {e}", flush=True)

    def close(self) -> int:
        """Stop the thread and make the final pass (errors here are raised: the user asked for it)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        return self.sync()
