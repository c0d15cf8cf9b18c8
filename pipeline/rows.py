"""Row helpers shared by the stages: errors as data, timing, and compact array payloads.

Stages take and return Arrow tables (`batch_format="pyarrow"`), so nulls stay nulls. Arrays travel between
stages as one binary payload column per stage (whatever the shapes): a small JSON header and the raw array
bytes. A video's model inputs are ~15 MB, so payloads are read in place from the Arrow buffer (in the
object store) instead of being copied into Python bytes and then again into arrays.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

from pipeline.decode import VideoError

OK = "ok"  # in flight; the sink writes "success" or "error"


PAYLOADS = ("media", "inputs")  # the array payload columns
_ALIGN = 64  # payload lengths and array offsets are multiples of this, so arrays stay aligned in Arrow


def to_rows(batch: pa.Table) -> list[dict]:
    """Row dicts; payload columns become zero-copy `pa.Buffer` views (None where null)."""
    payloads = [name for name in batch.column_names if name in PAYLOADS]
    rows = batch.drop_columns(payloads).to_pylist()
    for name in payloads:
        for row, value in zip(rows, _buffers(batch.column(name)), strict=True):
            row[name] = value
    return rows


def _buffers(column: pa.ChunkedArray) -> Iterator[pa.Buffer | None]:
    for chunk in column.chunks:
        if chunk.null_count == len(chunk):  # also the untyped all-null column
            yield from [None] * len(chunk)
            continue
        offset_type = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        offsets = np.frombuffer(chunk.buffers()[1], offset_type)[chunk.offset : chunk.offset + len(chunk) + 1]
        data, valid = chunk.buffers()[2], chunk.is_valid().to_pylist()
        for i in range(len(chunk)):
            yield data.slice(int(offsets[i]), int(offsets[i + 1] - offsets[i])) if valid[i] else None


def to_batch(rows: list[dict]) -> pa.Table:
    """Rows back to an Arrow table: payloads as large_binary, other types inferred (nulls mix with values)."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    columns = {}
    for key in keys:
        values = [row.get(key) for row in rows]
        columns[key] = _payload_column(values) if key in PAYLOADS else pa.array(values)
    return pa.table(columns)


def _payload_column(values: list) -> pa.ChunkedArray:
    """large_binary, one chunk per row wrapping the payload's own memory: no copy before the object store."""
    chunks = []
    for value in values:
        if value is None:
            chunks.append(pa.nulls(1, pa.large_binary()))
            continue
        data = value if isinstance(value, pa.Buffer) else pa.py_buffer(value)
        offsets = pa.py_buffer(np.array([0, data.size], dtype=np.int64))
        chunks.append(pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, data]))
    return pa.chunked_array(chunks, type=pa.large_binary())


def pack(**arrays: np.ndarray) -> bytearray:
    """Arrays -> one payload: 8-byte header length, JSON header {name: [dtype, shape, offset]}, raw bytes."""
    arrays = {name: np.asarray(a, order="C") for name, a in arrays.items()}
    header, size = {}, 0
    for name, a in arrays.items():
        if a.dtype.hasobject:
            raise TypeError(f"payload array {name!r} has dtype object")
        header[name] = [a.dtype.str, list(a.shape), size]
        size += _aligned(a.nbytes)
    head = json.dumps(header).encode()
    start = _aligned(8 + len(head))
    out = bytearray(start + size)
    out[:8] = len(head).to_bytes(8, "little")
    out[8 : 8 + len(head)] = head
    raw = np.frombuffer(out, np.uint8)
    for name, a in arrays.items():
        at = start + header[name][2]
        raw[at : at + a.nbytes] = a.reshape(-1).view(np.uint8)
    return out


def unpack(payload) -> dict[str, np.ndarray]:
    """Payload (bytes, bytearray or pa.Buffer) -> arrays viewing its memory: read-only where it is."""
    view = memoryview(payload)
    length = int.from_bytes(view[:8], "little")
    header = json.loads(bytes(view[8 : 8 + length]))
    start = _aligned(8 + length)
    return {
        name: np.frombuffer(view, np.dtype(dtype), count=int(np.prod(shape)), offset=start + at).reshape(shape)
        for name, (dtype, shape, at) in header.items()
    }


def _aligned(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


def fail(row: dict, error: BaseException, kind: str | None = None) -> dict:
    """Turn a per-row exception into error columns; the row keeps flowing to the sink. `kind` names the error
    type where the exception's class would not (see pipeline.errors)."""
    row["status"] = "error"
    row["error_type"] = kind or (error.kind if isinstance(error, VideoError) else type(error).__name__)
    message = str(error) or repr(error)
    if kind is not None:
        message = f"{type(error).__name__}: {message}"
    if not isinstance(error, VideoError):
        message += " | " + " <- ".join(traceback.format_exception(error)[-2:]).strip()[-400:]
    row["error_message"] = message[:2000]
    return row


@contextmanager
def timed(row: dict, column: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        row[column] = (time.perf_counter() - start) * 1000.0


def map_ok_rows(rows: list[dict], fn: Callable[[dict], None]) -> list[dict]:
    """Apply `fn` to rows still in flight; an exception fails that row only."""
    for row in rows:
        if row.get("status") == OK:
            try:
                fn(row)
            except Exception as error:
                fail(row, error)
    return rows
