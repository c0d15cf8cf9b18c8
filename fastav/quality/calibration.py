"""Calibration: sweep pruning settings on a few inputs, measure each one's FLOPs and its agreement with the
unpruned model, keep the frontier, and pick the best setting under a FLOPs budget.

Which rule and budget keep answers close depends on the model and the data (see docs/quality.md, the fidelity table),
so it is measured per model: `fastav calibrate` (jobs/calibrate.py) runs this on a checkpoint and a handful of
the job's own inputs. Agreement is teacher-forced (fastav.quality.agreement): every setting is scored on the same
unpruned continuations, so the numbers compare settings, not sampling luck.

The pick (`pick`, `CRITERION`): within the budget, the setting with the highest mean top-1 agreement leads; every
setting whose top-1 is within noise of the leader's is tied with it, and among the tied the lowest KL is picked
(then the higher top-1, then the fewer FLOPs). The noise of the difference between two settings measured on the
same inputs is NOISE_SE standard errors of their paired per-input top-1 difference (sample standard deviation of
d_i = top1_a,i - top1_b,i over the n inputs, / sqrt(n)), and never less than one step (1 / the steps measured):
a one-token margin is not evidence. With one input there is no spread, only that floor.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch

from fastav.config import FastAVConfig
from fastav.flops import ModelDims
from fastav.layout import Layout
from fastav.quality.agreement import Reference, compare
from fastav.tokens import planned_stats

STRATEGIES = ("fastav", "random", "low_attentive", "fastv", "gradual")
NOISE_SE = 2.0  # standard errors of the paired per-input difference that a lead must exceed
CRITERION = (
    "highest mean top-1 agreement within the FLOPs budget; a setting within noise of the leader "
    f"(noise: {NOISE_SE:g} standard errors of the paired per-input top-1 difference, at least one step) "
    "ties with it, and the tie goes to the lowest KL"
)
_EPS = 1e-9  # float slack of the comparisons (per-step means are float32 averages)


def _layers(num_layers: int, min_layer: int) -> tuple[int, int]:
    """The grid's early (L/4) and middle (L/2) layers, moved up to `min_layer` and below the last layer."""
    early, middle = (min(max(min_layer, 1, l), num_layers - 1) for l in (num_layers // 4, num_layers // 2))
    return early, middle


def grid(num_layers: int, strategies: Iterable[str] = STRATEGIES, min_layer: int = 1) -> list[FastAVConfig]:
    """The default sweep: for the global strategies the global layer (L/4, L/2) x keep ratio (1/3, 1/2) x P
    (0.1, 0.2); for FastV, K (2, L/4) x R (0.5, 0.75); for gradual, the start (2, L/4) x the AV fraction left
    at the last layer (0.15, 0.25, 0.4). Layers before `min_layer` (deepstack models) move up to it. Duplicates
    (shallow models) appear once. `matched` adds each strategy's setting at a given FLOPs ratio."""
    early, middle = _layers(num_layers, min_layer)
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


def _se(values: Sequence[float]) -> float:
    """Standard error of the mean of `values` (0 with fewer than two)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Point:
    """One setting's result over all calibration inputs, with the per-input values behind it (the spread)."""

    config: FastAVConfig
    top1: float  # teacher-forced top-1 agreement, over all steps of all inputs
    kl: float  # mean KL(unpruned || pruned) per step
    flops_ratio: float  # mean prefill FLOPs ratio over the inputs
    steps: int
    top1_per_input: tuple[float, ...] = ()  # each input's top-1 agreement, in the inputs' order
    kl_per_input: tuple[float, ...] = ()  # each input's mean KL per step
    matched: bool = False  # the strategy's setting solved to the FLOPs budget (`matched`)

    @property
    def top1_se(self) -> float:
        return _se(self.top1_per_input)

    @property
    def kl_se(self) -> float:
        return _se(self.kl_per_input)

    def to_dict(self) -> dict[str, object]:
        def spread(values: tuple[float, ...], se: float) -> dict[str, object]:
            if not values:
                return {"se": None, "min": None, "max": None, "per_input": []}
            return {
                "se": round(se, 4),
                "min": round(min(values), 4),
                "max": round(max(values), 4),
                "per_input": [round(v, 4) for v in values],
            }

        return {
            "settings": self.config.summary(),
            "top1": round(self.top1, 4),
            "kl": round(self.kl, 4),
            "flops_ratio": round(self.flops_ratio, 4),
            "steps": self.steps,
            "inputs": len(self.top1_per_input),
            "top1_spread": spread(self.top1_per_input, self.top1_se),
            "kl_spread": spread(self.kl_per_input, self.kl_se),
            "matched": self.matched,
        }


def flops_ratio(config: FastAVConfig, labels: torch.Tensor, dims: ModelDims, min_layer: int = 1) -> float:
    """The prefill FLOPs ratio `config` gives an input labelled `labels` (1, n), without running the model."""
    return planned_stats(labels, config, dims, min_layer).flops_ratio


def _mean_ratio(
    config: FastAVConfig, labels: torch.Tensor | Sequence[torch.Tensor], dims: ModelDims, min_layer: int
) -> float:
    if isinstance(labels, torch.Tensor):
        return flops_ratio(config, labels, dims, min_layer)
    return sum(flops_ratio(config, l, dims, min_layer) for l in labels) / len(labels)  # as `sweep` averages


def solve(
    make: Callable[[float], FastAVConfig],
    target: float,
    labels: torch.Tensor | Sequence[torch.Tensor],
    dims: ModelDims,
    low: float,
    high: float,
    iterations: int = 30,
    min_layer: int = 1,
) -> FastAVConfig:
    """The config `make(x)` for x in [low, high] whose FLOPs ratio on `labels` is closest to `target` from
    below, by bisection (the ratio must be monotonic in x: a keep ratio raises it, a drop ratio lowers it).
    `labels`: one input's (1, n) labels, or several inputs' (their mean ratio, as the sweep reports it)."""

    def ratio(x: float) -> float:
        return _mean_ratio(make(x), labels, dims, min_layer)

    at_low, at_high = ratio(low), ratio(high)
    ends = sorted((at_low, at_high))
    if not ends[0] <= target <= ends[1]:
        raise ValueError(f"FLOPs ratio {target:.3f} is out of this knob's reach [{ends[0]:.3f}, {ends[1]:.3f}]")
    rising = at_high >= ends[1]
    for _ in range(iterations):
        middle = (low + high) / 2
        if (ratio(middle) > target) == rising:
            high = middle
        else:
            low = middle
    return make(low if rising else high)


def knobs(
    strategy: str, num_layers: int, min_layer: int = 1
) -> list[tuple[str, Callable[[float], FastAVConfig], float, float]]:
    """The free knobs `matched` solves for a strategy, tried in order: (description, make, low, high).
    Global strategies: the keep ratio at L/2 with P=0.2 (the paper's layer and P), at L/4 (lower budgets), at
    L/2 with P=0 (higher budgets); FastV: R at K=2; gradual: the keep at the last layer, from layer 2."""
    early, middle = _layers(num_layers, min_layer)
    first = min(max(2, min_layer), num_layers - 1)

    def fastv(r: float) -> FastAVConfig:
        return FastAVConfig(strategy="fastv", fastv_layer=first, fastv_ratio=r)

    def gradual(k: float) -> FastAVConfig:
        return FastAVConfig(strategy="gradual", gradual_start=first, gradual_keep=k)

    def global_at(layer: int, p: float) -> Callable[[float], FastAVConfig]:
        return lambda k: FastAVConfig(strategy=strategy, global_layer=layer, global_keep_ratio=k, fine_ratio=p)

    if strategy == "fastv":
        return [(f"fastv_ratio at K={first}", fastv, 0.0, 0.99)]
    if strategy == "gradual":
        return [(f"gradual_keep from layer {first}", gradual, 0.01, 1.0)]
    return [
        (f"global_keep_ratio at layer {layer}, P={p}", global_at(layer, p), 0.01, 1.0)
        for layer, p in ((middle, 0.2), (early, 0.2), (middle, 0.0))
    ]


def _rounded(make: Callable[[float], FastAVConfig]) -> Callable[[float], FastAVConfig]:
    return lambda x: make(round(x, 4))


def matched(
    labels: Sequence[torch.Tensor],
    dims: ModelDims,
    target: float,
    strategies: Iterable[str] = STRATEGIES,
    min_layer: int = 1,
) -> tuple[list[FastAVConfig], dict[str, str]]:
    """Each strategy's setting whose mean FLOPs ratio over the inputs labelled `labels` is closest to `target`
    from below (`solve` on the first of its `knobs` that reaches it), so that strategies are also compared at
    the same budget, not only at the grid's. Returns the settings, and why for each strategy none could be
    found (no knob reaches the target)."""
    found, missing = [], {}
    for strategy in strategies:
        reasons = []
        for description, make, low, high in knobs(strategy, dims.num_layers, min_layer):
            rounded = _rounded(make)  # a knob of 4 decimals: readable in fastav.yaml, still from below
            try:
                found.append(solve(rounded, target, labels, dims, low, high, min_layer=min_layer))
                break
            except ValueError as error:
                reasons.append(f"{description}: {error}")
        else:
            missing[strategy] = "; ".join(reasons)
    return found, missing


def sweep(
    model,
    references: list[Reference],
    configs: Iterable[FastAVConfig],
    layout: Layout | None = None,
    progress: Callable[[Point], None] | None = None,
    matched: Iterable[FastAVConfig] = (),
) -> list[Point]:
    """Every config on every reference (teacher-forced); one Point per config (those in `matched` flagged)."""
    flagged = {c.model_dump_json() for c in matched}
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
            top1_per_input=tuple(a.top1 for a in agreements),
            kl_per_input=tuple(a.kl for a in agreements),
            matched=config.model_dump_json() in flagged,
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


def noise(a: Point, b: Point) -> float:
    """How large a top-1 difference between `a` and `b` must be to count: NOISE_SE standard errors of the
    paired per-input difference (both measured on the same inputs), and at least one step of the larger step
    count. Points without per-input values (or from different inputs) get the one-step floor only."""
    floor = 1 / max(a.steps, b.steps, 1)
    if len(a.top1_per_input) != len(b.top1_per_input):
        return floor
    paired = [x - y for x, y in zip(a.top1_per_input, b.top1_per_input, strict=True)]
    return max(NOISE_SE * _se(paired), floor)


@dataclass(frozen=True)
class Pick:
    """The setting `pick` chose and why: the leader on top-1, the settings tied with it, the runner-up."""

    best: Point | None  # the chosen setting (None: nothing fits the budget)
    leader: Point | None  # the highest top-1 within the budget
    tied: tuple[Point, ...] = ()  # the leader and every setting within noise of it (the pick among them)
    runner_up: Point | None = None  # the setting the pick is compared with in `describe`
    margin: float = 0.0  # top-1 of the higher of (best, runner_up) minus the lower's
    noise: float = 0.0  # the noise of that difference
    criterion: str = field(default=CRITERION)

    @property
    def tie(self) -> bool:
        return len(self.tied) > 1

    def describe(self, name: Callable[[Point], str] = lambda p: p.config.strategy) -> str:
        """One line for the operator: what was picked over what, and whether it is a tie."""
        best, other = self.best, self.runner_up
        if best is None:
            return "nothing fits the budget"
        if other is None:
            return f"{name(best)} is the only setting within the budget"
        both = f"top-1 {best.top1:.3f} (KL {best.kl:.3f}) vs {other.top1:.3f} (KL {other.kl:.3f})"
        if not self.tie:
            return (
                f"{name(best)} leads {name(other)}: {both}; the top-1 difference {self.margin:.3f} "
                f"exceeds the noise {self.noise:.3f}"
            )
        more = f" ({len(self.tied)} settings are within noise of the leader; it has the lowest KL of them)"
        return (
            f"tie: {name(best)} and {name(other)}: {both}; the top-1 difference {self.margin:.3f} is within "
            f"the noise {self.noise:.3f}; {name(best)} has the lower KL and is picked"
            + (more if len(self.tied) > 2 else "")
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "criterion": self.criterion,
            "noise_standard_errors": NOISE_SE,
            "tie": self.tie,
            "best": self.best.to_dict()["settings"] if self.best else None,
            "leader": self.leader.to_dict()["settings"] if self.leader else None,
            "runner_up": self.runner_up.to_dict()["settings"] if self.runner_up else None,
            "margin": round(self.margin, 4),
            "noise": round(self.noise, 4),
            "lower_kl": (
                min((self.best, self.runner_up), key=lambda p: p.kl).config.summary()
                if self.best and self.runner_up
                else None
            ),
            "tied": [p.config.summary() for p in self.tied],
        }


def pick(points: Iterable[Point], max_flops: float) -> Pick:
    """The setting to use within `max_flops` by CRITERION (module docstring): the leader on top-1 (then lower
    KL, then fewer FLOPs); the settings within `noise` of it tie with it; the lowest KL among them is picked
    (then the higher top-1, then the fewer FLOPs). The runner-up reported beside the pick: the leader when the
    pick is not the leader, else the best other setting on top-1 (tied or not)."""
    fitting = [p for p in points if p.flops_ratio <= max_flops + _EPS]
    if not fitting:
        return Pick(None, None)
    ranked = sorted(fitting, key=lambda p: (-p.top1, p.kl, p.flops_ratio))
    leader = ranked[0]
    tied = tuple(p for p in ranked if leader.top1 - p.top1 <= noise(leader, p) + _EPS)
    best = min(tied, key=lambda p: (p.kl, -p.top1, p.flops_ratio))
    others = [p for p in (*tied, *ranked) if p is not leader]  # a tied one first
    runner_up = leader if best is not leader else (others[0] if others else None)
    if runner_up is None:
        return Pick(best, leader, tied)
    high, low = (best, runner_up) if best.top1 >= runner_up.top1 else (runner_up, best)
    return Pick(best, leader, tied, runner_up, high.top1 - low.top1, noise(best, runner_up))


def best_under(points: Iterable[Point], max_flops: float) -> Point | None:
    """The setting `pick` chooses within the budget, if any fits."""
    return pick(points, max_flops).best
