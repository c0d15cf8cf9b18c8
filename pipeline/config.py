"""PipelineConfig: one validated settings object for the batch-inference job (YAML file or Python).

Unknown keys are rejected by name; credentials never appear here (they come from the standard AWS chain
or the environment). Numeric fields take numbers only: no booleans, no NaN or infinity. Imports pydantic and
yaml only (no torch, no Ray), so a config is checked in well under a second.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, field_validator, model_validator

from fastav.config import FastAVConfig, NumbersOnly
from pipeline.config_errors import ConfigFileError

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")


class _Strict(NumbersOnly):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StorageConfig(_Strict):
    """S3-compatible endpoint; None uses AWS_ENDPOINT_URL or AWS itself. Credentials: AWS chain/env only."""

    endpoint_url: str | None = None
    region: str | None = None
    max_attempts: int = Field(
        default=10,
        ge=1,
        description="tries per S3 request in all, the first included (throttling, 5xx, timeouts and connection "
        "errors are tried again with backoff)",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_has_scheme(cls, value: str | None) -> str | None:
        problem = cls.endpoint_problem(value, "storage.endpoint_url") if value is not None else None
        if problem:
            raise ValueError(problem)
        return value

    @staticmethod
    def endpoint_problem(url: str, setting: str) -> str | None:
        """Why `url` is not an endpoint boto3 and the preflight can use (None: it is). Without a scheme,
        "127.0.0.1:5055" would parse as a path and a connect check would fall back to port 80."""
        from urllib.parse import urlsplit

        if "://" not in url:
            return f"{setting} '{url}' has no scheme: write http://{url} (or https://{url})"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"{setting} '{url}' must start with http:// or https://"
        if not parts.hostname:
            return f"{setting} '{url}' names no host: write http://HOST:PORT"
        try:
            parts.port  # noqa: B018 (parsing the port is the check)
        except ValueError:
            return f"{setting} '{url}' has a port that is not a number: write http://HOST:PORT"
        return None


class SourceConfig(_Strict):
    uri: str = Field(description="s3://bucket/prefix, a local directory, or a manifest (.parquet / .jsonl)")
    extensions: tuple[str, ...] = Field(default=VIDEO_EXTENSIONS, description="listed files must end with one")
    limit: int | None = Field(default=None, ge=1)
    allow_empty: bool = Field(default=False, description="an empty listing is an error unless this is set")
    num_shards: int = Field(default=1, ge=1)
    shard_index: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _shard_in_range(self) -> SourceConfig:
        if self.shard_index >= self.num_shards:
            raise ValueError(f"shard_index={self.shard_index} must be < num_shards={self.num_shards}")
        return self


class DecodeConfig(_Strict):
    num_frames: int = Field(default=8, ge=2, description="frames sampled uniformly (when fps is not set)")
    fps: float | None = Field(default=None, gt=0, description="sample at this rate instead, capped at max_frames")
    max_frames: int = Field(default=32, ge=2)
    max_side: int = Field(default=448, ge=28, description="longest frame side after decode, in pixels")
    max_audio_seconds: float = Field(default=30.0, gt=0, description="audio beyond this is not used")
    max_video_seconds: float | None = Field(
        default=None, gt=0, description="longer videos become error rows (TooLong); null: no cap (frames are sampled)"
    )
    max_bytes: int = Field(default=2 << 30, ge=1, description="larger objects become error rows")
    timeout_seconds: float | None = Field(
        default=600.0, gt=0, description="reading + decoding one video longer than this: a Timeout error row"
    )
    missing_audio: Literal["video_only", "error"] = "video_only"
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs per decode/preprocess task")
    memory_mb: int = Field(default=2048, ge=64, description="memory reserved per decode/preprocess task")
    batch_size: int = Field(default=4, ge=1)


class PromptConfig(_Strict):
    system: str = "You are a helpful assistant that watches and listens to videos."
    user: str = "Describe what happens in this video and what can be heard."
    min_pixels: int = Field(default=4 * 28 * 28, ge=28 * 28, description="per-frame pixel floor of the processor")
    max_pixels: int = Field(default=256 * 28 * 28, ge=28 * 28, description="per-frame pixel cap of the processor")


class ModelConfig(_Strict):
    checkpoint: str = Field(description="local directory or s3://bucket/prefix of a transformers checkpoint")
    family: Literal["auto", "qwen2_5_omni", "qwen3_omni", "qwen3_vl", "qwen2_5_vl"] = Field(
        default="auto",
        description="model family (fastav.families); auto: from the checkpoint's architectures. Any other value "
        "must agree with the checkpoint",
    )
    cache_dir: str = Field(default="~/.cache/fastav/models", description="per-node download cache for s3://")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    attn_implementation: Literal["auto", "sdpa", "flash_attention_2", "varlen", "eager"] = Field(
        default="auto",
        description="auto: flash-attn if installed; else sdpa for the text decoder and, on CUDA, PyTorch's varlen "
        "flash kernel for the vision and audio towers (fastav.varlen); else sdpa. varlen: sdpa + varlen towers",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"


class InferConfig(_Strict):
    batch_size: int = Field(default=4, ge=1)
    num_actors: int = Field(default=1, ge=1)
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs per actor (0 on CPU machines)")
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs per actor")
    max_new_tokens: int = Field(default=64, ge=1)
    decode: Literal["auto", "compiled", "eager"] = Field(
        default="auto",
        description="compiled: FastAV's static per-layer caches with a torch.compile'd decode step (CUDA graphs on "
        "CUDA); eager: transformers' dynamic cache; auto: compiled on CUDA, eager on CPU (benchmarks/decode.py)",
    )
    decode_length_bucket: int = Field(
        default=256, ge=1, description="static cache slots are allocated in multiples of this (one graph per bucket)"
    )
    max_batch_tokens: int | None = Field(
        default=None,
        ge=1,
        description="the most KV-cache tokens one generate() call may hold: rows x (the longest row's prompt keys "
        "averaged over the decoder layers, as pruned, + max_new_tokens). A batch of batch_size rows is split into "
        "calls that fit, so pruning lets more rows share a call; null: one call per batch",
    )


class JobFastAVConfig(FastAVConfig):
    """The job's `fastav:` block: the pruning settings (FastAVConfig) plus the running quality check."""

    shadow_fraction: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="fraction of rows (chosen by id, the same in every run) also generated unpruned, with their "
        "agreement in the shadow_* columns and the summary; 0 turns the check off",
    )

    def pruning(self) -> FastAVConfig:
        return FastAVConfig.model_validate(self.model_dump(exclude={"shadow_fraction"}))


