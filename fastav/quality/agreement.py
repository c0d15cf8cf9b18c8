"""How closely a pruned model follows the unpruned one: teacher-forced top-1 agreement and KL, and the
free-running comparison of two generations.

Everything goes through `model.generate` with a logits processor (transformers' public extension point), so
the measured path is the production path on every supported family (Qwen2.5-Omni's multimodal rotary
positions included): the unpruned run records its greedy continuation and each step's distribution; the
pruned run is *forced* along that continuation while its own distributions are recorded. Top-1 agreement is
the fraction of steps where the pruned model's argmax equals the unpruned token; KL is KL(unpruned || pruned)
per step, averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

import fastav
from fastav.config import FastAVConfig
from fastav.layout import Layout


class StepRecorder(LogitsProcessor):
    """Records the log-distribution of every step (or only the first); optionally forces given tokens."""

    def __init__(self, force: torch.Tensor | None = None, first_only: bool = False) -> None:
        self.force, self.first_only = force, first_only  # force: (B, steps) tokens to emit
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not (self.first_only and self.steps):
            self.steps.append(scores.float().log_softmax(-1))
        if self.force is None:
            return scores
        token = self.force[:, len(self.steps) - 1 : len(self.steps)].to(scores.device)
        return torch.full_like(scores, float("-inf")).scatter_(-1, token, 0.0)

    def logprobs(self) -> torch.Tensor:
        """(B, steps, V) float32 log-probabilities."""
        return torch.stack(self.steps, dim=1)


def kl(reference: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(reference || other) over the last axis of two log-probability tensors (nats)."""
    p = reference.exp()
    terms = p * (reference - other.clamp_min(torch.finfo(other.dtype).min))
    return terms.where(p > 0, 0.0).sum(-1).clamp_min(0.0)  # tokens the reference rules out add nothing


@dataclass
class Reference:
    """One prompt's unpruned greedy continuation and its per-step log-distributions."""

    prompt: dict[str, torch.Tensor]  # generate() kwargs for one row (input_ids, attention_mask, media...)
    labels: torch.Tensor | None  # (1, n) Modality labels where the model has no layout of its own
    tokens: torch.Tensor  # (steps,)
    logprobs: torch.Tensor  # (steps, V)


@dataclass(frozen=True)
class Agreement:
    top1: float  # fraction of steps whose argmax is the unpruned token
    kl: float  # mean KL(unpruned || pruned) per step
    flops_ratio: float  # prefill FLOPs, pruned / unpruned
    steps: int


def _generate(model, prompt: dict, steps: int, recorder: StepRecorder) -> torch.Tensor:
    pad = getattr(model.generation_config, "pad_token_id", None)
    eos = getattr(model.generation_config, "eos_token_id", None)
    with torch.inference_mode():
        return model.generate(
            **prompt,
            max_new_tokens=steps,
            do_sample=False,
            logits_processor=LogitsProcessorList([recorder]),
            pad_token_id=pad if pad is not None else (eos[0] if isinstance(eos, list) else eos),
        )


def reference(model, prompt: dict, labels: torch.Tensor | None = None, steps: int = 32) -> Reference:
    """The unpruned greedy continuation of `prompt` (batch 1; up to `steps` tokens, EOS included)."""
    if fastav.pruner_of(model) is not None:
        raise ValueError("the reference must run unpruned: call fastav.disable(model) first")
    recorder = StepRecorder()
    out = _generate(model, prompt, steps, recorder)
    tokens = out[0, prompt["input_ids"].shape[1] :]
    return Reference(prompt, labels, tokens.cpu(), recorder.logprobs()[0].cpu())


def compare(
    model, ref: Reference, config: FastAVConfig, layout: Layout | None = None
) -> tuple[Agreement, fastav.SampleStats]:
    """Prune with `config` and force the unpruned continuation: agreement, KL and FLOPs of that prefill."""
    pruner = fastav.enable(model, config, layout=layout)
    try:
        if ref.labels is not None:
            pruner.set_modalities(ref.labels)
        recorder = StepRecorder(force=ref.tokens[None])
        _generate(model, ref.prompt, len(ref.tokens), recorder)
        (stats,) = pruner.stats
    finally:
        fastav.disable(model)
    pruned = recorder.logprobs()[0].cpu()
    top1 = (pruned.argmax(-1) == ref.tokens).float().mean().item()
    return Agreement(top1, kl(ref.logprobs, pruned).mean().item(), stats.flops_ratio, len(ref.tokens)), stats


def token_agreement(pruned: list[int], unpruned: list[int]) -> tuple[float, int | None]:
    """Free-running comparison of two greedy outputs: the fraction of equal tokens, position by position over
    the shorter, and the first position where they differ (or where one ended), None if they are equal."""
    shorter = min(len(pruned), len(unpruned))
    equal = [a == b for a, b in zip(pruned[:shorter], unpruned[:shorter], strict=True)]
    first = next((i for i, same in enumerate(equal) if not same), None)
    if first is None and len(pruned) != len(unpruned):
        first = shorter
    if not shorter:
        return (1.0 if len(pruned) == len(unpruned) else 0.0), first
    return sum(equal) / shorter, first
