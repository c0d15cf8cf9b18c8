"""CPU stages for Ray Data `map_batches`: decode and preprocess. Each row carries on, success or error."""

from __future__ import annotations

import numpy as np

from pipeline.checkpoint import local_checkpoint
from pipeline.config import DecodeConfig, ModelConfig, PromptConfig, StorageConfig
from pipeline.decode import VideoError, deadline, decode_video
from pipeline.preprocess import checkpoint_family, load_processor, video_inputs
from pipeline.rows import map_ok_rows, pack, timed, to_batch, to_rows, unpack
from pipeline.storage import Storage, read_failure


def node_id() -> str | None:
    """The Ray node this runs on (None outside Ray): which machine did the work, for operators."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None


class DecodeStage:
    """Read each object and decode it: frames and audio go on as one packed column."""

    def __init__(self, decode: DecodeConfig, storage: StorageConfig) -> None:
        self.decode, self.storage = decode, storage

    def _row(self, row: dict) -> None:
        with timed(row, "decode_ms"), deadline(self.decode.timeout_seconds, "decode.timeout_seconds"):
            try:
                data = Storage(self.storage).read(row["uri"])
            except VideoError:  # decode.timeout_seconds ran out during the read: stays a Timeout
                raise
            except Exception as error:  # absent or forbidden: permanent; throttled, 5xx, offline: ReadError
                raise VideoError(*read_failure(error, row["uri"], self.storage.max_attempts)) from error
            video = decode_video(data, self.decode)
        audio = video.audio if video.audio is not None else np.zeros(0, np.float32)
        row["media"] = pack(frames=video.frames, audio=audio, sample_fps=np.float64(video.sample_fps))
        row["has_audio"] = video.audio is not None
        row["frames_used"] = video.distinct_frames  # different frames; the model gets frames.shape[0] of them
        row["frames_repeated"] = video.frames_repeated
        row["audio_seconds"] = float(audio.size / 16_000)
        row["audio_truncated"] = video.audio_truncated
        row["video_seconds"] = float(video.duration)
        row["decoder"] = video.decoder
        row["decode_node"] = node_id()

    def __call__(self, batch: dict) -> dict:
        return to_batch(map_ok_rows(to_rows(batch), self._row))


class PreprocessStage:
    """Build model inputs with the checkpoint's own processor (loaded once per worker process) the way its family
    calls it. A video-only family leaves the audio out, and the row says so (`audio_used`, `audio_seconds` 0)."""

    def __init__(self, prompt: PromptConfig, model: ModelConfig, storage: StorageConfig) -> None:
        self.prompt, self.model, self.storage = prompt, model, storage

    def _row(self, row: dict) -> None:
        with timed(row, "preprocess_ms"):
            path = str(local_checkpoint(self.model, Storage(self.storage)))
            family = checkpoint_family(path, self.model.family)
            processor = load_processor(path)
            media = unpack(row.pop("media"))  # read-only views of the payload
            frames = np.array(media["frames"])  # the processor wraps frames in torch tensors: those want writable
            audio = media["audio"] if row["has_audio"] and family.takes_audio() else None
            fps = float(media["sample_fps"])
            inputs = video_inputs(family, processor, frames, fps, audio, self.prompt, row.get("prompt"))
        row["inputs"] = pack(**inputs)
        row["model_family"] = family.name
        row["use_audio_in_video"] = row["audio_used"] = audio is not None
        if audio is None:
            row["audio_seconds"] = 0.0  # audio fed to the model

    def __call__(self, batch: dict) -> dict:
        rows = map_ok_rows(to_rows(batch), self._row)
        for row in rows:
            row.pop("media", None)  # error rows still hold it: free it before inference
        return to_batch(rows)
