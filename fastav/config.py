"""FastAVConfig: which tokens to prune, where, and how much. Immutable and validated on construction.

Model-independent checks happen here; checks that need the model's depth happen in `plan.build_plan`,
and both name the offending field.
"""

from __future__ import annotations

import math
import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Strategy = Literal["none", "fastav", "fastv", "random", "low_attentive", "gradual"]
PrunableModality = Literal["video", "audio", "image"]


def _is_numeric(annotation: Any) -> bool:
    """Whether a field's type holds an int or a float (alone, optional, or in a tuple)."""
    if annotation is int or annotation is float:
        return True
    if typing.get_origin(annotation) is Literal:
        return False
    return any(_is_numeric(arg) for arg in typing.get_args(annotation) if arg is not Ellipsis)


def _check_number(value: Any) -> None:
    if isinstance(value, bool):
        raise ValueError(f"must be a number, got a boolean ({str(value).lower()})")
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return  # pydantic's own check names what was given
    if isinstance(number, float) and math.isnan(number):
        raise ValueError("must be a number, got nan")
    if isinstance(number, float) and math.isinf(number):
        raise ValueError(f"must be a finite number, got {'-' if number < 0 else ''}inf")


def numbers_only(cls: type[BaseModel], value: Any, info: ValidationInfo) -> Any:
    """A `mode="before"` validator for every field: an int or float field (or a tuple of them) refuses booleans
    (pydantic would read true as 1) and NaN or infinity (NaN fails every bound, so pydantic would report the
    first bound, "should be less than 1"). Ints stay valid for float fields."""
    field = cls.model_fields.get(info.field_name) if info.field_name else None
    if field is not None and _is_numeric(field.annotation):
        for item in value if isinstance(value, (list, tuple)) else (value,):
            _check_number(item)
    return value


class NumbersOnly(BaseModel):
    """A base whose int and float fields take only numbers: no booleans, no NaN or infinity."""

    model_config = ConfigDict(allow_inf_nan=False)

    _numbers_only = field_validator("*", mode="before")(numbers_only)


