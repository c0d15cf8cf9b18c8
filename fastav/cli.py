"""`fastav` command line: FLOPs tables for presets.

fastav presets
fastav flops --preset videollama2-av                  # the paper's setting: cut 750 at layer 14, P=0.2
fastav flops --preset videollama2-av --cut 700 725 750 --json
"""

from __future__ import annotations

import argparse
import json
import sys

from fastav.config import FastAVConfig
from fastav.flops import fastv_layer_flops, layer_flops
from fastav.presets import PRESETS, Preset, get_preset
from fastav.stats import SampleStats
from fastav.tokens import planned_stats


def preset_stats(preset: Preset, config: FastAVConfig) -> SampleStats:
    return planned_stats(preset.labels(), config, preset.dims, preset.min_prune_layer)


def _configs(preset: Preset, args: argparse.Namespace) -> list[FastAVConfig]:
    overrides = {
        k: v
        for k, v in {
            "strategy": args.strategy,
            "global_layer": args.global_layer,
            "global_keep_ratio": args.keep_ratio,
            "fine_ratio": args.fine_ratio,
        }.items()
        if v is not None
    }
    if args.keep_ratio is not None:
        overrides["global_cut"] = None
    base = preset.config.model_copy(update=overrides)
    base = FastAVConfig.model_validate(base.model_dump())  # re-validate the overrides
    if not args.cut:
        return [base]
    return [FastAVConfig.model_validate({**base.model_dump(), "global_cut": cut}) for cut in args.cut]


def _print_table(preset: Preset, stats: SampleStats) -> None:
    d = preset.dims
    print(f"preset {preset.name}: {preset.description}")
    mlp = (
        f"MoE {d.experts} experts, {d.experts_per_token} active of width {d.expert_ffn}"
        + (f" + shared {d.shared_expert_ffn}" if d.shared_expert_ffn else "")
        if d.is_moe
        else f"FFN {d.ffn}"
    )
    print(f"  decoder: {d.num_layers} layers, hidden {d.hidden}, {d.heads} heads / {d.kv_heads} KV, {mlp}")
    if preset.min_prune_layer > 1:
        print(f"  first prunable layer: {preset.min_prune_layer} (deepstack features are added before it)")
    print("  input: " + ", ".join(f"{k} {v}" for k, v in stats.input_tokens.items() if v))
    for line in preset.assumptions:
        print(f"  assumption: {line}")
    print("  settings: " + ", ".join(f"{k}={v}" for k, v in stats.settings.items()))
    print()
    print(f"{'layer':>5} {'tokens':>7} {'AV':>6} {'GFLOPs real':>12} {'GFLOPs FastV':>13}")
    for layer, (n, av) in enumerate(zip(stats.tokens_per_layer, stats.av_tokens_per_layer, strict=True)):
        real, fastv = layer_flops(n, d, layer) / 1e9, fastv_layer_flops(n, d, layer) / 1e9
        print(f"{layer:>5} {n:>7} {av:>6} {real:>12.1f} {fastv:>13.1f}")
    print()


def _summary_line(stats: SampleStats) -> str:
    settings = stats.settings
    cut = settings.get("global_cut") or (
        f"keep {settings['global_keep_ratio']:.3g}" if "global_keep_ratio" in settings else "-"
    )
    return (
        f"cut {cut!s:>10}: FLOPs {stats.flops_ratio:6.1%} of unpruned (real dims, GQA + SwiGLU), "
        f"{stats.fastv_flops_ratio:6.1%} (FastV formula); "
        f"AV tokens after global {sum(v for k, v in (stats.after_global or {}).items() if k != 'text')}, "
        f"at last layer {stats.av_tokens_per_layer[-1]}"
    )


def cmd_flops(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    results = [preset_stats(preset, config) for config in _configs(preset, args)]
    if args.json:
        json.dump([r.to_dict() for r in results], sys.stdout, indent=2)
        print()
        return 0
    _print_table(preset, results[-1])
    for stats in results:
        print(_summary_line(stats))
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name, preset in sorted(PRESETS.items()):
        print(f"{name:22} {preset.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastav", description="FastAV audio/video token pruning tools")
    sub = parser.add_subparsers(dest="command", required=True)
    flops = sub.add_parser("flops", help="prefill FLOPs table of a preset, pruned vs unpruned")
    flops.add_argument("--preset", required=True, choices=sorted(PRESETS))
    flops.add_argument("--strategy", choices=["none", "fastav", "fastv", "random", "low_attentive", "gradual"])
    flops.add_argument("--global-layer", type=int)
    flops.add_argument("--cut", type=int, nargs="+", help="positional cut(s); several print one summary each")
    flops.add_argument("--keep-ratio", type=float, help="keep ratio instead of a cut")
    flops.add_argument("--fine-ratio", type=float, help="P, fraction dropped per fine layer")
    flops.add_argument("--json", action="store_true", help="print the per-sample stats as JSON")
    flops.set_defaults(func=cmd_flops)
    presets = sub.add_parser("presets", help="list presets")
    presets.set_defaults(func=cmd_presets)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as error:  # pydantic's ValidationError and PlanError name the field
        print(f"fastav: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
