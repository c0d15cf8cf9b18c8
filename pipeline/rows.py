"""Row helpers shared by the stages: errors as data, timing, and compact array payloads.

Stages take and return Arrow tables (`batch_format="pyarrow"`), so nulls stay nulls. Arrays travel between
stages as one `.npz` bytes column per stage: Arrow stores it as plain binary whatever the shapes.
"""

from __future__ import annotations

import io
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pyarrow as pa

from pipeline.decode import VideoError

OK = "ok"  # in flight; the sink writes "success" or "error"


def to_rows(batch: pa.Table) -> list[dict]:
    return batch.to_pylist()


def to_batch(rows: list[dict]) -> pa.Table:
    """Rows back to an Arrow table (types inferred per column: nulls mix with strings, bytes stay binary)."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return pa.Table.from_pylist([{k: row.get(k) for k in keys} for row in rows])


def pack(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def unpack(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def fail(row: dict, error: BaseException) -> dict:
    """Turn a per-row exception into error columns; the row keeps flowing to the sink."""
    row["status"] = "error"
    row["error_type"] = error.kind if isinstance(error, VideoError) else type(error).__name__
    message = str(error) or repr(error)
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
