"""`fastav rollout`: where the last query's information comes from, layer by layer (attention rollout).

    fastav rollout --config job.yaml [--index 0] --out rollout/
    fastav rollout --checkpoint ./qwen2 --tokens prompts.json [--index 0] --out rollout/

The analysis behind FastAV's positional cut (arXiv 2601.13143): for one input, how much the last position
draws, through rollout, on each modality span and on early vs late audio/video tokens at every layer
(fastav.quality.rollout). A real late-AV share after the global layer argues against a positional cut; an early-
dominated rollout does not prove the cut safe (docs/quality.md: on SmolLM2 it was the worst rule even so), so decide
with `fastav calibrate`. Writes rollout.json
and rollout.png (layers x positions heatmap) to --out and prints the per-layer shares.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import ValidationError

from fastav import UnsupportedModelError
from fastav.layout import MODALITY_NAMES
from fastav.quality.rollout import attention_rollout
from jobs.inputs import load_inputs, tool_parser


def spans(labels: list[int]) -> list[tuple[str, int, int]]:
    """Runs of equal modality as (name, start, end)."""
    out: list[tuple[str, int, int]] = []
    for position, label in enumerate(labels):
        name = MODALITY_NAMES[label]
        if out and out[-1][0] == name and out[-1][2] == position:
            out[-1] = (name, out[-1][1], position + 1)
        else:
            out.append((name, position, position + 1))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = tool_parser("fastav rollout", __doc__)
    parser.add_argument("--index", type=int, default=0, help="which input (the job's n-th video, n-th token entry)")
    parser.add_argument("--bins", type=int, default=64, help="position bins of the heatmap")
    parser.add_argument("--out", type=Path, default=Path("rollout"))
    args = parser.parse_args(argv)
    try:
        model, samples = load_inputs(args, args.index + 1)
        sample = samples[args.index]
    except IndexError:
        print(f"fastav rollout: --index {args.index}: only {len(samples)} inputs", file=sys.stderr)
        return 2
    except (ValidationError, ValueError, OSError, UnsupportedModelError) as error:
        print(f"fastav rollout: {error}", file=sys.stderr)
        return 2
    result = attention_rollout(model, sample.prompt, labels=sample.labels)
    report = {"input": sample.name, **result.to_json(bins=args.bins)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rollout.json").write_text(json.dumps(report, indent=2))
    from pipeline import plots

    plots.rollout(report["binned"], report["bin_edges"], spans(result.labels.tolist()), args.out / "rollout.png",
                  f"attention rollout of the last query: {Path(sample.name).name}")  # fmt: skip
    print(f"{sample.name}: {report['num_tokens']} tokens " + ", ".join(f"{k} {v}" for k, v in report["tokens"].items()))
    print(f"{'layer':>5} {'text':>7} {'video':>7} {'audio':>7} {'image':>7} {'AV early':>9} {'AV late':>8}")
    for row in report["layers"]:
        values = [row[k] for k in ("text", "video", "audio", "image", "av_early", "av_late")]
        print(
            f"{row['layer']:>5} " + " ".join(f"{v:>7.3f}" for v in values[:4]) + f" {values[4]:>9.3f} {values[5]:>8.3f}"
        )
    print(f"-> {args.out}/rollout.json, {args.out}/rollout.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
