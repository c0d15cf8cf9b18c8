"""Sink: Parquet output (a part per `sink.max_rows_per_part` rows or `sink.max_seconds_per_part` seconds,
deterministic names, atomic writes) and resume bookkeeping.

Every input video becomes exactly one row, success or error, in `part-<hash of the part's ids>.parquet`.
The schema below is the contract users query with DuckDB / pandas / Spark. The job's driver writes the parts
as result rows reach it (`PartWriter`), so parts land steadily while the job runs: an interrupted run loses at
most the rows not yet gathered into a part (bounded in rows and in seconds).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import threading
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import PERMANENT, retryable
from pipeline.rows import OK
from pipeline.storage import Storage, join

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # sha1 of the URI, stable across runs
        pa.field("uri", pa.string(), nullable=False),
        pa.field("status", pa.string(), nullable=False),  # "success" | "error"
        pa.field("error_type", pa.string()),  # EmptyObject, DecodeError, NoVideo, ReadError, ... (pipeline.errors)
        pa.field("error_message", pa.string()),
        pa.field("error_retryable", pa.bool_()),  # a rerun retries this id (transient error); null on success
        pa.field("output_text", pa.string()),
        pa.field("prompt", pa.string()),  # per-row prompt from a manifest, else null (config prompt)
        pa.field("frames_used", pa.int32()),  # different source frames the model saw
        # the sampled frames repeat a frame: the clip is shorter than decode.num_frames (or the stream ended
        # early), so the model got frames_used frames, some of them more than once
        pa.field("frames_repeated", pa.bool_()),
        pa.field("has_audio", pa.bool_()),  # the file has an audio track
        pa.field("audio_used", pa.bool_()),  # the track reached the model (false: none, or a video-only model)
        pa.field("audio_seconds", pa.float64()),  # audio fed to the model (0: not used)
        pa.field("audio_truncated", pa.bool_()),  # the track went on past decode.max_audio_seconds
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
        # the prompt's keys and values in all decoder layers after the prefill, as pruned and as unpruned
        pa.field("kv_cache_bytes", pa.int64()),
        pa.field("kv_cache_bytes_unpruned", pa.int64()),
        pa.field("decode_mode", pa.string()),  # compiled (static caches, torch.compile) | eager (dynamic cache)
        pa.field("decode_graphs", pa.int32()),  # decode graphs compiled during the row's generate() batch
        pa.field("decode_compile_ms", pa.float64()),  # time those compiles took (the batch's, on each of its rows)
        # shadow rows (fastav.shadow_fraction, chosen by id) are also generated unpruned; null on other rows
        pa.field("shadow_output_text", pa.string()),
        pa.field("shadow_token_agreement", pa.float64()),  # equal greedy tokens, position by position, over the shorter
        pa.field("shadow_first_divergence", pa.int32()),  # first generated position that differs; null: identical
        pa.field("shadow_first_token_kl", pa.float64()),  # KL(unpruned || pruned) of the first token's distribution
        pa.field("shadow_ms", pa.float64()),  # wall time of the unpruned shadow generate() of the row's batch
        pa.field("decode_node", pa.string()),  # Ray node ids that decoded / ran the model
        pa.field("infer_node", pa.string()),
        pa.field("model_id", pa.string()),
        pa.field("model_family", pa.string()),  # fastav.families name: qwen2_5_omni, qwen3_omni, qwen3_vl, ...
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
        record["error_retryable"] = None if record["status"] == "success" else retryable(row.get("error_type"))
        record["run_id"], record["finished_at"] = run_id, now
        records.append(record)
    return pa.Table.from_pylist(records, schema=SCHEMA)


def encode_parquet(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


class PartWriter:
    """Gathers result rows and writes a Parquet part whenever `max_rows` rows are waiting or the oldest has waited
    `max_seconds` (a timer thread checks, so the bound holds while no rows arrive too); each part is written
    atomically under a name derived from its ids. `max_rows=None` writes every batch as it arrives. An interrupted
    run loses only the rows waiting here: fewer than `max_rows`, the oldest finished under `max_seconds` ago.
    `close()` writes what waits and stops the timer."""

    def __init__(
        self,
        output: str,
        storage: Storage,
        run_id: str,
        max_rows: int | None,
        max_seconds: float = 60.0,
    ) -> None:
        self.output, self.storage, self.run_id = output, storage, run_id
        self.max_rows, self.max_seconds = max_rows, max_seconds
        self.parts: list[str] = []
        self.rows_written = 0
        self._pending: list[dict] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timer: threading.Thread | None = None

    def add(self, rows: list[dict]) -> None:
        with self._lock:
            if not self._pending:
                self._oldest = time.monotonic()
            self._pending.extend(rows)
            size = self.max_rows or len(self._pending)
            while len(self._pending) >= size > 0:
                self._write(self._pending[:size])
                self._pending = self._pending[size:]
                self._oldest = time.monotonic()
            if self._pending and time.monotonic() - self._oldest >= self.max_seconds:
                self._flush()
        if self._timer is None:
            self._timer = threading.Thread(target=self._watch, name="part-writer", daemon=True)
            self._timer.start()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def close(self) -> None:
        """Stop the timer and write what waits."""
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
        self.flush()

    def _flush(self) -> None:
        if self._pending:
            self._write(self._pending)
            self._pending = []

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.max_seconds / 4)):
            with self._lock:
                if not self._pending or time.monotonic() - self._oldest < self.max_seconds:
                    continue
                try:
                    self._flush()
                except Exception as error:  # the rows wait on; the next add() or close() tries again and raises
                    log.warning("writing a part failed (%s: %s); trying again later", type(error).__name__, error)

    def _write(self, rows: list[dict]) -> None:
        name = part_name([r["id"] for r in rows])
        self.storage.write(join(self.output, name), encode_parquet(to_table(rows, self.run_id)))
        self.parts.append(name)
        self.rows_written += len(rows)


def part_files(output: str, storage: Storage) -> list[str]:
    return [o.uri for o in storage.list(output) if o.uri.rsplit("/", 1)[-1].startswith(PART_PREFIX)]


def read_parts(output: str, storage: Storage, columns: list[str] | None = None) -> pa.Table:
    """All parts of `output` as one table; columns a part lacks (written by an older version) read as nulls."""
    tables = [_read_part(storage.read(uri), columns) for uri in part_files(output, storage)]
    if not tables:
        return SCHEMA.empty_table().select(columns) if columns else SCHEMA.empty_table()
    return pa.concat_tables(tables)


def _read_part(data: bytes, columns: list[str] | None) -> pa.Table:
    part = pq.ParquetFile(io.BytesIO(data))
    if columns is None:
        return part.read()
    table = part.read(columns=[c for c in columns if c in part.schema_arrow.names])
    for name in columns:
        if name not in table.column_names:
            table = table.append_column(SCHEMA.field(name), pa.nulls(table.num_rows, SCHEMA.field(name).type))
    return table.select(columns)


def prepare_output(output: str, storage: Storage, overwrite: bool, retry_errors: bool = False) -> dict[str, str]:
    """Ids already settled, mapped to their status, after making the output consistent for this run.

    Settled: written successfully, or failed for good (a permanent error type) unless `retry_errors`. The rows
    of every other id (transient errors) are removed from their files, since those ids run again now: each
    id stays in the output exactly once. With `overwrite` every earlier part and the summary go.
    """
    settled: dict[str, str] = {}
    for uri in part_files(output, storage):
        if overwrite:
            storage.delete(uri)
            continue
        data = storage.read(uri)
        table = pq.read_table(io.BytesIO(data), columns=["id", "status", "error_type"])
        keep = pc.equal(table["status"], "success")
        if not retry_errors:
            keep = pc.or_(keep, pc.is_in(table["error_type"], pa.array(sorted(PERMANENT))).fill_null(False))
        kept = table.filter(keep)
        settled.update(zip(kept["id"].to_pylist(), kept["status"].to_pylist(), strict=True))
        if kept.num_rows == table.num_rows:
            continue
        if kept.num_rows:
            storage.write(uri, encode_parquet(pq.read_table(io.BytesIO(data)).filter(keep)))
        else:
            storage.delete(uri)
    if overwrite:
        storage.delete(join(output, SUMMARY_NAME))
    return settled
