"""Attention rollout: against a brute-force rollout of eager attention maps, forward unchanged, backends restored."""

from __future__ import annotations

import json

import pytest
import torch

import fastav
from fastav import FastAVConfig, Modality
from fastav import testing as tiny
from fastav.quality import rollout
from fastav.quality.rollout import attention_rollout
from tests.fastav.test_equivalence import PLAIN_LAYOUT, omni_inputs, plain_inputs


def one_input(padded: bool) -> dict[str, torch.Tensor]:
    """Row 0 of the plain batch unpadded, or row 1 with its left padding."""
    i = 1 if padded else 0
    batch = plain_inputs(2)
    inputs = {k: v[i : i + 1] for k, v in batch.items()}
    if not padded:
        keep = inputs["attention_mask"][0].bool()
        inputs = {k: v[:, keep] for k, v in inputs.items()}
    assert bool((inputs["attention_mask"] == 0).any()) == padded
    return inputs


def brute_force_rows(model, inputs, residual=0.5) -> torch.Tensor:
    """R_l = A_l @ R_{l-1} on full matrices from the eager model's own attention weights."""
    with torch.no_grad():
        maps = model(**inputs, output_attentions=True).attentions
    n = inputs["input_ids"].shape[1]
    eye = torch.eye(n, dtype=torch.float64)
    r, rows = eye, []
    for attention in maps:
        a = (1 - residual) * attention[0].double().mean(dim=0) + residual * eye
        r = a @ r
        rows.append(r[-1])
    return torch.stack(rows).float()


def text_logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def backends(model) -> set[str]:
    adapter = fastav.resolve(model)
    return {adapter.text_config._attn_implementation} | {
        l.self_attn.config._attn_implementation for l in adapter.layers
    }


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left_padded"])
@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_rows_match_brute_force_rollout(checkpoints, family, padded):
    inputs = one_input(padded)
    got = attention_rollout(tiny.load(checkpoints[family]), inputs, layout=PLAIN_LAYOUT)
    want = brute_force_rows(tiny.load(checkpoints[family], "eager"), inputs)

    assert got.rows.dtype == torch.float32 and got.rows.device.type == "cpu"
    assert got.rows.shape == (6, inputs["input_ids"].shape[1])
    torch.testing.assert_close(got.rows, want, atol=1e-5, rtol=0)
    # the layers differ (each row is its own tensor, not a view of the running matrix)
    assert (got.rows[0] - got.rows[-1]).abs().max() > 1e-3
    torch.testing.assert_close(got.rows.sum(-1), torch.ones(6), atol=1e-5, rtol=0)
    assert got.rows[:, got.labels == Modality.PAD].abs().sum() == 0  # padding gets no mass at all

    n_av = int(((got.labels == Modality.VIDEO) | (got.labels == Modality.AUDIO)).sum())
    first_av = int(((got.labels == Modality.VIDEO) | (got.labels == Modality.AUDIO)).long().argmax())
    for share, row in zip(got.shares(), got.rows, strict=True):
        assert share["text"] + share["video"] + share["audio"] + share["image"] == pytest.approx(1, abs=1e-5)
        assert share["image"] == 0.0 and share["video"] > 0 and share["audio"] > 0
        assert share["av_early"] + share["av_late"] == pytest.approx(share["video"] + share["audio"], abs=1e-5)
        # video then audio are contiguous here: the early third is the first round(n_av / 3) AV positions
        early = float(row[first_av : first_av + round(n_av / 3)].sum())
        assert share["av_early"] == pytest.approx(early, abs=2e-6)
    half = got.shares(early_fraction=0.5)[-1]
    assert half["av_early"] == pytest.approx(float(got.rows[-1, first_av : first_av + round(n_av / 2)].sum()), abs=2e-6)


