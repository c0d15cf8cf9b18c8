"""Fail fast before Ray starts: a config or input problem is one line naming the setting, and exit code 2."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml

from pipeline.errors import InputError
from pipeline.preflight import preflight
from tests.conftest import _free_port
from tests.jobrun import batch_infer
from tests.pipeline.test_graph import config


@pytest.fixture(scope="module")
def buckets(s3):
    for name in ("pre-videos", "pre-empty", "pre-results", "pre-models"):
        s3.s3.create_bucket(Bucket=name)
    s3.write("s3://pre-videos/in/a.mp4", b"not decoded by a preflight")
    s3.write("s3://pre-models/tiny/config.json", json.dumps({"architectures": [OMNI]}).encode())
    for name, checkpoint in UNSUPPORTED.items():
        s3.write(f"s3://pre-models/{name}/config.json", json.dumps(checkpoint).encode())
    return s3


OMNI = "Qwen2_5OmniThinkerForConditionalGeneration"
UNSUPPORTED = {
    "bert": {"architectures": ["BertModel"], "model_type": "bert"},
    "qwen35": {
        "architectures": ["Qwen3_5ForConditionalGeneration"],
        "text_config": {"layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"]},
    },
    "gemma4": {"architectures": ["Gemma4ForConditionalGeneration"], "text_config": {"num_kv_shared_layers": 20}},
    "qwen2": {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2"},
}


def job(endpoint, **fields):
    base = dict(source="s3://pre-videos/in/", output="s3://pre-results/out/", checkpoint="s3://pre-models/tiny")
    base.update(fields)
    return config(base["source"], base["output"], base["checkpoint"], endpoint)


def test_a_good_config_lists_its_videos(buckets, s3_endpoint):
    assert [row["uri"] for row in preflight(job(s3_endpoint))] == ["s3://pre-videos/in/a.mp4"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "s3://pre-empty/clips/"}, r"^source\.uri s3://pre-empty/clips/ holds no \.mp4/.*allow_empty"),
        ({"source": "s3://pre-videos/typo/"}, r"^source\.uri s3://pre-videos/typo/ holds no"),
        (
            {"source": "s3://no-such-bucket/in/"},
            r"^source\.uri s3://no-such-bucket/in/: bucket 'no-such-bucket' does not",
        ),
        ({"output": "s3://no-such-results/out/"}, r"^output s3://no-such-results/out/: bucket 'no-such-results'"),
        ({"checkpoint": "s3://pre-models/missing"}, r"^model\.checkpoint s3://pre-models/missing: no config\.json"),
        ({"checkpoint": "s3://no-models/tiny"}, r"^model\.checkpoint s3://no-models/tiny: bucket 'no-models'"),
        ({"source": "s3://pre-videos/list.jsonl"}, r"^source\.uri s3://pre-videos/list\.jsonl: not found$"),
        (
            {"checkpoint": "s3://pre-models/bert"},
            r"^model\.checkpoint s3://pre-models/bert: FastAV does not support .*\[BertModel\]: supported .*"
            r"Qwen3OmniMoeThinkerForConditionalGeneration, Qwen3VLForConditionalGeneration",
        ),
        (
            {"checkpoint": "s3://pre-models/qwen35"},
            r"^model\.checkpoint s3://pre-models/qwen35: FastAV cannot prune .*Qwen3_5ForConditionalGeneration.* "
            r"linear attention",
        ),
        ({"checkpoint": "s3://pre-models/gemma4"}, r"cannot prune .*Gemma4.* KV-shared layers"),
        (
            {"checkpoint": "s3://pre-models/qwen2"},
            r"^model\.checkpoint s3://pre-models/qwen2: Qwen2ForCausalLM .* takes no video",
        ),
    ],
)
def test_problems_are_one_line_naming_the_setting(buckets, s3_endpoint, fields, message):
    with pytest.raises(InputError, match=message) as info:
        preflight(job(s3_endpoint, **fields))
    assert "\n" not in str(info.value)


def test_a_family_that_disagrees_with_the_checkpoint_is_refused(buckets, s3_endpoint):
    cfg = job(s3_endpoint)
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"family": "qwen3_vl"})})
    with pytest.raises(InputError, match=r"model\.family is 'qwen3_vl' but the checkpoint is " + OMNI):
        preflight(cfg)


def test_an_empty_listing_may_be_allowed(buckets, s3_endpoint):
    cfg = job(s3_endpoint, source="s3://pre-empty/clips/")
    cfg = cfg.model_copy(update={"source": cfg.source.model_copy(update={"allow_empty": True})})
    assert preflight(cfg) == []


def test_a_local_checkpoint_without_config_json(buckets, s3_endpoint, tmp_path):
    with pytest.raises(InputError, match=r"^model\.checkpoint .*/nothing: no config\.json"):
        preflight(job(s3_endpoint, checkpoint=str(tmp_path / "nothing")))


def test_an_unreachable_endpoint_fails_in_seconds():
    closed = f"http://127.0.0.1:{_free_port()}"
    start = time.monotonic()
    with pytest.raises(InputError, match=rf"^storage\.endpoint_url {closed}: cannot connect \("):
        preflight(job(closed))
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(("checkpoint", "reason"), [(None, "no config.json"), ("qwen35", "linear attention")])
def test_the_job_exits_2_with_one_line_before_ray_starts(buckets, s3_endpoint, tmp_path, checkpoint, reason):
    config_file = tmp_path / "job.yaml"
    path = tmp_path / "checkpoint"
    if checkpoint is not None:  # an unsupported model: refused from its config.json, before any video is read
        path.mkdir()
        (path / "config.json").write_text(json.dumps(UNSUPPORTED[checkpoint]))
    bad = job(s3_endpoint, checkpoint=str(path))
    config_file.write_text(yaml.safe_dump(bad.model_dump(mode="json")))
    sessions = set(Path("/tmp/ray").glob("session_2*")) if Path("/tmp/ray").exists() else set()
    proc = batch_infer("--config", str(config_file), env={"RAY_ADDRESS": None}, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("batch_infer: model.checkpoint ") and reason in lines[0]
    after = set(Path("/tmp/ray").glob("session_2*")) if Path("/tmp/ray").exists() else set()
    assert after == sessions, "a Ray instance was started for a job that could not run"