class SinkConfig(_Strict):
    """When the driver writes a Parquet part: every `max_rows_per_part` rows, or when the oldest waiting row has
    waited `max_seconds_per_part`, whichever comes first. A killed run redoes at most the finished rows not yet
    written, so these bound the work at risk (about a minute by default)."""

    max_rows_per_part: int | None = Field(
        default=256, ge=1, description="rows per Parquet part at most; null: one part per model batch"
    )
    max_seconds_per_part: float = Field(
        default=60.0, gt=0, description="a part is written when its oldest row has waited this long"
    )


_OLD_SINK_KEYS = {"rows_per_file": "max_rows_per_part", "flush_seconds": "max_seconds_per_part"}


class PipelineConfig(_Strict):
    source: SourceConfig
    output: str = Field(description="local directory or s3://bucket/prefix for the Parquet files")
    sink: SinkConfig = SinkConfig()
    progress_seconds: float = Field(default=30.0, gt=0, description="a progress line this often when not on a TTY")
    retry_errors: bool = Field(default=False, description="rerun ids that failed for good too (permanent errors)")
    model: ModelConfig
    storage: StorageConfig = StorageConfig()
    decode: DecodeConfig = DecodeConfig()
    prompt: PromptConfig = PromptConfig()
    infer: InferConfig = InferConfig()
    fastav: JobFastAVConfig = JobFastAVConfig()
    run_id: str | None = Field(default=None, description="default: a timestamp")
    overwrite: bool = Field(default=False, description="delete earlier outputs instead of resuming")

    @model_validator(mode="before")
    @classmethod
    def _old_sink_keys(cls, data: Any) -> Any:
        """`rows_per_file` and `flush_seconds` (deprecated) still work, as sink.max_rows_per_part and
        sink.max_seconds_per_part."""
        if not isinstance(data, dict) or not _OLD_SINK_KEYS.keys() & data.keys():
            return data
        data = dict(data)
        sink = data.get("sink") or {}
        sink = dict(sink.model_dump(exclude_unset=True) if isinstance(sink, SinkConfig) else sink)
        for old, new in _OLD_SINK_KEYS.items():
            if old in data:
                if new in sink:
                    raise ValueError(f"{old} and sink.{new} are both set: keep sink.{new}")
                sink[new] = data.pop(old)
                logging.getLogger(__name__).warning("%s is deprecated: write sink.%s instead", old, new)
        data["sink"] = sink
        return data

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: object) -> PipelineConfig:
        """Raises OSError (unreadable), ConfigFileError (not YAML, or not a mapping) or ValidationError."""
        data = read_yaml_mapping(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})" if len(value) <= 40 else f"a string ({value[:37]!r}...)"
    return f"a {type(value).__name__}"


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file ({} for an empty file); ConfigFileError names the file, and for a
    syntax error its line and column (1-based), in one line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigFileError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = error.problem or error.context or "syntax error"
        if error.context and problem.startswith("but "):  # "expected a single document ..., but found another"
            problem = f"{error.context}, {problem}"
        problem = " ".join(problem.split())
        raise ConfigFileError(f"{where}: not valid YAML: {problem}") from None
    except yaml.YAMLError as error:
        raise ConfigFileError(f"{path}: not valid YAML: {' '.join(str(error).split())}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigFileError(
            f"{path}: the top level must be a mapping of settings (source:, output:, model:, ...), got {_kind(data)}"
        )
    return data
