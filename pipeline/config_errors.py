"""A bad job configuration, in one line per problem: the field (dotted path), the reason, the value given.

    infer.batch_sise: unknown field (value 4)
    fastav.fine_ratio: must be less than 1 (value 1.5)
    job.yaml:4:9: not valid YAML: mapping values are not allowed here

Imports pydantic and the standard library only: reporting a typo must not wait for torch or Ray.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pydantic import ValidationError

_VALUE_CHARS = 80


class ConfigFileError(ValueError):
    """A config file that is not YAML, or whose top level is not a mapping of settings. Its message is one line
    naming the file (and, for a syntax error, the line and column)."""


def _path(location: tuple[int | str, ...]) -> str:
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


def format_value(value: Any) -> str:
    """A value as the YAML file would spell it, on one line and short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)  # nan, inf, -inf
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=repr)
        except (TypeError, ValueError):
            text = repr(value)
    text = " ".join(text.split())
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 3] + "..."


def _reason(error: dict[str, Any]) -> str:
    kind, message = error["type"], " ".join(str(error["msg"]).split())
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "missing (required)"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "must be a mapping of settings (key: value)"
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should "):
        message = "must " + message.removeprefix("Input should ")
    return message


def describe_validation_error(error: ValidationError) -> list[str]:
    """One line per error: `<field path>: <reason> (value <given>)`. The value is left out where there is none
    (a missing field), where it is a whole block of settings, or where the reason already names it."""
    lines = []
    for item in error.errors(include_url=False):
        path, reason, value = _path(item["loc"]), _reason(item), item.get("input")
        line = reason if reason.startswith(f"{path} ") else f"{path}: {reason}"
        named = "got " in reason or (isinstance(value, str) and (f"'{value}'" in reason or f'"{value}"' in reason))
        if item["type"] not in ("missing", "json_invalid") and not isinstance(value, dict) and not named:
            line += f" (value {format_value(value)})"
        lines.append(line)
    return lines or [str(error).splitlines()[0]]


def describe_config_error(error: BaseException) -> list[str]:
    """The lines to print for an error met while loading a config: validation, the YAML file, or reading it."""
    if isinstance(error, ValidationError):
        return describe_validation_error(error)
    if isinstance(error, OSError) and error.strerror:
        where = error.filename if error.filename is not None else "config"
        return [f"{where}: cannot read: {error.strerror}"]
    return [" ".join(str(error).split())]
