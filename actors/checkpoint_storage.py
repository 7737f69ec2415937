"""Where a training worker's checkpoints are written and how they reach Ray Train's storage: written in a
scratch directory inside the run's storage, then renamed into place by the report (Ray's default upload
copies every file); a scratch a killed worker left behind is removed before the next one is written."""

from __future__ import annotations

import os
import shutil
import tempfile

SCRATCH_PREFIX = ".scratch-"  # checkpoints being written, inside the run's Ray Train storage directory


def checkpoint_scratch() -> str:
    """A new directory for rank 0 to write a checkpoint in: inside the run's storage directory when that
    is on this node's filesystem (the report then moves it in: `move_into_storage`), else a temp dir."""
    import pyarrow.fs
    import ray.train

    storage = ray.train.get_context().get_storage()
    exp = storage.experiment_fs_path
    if isinstance(storage.storage_filesystem, pyarrow.fs.LocalFileSystem) and os.path.isdir(exp):
        return tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=exp)
    return tempfile.mkdtemp(prefix="distill-checkpoint-")


def drop_stale_scratch() -> None:
    """Remove checkpoints a killed worker was writing (never reported, so never read); rank 0, before it
    writes one of its own."""
    import glob

    import ray.train

    exp = ray.train.get_context().get_storage().experiment_fs_path
    stale = glob.glob(os.path.join(glob.escape(exp), SCRATCH_PREFIX + "*")) if os.path.isdir(exp) else []
    for d in stale:
        shutil.rmtree(d, ignore_errors=True)


def move_into_storage(checkpoint, name: str):
    """Ray Train's checkpoint upload, as a rename where it can be one: the default copies every file
    into the storage path (pyarrow copy_files), ~1.9 GB a checkpoint for the 135M student with its
    optimizer state. Writing that much new page cache cost 7 ms of a core per MB on the VMs measured
    (`dd` to a fresh file: 140 MB/s, all system time), so a copy doubled a checkpoint's cost. Elsewhere
    (a remote storage_path, another filesystem) it is the default copy."""
    import ray.train
    from ray.train import Checkpoint

    storage = ray.train.get_context().get_storage()
    dest = storage.build_checkpoint_path_from_name(name)
    if os.path.dirname(os.path.abspath(checkpoint.path)) == os.path.abspath(storage.experiment_fs_path):
        shutil.rmtree(dest, ignore_errors=True)  # a restarted worker reporting the same step again
        os.replace(checkpoint.path, dest)
        return Checkpoint(dest, filesystem=storage.storage_filesystem)
    return storage.persist_current_checkpoint(checkpoint, name)
