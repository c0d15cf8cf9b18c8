"""Source: one row per video (id, uri, size, prompt) from an S3 prefix, a local directory or a manifest."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

from pipeline.config import SourceConfig
from pipeline.storage import Storage, is_s3


def video_id(uri: str) -> str:
    """Stable id derived from the URI: the same video gets the same id in every run."""
    return hashlib.sha1(uri.encode()).hexdigest()[:20]


def _manifest_rows(storage: Storage, uri: str) -> list[dict]:
    data = storage.read(uri)
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        records = pq.read_table(io.BytesIO(data)).to_pylist()
    else:
        records = [json.loads(line) for line in data.decode().splitlines() if line.strip()]
    rows = []
    for i, record in enumerate(records):
        if not record.get("uri"):
            raise ValueError(f"manifest {uri} row {i} has no 'uri'")
        rows.append({"uri": record["uri"], "size": int(record.get("size") or -1), "prompt": record.get("prompt")})
    return rows


def list_videos(config: SourceConfig, storage: Storage) -> list[dict]:
    """Rows sorted by URI; sharded by id hash, then limited. Raises if the source does not exist."""
    uri = config.uri
    if uri.endswith((".parquet", ".jsonl", ".json")):
        rows = _manifest_rows(storage, uri)
    else:
        rows = [
            {"uri": obj.uri, "size": obj.size, "prompt": None}
            for obj in storage.list(uri)
            if obj.uri.lower().endswith(config.extensions) and not obj.uri.rsplit("/", 1)[-1].startswith(".")
        ]
        if not rows and not is_s3(uri) and not Path(uri).expanduser().is_dir():
            raise FileNotFoundError(f"source.uri {uri} is not a directory, an s3:// prefix or a manifest")
    for row in rows:
        row["id"] = video_id(row["uri"])
    rows.sort(key=lambda r: r["uri"])
    if config.num_shards > 1:
        rows = [r for r in rows if int(r["id"], 16) % config.num_shards == config.shard_index]
    if config.limit is not None:
        rows = rows[: config.limit]
    return rows
