"""End to end: S3 over HTTP -> decode -> preprocess -> pruned tiny Qwen2.5-Omni on a Ray actor -> Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from pipeline.config import PipelineConfig
from pipeline.graph import run
from pipeline.source import video_id
from pipeline.storage import split_s3
from tests.pipeline.conftest import write_local

EXPECTED_TYPES = {
    "id": "VARCHAR",
    "uri": "VARCHAR",
    "status": "VARCHAR",
    "error_type": "VARCHAR",
    "error_message": "VARCHAR",
    "output_text": "VARCHAR",
    "frames_used": "INTEGER",
    "audio_seconds": "DOUBLE",
    "tokens_video": "INTEGER",
    "tokens_audio": "INTEGER",
    "av_tokens_after_global": "INTEGER",
    "av_tokens_last_layer": "INTEGER",
    "flops_unpruned": "DOUBLE",
    "flops_pruned": "DOUBLE",
    "flops_ratio": "DOUBLE",
    "decode_ms": "DOUBLE",
    "preprocess_ms": "DOUBLE",
    "prefill_ms": "DOUBLE",
    "generate_ms": "DOUBLE",
    "model_id": "VARCHAR",
    "fastav_settings": "VARCHAR",
    "run_id": "VARCHAR",
    "finished_at": "TIMESTAMP WITH TIME ZONE",
}


def config(source: str, output: str, checkpoint: str, endpoint: str | None = None, **overrides) -> PipelineConfig:
    data = {
        "source": {"uri": source},
        "output": output,
        "model": {"checkpoint": checkpoint, "cache_dir": str(Path(output).parent / "model-cache")}
        if not output.startswith("s3://")
        else {"checkpoint": checkpoint},
        "storage": {"endpoint_url": endpoint},
        "decode": {"num_frames": 4, "batch_size": 2},
        "infer": {"batch_size": 3, "max_new_tokens": 4},
        "fastav": {"global_layer": 3, "fine_ratio": 0.25},
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return PipelineConfig.model_validate(data)


def download_parts(storage, output: str, target: Path) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for obj in storage.list(output):
        name = obj.uri.rsplit("/", 1)[-1]
        if name.startswith("part-"):
            (target / name).write_bytes(storage.read(obj.uri))
            paths.append(target / name)
    return paths


def query(paths: list[Path], sql: str):
    files = ", ".join(f"'{p}'" for p in paths)
    return duckdb.sql(sql.replace("parts", f"read_parquet([{files}])"))


def test_full_pipeline_on_s3_with_bad_inputs(s3, s3_endpoint, ray_cluster, omni_checkpoint, clips, tmp_path):
    s3.s3.create_bucket(Bucket="corpus")
    s3.s3.create_bucket(Bucket="models")
    s3.s3.create_bucket(Bucket="results")
    for name, data in clips.items():
        s3.write(f"s3://corpus/videos/{name}", data)
    s3.write("s3://corpus/videos/README.txt", b"not listed: no video extension")
    for path in omni_checkpoint.iterdir():
        s3.write(f"s3://models/tiny-omni/{path.name}", path.read_bytes())

    cfg = config(
        "s3://corpus/videos/",
        "s3://results/run1",
        "s3://models/tiny-omni",
        s3_endpoint,
        model={"cache_dir": str(tmp_path / "model-cache")},
        run_id="run-1",
        sink={"max_rows_per_part": 4},
    )
    summary = run(cfg)

    parts = download_parts(s3, "s3://results/run1", tmp_path / "parts")
    sizes = sorted(query([p], "SELECT count(*) FROM parts").fetchall()[0][0] for p in parts)
    assert sum(sizes) == 8 and len(sizes) <= 2 and all(n >= 4 for n in sizes[1:])  # parts gather rows_per_file
    described = {row[0]: row[1] for row in query(parts, "DESCRIBE SELECT * FROM parts").fetchall()}
    for column, kind in EXPECTED_TYPES.items():
        assert described[column] == kind, column

    rows = {
        r[0]: r
        for r in query(
            parts,
            "SELECT uri, status, error_type, output_text, tokens_video, tokens_audio, audio_seconds, "
            "av_tokens_after_global, av_tokens_last_layer, flops_ratio, prefill_ms, run_id, id FROM parts",
        ).fetchall()
    }
    names = {uri.rsplit("/", 1)[-1]: row for uri, row in rows.items()}
    assert set(names) == set(clips)  # every input exactly once, README.txt not listed
    assert query(parts, "SELECT count(*) = count(DISTINCT id) FROM parts").fetchall()[0][0]
    assert names["empty.mp4"][1:3] == ("error", "EmptyObject")
    assert names["truncated.mp4"][1:3] == ("error", "DecodeError")
    assert names["not_a_video.mp4"][1:3] == ("error", "DecodeError")
    silent = names["silent.mp4"]
    assert silent[1] == "success" and silent[5] == 0 and silent[6] == 0.0 and silent[4] > 0
    for name in (n for n in clips if n.startswith("clip_")):
        row = names[name]
        assert row[1] == "success" and row[2] is None
        assert isinstance(row[3], str)
        assert row[4] > 0 and row[5] > 0  # video and interleaved audio tokens
        assert row[8] < row[7] < row[4] + row[5]  # global then fine pruning removed AV tokens
        assert 0 < row[9] < 1 and row[10] > 0 and row[11] == "run-1"
        assert row[12] == video_id(row[0])

    assert summary["success"] == 5 and summary["error"] == 3
    assert summary["errors_by_type"] == {"EmptyObject": 1, "DecodeError": 2}
    assert 0 < summary["flops_ratio"] < 1
    bucket, key = split_s3("s3://results/run1/_summary.json")
    stored = json.loads(s3.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert stored["success"] == 5 and stored["run_id"] == "run-1"


def test_pruned_run_keeps_fewer_tokens_than_none(ray_cluster, omni_checkpoint, clips, tmp_path):
    source = write_local(tmp_path / "videos", {k: v for k, v in clips.items() if k.startswith("clip_")})
    outputs = {}
    for strategy in ("none", "fastav"):
        out = tmp_path / f"out-{strategy}"
        run(config(str(source), str(out), str(omni_checkpoint), fastav={"strategy": strategy}))
        outputs[strategy] = {
            r[0]: r[1:]
            for r in duckdb.sql(
                f"SELECT id, tokens_input, av_tokens_last_layer, flops_pruned, flops_ratio, status "
                f"FROM read_parquet('{out}/part-*.parquet')"
            ).fetchall()
        }
    assert outputs["none"].keys() == outputs["fastav"].keys() and len(outputs["none"]) == 4
    for vid, (tokens, av_last, flops, ratio, status) in outputs["fastav"].items():
        base_tokens, base_av_last, base_flops, base_ratio, base_status = outputs["none"][vid]
        assert status == base_status == "success"
        assert tokens == base_tokens  # same inputs
        assert av_last < base_av_last and flops < base_flops
        assert base_ratio == 1.0 and ratio < 1.0


@pytest.mark.parametrize("policy", ["video_only", "error"])
def test_missing_audio_policy(ray_cluster, omni_checkpoint, clips, tmp_path, policy):
    source = write_local(tmp_path / "videos", {"silent.mp4": clips["silent.mp4"]})
    out = tmp_path / "out"
    summary = run(config(str(source), str(out), str(omni_checkpoint), decode={"missing_audio": policy}))
    if policy == "error":
        assert summary["errors_by_type"] == {"NoAudio": 1}
    else:
        assert summary["success"] == 1
