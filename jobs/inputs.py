"""The inputs of the quality tools (`fastav calibrate`, `fastav rollout`): a job config, or a text decoder
checkpoint with a token file (formats in pipeline.samples)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pydantic import ValidationError

from pipeline.config import PipelineConfig
from pipeline.config_errors import ConfigFileError, describe_config_error


def tool_parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """A tool's parser with the input choice: a job config, or a text checkpoint and a token file."""
    parser = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="job YAML: its model, source, decode and prompt settings")
    source.add_argument("--checkpoint", help="a text decoder checkpoint directory (Qwen2, LLaMA, ...)")
    parser.add_argument("--tokens", type=Path, help="with --checkpoint: JSON token ids and prunable spans")
    parser.set_defaults(tool_prog=prog)
    return parser


def load_config(args: argparse.Namespace) -> PipelineConfig:
    """The job config of --config; a bad one raises ConfigFileError whose message is one line per problem, every
    line after the first starting with the tool's name as the tool prints the first one."""
    try:
        return PipelineConfig.from_yaml(args.config)
    except (ValidationError, ConfigFileError) as error:
        lines = [f"invalid configuration: {line}" for line in describe_config_error(error)]
        raise ConfigFileError(f"\n{getattr(args, 'tool_prog', 'fastav')}: ".join(lines)) from None


def load_inputs(args: argparse.Namespace, count: int):
    """(model, samples) from the parsed input arguments."""
    from pipeline.samples import job_samples, token_samples

    if args.config is not None:
        return job_samples(load_config(args), count)
    if args.tokens is None:
        raise ValueError("--checkpoint needs --tokens (a JSON file of input ids and prunable spans)")
    model, samples = token_samples(args.checkpoint, args.tokens)
    return model, samples[:count]
