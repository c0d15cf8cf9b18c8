"""The model sees exactly what the processor built: the stage-to-actor transport is lossless.

Oracles: the checkpoint's own processor output fed straight to the model (30-s padded audio features,
no payload packing), against what DecodeStage -> PreprocessStage -> InferActor feed it.
"""

import pyarrow as pa
import pytest
import torch

import fastav
from fastav.families import FAMILIES
from fastav.families.base import collate
from pipeline.config import (
    DecodeConfig,
    InferConfig,
    JobFastAVConfig,
    ModelConfig,
    PromptConfig,
    SourceConfig,
    StorageConfig,
)
from pipeline.decode import decode_video
from pipeline.infer import InferActor
from pipeline.preprocess import load_processor
from pipeline.rows import OK, pack, to_batch, to_rows, unpack
from pipeline.runner import load_model
from pipeline.source import list_videos
from pipeline.stages import DecodeStage, PreprocessStage
from pipeline.storage import Storage

DECODE = DecodeConfig(num_frames=4)
PROMPT = PromptConfig()
OMNI = FAMILIES["qwen2_5_omni"]
GOOD = ("clip_0000.mp4", "clip_0001.mp4", "clip_0002.mp4")  # 2, 3 and 4 s of audio


@pytest.fixture(scope="module")
def decoded(clips):
    return {name: decode_video(clips[name], DECODE) for name in GOOD}


def _through_payloads(inputs: dict) -> dict:
    """What the actor receives: packed into an Arrow payload column and read back in place."""
    return unpack(to_rows(to_batch([{"inputs": pack(**inputs)}]))[0]["inputs"])


def test_trimmed_audio_features_give_the_same_audio_embeddings(omni_checkpoint, decoded):
    processor = load_processor(str(omni_checkpoint))
    model, _ = load_model(str(omni_checkpoint), ModelConfig(checkpoint=str(omni_checkpoint)))
    videos = [decoded[name] for name in GOOD]
    ours = [
        _through_payloads(OMNI.processor_inputs(processor, v.frames, v.sample_fps, v.audio, PROMPT)) for v in videos
    ]
    widths = [x["input_features"].shape[-1] for x in ours]
    assert len(set(widths)) == 3 and max(widths) < 3000  # trimmed to each clip's own length
    batch = collate(ours, pad_id=0, device="cpu", dtype=torch.float32)

    full = [
        OMNI.processor_outputs(processor, v.frames, v.sample_fps, v.audio, PROMPT, return_tensors="pt") for v in videos
    ]
    assert all(f["input_features"].shape[-1] == 3000 for f in full)  # the processor pads to 30 s
    with torch.inference_mode():
        expected = model.get_audio_features(
            torch.cat([f["input_features"] for f in full]), torch.cat([f["feature_attention_mask"] for f in full])
        ).last_hidden_state
        got = model.get_audio_features(batch["input_features"], batch["feature_attention_mask"]).last_hidden_state
    assert torch.equal(got, expected)


