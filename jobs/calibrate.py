"""`fastav calibrate`: which pruning setting keeps this model's answers closest to unpruned, at what FLOPs.

    fastav calibrate --config job.yaml --inputs 8 --max-flops 0.56 --out calibration/
    fastav calibrate --checkpoint ./qwen2 --tokens prompts.json --max-flops 0.5 --out calibration/

Sweeps strategies x budgets (fastav.quality.calibration.grid) on a few inputs: the job's own videos through its decode
and prompt settings, or token ids with prunable spans for a text decoder (pipeline.samples). Each input's
unpruned greedy continuation (--steps tokens) is the reference; every setting is forced along it and scored by
top-1 agreement and KL. Prints the frontier, and writes to --out: calibration.json (every point), frontier.png,
and fastav.yaml, the best setting within --max-flops as a `fastav:` block to paste into the job config.
Exit 1 if no setting fits the budget.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml
from pydantic import ValidationError

from fastav import UnsupportedModelError
from fastav.families import resolve
from fastav.quality.agreement import reference
from fastav.quality.calibration import STRATEGIES, Point, best_under, frontier, grid, sweep
from jobs.inputs import load_inputs, tool_parser


def _row(point: Point) -> str:
    settings = {k: v for k, v in point.config.summary().items() if k not in ("strategy", "modalities")}
    text = ", ".join(f"{k}={round(v, 3) if isinstance(v, float) else v}" for k, v in settings.items())
    return f"{point.flops_ratio:>6.1%} {point.top1:>7.3f} {point.kl:>7.3f}  {point.config.strategy:<14} {text}"


def fastav_block(point: Point) -> str:
    """The setting as a job config's `fastav:` block: every field the strategy uses, spelled out."""
    settings = point.config.summary()
    comment = f"# fastav calibrate: top-1 agreement {point.top1:.3f}, KL {point.kl:.3f}, FLOPs {point.flops_ratio:.1%}"
    return comment + "\n" + yaml.safe_dump({"fastav": settings}, sort_keys=False)


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
    print(f"calibrating {len(configs)} settings on {len(samples)} inputs x {args.steps} steps ({num_layers} layers)")
    start = time.perf_counter()
    references = [reference(model, s.prompt, s.labels, args.steps) for s in samples]
    points = sweep(model, references, configs, progress=lambda p: print(f"  {_row(p)}", flush=True))
    best, edge = best_under(points, args.max_flops), frontier(points)

    print(f"\nfrontier ({time.perf_counter() - start:.0f}s):\n{'FLOPs':>6} {'top-1':>7} {'KL':>7}  strategy")
    for point in edge:
        print(("* " if point is best else "  ") + _row(point))
    args.out.mkdir(parents=True, exist_ok=True)
    result = {
        "inputs": [s.name for s in samples],
        "steps": args.steps,
        "max_flops": args.max_flops,
        "points": [p.to_dict() for p in points],
        "frontier": [p.to_dict() for p in edge],
        "best": best.to_dict() if best else None,
    }
    (args.out / "calibration.json").write_text(json.dumps(result, indent=2))
    from pipeline import plots

    plots.calibration(result["points"], result["frontier"], args.max_flops, args.out / "frontier.png",
                      f"{len(samples)} inputs, {args.steps} steps")  # fmt: skip
    if best is None:
        print(f"no setting within --max-flops {args.max_flops}; see {args.out}/calibration.json", file=sys.stderr)
        return 1
    (args.out / "fastav.yaml").write_text(fastav_block(best))
    print(f"\nbest within {args.max_flops:.0%} FLOPs -> {args.out}/fastav.yaml\n{fastav_block(best)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
