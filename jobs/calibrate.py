"""`fastav calibrate`: which pruning setting keeps this model's answers closest to unpruned, at what FLOPs.

    fastav calibrate --config job.yaml --inputs 8 --max-flops 0.56 --out calibration/
    fastav calibrate --checkpoint ./qwen2 --tokens prompts.json --max-flops 0.5 --out calibration/

Sweeps strategies x budgets (fastav.quality.calibration.grid), plus each strategy's setting solved to the
--max-flops ratio on these inputs (calibration.matched), on a few inputs: the job's own videos through its
decode and prompt settings, or token ids with prunable spans for a text decoder (pipeline.samples). Each input's
unpruned greedy continuation (--steps tokens) is the reference; every setting is forced along it and scored by
top-1 agreement and KL, with their spread over the inputs (standard error).

The pick (calibration.pick): the highest mean top-1 agreement within --max-flops; a setting whose top-1 is within
noise of the leader's (2 standard errors of the paired per-input difference, at least one step) ties with it,
and the tie goes to the lowest KL. Prints the frontier and the pick (a tie says so, and which has the lower KL),
and writes to --out: calibration.json (every point with its spread, the pick and why), frontier.png, and
fastav.yaml, the picked setting as a `fastav:` block to paste into the job config. Exit 1 if no setting fits.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch
import yaml
from pydantic import ValidationError

from fastav import UnsupportedModelError
from fastav.families import resolve
from fastav.quality.agreement import reference
from fastav.quality.calibration import CRITERION, STRATEGIES, Pick, Point, frontier, grid, matched, pick, sweep
from jobs.inputs import load_inputs, tool_parser

SHOWN_TIED = 5  # settings printed beside the pick as tied with it (all are in calibration.json)
HEADER = f"{'FLOPs':>6} {'top-1':>6} {'±se':>5} {'KL':>6} {'±se':>5}  strategy"


def _settings(point: Point) -> str:
    settings = {k: v for k, v in point.config.summary().items() if k not in ("strategy", "modalities")}
    return ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in settings.items())


def _name(point: Point) -> str:
    return f"{point.config.strategy} ({_settings(point)})" if _settings(point) else point.config.strategy


def _row(point: Point) -> str:
    tag = "  [FLOPs-matched]" if point.matched else ""
    return (
        f"{point.flops_ratio:>6.1%} {point.top1:>6.3f} {point.top1_se:>5.3f} {point.kl:>6.3f} {point.kl_se:>5.3f}"
        f"  {point.config.strategy:<14} {_settings(point)}{tag}"
    )


def fastav_block(point: Point, chosen: Pick | None = None) -> str:
    """The setting as a job config's `fastav:` block: every field the strategy uses, spelled out."""
    settings = point.config.summary()
    count = len(point.top1_per_input)
    spread = f" ± {point.top1_se:.3f} (se over {count} inputs)" if count > 1 else ""
    comment = (
        f"# fastav calibrate: top-1 agreement {point.top1:.3f}{spread}, KL {point.kl:.3f}, "
        f"FLOPs {point.flops_ratio:.1%}\n"
    )
    if chosen is not None and chosen.best is point:
        comment += f"# {chosen.describe(_name)}\n"
    return comment + yaml.safe_dump({"fastav": settings}, sort_keys=False)


def _labels(sample, adapter) -> torch.Tensor | None:
    """The input's (1, n) modality labels: its own, or the model's layout applied to its ids."""
    if sample.labels is not None:
        return sample.labels.cpu()
    if adapter.default_layout is None:
        return None
    ids, mask = sample.prompt["input_ids"], sample.prompt["attention_mask"]
    return adapter.default_layout.labels(ids, mask.bool()).cpu()


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("fastav calibrate", __doc__)
    parser.add_argument("--inputs", type=int, default=8, help="how many inputs to calibrate on")
    parser.add_argument("--steps", type=int, default=32, help="reference tokens per input")
    parser.add_argument("--max-flops", type=float, default=0.56, help="budget: prefill FLOPs ratio")
    parser.add_argument("--strategies", nargs="+", choices=STRATEGIES, default=list(STRATEGIES))
    parser.add_argument("--out", type=Path, default=Path("calibration"))
    args = parser.parse_args(argv)
    try:
        model, samples = load_inputs(args, args.inputs)
    except (ValidationError, ValueError, OSError, UnsupportedModelError) as error:
        print(f"fastav calibrate: {error}", file=sys.stderr)
        return 2
    adapter = resolve(model)
    num_layers = adapter.num_layers
    configs = grid(num_layers, args.strategies, adapter.min_prune_layer)
    labels = [_labels(s, adapter) for s in samples]
    if any(l is None for l in labels):
        solved, missing = [], dict.fromkeys(args.strategies, "no token layout to plan the FLOPs with")
    else:
        solved, missing = matched(labels, adapter.model_dims, args.max_flops, args.strategies, adapter.min_prune_layer)
    keys = {c.model_dump_json() for c in configs}
    configs += [c for c in solved if c.model_dump_json() not in keys]
    print(
        f"calibrating {len(configs)} settings ({len(solved)} FLOPs-matched at {args.max_flops:.1%}) on "
        f"{len(samples)} inputs x {args.steps} steps ({num_layers} layers)"
    )
    for strategy, why in missing.items():
        print(f"  no {strategy} setting matches {args.max_flops:.1%} FLOPs: {why}")
    print(f"  {HEADER}")
    start = time.perf_counter()
    references = [reference(model, s.prompt, s.labels, args.steps) for s in samples]
    points = sweep(model, references, configs, progress=lambda p: print(f"  {_row(p)}", flush=True), matched=solved)
    chosen, edge = pick(points, args.max_flops), frontier(points)
    best = chosen.best

    print(f"\nfrontier ({time.perf_counter() - start:.0f}s; * the pick):\n  {HEADER}")
    for point in edge:
        print(("* " if point is best else "  ") + _row(point))
    print(f"\npick: {CRITERION}")
    if len(samples) < 2:
        print("  (one input: no spread over inputs, only the one-step floor; calibrate on more inputs)")
    if best is not None:
        print(f"* {_row(best)}")
        others = [p for p in chosen.tied if p is not best]
        for point in others[:SHOWN_TIED]:
            print(f"= {_row(point)}  (within noise)")
        if len(others) > SHOWN_TIED:
            print(f"  ... and {len(others) - SHOWN_TIED} more within noise (calibration.json: pick.tied)")
        print(f"  {chosen.describe(_name)}")
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "inputs": [s.name for s in samples],
        "steps": args.steps,
        "max_flops": args.max_flops,
        "criterion": CRITERION,
        "points": [p.to_dict() for p in points],
        "frontier": [p.to_dict() for p in edge],
        "matched": [c.summary() for c in solved],
        "unmatched": missing,
        "best": best.to_dict() if best else None,
        "pick": chosen.to_dict(),
    }
    (args.out / "calibration.json").write_text(json.dumps(result, indent=2))
    from pipeline import plots

    plots.calibration(result["points"], result["frontier"], args.max_flops, args.out / "frontier.png",
                      f"{len(samples)} inputs, {args.steps} steps", pick=result["best"])  # fmt: skip
    if best is None:
        print(f"no setting within --max-flops {args.max_flops}; see {args.out}/calibration.json", file=sys.stderr)
        return 1
    (args.out / "fastav.yaml").write_text(fastav_block(best, chosen))
    print(f"\npicked within {args.max_flops:.0%} FLOPs -> {args.out}/fastav.yaml\n{fastav_block(best, chosen)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
