"""Batch inference job: videos -> pruned Qwen2.5-Omni -> Parquet with per-sample FastAV savings.

    python -m jobs.batch_infer                          # embedded default: tiny model + synthetic clips, local Ray
    python -m jobs.batch_infer --config jobs/configs/s3-example.yaml
    ray job submit -- python -m jobs.batch_infer --config <file>

With no --config it writes a tiny random-weight Qwen2.5-Omni checkpoint (weights, tokenizer, processor) and
a few real mp4 clips with audio under --workdir, then runs the same pipeline a real config runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from pipeline.config import ModelConfig, PipelineConfig, SourceConfig
from pipeline.config_errors import ConfigFileError, describe_config_error


def embedded_default(workdir: Path) -> PipelineConfig:
    from fastav import testing
    from pipeline import synthetic

    checkpoint = workdir / "tiny-qwen2.5-omni"
    if not (checkpoint / "processor_config.json").exists():
        testing.save_omni_thinker(checkpoint, processor=True)
    synthetic.write_corpus(workdir / "videos", count=8)
    return PipelineConfig(
        source=SourceConfig(uri=str(workdir / "videos")),
        output=str(workdir / "output"),
        model=ModelConfig(checkpoint=str(checkpoint)),
        infer={"batch_size": 4, "max_new_tokens": 16},
        fastav={"global_layer": 3, "fine_ratio": 0.2},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", type=Path, help="YAML PipelineConfig; omitted: the embedded default")
    source.add_argument("--config-json", help="the PipelineConfig as JSON (what `fastav submit` sends)")
    parser.add_argument("--workdir", type=Path, default=Path("work/default"), help="embedded default's files")
    parser.add_argument("--output", help="override output")
    parser.add_argument("--run-id", help="override run_id")
    parser.add_argument("--overwrite", action="store_true", help="start fresh instead of resuming")
    parser.add_argument(
        "--retry-errors", action="store_true", help="also rerun ids that failed for good (permanent error types)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    try:
        if args.config_json:
            config = PipelineConfig.model_validate_json(args.config_json)
        elif args.config:
            config = PipelineConfig.from_yaml(args.config)
        else:
            config = embedded_default(args.workdir)
        overrides = {
            "output": args.output,
            "run_id": args.run_id,
            "overwrite": args.overwrite or None,
            "retry_errors": args.retry_errors or None,
        }
        config = config.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    except (ValidationError, ConfigFileError, OSError) as error:
        for line in describe_config_error(error):
            print(f"batch_infer: invalid configuration: {line}", file=sys.stderr)
        return 2

    # Only a valid config gets here: the pipeline (Ray, torch, the model families) is imported after the check,
    # so a typo is reported without waiting for them.
    from pipeline.errors import InputError, SummaryError
    from pipeline.graph import run
    from pipeline.summary import format_summary

    try:
        summary = run(config)
    except InputError as error:
        print(f"batch_infer: {error}", file=sys.stderr)
        return 2
    except SummaryError as error:
        print(f"batch_infer: {error}", file=sys.stderr)
        return 3
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
