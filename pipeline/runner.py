"""The model side of inference, free of Ray and object storage: load a checkpoint of a supported family
(`fastav.families`) with FastAV, batch per-video inputs, generate, and turn FastAV's stats into output columns.

The Ray actor (`pipeline.infer`) wraps this for the pipeline; `benchmarks/gpu.py` runs it directly on a GPU
machine that has no Ray, so the benchmark measures the code the pipeline runs.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

import fastav
from fastav import FastAVConfig, compiled, varlen
from fastav.families import for_directory, require_video
from fastav.families.base import collate
from fastav.quality.agreement import StepRecorder, kl, token_agreement
from pipeline.config import ModelConfig


@dataclass(frozen=True)
class Runtime:
    device: str
    dtype: torch.dtype
    attn: str  # the text decoder's attention backend
    encoder_attn: str  # the vision and audio towers'


def resolve_runtime(config: ModelConfig, decode: str = "eager") -> Runtime:
    """Device, dtype and attention backends. With `attn_implementation: auto` and flash-attn installed, a decode
    that may compile (`infer.decode` auto or compiled, on CUDA) keeps flash-attention for the towers and gives the
    text decoder sdpa: the compiled step needs a static cache, which flash-attention's varlen path cannot take, and
    decoding is most of a generate() call's time."""
    device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if config.dtype != "auto":
        dtype = getattr(torch, config.dtype)
    else:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    attn, encoder_attn = varlen.choose_backends(config.attn_implementation, device, dtype)
    if config.attn_implementation == "auto" and "flash" in attn and decode != "eager":
        attn = "sdpa"
    return Runtime(device, dtype, attn, encoder_attn)


def load_model(path: str, config: ModelConfig, decode: str = "eager"):
    """The checkpoint's model through its family (refused before loading when no family supports it, or when it
    takes no video), on its device, in eval mode, with the resolved attention backends (`decode`: `infer.decode`,
    see resolve_runtime). Returns (model, runtime)."""
    family, architecture = for_directory(path, config.family)
    require_video(family, architecture)
    runtime = resolve_runtime(config, decode)
    model = family.load(path, architecture, runtime.dtype, runtime.attn)
    return prepare(model, runtime), runtime


def prepare(model, runtime: Runtime):
    """Towers on their backend (set after loading: see fastav.varlen), the model on its device, eval mode."""
    if runtime.encoder_attn != runtime.attn:
        varlen.use_for_encoders(model, runtime.encoder_attn)
    return model.to(runtime.device).eval()


def stats_columns(stats: fastav.SampleStats) -> dict:
    av = ("video", "audio", "image")
    after_global = stats.after_global or stats.input_tokens
    return {
        "tokens_text": stats.input_tokens["text"],
        "tokens_video": stats.input_tokens["video"],
        "tokens_audio": stats.input_tokens["audio"],
        "tokens_image": stats.input_tokens["image"],
        "tokens_input": stats.tokens_per_layer[0],
        "av_tokens_after_global": sum(after_global[m] for m in av),
        "av_tokens_last_layer": stats.av_tokens_per_layer[-1],
        "tokens_last_layer": stats.tokens_per_layer[-1],
        "flops_unpruned": float(stats.flops_unpruned),
        "flops_pruned": float(stats.flops_pruned),
        "flops_ratio": float(stats.flops_ratio),
        "kv_cache_bytes": stats.kv_cache_bytes,
        "kv_cache_bytes_unpruned": stats.kv_cache_bytes_unpruned,
    }


def resolve_decode(decode: str, device: str, attn: str) -> str:
    """`infer.decode` for this actor: compiled needs sdpa or eager attention in the text decoder; auto compiles on
    CUDA only (on CPU inductor's compiled step measured slower than eager: benchmarks/decode.py)."""
    static_ok = "flash" not in attn
    if decode == "compiled" and not static_ok:
        raise ValueError(f"infer.decode: compiled needs sdpa or eager attention in the text decoder, not {attn}")
    if decode == "auto":
        return "compiled" if device.startswith("cuda") and static_ok else "eager"
    return decode


class _FirstTokenTimer(BaseStreamer):
    """generate() calls put() with the prompt, then once per step: the second call ends the prefill."""

    def __init__(self) -> None:
        self.calls, self.start, self.first_token = 0, time.perf_counter(), None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_token = time.perf_counter()

    def end(self) -> None:
        pass


def is_shadow(video_id: str, fraction: float) -> bool:
    """Whether a row is a shadow row: a hash of its id against `fraction`, so every run picks the same rows."""
    if fraction <= 0:
        return False
    draw = int.from_bytes(hashlib.sha256(f"fastav-shadow:{video_id}".encode()).digest()[:8], "big") / 2**64
    return draw < fraction


