"""Pipeline throughput: the Ray Data pipeline vs a plain sequential loop, and FastAV vs none, in one run.

The sequential loop runs the very same stage code (DecodeStage, PreprocessStage, InferActor) one batch after
another in this process; the pipeline streams them through Ray Data with decode/preprocess tasks beside the
model actor. Both use the same clips, checkpoint, prompt and batch size.

    python -m benchmarks.pipeline                 # 128 clips of 8-10 s at 640x360, tiny Qwen2.5-Omni, CPU
    python -m benchmarks.pipeline --size 320x240  # lighter decoding: inference dominates, less to overlap
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import ray

from fastav import testing
from pipeline import synthetic
from pipeline.config import PipelineConfig
from pipeline.graph import run
from pipeline.infer import InferActor
from pipeline.rows import OK
from pipeline.source import list_videos
from pipeline.stages import DecodeStage, PreprocessStage
from pipeline.storage import Storage

RESULTS = Path(__file__).parent / "results"


def make_config(workdir: Path, strategy: str, batch_size: int, limit: int | None = None) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "source": {"uri": str(workdir / "videos"), "limit": limit},
            "output": str(workdir / f"out-{strategy}"),
            "model": {"checkpoint": str(workdir / "ckpt")},
            "decode": {"num_frames": 16, "batch_size": batch_size},
            "infer": {"batch_size": batch_size, "max_new_tokens": 32},
            "fastav": {"strategy": strategy, "global_layer": 3, "fine_ratio": 0.2},
            "overwrite": True,
        }
    )


def sequential(config: PipelineConfig) -> tuple[float, int]:
    """Same stages, no Ray: decode -> preprocess -> infer per batch, one after the other."""
    import pyarrow as pa

    rows = [
        {**r, "status": OK, "error_type": None, "error_message": None}
        for r in list_videos(config.source, Storage(config.storage))
    ]
    start = time.perf_counter()
    decode = DecodeStage(config.decode, config.storage)
    preprocess = PreprocessStage(config.prompt, config.model, config.storage)
    infer = InferActor(config.model, config.infer, config.fastav, config.storage)
    done = 0
    size = config.infer.batch_size
    for i in range(0, len(rows), size):
        batch = infer(preprocess(decode(pa.Table.from_pylist(rows[i : i + size]))))
        done += sum(s == OK for s in batch.column("status").to_pylist())
    return time.perf_counter() - start, done


def measure(workdir: Path, args: argparse.Namespace) -> dict[str, dict[int, float]]:
    """Wall seconds per variant for the first half of the clips and for all of them."""
    half = args.clips // 2
    times: dict[str, dict[int, list[float]]] = {
        name: {half: [], args.clips: []} for name in ("sequential", "pipeline_fastav", "pipeline_none")
    }
    for _ in range(args.repeats):
        for count in (half, args.clips):
            elapsed, done = sequential(make_config(workdir, "fastav", args.batch_size, count))
            assert done == count, f"sequential loop finished {done}/{count}"
            times["sequential"][count].append(elapsed)
            for strategy in ("fastav", "none"):
                start = time.perf_counter()
                summary = run(make_config(workdir, strategy, args.batch_size, count))
                times[f"pipeline_{strategy}"][count].append(time.perf_counter() - start)
                assert summary["success"] == count, summary
    return {name: {n: statistics.median(v) for n, v in by_count.items()} for name, by_count in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=128)
    parser.add_argument("--seconds", type=float, default=8.0, help="clip length (clips vary by +0..2 s)")
    parser.add_argument("--size", default="640x360", help="clip width x height (frames above 448 px are shrunk)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/pipeline-cpu-<size>.json")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        testing.save_omni_thinker(workdir / "ckpt", processor=True)
        size = tuple(int(x) for x in args.size.lower().split("x"))
        synthetic.write_corpus(workdir / "videos", count=args.clips, seconds=args.seconds, fps=24, size=size)
        ray.init(
            address=os.environ.get("RAY_ADDRESS") or "local", include_dashboard=False, logging_level=logging.WARNING
        )
        ray.data.DataContext.get_current().enable_progress_bars = False
        # Warm-up on the same clips (worker processes, imports, file cache), as a long-running cluster is.
        run(make_config(workdir, "fastav", args.batch_size))
        seconds = measure(workdir, args)
        ray.shutdown()

    half = args.clips // 2
    # End to end includes fixed costs (Ray actor start, model load); the marginal rate over the second half
    # of the clips is the steady state a long run sees.
    end_to_end = {name: args.clips / t[args.clips] for name, t in seconds.items()}
    marginal = {name: (args.clips - half) / (t[args.clips] - t[half]) for name, t in seconds.items()}
    result = {
        "benchmark": "pipeline",
        "clips": args.clips,
        "clip_seconds": args.seconds,
        "clip_size": args.size,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "seconds": {name: {str(n): v for n, v in t.items()} for name, t in seconds.items()},
        "videos_per_second_end_to_end": end_to_end,
        "videos_per_second_steady_state": marginal,
        "pipeline_vs_sequential_end_to_end": end_to_end["pipeline_fastav"] / end_to_end["sequential"],
        "pipeline_vs_sequential_steady_state": marginal["pipeline_fastav"] / marginal["sequential"],
        "fastav_vs_none_steady_state": marginal["pipeline_fastav"] / marginal["pipeline_none"],
    }
    print(
        f"pipeline benchmark: {args.clips} clips of {args.seconds:g}-{args.seconds + 2:g} s at {args.size}, "
        f"tiny Qwen2.5-Omni, batch {args.batch_size}, {os.cpu_count()} CPUs"
    )
    print(f"  {'variant':<17} {'end to end':>12} {'steady state':>14}  (videos/s)")
    for name in seconds:
        print(f"  {name:<17} {end_to_end[name]:>12.2f} {marginal[name]:>14.2f}")
    print(
        f"  pipeline / sequential: {result['pipeline_vs_sequential_end_to_end']:.2f}x end to end, "
        f"{result['pipeline_vs_sequential_steady_state']:.2f}x steady state (target >= 1.2x)"
    )
    print(f"  FastAV / none (pipeline, steady state): {result['fastav_vs_none_steady_state']:.2f}x")
    args.out = args.out or RESULTS / f"pipeline-cpu-{args.size}.json"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
