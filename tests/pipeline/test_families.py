"""End to end per model family: real mp4 files (with and without audio, and an audio-only one) on the S3 server
over HTTP -> decode -> the family's processor -> pruned tiny model on a Ray actor -> Parquet rows."""

from __future__ import annotations

import pytest

from pipeline.graph import run
from pipeline.synthetic import make_clip
from tests.pipeline.test_graph import config, download_parts, query

FAMILIES = ["qwen3_omni", "qwen3_vl", "qwen3_vl_moe", "qwen2_5_vl"]


@pytest.fixture(scope="module")
def corpus(clips) -> dict[str, bytes]:
    good = {name: clips[name] for name in ("clip_0000.mp4", "clip_0001.mp4")}
    return {**good, "silent.mp4": clips["silent.mp4"], "audio_only.mp4": make_clip(seconds=2.0, video_track=False)}


@pytest.mark.parametrize("name", FAMILIES)
def test_family_end_to_end_on_s3(name, family_checkpoints, corpus, s3, s3_endpoint, ray_cluster, tmp_path):
    family = "qwen3_vl" if name == "qwen3_vl_moe" else name
    bucket = f"fam-{name.replace('_', '-')}"
    s3.s3.create_bucket(Bucket=bucket)
    for file, data in corpus.items():
        s3.write(f"s3://{bucket}/videos/{file}", data)
    for path in family_checkpoints[name].iterdir():
        s3.write(f"s3://{bucket}/model/{path.name}", path.read_bytes())
    cfg = config(
        f"s3://{bucket}/videos/",
        f"s3://{bucket}/out",
        f"s3://{bucket}/model",
        s3_endpoint,
        model={"cache_dir": str(tmp_path / "cache"), "family": family},
    )
    summary = run(cfg)

    parts = download_parts(s3, f"s3://{bucket}/out", tmp_path / "parts")
    rows = {
        uri.rsplit("/", 1)[-1]: dict(zip(COLUMNS, rest, strict=True))
        for uri, *rest in query(parts, f"SELECT uri, {', '.join(COLUMNS)} FROM parts").fetchall()
    }
    assert set(rows) == set(corpus) and summary["success"] == 3 and summary["error"] == 1
    assert all(row["model_family"] == family for row in rows.values())
    only_audio = rows["audio_only.mp4"]
    assert (only_audio["status"], only_audio["error_type"]) == ("error", "NoVideo")
    assert "audio track but no video stream" in only_audio["error_message"]
    takes_audio = family == "qwen3_omni"
    for file in ("clip_0000.mp4", "clip_0001.mp4", "silent.mp4"):
        row = rows[file]
        assert row["status"] == "success", row["error_message"]
        assert row["tokens_video"] > 0 and row["av_tokens_last_layer"] < row["tokens_video"] + row["tokens_audio"]
        assert 0 < row["flops_ratio"] < 1 and isinstance(row["output_text"], str)
        assert row["has_audio"] == (file != "silent.mp4")
        used = takes_audio and row["has_audio"]
        assert row["audio_used"] == used and (row["tokens_audio"] > 0) == used and (row["audio_seconds"] > 0) == used


COLUMNS = [
    "status",
    "error_type",
    "error_message",
    "output_text",
    "model_family",
    "has_audio",
    "audio_used",
    "audio_seconds",
    "tokens_video",
    "tokens_audio",
    "av_tokens_last_layer",
    "flops_ratio",
]
