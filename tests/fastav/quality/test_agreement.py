"""Agreement measures: teacher forcing records what a plain forward over the continuation computes; strategy
`none` agrees exactly; pruning shows up; free-running token comparison; KL."""

import math

import pytest
import torch

import fastav
from fastav import FastAVConfig, Modality, SpanLayout
from fastav import testing as tiny
from fastav.quality.agreement import compare, kl, reference, token_agreement
from tests.fastav.test_equivalence import omni_inputs

SPAN = SpanLayout(((Modality.VIDEO, 4, 60),))


def _prompt():
    ids = torch.randint(3, 200, (1, 66), generator=torch.Generator().manual_seed(1))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_reference_and_forced_steps_match_a_plain_forward(checkpoints, family):
    model = tiny.load(checkpoints[family])
    prompt, labels = _prompt(), SPAN.labels(None, torch.ones(1, 66))
    ref = reference(model, prompt, labels, steps=6)
    assert len(ref.tokens) == 6
    full = torch.cat([prompt["input_ids"][0], ref.tokens])[None]
    with torch.no_grad():  # teacher forcing by one forward over prompt + continuation, no cache
        want = model(full).logits[0, 65:-1].float().log_softmax(-1)
    torch.testing.assert_close(ref.logprobs, want, atol=1e-4, rtol=0)
    assert torch.equal(ref.tokens, want.argmax(-1))  # greedy

    same, stats = compare(model, ref, FastAVConfig(strategy="none"))
    assert (same.top1, same.steps, stats.flops_ratio) == (1.0, 6, 1.0) and same.kl < 1e-6
    pruned, stats = compare(model, ref, FastAVConfig(global_layer=1, global_keep_ratio=0.05, fine_ratio=0.5))
    assert stats.flops_ratio < 0.6 and pruned.flops_ratio == stats.flops_ratio
    assert pruned.kl > 1e-3  # the oracle has teeth
    fastav.enable(model, FastAVConfig())
    with pytest.raises(ValueError, match="must run unpruned"):
        reference(model, prompt, labels)


def test_compare_on_the_omni_thinker_uses_its_own_layout(checkpoints):
    model = tiny.load(checkpoints["omni"])
    prompt = {k: v for k, v in omni_inputs(1).items()}
    ref = reference(model, prompt, steps=4)
    same, _ = compare(model, ref, FastAVConfig(strategy="none"))
    assert same.top1 == 1.0 and same.kl < 1e-6
    pruned, stats = compare(model, ref, FastAVConfig(global_layer=2, global_keep_ratio=0.1))
    assert stats.input_tokens["video"] > 0 and stats.flops_ratio < 1 and pruned.kl > 0


def test_token_agreement_and_kl():
    assert token_agreement([1, 2, 3], [1, 2, 3]) == (1.0, None)
    assert token_agreement([1, 5, 3, 4], [1, 2, 3]) == (2 / 3, 1)
    assert token_agreement([1, 2], [1, 2, 3]) == (1.0, 2)  # one ended early: diverges there
    assert token_agreement([], []) == (1.0, None) and token_agreement([], [7]) == (0.0, 0)
    p = torch.tensor([[0.5, 0.5, 0.0]]).log()
    q = torch.tensor([[0.25, 0.75, 0.0]]).log()
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl(p, q).item() == pytest.approx(want) and kl(p, p).item() == 0.0
