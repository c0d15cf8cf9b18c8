"""Calibration: sweep pruning settings on a few inputs, measure each one's FLOPs and its agreement with the
unpruned model, keep the frontier, and pick the best setting under a FLOPs budget.

Which rule and budget keep answers close depends on the model and the data (see the README's fidelity table),
so it is measured per model: `fastav calibrate` (jobs/calibrate.py) runs this on a checkpoint and a handful of
the job's own inputs. Agreement is teacher-forced (fastav.quality.agreement): every setting is scored on the same
unpruned continuations, so the numbers compare settings, not sampling luck.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from fastav.config import FastAVConfig
from fastav.flops import ModelDims
from fastav.layout import Layout
from fastav.quality.agreement import Reference, compare
from fastav.tokens import planned_stats

STRATEGIES = ("fastav", "random", "low_attentive", "fastv", "gradual")


def grid(num_layers: int, strategies: Iterable[str] = STRATEGIES, min_layer: int = 1) -> list[FastAVConfig]:
    """The default sweep: for the global strategies the global layer (L/4, L/2) x keep ratio (1/3, 1/2) x P
    (0.1, 0.2); for FastV, K (2, L/4) x R (0.5, 0.75); for gradual, the start (2, L/4) x the AV fraction left
    at the last layer (0.15, 0.25, 0.4). Layers before `min_layer` (deepstack models) move up to it. Duplicates
    (shallow models) appear once."""
    early, middle = (min(max(min_layer, 1, l), num_layers - 1) for l in (num_layers // 4, num_layers // 2))
    out: dict[str, FastAVConfig] = {}
    for strategy in strategies:
        if strategy == "fastv":
            candidates = [
                FastAVConfig(strategy="fastv", fastv_layer=min(k, num_layers - 1), fastv_ratio=r)
                for k in (max(2, min_layer), max(2, early))
                for r in (0.5, 0.75)
            ]
        elif strategy == "gradual":
            candidates = [
                FastAVConfig(strategy="gradual", gradual_start=min(start, num_layers - 1), gradual_keep=keep)
                for start in (max(2, min_layer), max(2, early))
                for keep in (0.15, 0.25, 0.4)
            ]
        else:
            candidates = [
                FastAVConfig(strategy=strategy, global_layer=g, global_keep_ratio=k, fine_ratio=p)
                for g in (early, middle)
                for k in (1 / 3, 1 / 2)
                for p in (0.1, 0.2)
            ]
        out.update((c.model_dump_json(), c) for c in candidates)
    return list(out.values())


@dataclass(frozen=True)
class Point:
    """One setting's result over all calibration inputs."""

    config: FastAVConfig
    top1: float  # teacher-forced top-1 agreement, over all steps of all inputs
    kl: float  # mean KL(unpruned || pruned) per step
    flops_ratio: float  # mean prefill FLOPs ratio over the inputs
    steps: int

    def to_dict(self) -> dict[str, object]:
        return {
            "settings": self.config.summary(),
            "top1": round(self.top1, 4),
            "kl": round(self.kl, 4),
            "flops_ratio": round(self.flops_ratio, 4),
            "steps": self.steps,
        }


def flops_ratio(config: FastAVConfig, labels: torch.Tensor, dims: ModelDims, min_layer: int = 1) -> float:
    """The prefill FLOPs ratio `config` gives an input labelled `labels` (1, n), without running the model."""
    return planned_stats(labels, config, dims, min_layer).flops_ratio


def solve(
    make: Callable[[float], FastAVConfig],
    target: float,
    labels: torch.Tensor,
    dims: ModelDims,
    low: float,
    high: float,
    iterations: int = 30,
) -> FastAVConfig:
    """The config `make(x)` for x in [low, high] whose FLOPs ratio on `labels` is closest to `target` from
    below, by bisection (the ratio must be monotonic in x: a keep ratio raises it, a drop ratio lowers it)."""
    ends = sorted((flops_ratio(make(low), labels, dims), flops_ratio(make(high), labels, dims)))
    if not ends[0] <= target <= ends[1]:
        raise ValueError(f"FLOPs ratio {target:.3f} is out of this knob's reach [{ends[0]:.3f}, {ends[1]:.3f}]")
    rising = flops_ratio(make(high), labels, dims) >= ends[1]
    for _ in range(iterations):
        middle = (low + high) / 2
        if (flops_ratio(make(middle), labels, dims) > target) == rising:
            high = middle
        else:
            low = middle
    return make(low if rising else high)


def sweep(
    model,
    references: list[Reference],
    configs: Iterable[FastAVConfig],
    layout: Layout | None = None,
    progress: Callable[[Point], None] | None = None,
) -> list[Point]:
    """Every config on every reference (teacher-forced); one Point per config."""
    points = []
    for config in configs:
        agreements = [compare(model, ref, config, layout)[0] for ref in references]
        steps = sum(a.steps for a in agreements)
        point = Point(
            config,
            top1=sum(a.top1 * a.steps for a in agreements) / steps,
            kl=sum(a.kl * a.steps for a in agreements) / steps,
            flops_ratio=sum(a.flops_ratio for a in agreements) / len(agreements),
            steps=steps,
        )
        points.append(point)
        if progress is not None:
            progress(point)
    return points


def frontier(points: Iterable[Point]) -> list[Point]:
    """The points no other point beats on both FLOPs and agreement, cheapest first."""
    out: list[Point] = []
    for point in sorted(points, key=lambda p: (p.flops_ratio, -p.top1, p.kl)):
        if not out or point.top1 > out[-1].top1:
            out.append(point)
    return out


def best_under(points: Iterable[Point], max_flops: float) -> Point | None:
    """The highest agreement (then the lowest KL, then the fewest FLOPs) within the budget, if any fits."""
    fitting = [p for p in points if p.flops_ratio <= max_flops]
    return max(fitting, key=lambda p: (p.top1, -p.kl, -p.flops_ratio), default=None)
