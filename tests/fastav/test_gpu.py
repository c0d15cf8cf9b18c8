"""GPU-only checks (run with `pytest -m gpu` on a CUDA machine): bf16 and flash_attention_2."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import fastav
from fastav import FastAVConfig
from fastav import testing as tiny
from tests.fastav.test_equivalence import PLAIN_LAYOUT, plain_inputs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _generate(model, inputs):
    inputs = {k: v.cuda() for k, v in inputs.items()}
    out = model.generate(
        **inputs, max_new_tokens=6, do_sample=False, pad_token_id=0, output_logits=True, return_dict_in_generate=True
    )
    return out.sequences.cpu(), torch.stack(out.logits).float().cpu()


@pytest.mark.parametrize("backend", ["sdpa", "flash_attention_2"])
def test_bf16_pruned_backends_agree_with_fp32_sdpa(checkpoints, backend):
    if backend == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    config = FastAVConfig(global_layer=2, global_keep_ratio=0.5, fine_ratio=0.2)
    reference = tiny.load(checkpoints["qwen2"], "sdpa").cuda()
    fastav.enable(reference, config, layout=PLAIN_LAYOUT)
    want_tokens, want_logits = _generate(reference, plain_inputs(3))
    model = tiny.load(checkpoints["qwen2"], backend).to("cuda", torch.bfloat16)
    pruner = fastav.enable(model, config, layout=PLAIN_LAYOUT)
    tokens, got_logits = _generate(model, plain_inputs(3))
    assert all(s.tokens_per_layer[-1] < s.tokens_per_layer[0] for s in pruner.stats)
    torch.testing.assert_close(got_logits, want_logits, atol=0.1, rtol=0.05)
    assert (tokens == want_tokens).float().mean() > 0.9
