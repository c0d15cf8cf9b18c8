import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipeline.config import PipelineConfig, SourceConfig
from pipeline.errors import InputError
from pipeline.source import list_videos, video_id
from pipeline.storage import Storage


@pytest.fixture
def folder(tmp_path):
    for name in ("b.mp4", "a.MP4", "sub/c.mkv", "notes.txt", ".hidden.mp4"):
        path = tmp_path / "videos" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 10)
    return tmp_path / "videos"


def test_local_directory_lists_videos_sorted_with_stable_ids(folder):
    rows = list_videos(SourceConfig(uri=str(folder)), Storage())
    assert [r["uri"].rsplit("/", 1)[-1] for r in rows] == ["a.MP4", "b.mp4", "c.mkv"]
    assert all(r["id"] == video_id(r["uri"]) and r["size"] == 10 for r in rows)
    assert video_id("s3://b/x.mp4") == video_id("s3://b/x.mp4") != video_id("s3://b/y.mp4")


def test_shards_partition_and_limit(folder):
    every = {r["id"] for r in list_videos(SourceConfig(uri=str(folder)), Storage())}
    shards = [
        {r["id"] for r in list_videos(SourceConfig(uri=str(folder), num_shards=2, shard_index=i), Storage())}
        for i in range(2)
    ]
    assert shards[0] | shards[1] == every and not shards[0] & shards[1]
    assert len(list_videos(SourceConfig(uri=str(folder), limit=2), Storage())) == 2


def test_manifests_with_per_row_prompts(tmp_path):
    records = [{"uri": "s3://bucket/x.mp4", "prompt": "What is said?"}, {"uri": "/data/y.mp4"}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "m.parquet")
    for name in ("m.jsonl", "m.parquet"):
        rows = list_videos(SourceConfig(uri=str(tmp_path / name)), Storage())
        assert [(r["uri"], r["prompt"]) for r in rows] == [
            ("/data/y.mp4", None),
            ("s3://bucket/x.mp4", "What is said?"),
        ]


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match=r"source\.uri"):
        list_videos(SourceConfig(uri=str(tmp_path / "nope")), Storage())


def test_a_manifest_naming_a_video_twice_yields_one_row(tmp_path):
    records = [{"uri": "/v/a.mp4"}, {"uri": "/v/b.mp4"}, {"uri": "/v/a.mp4"}, "/v/b.mp4"]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    rows = list_videos(SourceConfig(uri=str(tmp_path / "m.jsonl")), Storage())
    assert [r["uri"] for r in rows] == ["/v/a.mp4", "/v/b.mp4"]
    assert len({r["id"] for r in rows}) == 2


def test_several_questions_about_one_video_are_several_rows(tmp_path):
    records = [{"uri": "/v/a.mp4", "prompt": "Who speaks?"}, {"uri": "/v/a.mp4", "prompt": "What moves?"}]
    (tmp_path / "m.json").write_text(json.dumps(records))
    rows = list_videos(SourceConfig(uri=str(tmp_path / "m.json")), Storage())
    assert sorted(r["prompt"] for r in rows) == ["What moves?", "Who speaks?"]
    assert len({r["id"] for r in rows}) == 2 and all(r["id"] != video_id("/v/a.mp4") for r in rows)


@pytest.mark.parametrize(
    "document",
    [
        [{"uri": "/v/a.mp4", "prompt": "Why?"}, {"uri": "/v/b.mp4"}],
        ["/v/b.mp4", {"uri": "/v/a.mp4", "prompt": "Why?"}],
        {"videos": [{"uri": "/v/a.mp4", "prompt": "Why?"}, "/v/b.mp4"]},
    ],
)
def test_json_manifests_hold_an_array(tmp_path, document):
    (tmp_path / "m.json").write_text(json.dumps(document))
    rows = list_videos(SourceConfig(uri=str(tmp_path / "m.json")), Storage())
    assert [(r["uri"], r["prompt"]) for r in rows] == [("/v/a.mp4", "Why?"), ("/v/b.mp4", None)]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("m.json", '{"uri": "/v/a.mp4"}', "must hold a JSON array"),
        ("m.json", "[1, 2", "is not JSON"),
        ("m.jsonl", '{"uri": "/v/a.mp4"}\nnot json\n', "line 2 is not JSON"),
        ("m.jsonl", '{"path": "/v/a.mp4"}', "entry 0 has no 'uri'"),
        ("m.json", '[{"uri": "/v/a.mp4", "prompt": 3}]', "'prompt' that is not a string"),
        ("m.parquet", "not parquet", "not a readable Parquet file"),
    ],
)
def test_unreadable_manifests_name_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(InputError, match=message) as info:
        list_videos(SourceConfig(uri=str(tmp_path / name)), Storage())
    assert str(info.value).startswith("source.uri manifest") and "\n" not in str(info.value)


def test_config_rejects_unknown_keys_and_bad_values_by_name():
    base = {"source": {"uri": "/v"}, "output": "/o", "model": {"checkpoint": "/m"}}
    with pytest.raises(ValidationError, match=r"decode\.num_framez"):
        PipelineConfig.model_validate({**base, "decode": {"num_framez": 4}})
    with pytest.raises(ValidationError, match="shard_index=2 must be < num_shards=2"):
        PipelineConfig.model_validate({**base, "source": {"uri": "/v", "num_shards": 2, "shard_index": 2}})
    with pytest.raises(ValidationError, match=r"fastav\.fine_ratio"):
        PipelineConfig.model_validate({**base, "fastav": {"fine_ratio": 2}})
