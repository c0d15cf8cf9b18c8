"""Sink: Parquet output (one part per `rows_per_file` rows, deterministic names, atomic writes) and resume bookkeeping.

Every input video becomes exactly one row, success or error, in `part-<hash of the part's ids>.parquet`.
The schema below is the contract users query with DuckDB / pandas / Spark.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Datasink
from ray.data.block import BlockAccessor

from pipeline.config import StorageConfig
from pipeline.rows import OK
from pipeline.storage import Storage, join

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # sha1 of the URI, stable across runs
        pa.field("uri", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "success" | "error"
        pa.field("error_type", pa.string()),  # EmptyObject, DecodeError, NoAudio, TooLong, ReadError, ...
        pa.field("error_message", pa.string()),
        pa.field("output_text", pa.string()),
        pa.field("prompt", pa.string()),  # per-row prompt from a manifest, else null (config prompt)
        pa.field("frames_used", pa.int32()),
        pa.field("audio_seconds", pa.float64()),  # audio fed to the model (0: no audio track)
        pa.field("video_seconds", pa.float64()),
        pa.field("decoder", pa.string()),  # decord | pyav
        pa.field("tokens_text", pa.int32()),  # input tokens per modality (padding excluded)
        pa.field("tokens_video", pa.int32()),
        pa.field("tokens_audio", pa.int32()),
        pa.field("tokens_image", pa.int32()),
        pa.field("tokens_input", pa.int32()),
        pa.field("av_tokens_after_global", pa.int32()),  # AV tokens entering the global-pruning layer
        pa.field("av_tokens_last_layer", pa.int32()),  # AV tokens entering the last decoder layer
        pa.field("tokens_last_layer", pa.int32()),
        pa.field("flops_unpruned", pa.float64()),  # prefill, decoder layers, real dims (fastav.flops)
        pa.field("flops_pruned", pa.float64()),
        pa.field("flops_ratio", pa.float64()),
        pa.field("decode_ms", pa.float64()),
        pa.field("preprocess_ms", pa.float64()),
        pa.field("prefill_ms", pa.float64()),  # time to first token of the generate() batch the row was in
        pa.field("generate_ms", pa.float64()),  # wall time of that whole generate() batch
        pa.field("batch_rows", pa.int32()),
        pa.field("decode_node", pa.string()),  # Ray node ids that decoded / ran the model
        pa.field("infer_node", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("fastav_settings", pa.string()),  # JSON of the FastAV settings that ran
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("finished_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
PART_PREFIX = "part-"
SUMMARY_NAME = "_summary.json"


def part_name(ids: list[str]) -> str:
    return f"{PART_PREFIX}{hashlib.sha1(','.join(sorted(ids)).encode()).hexdigest()[:20]}.parquet"


def to_table(rows: list[dict], run_id: str) -> pa.Table:
    now = dt.datetime.now(dt.UTC)
    records = []
    for row in rows:
        record = {name: row.get(name) for name in SCHEMA.names}
        record["status"] = "success" if row.get("status") == OK else "error"
        record["run_id"], record["finished_at"] = run_id, now
        records.append(record)
    return pa.Table.from_pylist(records, schema=SCHEMA)


def encode_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class ParquetSink(Datasink[list[dict]]):
    """Ray Data datasink: each write call (about `rows_per_file` rows) -> one Parquet file, written atomically
    under a name derived from its ids."""

    def __init__(self, output: str, storage: StorageConfig, run_id: str, rows_per_file: int | None = None) -> None:
        self.output, self.storage, self.run_id, self.rows_per_file = output, storage, run_id, rows_per_file

    @property
    def min_rows_per_write(self) -> int | None:
        # One write task per model batch made many tiny files, and each write task waits for a CPU slot
        # beside decoding: on a 2-CPU node the writes fell behind and drained after inference had finished.
        return self.rows_per_file

    def write(self, blocks, ctx) -> list[dict]:
        groups = [BlockAccessor.for_block(block).to_arrow().to_pylist() for block in blocks]
        if self.rows_per_file is not None:  # one part per call, else one per block as Ray hands them over
            groups = [[row for rows in groups for row in rows]]
        storage, written = Storage(self.storage), []
        for rows in filter(None, groups):
            table = to_table(rows, self.run_id)
            name = part_name([r["id"] for r in rows])
            storage.write(join(self.output, name), encode_parquet(table))
            written.append({"file": name, "rows": table.num_rows})
        return written

    def get_name(self) -> str:
        return "FastAVParquet"


def part_files(output: str, storage: Storage) -> list[str]:
    return [o.uri for o in storage.list(output) if o.uri.rsplit("/", 1)[-1].startswith(PART_PREFIX)]


def read_parts(output: str, storage: Storage, columns: list[str] | None = None) -> pa.Table:
    tables = [pq.read_table(io.BytesIO(storage.read(uri)), columns=columns) for uri in part_files(output, storage)]
    if not tables:
        return SCHEMA.empty_table().select(columns) if columns else SCHEMA.empty_table()
    return pa.concat_tables(tables)


def prepare_output(output: str, storage: Storage, overwrite: bool) -> set[str]:
    """Ids already written successfully, after making the output consistent for this run.

    With overwrite every earlier part and summary goes. Otherwise error rows of earlier runs are removed
    from their files (those ids are retried now), so each id stays in the output exactly once.
    """
    done: set[str] = set()
    for uri in part_files(output, storage):
        if overwrite:
            storage.delete(uri)
            continue
        data = storage.read(uri)
        status = pq.read_table(io.BytesIO(data), columns=["id", "status"])
        ok = pc.equal(status["status"], "success")
        done.update(status.filter(ok)["id"].to_pylist())
        if pc.all(ok).as_py():
            continue
        kept = pq.read_table(io.BytesIO(data)).filter(ok)
        if kept.num_rows:
            storage.write(uri, encode_parquet(kept))
        else:
            storage.delete(uri)
    if overwrite:
        storage.delete(join(output, SUMMARY_NAME))
    return done
