"""Row helpers: array payloads round-trip exactly and are read in place from Arrow buffers."""

import numpy as np
import pyarrow as pa
import pytest

from pipeline.rows import pack, to_batch, to_rows, unpack


def test_payload_round_trip_keeps_dtypes_shapes_and_values():
    arrays = {
        "ints": np.arange(7, dtype=np.int16),
        "empty": np.zeros((0, 3), np.float32),
        "scalar": np.float64(2.5),
        "strided": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],  # not contiguous
        "big": np.random.default_rng(0).random((33, 17)).astype(np.float32),
    }
    out = unpack(pack(**arrays))
    assert list(out) == list(arrays)
    for name, expected in arrays.items():
        expected = np.asarray(expected)
        assert out[name].dtype == expected.dtype and out[name].shape == expected.shape, name
        np.testing.assert_array_equal(out[name], expected)


def test_object_arrays_are_refused():
    with pytest.raises(TypeError, match="'names'"):
        pack(names=np.array(["a", None], dtype=object))


def test_payload_columns_are_read_without_copies():
    first, second = pack(x=np.arange(1000.0)), pack(y=np.ones((4, 4), np.int32))
    table = to_batch([{"id": "a", "inputs": first}, {"id": "b", "inputs": None}, {"id": "c", "inputs": second}])
    assert table.schema.field("inputs").type == pa.large_binary()
    rows = to_rows(table.slice(1))
    assert [r["id"] for r in rows] == ["b", "c"] and rows[0]["inputs"] is None
    view = rows[1]["inputs"]
    assert view.address == pa.py_buffer(second).address  # the packed memory itself, never copied
    np.testing.assert_array_equal(unpack(view)["y"], np.ones((4, 4), np.int32))
    combined = to_rows(table.combine_chunks().slice(2))  # one chunk with a non-zero offset, as Ray may hand over
    np.testing.assert_array_equal(unpack(combined[0]["inputs"])["y"], np.ones((4, 4), np.int32))


def test_all_null_payload_column():
    assert to_rows(pa.table({"inputs": pa.array([None, None])})) == [{"inputs": None}, {"inputs": None}]
