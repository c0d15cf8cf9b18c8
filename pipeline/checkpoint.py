"""Checkpoint resolution: a local directory as is, an s3:// prefix downloaded once per node into a cache."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import tempfile
from pathlib import Path

from pipeline.config import ModelConfig
from pipeline.storage import Storage, is_s3


def local_checkpoint(config: ModelConfig, storage: Storage) -> Path:
    """Path of the checkpoint on this node. Concurrent actors on a node download it once (file lock), into a
    temporary directory renamed into place, so a reader never sees a half-copied checkpoint."""
    if not is_s3(config.checkpoint):
        path = Path(config.checkpoint).expanduser()
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"model.checkpoint {path} has no config.json")
        return path
    cache = Path(config.cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / hashlib.sha1(config.checkpoint.encode()).hexdigest()[:16]
    with open(cache / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            staging = Path(tempfile.mkdtemp(dir=cache, prefix=f".{target.name}."))
            try:
                storage.download_dir(config.checkpoint, staging)
                if not (staging / "config.json").exists():
                    raise FileNotFoundError(f"model.checkpoint {config.checkpoint} has no config.json")
                shutil.rmtree(target, ignore_errors=True)
                staging.rename(target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    return target
