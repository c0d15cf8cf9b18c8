"""Turn a FastAVConfig into concrete per-layer pruning steps for a model of a given depth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fastav.config import FastAVConfig

# keep_first: positional cut (keep the earliest AV tokens); random: seeded subset of the same size;
# keep_top: the highest-scored AV tokens of the same size; drop_fraction: drop the lowest-scored fraction.
Rule = Literal["keep_first", "random", "keep_top", "drop_fraction"]


@dataclass(frozen=True)
class PruneStep:
    layer: int  # tokens are dropped before this layer runs
    rule: Rule
    fraction: float = 0.0  # for drop_fraction
    is_global: bool = False

    @property
    def needs_scores(self) -> bool:
        return self.rule in ("keep_top", "drop_fraction")


@dataclass(frozen=True)
class Plan:
    steps: tuple[PruneStep, ...]
    num_layers: int

    @property
    def by_layer(self) -> dict[int, PruneStep]:
        return {s.layer: s for s in self.steps}

    @property
    def scoring_layers(self) -> frozenset[int]:
        """Layers whose attention call records last-query scores (the layer before each scored step)."""
        return frozenset(s.layer - 1 for s in self.steps if s.needs_scores)

    @property
    def first_prune_layer(self) -> int | None:
        return min((s.layer for s in self.steps), default=None)

    @property
    def global_layer(self) -> int | None:
        """The layer of the global step (FastV's single step too), with defaults resolved."""
        return next((s.layer for s in self.steps if s.is_global), None)


DEFAULT_EARLY_LAYER = 2  # fastv_layer / gradual_start when unset (FastV's K=2), unless the family forbids it


class PlanError(ValueError):
    """A config field does not fit the model it is applied to."""


def _check_layer(field: str, layer: int, num_layers: int, min_layer: int, reason: str = "") -> None:
    if not min_layer <= layer < num_layers:
        why = f"; {reason}" if reason and layer < min_layer else ""
        raise PlanError(
            f"FastAVConfig.{field}={layer} is outside this model's prunable layers "
            f"[{min_layer}, {num_layers - 1}] (the model has {num_layers} decoder layers{why})"
        )


def gradual_fraction(keep: float, steps: int) -> float:
    """The per-layer drop fraction that leaves `keep` of the tokens after `steps` layers: 1 - keep^(1/steps)."""
    return 1.0 - keep ** (1.0 / steps)


def build_plan(config: FastAVConfig, num_layers: int, min_layer: int = 1, min_reason: str = "") -> Plan:
    """Resolve defaults against the model depth and validate every layer index.

    `min_layer` is the first layer a model family allows pruning before (1 for most; for models that add
    deepstack visual features after their first k layers, k), `min_reason` says why in errors.
    """
    if config.strategy == "none":
        return Plan((), num_layers)
    if config.strategy == "fastv":
        layer = config.fastv_layer if config.fastv_layer is not None else max(DEFAULT_EARLY_LAYER, min_layer)
        _check_layer("fastv_layer", layer, num_layers, min_layer, min_reason)
        return Plan((PruneStep(layer, "drop_fraction", config.fastv_ratio, is_global=True),), num_layers)
    if config.strategy == "gradual":
        start = config.gradual_start if config.gradual_start is not None else max(DEFAULT_EARLY_LAYER, min_layer)
        _check_layer("gradual_start", start, num_layers, min_layer, min_reason)
        fraction = gradual_fraction(config.gradual_keep, num_layers - start)
        return Plan(tuple(PruneStep(l, "drop_fraction", fraction) for l in range(start, num_layers)),
                    num_layers)  # fmt: skip

    global_layer = config.global_layer if config.global_layer is not None else num_layers // 2
    _check_layer("global_layer", global_layer, num_layers, min_layer, min_reason)
    rule: Rule = {"fastav": "keep_first", "random": "random", "low_attentive": "keep_top"}[config.strategy]
    steps = [PruneStep(global_layer, rule, is_global=True)]
    fine_layers = config.fine_layers if config.fine_layers is not None else range(global_layer + 1, num_layers)
    for layer in fine_layers:
        _check_layer("fine_layers", layer, num_layers, min_layer, min_reason)
        if layer <= global_layer:
            raise PlanError(
                f"FastAVConfig.fine_layers contains {layer}, which is not after global_layer={global_layer}"
            )
        if config.fine_ratio > 0:
            steps.append(PruneStep(layer, "drop_fraction", config.fine_ratio))
    return Plan(tuple(steps), num_layers)
