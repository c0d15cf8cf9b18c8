"""Decode: video bytes in memory -> N sampled RGB frames and a 16 kHz mono audio track, or an error.

decord reads from BytesIO (no temp files); PyAV is the fallback where decord fails. Decord facts that shape
this code: `mono=True` whenever resampling (stereo + resample returns garbage), "Can't find audio stream"
for silent files, not every failure is a DECORDError, AudioReader decodes the whole track on open (so the
duration cap is checked first), and a downmix can exceed [-1, 1] (clipped).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from pipeline.config import DecodeConfig

SAMPLE_RATE = 16_000


class VideoError(Exception):
    """A per-video failure that becomes an error row; `kind` is the row's error_type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Decoded:
    frames: np.ndarray  # (N, H, W, 3) uint8
    sample_fps: float  # rate of the sampled frames, for the processor's temporal positions
    audio: np.ndarray | None  # (samples,) float32 in [-1, 1] at 16 kHz, None without an audio track
    duration: float
    decoder: str


def frame_indices(total: int, native_fps: float, config: DecodeConfig) -> np.ndarray:
    duration = total / native_fps if native_fps > 0 else float(total)
    count = math.floor(duration * config.fps) if config.fps is not None else config.num_frames
    count = max(2, min(count, config.max_frames))
    count -= count % 2  # the Qwen vision encoder groups frames in temporal pairs
    return np.linspace(0, max(total - 1, 0), count).round().astype(np.int64)


def _shrink(frames: np.ndarray, max_side: int) -> np.ndarray:
    height, width = frames.shape[1:3]
    scale = max_side / max(height, width)
    if scale >= 1:
        return frames
    import torch

    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    tensor = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    out = torch.nn.functional.interpolate(tensor, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _finish_audio(audio: np.ndarray | None, config: DecodeConfig) -> np.ndarray | None:
    if audio is None or audio.size == 0:
        return None
    audio = audio.reshape(-1)[: int(config.max_audio_seconds * SAMPLE_RATE)]
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def _decode_decord(data: bytes, config: DecodeConfig) -> Decoded:
    import decord

    reader = decord.VideoReader(io.BytesIO(data), num_threads=1)
    total, native_fps = len(reader), float(reader.get_avg_fps())
    if total == 0:
        raise VideoError("DecodeError", "no video frames")
    duration = total / native_fps if native_fps > 0 else 0.0
    _check_duration(duration, config)
    indices = frame_indices(total, native_fps, config)
    frames = reader.get_batch(list(indices)).asnumpy()
    try:
        audio = _whole_track(decord.AudioReader(io.BytesIO(data), sample_rate=SAMPLE_RATE, mono=True))
    except decord.DECORDError as error:
        if "audio stream" not in str(error):
            raise
        audio = None
    return Decoded(frames, _sample_fps(len(indices), duration), _finish_audio(audio, config), duration, "decord")


def _whole_track(reader) -> np.ndarray:
    """The decoded samples. AudioReader holds them as an array from construction, but `reader[:]` gathers
    them through a Python list of every sample index (~15 ms for 8 s at 16 kHz), so read the array itself
    where this decord version has it."""
    array = getattr(reader, "_array", None)
    return array if isinstance(array, np.ndarray) else reader[:].asnumpy()


def _decode_pyav(data: bytes, config: DecodeConfig) -> Decoded:
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            raise VideoError("DecodeError", "no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0) or 25.0
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        _check_duration(duration, config)
        all_frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    if not all_frames:
        raise VideoError("DecodeError", "no decodable video frames")
    duration = duration or len(all_frames) / rate
    indices = frame_indices(len(all_frames), len(all_frames) / duration if duration else rate, config)
    frames = np.stack([all_frames[i] for i in indices])
    audio = None
    with av.open(io.BytesIO(data)) as container:
        if container.streams.audio:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks = []
            for frame in container.decode(container.streams.audio[0]):
                chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(frame))
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
            audio = np.concatenate(chunks) if chunks else None
    return Decoded(frames, _sample_fps(len(indices), duration), _finish_audio(audio, config), duration, "pyav")


def _sample_fps(count: int, duration: float) -> float:
    return count / duration if duration > 0 else 2.0


def _check_duration(duration: float, config: DecodeConfig) -> None:
    if duration > config.max_video_seconds:
        raise VideoError("TooLong", f"{duration:.1f}s exceeds decode.max_video_seconds={config.max_video_seconds}")


def decode_video(data: bytes, config: DecodeConfig) -> Decoded:
    """Decode with decord, falling back to PyAV; raises VideoError with a row-level error type."""
    if not data:
        raise VideoError("EmptyObject", "the object has zero bytes")
    if len(data) > config.max_bytes:
        raise VideoError("TooLarge", f"{len(data)} bytes exceeds decode.max_bytes={config.max_bytes}")
    errors = []
    for decoder in (_decode_decord, _decode_pyav):
        try:
            decoded = decoder(data, config)
            break
        except VideoError as error:
            if error.kind != "DecodeError":
                raise
            errors.append(f"{decoder.__name__[8:]}: {error}")
        except Exception as error:  # decord and ffmpeg raise many types on garbage input
            errors.append(f"{decoder.__name__[8:]}: {type(error).__name__}: {str(error).strip()[:200]}")
    else:
        raise VideoError("DecodeError", "; ".join(errors))
    decoded.frames = _shrink(decoded.frames, config.max_side)
    if decoded.audio is None and config.missing_audio == "error":
        raise VideoError("NoAudio", "the video has no audio track (decode.missing_audio=error)")
    return decoded