@pytest.mark.parametrize("strategy", ["fastav", "none"])
def test_actor_output_equals_direct_generate(strategy, omni_checkpoint, clips, decoded, tmp_path):
    for name in GOOD:
        (tmp_path / name).write_bytes(clips[name])
    storage, model_config = StorageConfig(), ModelConfig(checkpoint=str(omni_checkpoint))
    settings = JobFastAVConfig(strategy=strategy, global_layer=1, fine_ratio=0.2, shadow_fraction=0)
    rows = [
        {**row, "status": OK, "error_type": None, "error_message": None}
        for row in list_videos(SourceConfig(uri=str(tmp_path)), Storage(storage))
    ]
    infer = InferConfig(batch_size=1, max_new_tokens=8)
    actor = InferActor(model_config, infer, settings, storage)
    decode, preprocess = DecodeStage(DECODE, storage), PreprocessStage(PROMPT, model_config, storage)
    got = {}
    for row in rows:  # one video per generate call: the reference below is unbatched
        out = to_rows(actor(preprocess(decode(pa.Table.from_pylist([row])))))[0]
        assert out["status"] == OK, out["error_message"]
        got[row["uri"].rsplit("/", 1)[-1]] = out

    model, _ = load_model(str(omni_checkpoint), model_config)
    pruner = fastav.enable(model, settings.pruning())
    processor = load_processor(str(omni_checkpoint))
    for name in GOOD:
        video = decoded[name]
        inputs = OMNI.processor_outputs(
            processor, video.frames, video.sample_fps, video.audio, PROMPT, return_tensors="pt"
        )
        with torch.inference_mode():
            ids = model.generate(**inputs, use_audio_in_video=True, max_new_tokens=8, do_sample=False, pad_token_id=0)
        text = processor.tokenizer.decode(ids[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        stats = pruner.stats[0]
        assert got[name]["output_text"] == text.strip(), name
        assert got[name]["tokens_input"] == stats.tokens_per_layer[0]
        assert got[name]["tokens_last_layer"] == stats.tokens_per_layer[-1]
        assert got[name]["tokens_audio"] == stats.input_tokens["audio"] > 0


def test_varlen_setting_puts_the_towers_on_the_varlen_backend(omni_checkpoint):
    from fastav import varlen

    model, runtime = load_model(
        str(omni_checkpoint), ModelConfig(checkpoint=str(omni_checkpoint), attn_implementation="varlen")
    )
    assert (runtime.attn, runtime.encoder_attn) == ("sdpa", varlen.NAME)
    assert [c._attn_implementation for c in varlen.encoder_configs(model)] == [varlen.NAME] * 2
    assert model.model.language_model.config._attn_implementation == "sdpa"
    _, runtime = load_model(str(omni_checkpoint), ModelConfig(checkpoint=str(omni_checkpoint)))
    assert (runtime.device, runtime.attn, runtime.encoder_attn) == ("cpu", "sdpa", "sdpa")  # auto on a CPU


def test_fastav_settings_name_the_resolved_global_layer(omni_checkpoint):
    import json

    actor = InferActor(
        ModelConfig(checkpoint=str(omni_checkpoint)), InferConfig(), JobFastAVConfig(), StorageConfig()
    )  # defaults: the global layer is L/2 of this 6-layer model
    settings = json.loads(actor.settings)
    assert settings["global_layer"] == 3 and settings["strategy"] == "fastav"


def test_compiled_decode_gives_the_eager_outputs_and_reports_its_graphs(omni_checkpoint, clips, tmp_path):
    """infer.decode: compiled (static caches, inductor) against eager (dynamic cache): the same text for a
    left-padded batch of three; the first batch compiles one graph, the second reuses it; KV bytes shrink."""
    for name in GOOD:
        (tmp_path / name).write_bytes(clips[name])
    storage, model_config = StorageConfig(), ModelConfig(checkpoint=str(omni_checkpoint))
    settings = JobFastAVConfig(global_layer=1, fine_ratio=0.2, shadow_fraction=0)
    listed = [
        {**row, "status": OK, "error_type": None, "error_message": None}
        for row in list_videos(SourceConfig(uri=str(tmp_path)), Storage(storage))
    ]
    decode, preprocess = DecodeStage(DECODE, storage), PreprocessStage(PROMPT, model_config, storage)
    batch = preprocess(decode(pa.Table.from_pylist(listed)))
    out = {}
    for mode in ("eager", "compiled"):
        actor = InferActor(model_config, InferConfig(max_new_tokens=16, decode=mode), settings, storage)
        out[mode] = [to_rows(actor(batch)) for _ in range(2)]
    for first, second in zip(out["eager"], out["compiled"], strict=True):
        assert [r["output_text"] for r in first] == [r["output_text"] for r in second]
    first, again = out["compiled"]
    assert {r["decode_mode"] for r in first + again} == {"compiled"}
    assert [r["decode_graphs"] for r in first] == [1, 1, 1] and [r["decode_graphs"] for r in again] == [0, 0, 0]
    assert first[0]["decode_compile_ms"] > 0 and again[0]["decode_compile_ms"] == 0
    assert {r["decode_mode"] for r in out["eager"][0]} == {"eager"}
    assert all(0 < r["kv_cache_bytes"] < r["kv_cache_bytes_unpruned"] for r in first)


def test_decode_auto_compiles_on_cuda_with_sdpa_only():
    from pipeline.runner import resolve_decode

    assert resolve_decode("auto", "cuda:0", "fastav_sdpa") == "compiled"
    assert resolve_decode("auto", "cpu", "sdpa") == "eager"
    assert resolve_decode("auto", "cuda", "flash_attention_2") == "eager"
    with pytest.raises(ValueError, match=r"infer\.decode: compiled needs sdpa or eager"):
        resolve_decode("compiled", "cuda", "fastav_flash_attention_2")


def test_auto_attention_with_flash_attn_leaves_the_text_decoder_to_a_compiled_decode(monkeypatch):
    """flash-attn installed, `attn_implementation: auto` on CUDA: a decode that may compile takes sdpa in the text
    decoder (so `auto` compiles and `compiled` is not refused) and flash for the towers; an eager decode, or
    flash named outright, keeps flash-attention everywhere."""
    from fastav import varlen
    from pipeline.runner import resolve_decode, resolve_runtime

    monkeypatch.setattr(varlen, "flash_attn_installed", lambda: True)
    model = ModelConfig(checkpoint="/c", device="cuda")
    for decode in ("auto", "compiled"):
        runtime = resolve_runtime(model, decode)
        assert (runtime.attn, runtime.encoder_attn) == ("sdpa", "flash_attention_2")
        assert resolve_decode(decode, runtime.device, runtime.attn) == "compiled"
    assert (resolve_runtime(model, "eager").attn, resolve_runtime(model).attn) == ("flash_attention_2",) * 2
    named = model.model_copy(update={"attn_implementation": "flash_attention_2"})
    assert resolve_runtime(named, "auto").attn == "flash_attention_2"
    assert resolve_decode("auto", "cuda", resolve_runtime(named, "auto").attn) == "eager"
    cpu = model.model_copy(update={"device": "cpu"})
    assert resolve_runtime(cpu, "auto").attn == "sdpa" and resolve_decode("auto", "cpu", "sdpa") == "eager"


def test_max_batch_tokens_lets_pruned_rows_share_a_call(omni_checkpoint, clips, tmp_path):
    """One KV-token budget: pruned, the three rows fit one generate() call; unpruned they need more calls."""
    for name in GOOD:
        (tmp_path / name).write_bytes(clips[name])
    storage, model_config = StorageConfig(), ModelConfig(checkpoint=str(omni_checkpoint))
    listed = [
        {**row, "status": OK, "error_type": None, "error_message": None}
        for row in list_videos(SourceConfig(uri=str(tmp_path)), Storage(storage))
    ]
    decode, preprocess = DecodeStage(DECODE, storage), PreprocessStage(PROMPT, model_config, storage)
    batch = preprocess(decode(pa.Table.from_pylist(listed)))
    pruned_settings = JobFastAVConfig(global_layer=1, global_keep_ratio=0.3, fine_ratio=0.2, shadow_fraction=0)
    probe = InferActor(model_config, InferConfig(max_new_tokens=4), pruned_settings, storage)
    inputs = [unpack(row["inputs"]) for row in to_rows(batch)]
    costs = [probe.runner.cache_tokens(x) for x in inputs]
    assert costs == [-(-probe.runner.pruner.planned_cache_tokens(x["input_ids"]) // 6) + 4 for x in inputs]
    budget = 3 * max(costs)
    infer = InferConfig(max_new_tokens=4, max_batch_tokens=budget)
    pruned = to_rows(InferActor(model_config, infer, pruned_settings, storage)(batch))
    unpruned_settings = JobFastAVConfig(strategy="none", shadow_fraction=0)
    unpruned = to_rows(InferActor(model_config, infer, unpruned_settings, storage)(batch))
    assert all(r["status"] == OK for r in pruned + unpruned)
    assert [r["batch_rows"] for r in pruned] == [3, 3, 3]
    assert max(r["batch_rows"] for r in unpruned) < 3
    unpruned_costs = [len(x["input_ids"]) + 4 for x in inputs]
    assert all(r["batch_rows"] * max(unpruned_costs) <= budget or r["batch_rows"] == 1 for r in unpruned)