def test_binned_and_json(checkpoints):
    inputs = one_input(padded=True)
    got = attention_rollout(tiny.load(checkpoints["qwen2"]), inputs, layout=PLAIN_LAYOUT)
    n = got.rows.shape[1]
    binned = got.binned(bins=7)
    for b in range(7):
        positions = [p for p in range(n) if b * n / 7 <= p < (b + 1) * n / 7]
        torch.testing.assert_close(binned[:, b], got.rows[:, positions].sum(-1), atol=1e-6, rtol=0)
    data = json.loads(json.dumps(got.to_json(bins=7)))
    edges = data["bin_edges"]
    assert edges[0] == 0 and edges[-1] == n and len(edges) == 8
    for b in range(7):
        torch.testing.assert_close(
            torch.tensor([row[b] for row in data["binned"]]),
            got.rows[:, edges[b] : edges[b + 1]].sum(-1),
            atol=1e-6,
            rtol=0,
        )
    assert data["num_layers"] == 6 and data["num_tokens"] == n
    mask = inputs["attention_mask"][0].bool()
    ids = inputs["input_ids"][0]
    assert data["tokens"] == {
        "pad": int((~mask).sum()),
        "text": int((mask & (ids != tiny.VIDEO_ID) & (ids != tiny.AUDIO_ID)).sum()),
        "video": int((ids == tiny.VIDEO_ID).sum()),
        "audio": int((ids == tiny.AUDIO_ID).sum()),
        "image": 0,
    }
    assert data["layers"] == got.shares()
    assert all(sum(row) == pytest.approx(1, abs=1e-5) for row in data["binned"])


@pytest.mark.parametrize("backend", ["sdpa", "eager"])
def test_forward_unchanged_and_backend_restored(checkpoints, backend):
    inputs = one_input(padded=True)
    model = tiny.load(checkpoints["qwen2"], backend)
    want = text_logits(model, inputs)
    stock_sdpa = text_logits(tiny.load(checkpoints["qwen2"], "sdpa"), inputs)
    seen = {}

    def record_logits(module, args, kwargs, output):
        seen["logits"] = output.logits.clone()

    def record_backends(module, args, kwargs):
        seen["backends"] = backends(model)

    handles = [
        model.register_forward_hook(record_logits, with_kwargs=True),
        model.model.layers[3].register_forward_pre_hook(record_backends, with_kwargs=True),
    ]
    first = attention_rollout(model, inputs, layout=PLAIN_LAYOUT)
    for handle in handles:
        handle.remove()
    assert seen["backends"] == {rollout.NAME}
    # the rollout forward is the stock sdpa forward, bit for bit (also for a model loaded with eager)
    assert torch.equal(seen["logits"], stock_sdpa)
    assert backends(model) == {backend}
    assert torch.equal(text_logits(model, inputs), want)

    def boom(module, args, kwargs):
        raise RuntimeError("boom")

    handle = model.model.layers[2].register_forward_pre_hook(boom, with_kwargs=True)
    with pytest.raises(RuntimeError, match="boom"):
        attention_rollout(model, inputs, layout=PLAIN_LAYOUT)
    handle.remove()
    assert backends(model) == {backend}
    assert not any(layer.self_attn in rollout._ACTIVE for layer in model.model.layers)
    assert torch.equal(text_logits(model, inputs), want)
    # a fresh call after the failed one starts from the identity again
    torch.testing.assert_close(attention_rollout(model, inputs, layout=PLAIN_LAYOUT).rows, first.rows, atol=0, rtol=0)


