"""Embedded-default demo: FastAV on a tiny random-weight Qwen2.5-Omni thinker, then the paper's FLOPs table.

    python -m jobs.demo [--workdir work/demo]

Writes a tiny thinker checkpoint with save_pretrained, loads it back with from_pretrained, runs batched
generate() on synthetic audio-in-video inputs unpruned and with FastAV, and prints per-sample savings.
Needs no GPU and no network.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import fastav
from fastav import FastAVConfig
from fastav import testing as tiny
from fastav.cli import main as fastav_cli


def run(workdir: Path) -> None:
    checkpoint = workdir / "tiny-qwen2.5-omni-thinker"
    if not (checkpoint / "config.json").exists():
        tiny.save_omni_thinker(checkpoint)
    model = tiny.load(checkpoint, attn="sdpa")
    inputs = tiny.omni_inputs([(12, 8, 800, 10), (6, 6, 600, 14), (20, 4, 400, 8)])
    generate = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)

    start = time.perf_counter()
    model.generate(**inputs, **generate)
    unpruned_s = time.perf_counter() - start

    config = FastAVConfig(global_layer=3, global_keep_ratio=1 / 3, fine_ratio=0.2)
    pruner = fastav.enable(model, config)
    start = time.perf_counter()
    model.generate(**inputs, **generate)
    pruned_s = time.perf_counter() - start

    print(f"tiny Qwen2.5-Omni thinker ({checkpoint}), FastAV {config.summary()}")
    print(f"{'sample':>6} {'text':>5} {'video':>6} {'audio':>6} {'after global':>13} {'last layer':>11} {'FLOPs':>7}")
    for i, s in enumerate(pruner.stats):
        inp, glob = s.input_tokens, s.after_global or {}
        print(
            f"{i:>6} {inp['text']:>5} {inp['video']:>6} {inp['audio']:>6} "
            f"{glob.get('video', 0) + glob.get('audio', 0):>13} {s.av_tokens_per_layer[-1]:>11} {s.flops_ratio:>7.1%}"
        )
    print(f"generate wall time: unpruned {unpruned_s:.2f}s, pruned {pruned_s:.2f}s (tiny model: not a benchmark)")
    fastav.disable(model)
    print()
    fastav_cli(["flops", "--preset", "videollama2-av"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("work/demo"))
    torch.set_num_threads(2)
    run(parser.parse_args().workdir)


if __name__ == "__main__":
    main()