class FastAVConfig(NumbersOnly):
    """Settings for in-LLM audio/video token pruning.

    Strategies:
      - ``fastav``: positional cut of the AV span at ``global_layer`` (keep the earliest AV tokens), then
        drop the lowest-attended ``fine_ratio`` of the remaining AV tokens before every later layer.
      - ``random`` / ``low_attentive``: the paper's global-pruning ablations at the same budget as the
        positional cut (a seeded random subset / the highest-attended AV tokens), same fine stage.
      - ``fastv``: FastV's single stage: at ``fastv_layer`` drop ``fastv_ratio`` of the AV tokens with the
        lowest last-query attention at the layer before.
      - ``gradual`` (ours, beyond the paper): no global cut; before every layer from ``gradual_start`` on drop
        the same fraction of the remaining AV tokens, the lowest-attended ones, so that ``gradual_keep`` of
        them enter the last layer. At the paper's FLOPs budget it follows the unpruned model much more closely
        on a real LM (docs/quality.md, "Which strategy").
      - ``none``: run unpruned (baseline in the same code path).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")  # allow_inf_nan=False from NumbersOnly

    strategy: Strategy = "fastav"
    global_layer: int | None = Field(
        default=None, description="Layer before which global pruning happens; None means num_layers // 2."
    )
    global_cut: int | None = Field(
        default=None,
        ge=1,
        description="Positional cut: AV tokens at sequence positions >= cut (counted from the first non-pad "
        "token) are dropped. Takes precedence over global_keep_ratio.",
    )
    global_keep_ratio: float = Field(
        default=1 / 3,
        gt=0.0,
        le=1.0,
        description="Fraction of each sample's AV tokens (the earliest ones) kept by the global stage when "
        "global_cut is not set. 1/3 matches the paper's cut ~730 on the VideoLLaMA2-AV layout.",
    )
    fine_ratio: float = Field(
        default=0.2, ge=0.0, lt=1.0, description="Fraction P of remaining AV tokens dropped per fine layer."
    )
    fine_layers: tuple[int, ...] | None = Field(
        default=None, description="Layers with fine pruning; None means every layer after global_layer."
    )
    fastv_layer: int | None = Field(
        default=None,
        description="FastV: layer K before which tokens are dropped; None means 2, or the model's first prunable "
        "layer if later (deepstack models).",
    )
    fastv_ratio: float = Field(default=0.5, ge=0.0, lt=1.0, description="FastV: fraction R of AV tokens dropped.")
    gradual_start: int | None = Field(
        default=None,
        description="gradual: the first layer before which AV tokens are dropped; None means 2, or the model's first "
        "prunable layer if later (deepstack models).",
    )
    gradual_keep: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="gradual: fraction of the AV tokens left entering the last layer; each layer from "
        "gradual_start on drops 1 - gradual_keep ** (1 / layers) of the remaining ones (0.25: the paper's ~56% of "
        "the FLOPs on the VideoLLaMA2-AV and Qwen2.5-Omni-7B layouts)",
    )
    score_queries: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Score-based rules rank AV tokens by the attention of the last this-many query positions "
        "(head- and query-mean). 1 is FastV/FastAV's last query; a prompt's question (the text after the AV "
        "span) as the queries is the query-aware variant.",
    )
    modalities: tuple[PrunableModality, ...] = Field(
        default=("video", "audio", "image"), description="Which modalities may be pruned."
    )
    seed: int = Field(default=0, description="Seed of the random baseline (per sample, batch-independent).")
    dry_run: bool = Field(
        default=False, description="Score and select as configured but keep every token (overhead probe)."
    )

    @field_validator("global_layer", "fastv_layer", "gradual_start")
    @classmethod
    def _not_layer_zero(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(
                "must be >= 1: layer 0 is never pruned (generation takes decode positions from layer 0's cache)"
            )
        return value

    @field_validator("fine_layers")
    @classmethod
    def _fine_layers_valid(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is None:
            return None
        if any(layer < 1 for layer in value):
            raise ValueError("layers must be >= 1: layer 0 is never pruned")
        if len(set(value)) != len(value):
            raise ValueError("layers must be unique")
        return tuple(sorted(value))

    @field_validator("modalities")
    @classmethod
    def _modalities_valid(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one prunable modality is needed")
        return tuple(dict.fromkeys(value))

    @model_validator(mode="after")
    def _fine_after_global(self) -> FastAVConfig:
        if self.fine_layers and self.global_layer is not None and min(self.fine_layers) <= self.global_layer:
            raise ValueError(
                f"fine_layers must all come after global_layer={self.global_layer}, got {list(self.fine_layers)}"
            )
        return self

    def summary(self) -> dict[str, object]:
        """The settings that matter for the chosen strategy, for stats and logs."""
        keys = {
            "none": (),
            "fastav": ("global_layer", "global_cut", "global_keep_ratio", "fine_ratio", "fine_layers"),
            "random": ("global_layer", "global_cut", "global_keep_ratio", "fine_ratio", "fine_layers", "seed"),
            "low_attentive": ("global_layer", "global_cut", "global_keep_ratio", "fine_ratio", "fine_layers"),
            "fastv": ("fastv_layer", "fastv_ratio"),
            "gradual": ("gradual_start", "gradual_keep"),
        }[self.strategy]
        scored = self.strategy in ("low_attentive", "fastv", "gradual") or (
            self.strategy != "none" and self.fine_ratio > 0
        )
        if self.score_queries != 1 and scored:
            keys = (*keys, "score_queries")
        if self.global_cut is not None:
            keys = tuple(k for k in keys if k != "global_keep_ratio")  # the cut decides the budget
        out: dict[str, object] = {"strategy": self.strategy}
        out.update({k: getattr(self, k) for k in keys if getattr(self, k) is not None})
        if self.strategy != "none":
            out["modalities"] = list(self.modalities)
        if self.dry_run:
            out["dry_run"] = True
        return out
