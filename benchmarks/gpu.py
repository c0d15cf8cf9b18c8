"""GPU benchmark: does FastAV make inference faster on a GPU, end to end? Pruned vs unpruned, side by side.

Random weights at real dimensions, built on the device from configs (nothing is downloaded), bf16, one
process; variants run interleaved, each timing is the median of --repeats runs after a warm-up, with its
spread. Needs torch and transformers only (plus pydantic/pyyaml for the pipeline's config): no Ray, boto3
or decord, so it runs on a bare GPU machine.

  A. prefill of a Qwen2-7B-shaped decoder on the VideoLLaMA2-AV layout (14 text, 676 video, 1,496 audio,
     30 text tokens; x2 and x4), batch 1 and 8: unpruned (FastAV not installed), scores only (FastAV with
     dry_run: scoring and selection, nothing pruned) and FastAV (cut at layer 14, P=0.2); latency ratio
     against the FLOPs ratio, host reads and aten ops per prefill, peak memory.
  B. generate() at batch 8 on that layout, 64 new tokens, and the decode step derived from 17 vs 64 tokens.
  C. the Qwen2.5-Omni-7B thinker (towers included) through the pipeline's own inference code
     (pipeline.runner.ModelRunner: collate, generate, stats), batch 4, 32 new tokens, 252x448 frames, 30 s
     of audio, at 8 frames and at 60 frames (2 fps): unpruned with sdpa towers (the baseline before the
     varlen backend), unpruned and FastAV with the towers on the `auto` backend; tower and prefill times;
     and the vision tower alone at 60 frames x 4 clips, sdpa vs varlen.
  D. decoding on that thinker, 8 frames + 30 s audio, batch 4, 64 new tokens: unpruned generate on the dynamic
     cache in eager mode against FastAV on the dynamic cache and FastAV on its static caches with the compiled
     decode step (infer.decode: compiled; CUDA graphs). Each variant runs its warm-up (the compile) and its
     repeats as one block, since switching FastAV off drops the compiled graphs.

    python -m benchmarks.gpu                 # on a CUDA machine: a few minutes
    python -m benchmarks.gpu --tiny          # small dimensions, CPU or GPU: checks the script in seconds

Results: benchmarks/results/gpu-<device>.json, and the targets printed met or not.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import Qwen2_5OmniThinkerForConditionalGeneration, Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2_5_omni.configuration_qwen2_5_omni import Qwen2_5OmniThinkerConfig

import fastav
from fastav import FastAVConfig, Modality, varlen
from fastav import testing as tiny
from fastav.hostsync import HostSyncCounter
from fastav.presets import spans_of
from pipeline.config import ModelConfig
from pipeline.runner import ModelRunner, resolve_runtime

RESULTS = Path(__file__).parent / "results"

# Qwen2-7B (VideoLLaMA2-AV's decoder, and Qwen2.5-Omni-7B's text model).
DECODER = dict(
    hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4
)
TINY_DECODER = dict(
    hidden_size=256, intermediate_size=1344, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1
)
# Qwen2.5-Omni-7B's placeholder ids and towers (its published config).
OMNI_IDS = dict(
    image_token_index=151655,
    video_token_index=151656,
    audio_token_index=151646,
    audio_start_token_id=151647,
    audio_end_token_id=151648,
    vision_start_token_id=151652,
    vision_end_token_id=151653,
)
OMNI_VISION = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=3584,
    fullatt_block_indexes=[7, 15, 23, 31],
    window_size=112,
    hidden_act="silu",
)
OMNI_AUDIO = dict(
    num_mel_bins=128,
    encoder_layers=32,
    encoder_attention_heads=20,
    encoder_ffn_dim=5120,
    d_model=1280,
    output_dim=3584,
    n_window=100,
    max_source_positions=1500,
)


# ------------------------------------------------------------------------------------------------- timing
def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def interleaved(variants: dict[str, Callable[[], object]], repeats: int, device: str) -> dict[str, dict]:
    """One warm-up each, then `repeats` rounds running every variant once: drift hits all variants alike."""
    for fn in variants.values():
        timed(fn, device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
    return {name: summary(values) for name, values in times.items()}


def peak_gib(fn: Callable[[], object], device: str) -> float | None:
    """Peak memory above what was allocated before (weights and inputs excluded)."""
    if device != "cuda":
        return None
    sync(device)
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    sync(device)
    return (torch.cuda.max_memory_allocated() - base) / 2**30


def counted(fn: Callable[[], object]) -> dict[str, int]:
    with HostSyncCounter() as counter:
        fn()
    return {"host_reads": counter.host_reads, "aten_ops": counter.kernels}


def free(*objects) -> None:
    del objects
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------- A/B: decoder prefill
def build_decoder(dims: dict, device: str, dtype: torch.dtype) -> Qwen2ForCausalLM:
    config = Qwen2Config(vocab_size=1024 if dims is TINY_DECODER else 152064, max_position_embeddings=32768, **dims)
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM._from_config(config, attn_implementation="sdpa", dtype=dtype)
    model.generation_config.eos_token_id = None  # random weights: always generate the full length
    return model.eval()


def videollama2_layout(scale: int) -> tuple[tuple, int]:
    segments = ((Modality.TEXT, 14), (Modality.VIDEO, 676 * scale), (Modality.AUDIO, 1496 * scale), (Modality.TEXT, 30))
    return segments, 14 + 676 * scale + 60 * scale  # the cut keeps all video and the earliest audio (paper: 750)


class Variant:
    """FastAV installed for the duration of a call (None: the plain model)."""

    def __init__(self, model, config: FastAVConfig | None, layout) -> None:
        self.model, self.config, self.layout, self.pruner = model, config, layout, None

    def __call__(self, fn: Callable[[], object]) -> object:
        if self.config is None:
            return fn()
        self.pruner = fastav.enable(self.model, self.config, layout=self.layout)
        try:
            return fn()
        finally:
            fastav.disable(self.model)  # stats stay readable (and are read outside the timed calls)


def prefill_section(model, args, device: str, dtype: torch.dtype) -> list[dict]:
    rows = []
    cases = [(1, 1), (1, 2), (1, 4), (8, 1), (8, 2)] if not args.tiny else [(1, 1), (2, 1)]
    hidden = model.config.hidden_size
    for batch, scale in cases:
        segments, cut = videollama2_layout(scale)
        layout = spans_of(segments)
        n = sum(count for _, count in segments)
        embeds = torch.randn(batch, n, hidden, generator=torch.Generator().manual_seed(scale)).to(device, dtype)
        fastav_config = FastAVConfig(global_layer=model.config.num_hidden_layers // 2, global_cut=cut, fine_ratio=0.2)
        variants = {
            "unpruned": Variant(model, None, layout),
            "scores_only": Variant(model, fastav_config.model_copy(update={"dry_run": True}), layout),
            "fastav": Variant(model, fastav_config, layout),
        }

        def prefill(variant, embeds=embeds):
            with torch.inference_mode():
                return variant(lambda: model(inputs_embeds=embeds, use_cache=True, logits_to_keep=1))

        times = interleaved({name: (lambda v=v: prefill(v)) for name, v in variants.items()}, args.repeats, device)
        row = {"batch": batch, "tokens": n, "cut": cut, "time_s": times}
        for name, variant in variants.items():
            row.setdefault("peak_gib", {})[name] = peak_gib(lambda v=variant: prefill(v), device)
            row.setdefault("counts", {})[name] = counted(lambda v=variant: prefill(v))
        stats = variants["fastav"].pruner.stats[0]
        row["flops_ratio"] = stats.flops_ratio
        row["fastv_flops_ratio"] = stats.fastv_flops_ratio
        row["last_layer_tokens"] = stats.tokens_per_layer[-1]
        row["latency_ratio"] = times["fastav"]["median"] / times["unpruned"]["median"]
        row["scoring_overhead"] = times["scores_only"]["median"] / times["unpruned"]["median"] - 1
        rows.append(row)
        print(
            f"  prefill bs {batch} {n:>5} tokens: unpruned {times['unpruned']['median'] * 1e3:8.1f} ms, "
            f"FastAV {times['fastav']['median'] * 1e3:8.1f} ms ({row['latency_ratio']:.1%}, FLOPs "
            f"{row['flops_ratio']:.1%}), scores only {row['scoring_overhead']:+.1%}; host reads "
            f"{row['counts']['unpruned']['host_reads']} -> {row['counts']['fastav']['host_reads']}",
            flush=True,
        )
        free(embeds)
    return rows


def family_section(family: str, args, device: str, dtype: torch.dtype) -> list[dict]:
    """Prefill of a family's own decoder at its real dimensions (e.g. Qwen3-Omni-30B-A3B's MoE, ~60 GB in bf16),
    tiny towers, placeholder ids in its preset layout: unpruned vs the family's default pruning, bs 1."""
    from benchmarks import families

    dims = families.scaled_dims(family, 4, 256) if args.tiny else families.real_dims(family)
    model = families.build(family, dims, "sdpa", dtype, device)
    first = fastav.resolve(model).min_prune_layer
    config = FastAVConfig(global_layer=max(dims["layers"] // 2, first), global_keep_ratio=1 / 3, fine_ratio=0.2)
    rows = []
    for tokens in (2000, 4000) if not args.tiny else (500,):
        inputs, n = families.prompt(family, tokens, device)
        variants = {"unpruned": Variant(model, None, None), "fastav": Variant(model, config, None)}

        def prefill(variant, inputs=inputs):
            with torch.inference_mode():
                return variant(lambda: model(**inputs, use_cache=True, logits_to_keep=1))

        times = interleaved({name: (lambda v=v: prefill(v)) for name, v in variants.items()}, args.repeats, device)
        stats = variants["fastav"].pruner.stats[0]
        row = {"family": family, "tokens": n, "time_s": times, "flops_ratio": stats.flops_ratio,
               "latency_ratio": times["fastav"]["median"] / times["unpruned"]["median"]}  # fmt: skip
        rows.append(row)
        print(
            f"  {family} prefill {n:>5} tokens: unpruned {times['unpruned']['median'] * 1e3:8.1f} ms, FastAV "
            f"{times['fastav']['median'] * 1e3:8.1f} ms ({row['latency_ratio']:.1%}, FLOPs {row['flops_ratio']:.1%})",
            flush=True,
        )
        free(inputs)
    free(model)
    return rows


def generate_section(model, args, device: str, dtype: torch.dtype) -> dict:
    """generate() at batch 8 (2 in --tiny); the decode step from the difference of two lengths."""
    batch = 8 if not args.tiny else 2
    segments, cut = videollama2_layout(1)
    layout = spans_of(segments)
    n = sum(count for _, count in segments)
    embeds = torch.randn(batch, n, model.config.hidden_size, generator=torch.Generator().manual_seed(7))
    embeds = embeds.to(device, dtype)
    mask = torch.ones(batch, n, dtype=torch.long, device=device)
    config = FastAVConfig(global_layer=model.config.num_hidden_layers // 2, global_cut=cut, fine_ratio=0.2)
    long, short = (64, 17) if not args.tiny else (12, 4)

    def run(variant, tokens):
        with torch.inference_mode():
            return variant(
                lambda: model.generate(
                    inputs_embeds=embeds,
                    attention_mask=mask,
                    max_new_tokens=tokens,
                    min_new_tokens=tokens,
                    do_sample=False,
                    pad_token_id=0,
                )
            )

    variants = {"unpruned": Variant(model, None, layout), "fastav": Variant(model, config, layout)}
    jobs = {f"{name}_{t}": (lambda v=v, t=t: run(v, t)) for name, v in variants.items() for t in (long, short)}
    times = interleaved(jobs, args.repeats, device)
    out = {"batch": batch, "tokens": n, "new_tokens": long, "time_s": times}
    for name in variants:
        out[f"{name}_decode_step_s"] = (times[f"{name}_{long}"]["median"] - times[f"{name}_{short}"]["median"]) / (
            long - short
        )
        out.setdefault("peak_gib", {})[name] = peak_gib(lambda v=variants[name]: run(v, long), device)
    out["generate_ratio"] = times[f"fastav_{long}"]["median"] / times[f"unpruned_{long}"]["median"]
    out["decode_step_ratio"] = out["fastav_decode_step_s"] / out["unpruned_decode_step_s"]
    print(
        f"  generate bs {batch}, {long} new tokens: {out['generate_ratio']:.1%} of unpruned; decode step "
        f"{out['fastav_decode_step_s'] * 1e3:.2f} vs {out['unpruned_decode_step_s'] * 1e3:.2f} ms "
        f"({out['decode_step_ratio']:.1%})",
        flush=True,
    )
    free(embeds)
    return out


# ----------------------------------------------------------------------------- C: Qwen2.5-Omni-7B thinker
def build_thinker(args, device: str, dtype: torch.dtype):
    if args.tiny:
        vision = dict(
            depth=2, hidden_size=64, intermediate_size=128, num_heads=1, out_hidden_size=256, fullatt_block_indexes=[1]
        )
        audio = dict(
            num_mel_bins=128,
            encoder_layers=1,
            encoder_attention_heads=1,
            encoder_ffn_dim=128,
            d_model=64,
            output_dim=256,
            n_window=100,
            max_source_positions=1500,
        )
        text, vocab, mrope = TINY_DECODER, 152064, [8, 12, 12]  # real placeholder ids need the real vocab
    else:
        vision, audio, text, vocab, mrope = OMNI_VISION, OMNI_AUDIO, DECODER, 152064, [16, 24, 24]
    config = Qwen2_5OmniThinkerConfig(
        audio_config=audio,
        vision_config=vision,
        text_config=dict(
            vocab_size=vocab,
            max_position_embeddings=32768,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": mrope,
            },
            **text,
        ),
        **OMNI_IDS,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2_5OmniThinkerForConditionalGeneration._from_config(config, attn_implementation="sdpa", dtype=dtype)
    model.generation_config.eos_token_id = None
    return model.eval()


class IdsTokenizer:
    """Random weights produce random ids: the runner's text decoding gets their numbers (costs nothing)."""

    pad_token_id = 151643

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids[:4]))


def clip_inputs(frames: int, args) -> list[dict[str, np.ndarray]]:
    """Per-video model inputs as the preprocess stage hands them over: 252x448 frames (18x32 patches), 30 s of
    audio (3,000 mel frames -> 750 tokens), ~154 text tokens; question lengths differ, so the batch pads."""
    grid, mel = ((18, 32), 3000) if not args.tiny else ((4, 8), 400)
    videos = []
    for i in range(4):
        batch = tiny.omni_inputs([(120, frames // 2, mel, 18 + 4 * i)], seed=i, grid=grid, ids=OMNI_IDS)
        videos.append(
            {
                "input_ids": batch["input_ids"][0].numpy(),
                "pixel_values_videos": batch["pixel_values_videos"].numpy(),
                "video_grid_thw": batch["video_grid_thw"].numpy(),
                "video_second_per_grid": batch["video_second_per_grid"].numpy(),
                "input_features": batch["input_features"][0].numpy(),
                "feature_attention_mask": batch["feature_attention_mask"][0].numpy(),
            }
        )
    return videos


class TowerClock:
    """GPU (or wall, on CPU) time of each tower call, through forward hooks and CUDA events."""

    def __init__(self, model, device: str) -> None:
        self.device, self.times, self._open = device, {"visual": [], "audio_tower": []}, {}
        for name in self.times:
            tower = model.get_submodule(f"model.{name}")
            tower.register_forward_pre_hook(lambda *_, n=name: self._start(n))
            tower.register_forward_hook(lambda *_, n=name: self._stop(n))

    def _start(self, name):
        if self.device == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._open[name] = event
        else:
            self._open[name] = time.perf_counter()

    def _stop(self, name):
        start = self._open.pop(name)
        if self.device == "cuda":
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            self.times[name].append((start, end))
        else:
            self.times[name].append(time.perf_counter() - start)

    def take(self) -> dict[str, float]:
        sync(self.device)
        out = {}
        for name, spans in self.times.items():
            values = [s.elapsed_time(e) / 1e3 for s, e in spans] if self.device == "cuda" else spans
            out[name] = statistics.median(values) if values else 0.0
            spans.clear()
        return out


def thinker_section(args, device: str, dtype: torch.dtype) -> dict:
    model = build_thinker(args, device, dtype)
    auto = resolve_runtime(ModelConfig(checkpoint="-", device=device, dtype=str(dtype).removeprefix("torch.")))
    towers = {"sdpa": "sdpa", "auto": auto.encoder_attn}
    clock = TowerClock(model, device)
    fastav_config = FastAVConfig()  # the pipeline's default: global cut at L/2 (keep 1/3), P=0.2
    runners = {}

    def runner(strategy: str) -> ModelRunner:
        if strategy not in runners:
            for other in runners.values():
                fastav.disable(other.model)
            runners.clear()
            config = fastav_config if strategy == "fastav" else FastAVConfig(strategy="none")
            runners[strategy] = ModelRunner(model, IdsTokenizer(), config, max_new_tokens=args.omni_new_tokens)
        return runners[strategy]

    def job(towers_on: str, strategy: str, videos):
        def run():
            varlen.use_for_encoders(model, towers[towers_on])
            return runner(strategy).generate(videos, audio_in_video=True)

        return run

    out = {"encoder_backend_auto": towers["auto"], "cases": []}
    for frames in (8, 60):
        videos = clip_inputs(frames, args)
        jobs = {
            "unpruned_sdpa_towers": job("sdpa", "none", videos),
            "unpruned": job("auto", "none", videos),
            "fastav": job("auto", "fastav", videos),
        }
        for fn in jobs.values():
            timed(fn, device)  # warm-up
        times, prefill, tower_times, results = {n: [] for n in jobs}, {n: [] for n in jobs}, {n: [] for n in jobs}, {}
        for _ in range(args.repeats):
            for name, fn in jobs.items():
                clock.take()
                sync(device)
                start = time.perf_counter()
                results[name] = fn()
                sync(device)
                times[name].append(time.perf_counter() - start)
                prefill[name].append(results[name][0]["prefill_ms"] / 1e3)
                tower_times[name].append(clock.take())
        case = {
            "frames": frames,
            "batch": len(videos),
            "tokens": results["unpruned"][0]["tokens_input"],
            "input_tokens": {k: results["unpruned"][0][f"tokens_{k}"] for k in ("text", "video", "audio")},
            "new_tokens": args.omni_new_tokens,
            "generate_s": {n: summary(v) for n, v in times.items()},
            "prefill_s": {n: summary(v) for n, v in prefill.items()},
            "vision_tower_s": {n: statistics.median(t["visual"] for t in v) for n, v in tower_times.items()},
            "audio_tower_s": {n: statistics.median(t["audio_tower"] for t in v) for n, v in tower_times.items()},
            "flops_ratio": results["fastav"][0]["flops_ratio"],
            "last_layer_tokens": [r["tokens_last_layer"] for r in results["fastav"]],
            "peak_gib": {n: peak_gib(fn, device) for n, fn in jobs.items()},
        }
        median = {n: s["median"] for n, s in case["generate_s"].items()}
        case["fastav_vs_unpruned"] = median["fastav"] / median["unpruned"]
        case["fastav_vs_unpruned_sdpa_towers"] = median["fastav"] / median["unpruned_sdpa_towers"]
        out["cases"].append(case)
        print(
            f"  thinker {frames} frames x {len(videos)} clips ({case['tokens']} tokens): generate unpruned with sdpa "
            f"towers {median['unpruned_sdpa_towers']:.3f} s, unpruned {median['unpruned']:.3f} s, FastAV "
            f"{median['fastav']:.3f} s ({case['fastav_vs_unpruned']:.1%} of unpruned, "
            f"{case['fastav_vs_unpruned_sdpa_towers']:.1%} of the sdpa-tower baseline); vision tower "
            f"{case['vision_tower_s']['unpruned_sdpa_towers'] * 1e3:.0f} -> "
            f"{case['vision_tower_s']['unpruned'] * 1e3:.0f} ms",
            flush=True,
        )
        free(videos)

    # The vision tower alone, 60 frames x 4 clips, sdpa vs the auto backend.
    videos = clip_inputs(60, args)
    pixels = torch.from_numpy(np.concatenate([v["pixel_values_videos"] for v in videos])).to(device, dtype)
    grid = torch.from_numpy(np.concatenate([v["video_grid_thw"] for v in videos])).to(device)

    def tower(backend):
        def run():
            varlen.use_for_encoders(model, towers[backend])
            with torch.inference_mode():
                model.model.visual(pixels, grid_thw=grid)

        return run

    alone = interleaved({"sdpa": tower("sdpa"), "auto": tower("auto")}, args.repeats, device)
    out["vision_tower_alone"] = {"patches": int(pixels.shape[0]), "time_s": alone}
    out["vision_tower_speedup"] = alone["sdpa"]["median"] / alone["auto"]["median"]
    print(f"  vision tower alone, {pixels.shape[0]} patches: {out['vision_tower_speedup']:.2f}x with {towers['auto']}")
    for other in runners.values():
        fastav.disable(other.model)
    free(model, pixels, grid)
    return out


def decoding_section(args, device: str, dtype: torch.dtype) -> dict:
    model = build_thinker(args, device, dtype)
    auto = resolve_runtime(ModelConfig(checkpoint="-", device=device, dtype=str(dtype).removeprefix("torch.")))
    varlen.use_for_encoders(model, auto.encoder_attn)
    videos = clip_inputs(8, args)
    variants = {"unpruned_eager": ("none", "eager"), "fastav_eager": ("fastav", "eager"),
                "fastav_compiled": ("fastav", "compiled")}  # fmt: skip
    times, compile_s, results = {}, {}, {}
    for name, (strategy, decode) in variants.items():
        config = FastAVConfig() if strategy == "fastav" else FastAVConfig(strategy="none")
        runner = ModelRunner(model, IdsTokenizer(), config, max_new_tokens=args.decode_new_tokens, decode=decode)
        warm = runner.generate(videos, audio_in_video=True)  # compiles the decode graph where compiled
        compile_s[name] = warm[0]["decode_compile_ms"] / 1e3
        values = []
        for _ in range(args.repeats):
            sync(device)
            start = time.perf_counter()
            results[name] = runner.generate(videos, audio_in_video=True)
            sync(device)
            values.append(time.perf_counter() - start)
        times[name] = summary(values)
        fastav.disable(model)
    median = {n: s["median"] for n, s in times.items()}
    out = {
        "frames": 8,
        "batch": len(videos),
        "new_tokens": args.decode_new_tokens,
        "tokens": results["unpruned_eager"][0]["tokens_input"],
        "generate_s": times,
        "compile_s": compile_s,
        "kv_cache_ratio": results["fastav_compiled"][0]["kv_cache_bytes"]
        / results["fastav_compiled"][0]["kv_cache_bytes_unpruned"],
        "same_text_compiled_vs_eager": [r["output_text"] for r in results["fastav_compiled"]]
        == [r["output_text"] for r in results["fastav_eager"]],
        "compiled_vs_unpruned_eager": median["fastav_compiled"] / median["unpruned_eager"],
        "fastav_eager_vs_unpruned_eager": median["fastav_eager"] / median["unpruned_eager"],
    }
    print(
        f"  decoding, thinker 8 frames x {len(videos)} clips, {args.decode_new_tokens} new tokens: unpruned eager "
        f"{median['unpruned_eager']:.3f} s, FastAV eager {median['fastav_eager']:.3f} s, FastAV compiled "
        f"{median['fastav_compiled']:.3f} s ({out['compiled_vs_unpruned_eager']:.1%} of unpruned eager; compile "
        f"{compile_s['fastav_compiled']:.1f} s once)",
        flush=True,
    )
    free(model, videos)
    return out


# ----------------------------------------------------------------------------------------------- targets
def targets(result: dict) -> dict[str, dict]:
    checks = {}
    for row in result["prefill"]:
        slack = 0.08 if (row["batch"] == 1 and row["tokens"] < 3000) else 0.05
        checks[f"prefill bs {row['batch']} {row['tokens']} tokens: latency <= FLOPs ratio + {slack:.2f}"] = (
            row["latency_ratio"],
            row["flops_ratio"] + slack,
        )
    first = result["prefill"][0]
    checks[f"scoring overhead bs 1 {first['tokens']} tokens <= 3%"] = (first["scoring_overhead"], 0.03)
    generate = result["generate"]
    checks["decode step FastAV <= 1.0x unpruned"] = (generate["decode_step_ratio"], 1.0)
    checks[f"generate bs {generate['batch']} {generate['new_tokens']} new tokens <= 0.9x unpruned"] = (
        generate["generate_ratio"],
        0.9,
    )
    eight, sixty = result["thinker"]["cases"]
    checks["thinker 8 frames: FastAV generate <= 0.9x unpruned"] = (eight["fastav_vs_unpruned"], 0.9)
    checks["thinker 60 frames: FastAV + encoder backend <= 0.6x unpruned with sdpa towers"] = (
        sixty["fastav_vs_unpruned_sdpa_towers"],
        0.6,
    )
    checks["vision tower >= 3x faster (60 frames x 4 clips)"] = (1 / result["thinker"]["vision_tower_speedup"], 1 / 3)
    if "decoding" in result:
        decoding = result["decoding"]
        checks[f"thinker generate {decoding['new_tokens']} new tokens: FastAV compiled <= 0.85x unpruned eager"] = (
            decoding["compiled_vs_unpruned_eager"],
            0.85,
        )
    return {name: {"value": value, "bound": bound, "met": value <= bound} for name, (value, bound) in checks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="small dimensions: checks the script (CPU is fine)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant, after one warm-up")
    parser.add_argument("--omni-new-tokens", type=int, default=32)
    parser.add_argument("--decode-new-tokens", type=int, default=64)
    parser.add_argument("--sections", nargs="+", default=["prefill", "generate", "thinker", "decoding"])
    parser.add_argument("--family", nargs="*", default=[], help="also: prefill of these families' own decoders at "
                        "real dimensions (qwen3_omni, qwen3_vl, qwen2_5_vl, qwen2_5_omni)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.tiny and args.omni_new_tokens == 32:
        args.omni_new_tokens = 4
    if args.tiny and args.decode_new_tokens == 64:
        args.decode_new_tokens = 6

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    if device == "cpu" and not args.tiny:
        parser.error("the full-size benchmark needs a CUDA device; use --tiny to check the script on a CPU")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(f"GPU benchmark on {name}, {dtype}, torch {torch.__version__}, transformers {transformers.__version__}")
    result: dict = {
        "benchmark": "gpu",
        "device": name,
        "dtype": str(dtype),
        "tiny": args.tiny,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
    }
    started = time.perf_counter()
    if {"prefill", "generate"} & set(args.sections):
        model = build_decoder(TINY_DECODER if args.tiny else DECODER, device, dtype)
        if "prefill" in args.sections:
            result["prefill"] = prefill_section(model, args, device, dtype)
        if "generate" in args.sections:
            result["generate"] = generate_section(model, args, device, dtype)
        free(model)
    if "thinker" in args.sections:
        result["thinker"] = thinker_section(args, device, dtype)
    if "decoding" in args.sections:
        result["decoding"] = decoding_section(args, device, dtype)
    for family in args.family:
        result.setdefault("families", []).extend(family_section(family, args, device, dtype))
    result["wall_s"] = time.perf_counter() - started
    if {"prefill", "generate", "thinker"} <= set(args.sections):
        result["targets"] = targets(result)
        print("targets:")
        for check, verdict in result["targets"].items():
            met = "met" if verdict["met"] else "NOT met"
            print(f"  {met:>7}  {check}: {verdict['value']:.3f} (bound {verdict['bound']:.3f})")
    slug = "cpu-tiny" if device == "cpu" else name.lower().replace(" ", "-")
    save(result, args.out or RESULTS / f"gpu-{slug}{'-tiny' if args.tiny and device == 'cuda' else ''}.json")


def save(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=float))
    print(f"saved {out} ({result['wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
