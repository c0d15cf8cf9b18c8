"""Inference: a callable class for an actor pool; loads the checkpoint once per actor, runs batched generate().

The model side lives in `pipeline.runner` (no Ray there); this adds what the pipeline needs around it: the
checkpoint from object storage, rows in and out, provenance columns, and failure isolation. Rows are grouped
by whether audio is interleaved (`use_audio_in_video` is one flag per generate call) and, with
`infer.max_batch_tokens`, split into calls whose KV caches fit that budget as pruned; a call that fails is
retried row by row so one bad input cannot take its batch down.
"""

from __future__ import annotations

import json

from pipeline.checkpoint import local_checkpoint
from pipeline.config import InferConfig, JobFastAVConfig, ModelConfig, StorageConfig
from pipeline.preprocess import load_processor
from pipeline.rows import OK, fail, to_batch, to_rows, unpack
from pipeline.runner import ModelRunner, is_shadow, load_model
from pipeline.stages import node_id
from pipeline.storage import Storage


class InferActor:
    """One per actor: model, processor (for decoding text) and FastAV pruner are set up once."""

    def __init__(
        self, model: ModelConfig, infer: InferConfig, fastav_config: JobFastAVConfig, storage: StorageConfig
    ) -> None:
        path = str(local_checkpoint(model, Storage(storage)))
        loaded, self.runtime = load_model(path, model, infer.decode)
        tokenizer = load_processor(path).tokenizer
        self.runner = ModelRunner(
            loaded, tokenizer, fastav_config.pruning(), infer.max_new_tokens, infer.decode, infer.decode_length_bucket
        )
        self.shadow_fraction = fastav_config.shadow_fraction
        self.max_batch_tokens = infer.max_batch_tokens
        self.model_id = model.checkpoint
        self.settings = json.dumps(self.runner.pruner.settings, sort_keys=True)

    def _generate(self, rows: list[dict], audio_in_video: bool) -> None:
        shadow = [is_shadow(row["id"], self.shadow_fraction) for row in rows]
        results = self.runner.generate([unpack(row["inputs"]) for row in rows], audio_in_video, shadow)
        for row, result in zip(rows, results, strict=True):
            row.update(result)

    def __call__(self, batch: dict) -> dict:
        rows = to_rows(batch)
        node = node_id()
        for row in rows:
            row["model_id"], row["fastav_settings"], row["infer_node"] = self.model_id, self.settings, node
            row["model_family"] = self.runner.family.name
        for flag in (True, False):
            group = [r for r in rows if r.get("status") == OK and bool(r.get("use_audio_in_video")) == flag]
            if not group:
                continue
            calls = self.runner.plan_calls([unpack(row["inputs"]) for row in group], self.max_batch_tokens)
            for call in ([group[i] for i in indices] for indices in calls):
                try:
                    self._generate(call, flag)
                except Exception:
                    for row in call:  # isolate the failing input
                        try:
                            self._generate([row], flag)
                        except Exception as error:
                            fail(row, error, kind="InferenceError")
        for row in rows:
            row.pop("inputs", None)
        return to_batch(rows)
