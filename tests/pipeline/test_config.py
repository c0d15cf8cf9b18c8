"""The job config's error reports: one line per problem (field path, reason, value), malformed YAML named by file,
line and column, numbers that are numbers, and validation that imports neither torch nor Ray."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import PipelineConfig
from pipeline.config_errors import ConfigFileError, describe_config_error, describe_validation_error

ROOT = Path(__file__).resolve().parents[2]
VALID = {"source": {"uri": "/v"}, "output": "/o", "model": {"checkpoint": "/m"}}


def errors_of(**blocks) -> list[str]:
    with pytest.raises(ValidationError) as info:
        PipelineConfig.model_validate({**VALID, **blocks})
    return describe_validation_error(info.value)


def test_each_error_is_one_line_naming_field_reason_and_value():
    lines = errors_of(
        infer={"batch_sise": 4, "num_actors": 0},
        fastav={"fine_ratio": 1.5, "fine_layers": [15, "x"], "strategy": "fastest"},
        decode={"max_side": "big"},
    )
    assert lines == [
        'decode.max_side: must be a valid integer, unable to parse string as an integer (value "big")',
        "infer.num_actors: must be greater than or equal to 1 (value 0)",
        "infer.batch_sise: unknown field (value 4)",
        "fastav.strategy: must be 'none', 'fastav', 'fastv', 'random', 'low_attentive' or 'gradual' "
        '(value "fastest")',
        "fastav.fine_ratio: must be less than 1 (value 1.5)",
        'fastav.fine_layers[1]: must be a valid integer, unable to parse string as an integer (value "x")',
    ]
    assert not any("https://" in line or "\n" in line for line in lines)


def test_missing_fields_and_blocks_that_are_not_mappings():
    with pytest.raises(ValidationError) as info:
        PipelineConfig.model_validate({"source": {}, "infer": 4})
    assert describe_validation_error(info.value) == [
        "source.uri: missing (required)",
        "output: missing (required)",
        "model: missing (required)",
        "infer: must be a mapping of settings (key: value) (value 4)",
    ]


def test_a_validator_that_names_the_values_is_not_repeated():
    assert errors_of(source={"uri": "/v", "num_shards": 2, "shard_index": 2}) == [
        "source: shard_index=2 must be < num_shards=2"
    ]
    assert errors_of(fastav={"global_layer": 10, "fine_layers": [5]}) == [
        "fastav: fine_layers must all come after global_layer=10, got [5]"
    ]


def test_long_values_are_cut_to_one_short_line():
    (line,) = errors_of(prompt={"system": 7, "user": ["a\nb" * 100]})[-1:]
    assert line.startswith("prompt.user: must be a valid string (value [") and line.endswith("...)")
    assert "\n" not in line and len(line) < 140


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source: {uri: /v\noutput: /o\n", "{path}:2:7: not valid YAML: expected ',' or '}}', but got ':'"),
        ("model: checkpoint: /m\n", "{path}:1:18: not valid YAML: mapping values are not allowed here"),
        ("a: 1\n\tb: 2\n", "{path}:2:1: not valid YAML: found character '\\t' that cannot start any token"),
        (
            "source: /v\n---\noutput: /o\n",
            "{path}:2:1: not valid YAML: expected a single document in the stream, but found another document",
        ),
        (
            "- source\n- output\n",
            "{path}: the top level must be a mapping of settings (source:, output:, model:, ...), got a list",
        ),
        (
            "s3://bucket/videos\n",
            "{path}: the top level must be a mapping of settings (source:, output:, model:, ...), "
            "got a string ('s3://bucket/videos')",
        ),
        (
            "42\n",
            "{path}: the top level must be a mapping of settings (source:, output:, model:, ...), got a number (42)",
        ),
    ],
    ids=["unclosed-flow", "colon-in-value", "tab", "two-documents", "list", "string", "number"],
)
def test_malformed_yaml_raises_one_line_naming_file_line_and_column(tmp_path, text, message):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError) as info:
        PipelineConfig.from_yaml(path)
    assert isinstance(info.value, ValueError)
    assert str(info.value) == message.format(path=path)
    assert describe_config_error(info.value) == [message.format(path=path)]


def test_an_empty_file_is_a_config_with_every_required_field_missing(tmp_path):
    path = tmp_path / "job.yaml"
    for text in ("", "# to do\n", "---\n"):
        path.write_text(text)
        with pytest.raises(ValidationError) as info:
            PipelineConfig.from_yaml(path)
        assert describe_config_error(info.value) == [f"{f}: missing (required)" for f in ("source", "output", "model")]


def test_a_file_that_is_not_text_is_named(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_bytes(b"source: \xff\xfe\n")
    with pytest.raises(ConfigFileError, match=r"job\.yaml: not UTF-8 text \(byte 8\)"):
        PipelineConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("blocks", "line"),
    [
        ({"decode": {"fps": math.nan}}, "decode.fps: must be a number, got nan"),
        ({"decode": {"max_audio_seconds": math.inf}}, "decode.max_audio_seconds: must be a finite number, got inf"),
        ({"decode": {"timeout_seconds": "nan"}}, "decode.timeout_seconds: must be a number, got nan"),
        ({"infer": {"num_gpus": True}}, "infer.num_gpus: must be a number, got a boolean (true)"),
        ({"infer": {"batch_size": False}}, "infer.batch_size: must be a number, got a boolean (false)"),
        ({"source": {"uri": "/v", "limit": True}}, "source.limit: must be a number, got a boolean (true)"),
        ({"sink": {"max_seconds_per_part": -math.inf}}, "sink.max_seconds_per_part: must be a finite number, got -inf"),
        ({"fastav": {"shadow_fraction": math.nan}}, "fastav.shadow_fraction: must be a number, got nan"),
        ({"fastav": {"global_cut": True}}, "fastav.global_cut: must be a number, got a boolean (true)"),
    ],
)
def test_numeric_fields_refuse_nan_infinity_and_booleans(blocks, line):
    assert errors_of(**blocks) == [line]


def test_numeric_fields_take_yaml_numbers_and_ints_for_floats(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "source: {uri: /v, limit: 3}\noutput: /o\nmodel: {checkpoint: /m}\nflush_seconds: 60\n"
        "decode: {fps: 2, max_audio_seconds: 1.5e+1, num_cpus: 0.5}\ninfer: {num_gpus: 1, batch_size: 8}\n"
        "fastav: {fine_ratio: 0, global_keep_ratio: 1, shadow_fraction: 0.05, fine_layers: [15, 16]}\n"
        "retry_errors: true\n"
    )
    config = PipelineConfig.from_yaml(path)
    assert config.decode.fps == 2.0 and isinstance(config.decode.fps, float) and config.decode.max_audio_seconds == 15
    assert config.infer.num_gpus == 1.0 and config.infer.batch_size == 8 and config.source.limit == 3
    assert config.fastav.fine_ratio == 0.0 and config.fastav.fine_layers == (15, 16) and config.retry_errors is True


def test_validating_a_config_imports_neither_torch_nor_ray():
    code = (
        "import sys\n"
        "import pipeline.config\n"
        "from pydantic import ValidationError\n"
        f"config = pipeline.config.PipelineConfig.model_validate({VALID!r})\n"
        "assert config.fastav.pruning().fine_ratio == 0.2\n"
        "try:\n"
        f"    pipeline.config.PipelineConfig.model_validate({{**{VALID!r}, 'infer': {{'batch_sise': 4}}}})\n"
        "except ValidationError:\n"
        "    pass\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'transformers', 'numpy'))\n"
        "assert not heavy, heavy\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_decode_settings_are_checked_by_name():
    errors = errors_of(infer={"decode": "fast", "max_batch_tokens": 0, "decode_length_bucket": -1})
    assert len(errors) == 3, errors
    assert errors[0].startswith("infer.decode: ") and "'auto', 'compiled' or 'eager'" in errors[0]
    assert errors[1].startswith("infer.decode_length_bucket: ") and errors[2].startswith("infer.max_batch_tokens: ")