def test_omni_thinker(checkpoints):
    inputs = omni_inputs(1)
    model = tiny.load(checkpoints["omni"])
    towers = {"visual": model.model.visual, "audio_tower": model.model.audio_tower}
    seen = {}

    def record(name):
        def hook(module, args, kwargs):
            own = module.config if name in towers else model.model.language_model.config
            seen[name] = (own._attn_implementation, model.model.language_model.config._attn_implementation)

        return hook

    handles = [m.register_forward_pre_hook(record(name), with_kwargs=True) for name, m in towers.items()]
    handles.append(model.model.language_model.layers[0].register_forward_pre_hook(record("text"), with_kwargs=True))
    got = attention_rollout(model, inputs)  # labels from the thinker's own token ids
    for handle in handles:
        handle.remove()
    # the towers ran on their own backend while the text decoder was on the rollout one
    assert seen == {
        "visual": ("sdpa", rollout.NAME),
        "audio_tower": ("sdpa", rollout.NAME),
        "text": (rollout.NAME, rollout.NAME),
    }
    assert backends(model) == {"sdpa"}
    assert {t.config._attn_implementation for t in towers.values()} == {"sdpa"}

    ids = inputs["input_ids"][0]
    assert int((got.labels == Modality.VIDEO).sum()) == int((ids == tiny.OMNI_IDS["video_token_index"]).sum()) > 0
    assert int((got.labels == Modality.AUDIO).sum()) == int((ids == tiny.OMNI_IDS["audio_token_index"]).sum()) > 0
    torch.testing.assert_close(got.rows.sum(-1), torch.ones(6), atol=1e-5, rtol=0)
    for share in got.shares():
        assert share["video"] > 0 and share["audio"] > 0
        assert share["text"] + share["video"] + share["audio"] + share["image"] == pytest.approx(1, abs=1e-5)
    # the same oracle as the plain decoders: the eager thinker's text-decoder attention maps
    torch.testing.assert_close(
        got.rows, brute_force_rows(tiny.load(checkpoints["omni"], "eager"), inputs), atol=1e-5, rtol=0
    )


def test_chunking_and_labels_do_not_change_the_result(checkpoints):
    inputs = one_input(padded=True)
    model = tiny.load(checkpoints["qwen2"])
    whole = attention_rollout(model, inputs, layout=PLAIN_LAYOUT, chunk=256)
    chunked = attention_rollout(model, inputs, layout=PLAIN_LAYOUT, chunk=3)
    torch.testing.assert_close(chunked.rows, whole.rows, atol=1e-6, rtol=0)
    explicit = attention_rollout(
        model, inputs, labels=PLAIN_LAYOUT.labels(inputs["input_ids"], inputs["attention_mask"])
    )
    assert torch.equal(explicit.labels, whole.labels) and torch.equal(explicit.rows, whole.rows)
    # another residual weight is another rollout, same as the brute force with that weight
    other = attention_rollout(model, inputs, layout=PLAIN_LAYOUT, residual=0.25, chunk=5)
    want = brute_force_rows(tiny.load(checkpoints["qwen2"], "eager"), inputs, residual=0.25)
    torch.testing.assert_close(other.rows, want, atol=1e-5, rtol=0)


def test_refusals(checkpoints):
    model = tiny.load(checkpoints["qwen2"])
    with pytest.raises(ValueError, match="batch 2"):
        attention_rollout(model, plain_inputs(2), layout=PLAIN_LAYOUT)
    inputs = one_input(padded=False)
    with pytest.raises(ValueError, match=r"labels=.*layout="):
        attention_rollout(model, inputs)  # a plain Qwen2 has no default layout
    with pytest.raises(ValueError, match=r"expected \(1, "):
        attention_rollout(model, inputs, labels=torch.ones(1, 3, dtype=torch.long))
    right_padded = {k: torch.cat([v, torch.zeros_like(v[:, :2])], dim=1) for k, v in inputs.items()}
    with pytest.raises(ValueError, match="padding"):
        attention_rollout(model, right_padded, layout=PLAIN_LAYOUT)
    fastav.enable(model, FastAVConfig(global_layer=2))
    with pytest.raises(ValueError, match="disable"):
        attention_rollout(model, inputs, layout=PLAIN_LAYOUT)
    fastav.disable(model)
    assert backends(model) == {"sdpa"}