class ModelRunner:
    """A loaded model with FastAV installed (strategy `none` is the unpruned baseline through the same code),
    its tokenizer, and batched greedy generation; shadow rows are also generated unpruned for comparison."""

    def __init__(
        self,
        model,
        tokenizer,
        fastav_config: FastAVConfig,
        max_new_tokens: int,
        decode: str = "eager",
        length_bucket: int = 256,
    ) -> None:
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.pruner = fastav.enable(model, fastav_config)
        self.family = fastav.family_of(model)
        self.decode = resolve_decode(decode, str(model.device), model.config.get_text_config()._attn_implementation)
        self.engine = compiled.install(self.pruner) if self.decode == "compiled" else None
        self.pruner.length_bucket = length_bucket
        eos = model.generation_config.eos_token_id
        self._stop = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self._stop.add(tokenizer.pad_token_id)

    @property
    def device(self) -> str:
        return str(self.model.device)

    def _generate(
        self, inputs: list[dict[str, np.ndarray]], audio_in_video: bool, first: StepRecorder | None, static: bool
    ):
        """(generated token ids per row up to EOS, seconds to the first token, seconds for the whole call)."""
        batch = collate(inputs, self.tokenizer.pad_token_id, self.model.device, self.model.dtype)
        timer = _FirstTokenTimer()
        # transformers' own auto-compile stays off: the engine compiles the text model's step only
        cache = {"cache_implementation": "static", "disable_compile": True} if static else {}
        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                **self.family.forward_kwargs(audio_in_video),
                **cache,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=timer,
                logits_processor=LogitsProcessorList([first]) if first is not None else None,
            )
        done = time.perf_counter()
        generated = [self._until_stop(row) for row in out[:, batch["input_ids"].shape[1] :].tolist()]
        return generated, (timer.first_token or done) - timer.start, done - timer.start

    def cache_tokens(self, inputs: dict[str, np.ndarray]) -> int:
        """The KV-cache tokens one row holds during decoding: its prompt's keys as pruned, averaged over the
        decoder layers, plus the new tokens."""
        layers = self.pruner.adapter.num_layers
        return -(-self.pruner.planned_cache_tokens(inputs["input_ids"]) // layers) + self.max_new_tokens

    def plan_calls(self, inputs: list[dict[str, np.ndarray]], max_batch_tokens: int | None) -> list[list[int]]:
        """Row indices per generate() call: consecutive rows while rows x the longest row's cache tokens fit the
        budget (a row over it alone runs alone); all in one call without a budget."""
        if max_batch_tokens is None:
            return [list(range(len(inputs)))]
        calls, longest = [[]], 0
        for i, row in enumerate(inputs):
            tokens = self.cache_tokens(row)
            if calls[-1] and (len(calls[-1]) + 1) * max(longest, tokens) > max_batch_tokens:
                calls.append([])
                longest = 0
            calls[-1].append(i)
            longest = max(longest, tokens)
        return calls

    def _compile_totals(self) -> tuple[int, float]:
        if self.engine is None:
            return 0, 0.0
        return len(self.engine.stats.graphs), self.engine.stats.compile_seconds

    def _until_stop(self, tokens: list[int]) -> list[int]:
        end = next((i for i, t in enumerate(tokens) if t in self._stop), len(tokens))
        return tokens[:end]

    def generate(
        self, inputs: list[dict[str, np.ndarray]], audio_in_video: bool, shadow: list[bool] | None = None
    ) -> list[dict]:
        """One generate() call over the videos' inputs; per video its output text, times and FastAV columns.
        Rows flagged in `shadow` are generated again unpruned (one more call) and get the shadow_* columns."""
        shadow = shadow or [False] * len(inputs)
        first = StepRecorder(first_only=True) if any(shadow) else None
        graphs_before, compile_before = self._compile_totals()
        generated, prefill_s, generate_s = self._generate(inputs, audio_in_video, first, self.engine is not None)
        graphs_after, compile_after = self._compile_totals()
        new_graphs, new_compile_s = graphs_after - graphs_before, compile_after - compile_before
        stats = self.pruner.stats
        results = [
            {
                "output_text": self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                "prefill_ms": prefill_s * 1000.0,
                "generate_ms": generate_s * 1000.0,
                "batch_rows": len(inputs),
                "decode_mode": self.decode,
                "decode_graphs": new_graphs,  # compiled during this row's generate() call (its batch)
                "decode_compile_ms": new_compile_s * 1000.0,
                **stats_columns(row_stats),
            }
            for tokens, row_stats in zip(generated, stats, strict=True)
        ]
        if first is not None:
            rows = [i for i, flag in enumerate(shadow) if flag]
            self._shadow([inputs[i] for i in rows], audio_in_video, [results[i] for i in rows],
                         [generated[i] for i in rows], first.logprobs()[rows, 0])  # fmt: skip
        return results

    def _shadow(self, inputs, audio_in_video, results, pruned_tokens, pruned_first) -> None:
        """Generate `inputs` unpruned (same settings) and compare with the pruned outputs, in `results`."""
        first = StepRecorder(first_only=True)
        with self.pruner.paused():
            generated, _, shadow_s = self._generate(inputs, audio_in_video, first, static=False)
        first_kl = kl(first.logprobs()[:, 0], pruned_first).tolist()
        for result, tokens, pruned, divergence_kl in zip(results, generated, pruned_tokens, first_kl, strict=True):
            agreement, divergence = token_agreement(pruned, tokens)
            result.update(
                shadow_output_text=self.tokenizer.decode(tokens, skip_special_tokens=True).strip(),
                shadow_token_agreement=agreement,
                shadow_first_divergence=divergence,
                shadow_first_token_kl=divergence_kl,
                shadow_ms=shadow_s * 1000.0,
            )
