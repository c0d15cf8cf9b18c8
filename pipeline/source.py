"""Source: one row per video (id, uri, size, prompt) from an S3 prefix, a local directory or a manifest.

Manifests: `.jsonl` (one object or URI string per line), `.json` (an array of objects or URI strings, or an
object whose "videos" key holds one), `.parquet` (columns `uri` and optionally `prompt` / `size`). A listing
or manifest names each (uri, prompt) pair once: repeats are dropped, so every id is exactly one output row.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path

from pipeline.config import SourceConfig
from pipeline.errors import InputError
from pipeline.storage import Storage, is_s3

log = logging.getLogger(__name__)
MANIFEST_SUFFIXES = (".parquet", ".jsonl", ".json")


def video_id(uri: str, prompt: str | None = None) -> str:
    """Stable id: the same video (and per-row prompt) gets the same id in every run. A manifest may ask several
    questions of one video: each (uri, prompt) pair is its own row."""
    key = uri if prompt is None else f"{uri}\n{prompt}"
    return hashlib.sha1(key.encode()).hexdigest()[:20]


def _records(uri: str, data: bytes) -> list:
    where = f"source.uri manifest {uri}"
    if uri.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(io.BytesIO(data)).to_pylist()
        except Exception as error:
            raise InputError(f"{where} is not a readable Parquet file ({error})") from None
    text = data.decode("utf-8", errors="replace")
    if uri.endswith(".jsonl"):
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise InputError(f"{where}: line {number} is not JSON ({error.msg})") from None
        return records
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise InputError(f"{where} is not JSON ({error.msg} at line {error.lineno})") from None
    if isinstance(document, dict) and isinstance(document.get("videos"), list):
        return document["videos"]
    if not isinstance(document, list):
        raise InputError(f'{where} must hold a JSON array of entries (or an object with a "videos" array)')
    return document


def _manifest_rows(storage: Storage, uri: str) -> list[dict]:
    rows = []
    for i, record in enumerate(_records(uri, storage.read(uri))):
        if isinstance(record, str):
            record = {"uri": record}
        if not isinstance(record, dict) or not isinstance(record.get("uri"), str) or not record["uri"]:
            raise InputError(f"source.uri manifest {uri}: entry {i} has no 'uri' string")
        prompt = record.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            raise InputError(f"source.uri manifest {uri}: entry {i} has a 'prompt' that is not a string")
        rows.append({"uri": record["uri"], "size": int(record.get("size") or -1), "prompt": prompt})
    return rows


def is_manifest(uri: str) -> bool:
    return uri.endswith(MANIFEST_SUFFIXES)


def list_all(config: SourceConfig, storage: Storage) -> list[dict]:
    """Every video the source names, sorted by URI, each (uri, prompt) once (before sharding and limit)."""
    uri = config.uri
    if is_manifest(uri):
        rows = _manifest_rows(storage, uri)
    else:
        rows = [
            {"uri": obj.uri, "size": obj.size, "prompt": None}
            for obj in storage.list(uri)
            if obj.uri.lower().endswith(config.extensions) and not obj.uri.rsplit("/", 1)[-1].startswith(".")
        ]
        if not rows and not is_s3(uri) and not Path(uri).expanduser().is_dir():
            raise InputError(f"source.uri {uri} is not a directory, an s3:// prefix or a manifest")
    unique: dict[str, dict] = {}
    for row in rows:
        row["id"] = video_id(row["uri"], row["prompt"])
        unique.setdefault(row["id"], row)
    if len(unique) < len(rows):
        log.warning("source.uri %s lists %d repeated entries; each video runs once", uri, len(rows) - len(unique))
    return sorted(unique.values(), key=lambda r: (r["uri"], r["prompt"] or ""))


def select(rows: list[dict], config: SourceConfig) -> list[dict]:
    """This shard's rows (by id hash), then the limit."""
    if config.num_shards > 1:
        rows = [r for r in rows if int(r["id"], 16) % config.num_shards == config.shard_index]
    return rows[: config.limit] if config.limit is not None else rows


def list_videos(config: SourceConfig, storage: Storage) -> list[dict]:
    return select(list_all(config, storage), config)
