"""Decode-step benchmark: dynamic cache in eager mode against FastAV's static caches, eager and compiled,
pruned and unpruned, side by side in one process.

A Qwen2 decoder (CPU: 8 layers, hidden 512, Qwen2-7B's FFN ratio and GQA; CUDA: Qwen2-7B, bf16) is fed the
VideoLLaMA2-AV layout (14 text, 676 video, 1,496 audio, 30 text = 2,216 tokens) as inputs_embeds, batch 4
(CUDA: 8). Variants, on the same weights and inputs:

  dynamic eager      transformers' DynamicCache, the model's eager forward (what the pipeline ran before)
  static eager       FastAV's per-layer static caches (`cache_implementation="static"`), eager forward
  static compiled    the same caches with the text model's decode step under torch.compile (fastav.compiled;
                     CUDA graphs on CUDA)

each unpruned (the plain model for dynamic eager; FastAV's `none` strategy for the static ones) and pruned
(global cut at L/2 keeping all video and the earliest audio, P=0.2 after). A decode step is
(generate K+1 tokens - generate 1 token) / K, so the prefill cancels; medians of --repeats interleaved runs,
after a warm-up that also compiles (its time is reported apart), with min and max. Also: the prompt's
KV-cache bytes per sample (pruned / unpruned) and what the static caches allocated.

    python -m benchmarks.decode                 # CPU here (a few minutes); CUDA: Qwen2-7B dims, bf16, batch 8
    python -m benchmarks.decode --tiny          # seconds: checks the script
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import transformers

import fastav
from benchmarks.gpu import DECODER, TINY_DECODER, build_decoder, free, save, summary, sync, videollama2_layout
from fastav import FastAVConfig, compiled, static_cache
from fastav.presets import spans_of

RESULTS = Path(__file__).parent / "results"
CPU_DECODER = dict(hidden_size=512, intermediate_size=2706, num_hidden_layers=8, num_attention_heads=8,
                   num_key_value_heads=2)  # fmt: skip
VARIANTS = ("dynamic_eager", "static_eager", "static_compiled")


class Case:
    """One strategy on its own model instance (compiled graphs live with the instance)."""

    def __init__(self, dims: dict, device: str, dtype: torch.dtype, config: FastAVConfig | None, layout, backend):
        self.model = build_decoder(dims, device, dtype)
        self.pruner = fastav.enable(self.model, config, layout=layout) if config is not None else None
        self.engine = compiled.install(self.pruner, backend=backend) if config is not None else None

    def generate(self, variant: str, inputs: dict, tokens: int):
        if self.engine is not None:
            self.engine.active = variant == "static_compiled"
        cache = {} if variant == "dynamic_eager" else {"cache_implementation": "static", "disable_compile": True}
        with torch.inference_mode():
            return self.model.generate(
                **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, pad_token_id=0,
                return_dict_in_generate=True, **cache,
            )  # fmt: skip


def timed(case: Case, variant: str, inputs: dict, tokens: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    out = case.generate(variant, inputs, tokens)
    sync(device)
    assert out.sequences.shape[1] == tokens, "generate stopped early"  # inputs_embeds: only new ids come back
    return time.perf_counter() - start


def run(args, device: str, dtype: torch.dtype) -> dict:
    dims = TINY_DECODER if args.tiny else (DECODER if device == "cuda" else CPU_DECODER)
    layers = dims["num_hidden_layers"]
    segments, cut = videollama2_layout(1)
    layout = spans_of(segments)
    n = sum(count for _, count in segments)
    embeds = torch.randn(args.batch, n, dims["hidden_size"], generator=torch.Generator().manual_seed(7))
    inputs = {"inputs_embeds": embeds.to(device, dtype), "attention_mask": torch.ones(args.batch, n, device=device)}
    pruned_config = FastAVConfig(global_layer=layers // 2, global_cut=cut, fine_ratio=0.2)
    cases = {
        "plain": Case(dims, device, dtype, None, layout, args.compile_backend),
        "unpruned": Case(dims, device, dtype, FastAVConfig(strategy="none"), layout, args.compile_backend),
        "pruned": Case(dims, device, dtype, pruned_config, layout, args.compile_backend),
    }
    # (strategy, variant) -> the case that runs it: the plain model is the unpruned dynamic baseline
    runs = {(s, v): cases["plain" if (s, v) == ("unpruned", "dynamic_eager") else s] for s in ("unpruned", "pruned")
            for v in VARIANTS}  # fmt: skip
    long = args.new_tokens + 1
    warm_start = {}
    for key, case in runs.items():  # warm-up: compiles each case's graph (both lengths share its bucket)
        warm_start[key] = time.perf_counter()
        for tokens in (long, 1):
            timed(case, key[1], inputs, tokens, device)
        warm_start[key] = time.perf_counter() - warm_start[key]
    steps = {key: [] for key in runs}
    for _ in range(args.repeats):
        for key, case in runs.items():
            steps[key].append((timed(case, key[1], inputs, long, device) - timed(case, key[1], inputs, 1, device))
                              / args.new_tokens)  # fmt: skip
    base = statistics.median(steps[("unpruned", "dynamic_eager")])
    table = {
        f"{strategy}_{variant}": {**summary(values), "vs_unpruned_dynamic_eager": statistics.median(values) / base}
        for (strategy, variant), values in steps.items()
    }
    pruned_stats = cases["pruned"].pruner.stats
    static = {s: cases[s].generate("static_eager", inputs, long).past_key_values for s in ("unpruned", "pruned")}
    result = {
        "dims": dims,
        "batch": args.batch,
        "prompt_tokens": n,
        "new_tokens": args.new_tokens,
        "pruning": pruned_config.summary(),
        "decode_step_s": table,
        "warmup_s": {f"{s}_{v}": t for (s, v), t in warm_start.items()},
        "compile": {s: cases[s].engine.stats.summary() for s in ("unpruned", "pruned")},
        "kv_cache_bytes_per_sample": {
            "pruned": pruned_stats[0].kv_cache_bytes,
            "unpruned": pruned_stats[0].kv_cache_bytes_unpruned,
            "ratio": pruned_stats[0].kv_cache_bytes / pruned_stats[0].kv_cache_bytes_unpruned,
        },
        "static_cache_allocated_bytes": {s: static_cache.allocated_bytes(c) for s, c in static.items()},
        "headline": {
            "pruned_compiled_vs_unpruned_dynamic_eager": table["pruned_static_compiled"]["vs_unpruned_dynamic_eager"],
            "compiled_vs_dynamic_eager_pruned": table["pruned_static_compiled"]["median"]
            / table["pruned_dynamic_eager"]["median"],
        },
    }
    free(*[c.model for c in cases.values()], embeds)
    return result


def print_table(result: dict) -> None:
    print(f"{'variant':<26} {'ms/step':>8} {'min':>7} {'max':>7} {'vs unpruned dynamic eager':>26}")
    for name, row in result["decode_step_s"].items():
        print(
            f"{name:<26} {row['median'] * 1e3:8.2f} {row['min'] * 1e3:7.2f} {row['max'] * 1e3:7.2f} "
            f"{row['vs_unpruned_dynamic_eager']:25.2f}x"
        )
    kv = result["kv_cache_bytes_per_sample"]
    allocated = result["static_cache_allocated_bytes"]
    compile_s = {s: c["compile_s"] for s, c in result["compile"].items()}
    print(
        f"KV cache per sample: pruned {kv['pruned'] / 2**20:.1f} MiB, unpruned {kv['unpruned'] / 2**20:.1f} MiB "
        f"({kv['ratio']:.1%}); static caches allocated {allocated['pruned'] / 2**20:.1f} vs "
        f"{allocated['unpruned'] / 2**20:.1f} MiB for the batch; compile {compile_s} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small dimensions: checks the script in seconds")
    parser.add_argument("--batch", type=int, default=None, help="default 4 (CUDA: 8)")
    parser.add_argument("--new-tokens", type=int, default=None, help="K decode steps timed; default 16 (CUDA: 64)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend (aot_eager: no codegen)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    args.batch = args.batch or (2 if args.tiny else 8 if device == "cuda" else 4)
    args.new_tokens = args.new_tokens or (4 if args.tiny else 64 if device == "cuda" else 16)
    name = torch.cuda.get_device_name() if device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"decode benchmark on {name}, {dtype}, torch {torch.__version__}, transformers {transformers.__version__}")
    started = time.perf_counter()
    result = {
        "benchmark": "decode",
        "device": name,
        "dtype": str(dtype),
        "tiny": args.tiny,
        "repeats": args.repeats,
        "compile_backend": args.compile_backend,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        **run(args, device, dtype),
    }
    result["wall_s"] = time.perf_counter() - started
    print_table(result)
    if device == "cuda" and not args.tiny:
        value = result["headline"]["pruned_compiled_vs_unpruned_dynamic_eager"]
        verdict = "met" if value <= 0.5 else "NOT met"
        print(f"target: pruned compiled step <= 0.5x unpruned dynamic eager: {value:.3f} ({verdict})")
    slug = "cpu" if device == "cpu" else name.lower().replace(" ", "-")
    save(result, args.out or RESULTS / f"decode-{slug}{'-tiny' if args.tiny else ''}.json")


if __name__ == "__main__":
    main()
