"""Decode: video bytes in memory -> N sampled RGB frames and a 16 kHz mono audio track, or an error.

decord reads from BytesIO (no temp files); PyAV is the fallback where decord fails. Decord facts that shape
this code: `mono=True` whenever resampling (stereo + resample returns garbage), "Can't find audio stream"
for silent files, not every failure is a DECORDError, AudioReader decodes the whole track on open, and a
downmix can exceed [-1, 1] (clipped). Frames are sampled, so a long video costs little to read; its audio
would not, so a track longer than `max_audio_seconds` is read with PyAV only as far as the cap.
"""

from __future__ import annotations

import io
import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from pipeline.config import DecodeConfig

SAMPLE_RATE = 16_000


class VideoError(Exception):
    """A per-video failure that becomes an error row; `kind` is the row's error_type."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@contextmanager
def deadline(seconds: float | None, setting: str) -> Iterator[None]:
    """Raise VideoError("Timeout") when the block runs longer than `seconds` (wall clock).

    A SIGALRM timer: it interrupts Python code (PyAV's frame loop, retries, reads) but not a single call
    inside a C library until that call returns. Only the main thread can use it; elsewhere no limit applies.
    """
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise VideoError("Timeout", f"took longer than {setting}={seconds:g}")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Decoded:
    frames: np.ndarray  # (N, H, W, 3) uint8
    sample_fps: float  # rate of the sampled frames, for the processor's temporal positions
    audio: np.ndarray | None  # (samples,) float32 in [-1, 1] at 16 kHz, None without an audio track
    duration: float
    decoder: str
    distinct_frames: int  # different source frames among `frames` (fewer: a short clip repeats frames)
    audio_truncated: bool = False  # the track went on past decode.max_audio_seconds

    @property
    def frames_repeated(self) -> bool:
        """The sampled frames repeat a source frame: the clip has fewer frames than were sampled (a one-frame
        clip is fed 8 times with num_frames 8), or a stream ended before its announced length."""
        return self.distinct_frames < self.frames.shape[0]


def frame_indices(total: int, native_fps: float, config: DecodeConfig) -> np.ndarray:
    """Indices of the frames to sample, uniform over the clip, an even count of at least 2: a clip with fewer
    frames than that gives repeated indices (Decoded.distinct_frames counts the different ones)."""
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


def _cap(config: DecodeConfig) -> int:
    return int(config.max_audio_seconds * SAMPLE_RATE)


def _finish_audio(audio: np.ndarray | None, config: DecodeConfig) -> tuple[np.ndarray | None, bool]:
    """The track cut at the cap, clipped to [-1, 1]; and whether anything was cut."""
    if audio is None or audio.size == 0:
        return None, False
    audio = audio.reshape(-1)
    truncated = audio.size > _cap(config)
    return np.clip(audio[: _cap(config)], -1.0, 1.0).astype(np.float32), truncated


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
    if duration > config.max_audio_seconds + 1.0:  # decord would decode the whole track: read up to the cap
        audio, truncated = _audio_pyav(data, config)
    else:
        try:
            track = _whole_track(decord.AudioReader(io.BytesIO(data), sample_rate=SAMPLE_RATE, mono=True))
        except decord.DECORDError as error:
            if "audio stream" not in str(error):
                raise
            track = None
        audio, truncated = _finish_audio(track, config)
    distinct = len(np.unique(indices))
    return Decoded(frames, _sample_fps(len(indices), duration), audio, duration, "decord", distinct, truncated)


def _audio_pyav(data: bytes, config: DecodeConfig) -> tuple[np.ndarray | None, bool]:
    """16 kHz mono audio with PyAV, decoding only as far as the cap; whether the track went on past it."""
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.audio:
            return None, False
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        chunks, samples, truncated = [], 0, False
        for frame in container.decode(container.streams.audio[0]):
            if samples > _cap(config):
                truncated = True
                break
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
                samples += chunks[-1].size
        if not truncated:
            chunks.extend(r.to_ndarray().reshape(-1) for r in resampler.resample(None))
    audio, cut = _finish_audio(np.concatenate(chunks) if chunks else None, config)
    return audio, truncated or cut


def _whole_track(reader) -> np.ndarray:
    """The decoded samples. AudioReader holds them as an array from construction, but `reader[:]` gathers
    them through a Python list of every sample index (~15 ms for 8 s at 16 kHz), so read the array itself
    where this decord version has it."""
    array = getattr(reader, "_array", None)
    return array if isinstance(array, np.ndarray) else reader[:].asnumpy()


def _decode_pyav(data: bytes, config: DecodeConfig) -> Decoded:
    """Decode sequentially, converting only the sampled frames (the frame count comes from the stream, or
    from its duration and rate); a stream shorter than announced repeats its last frame."""
    import av

    with av.open(io.BytesIO(data)) as container:
        if not container.streams.video:
            if container.streams.audio:
                raise VideoError("NoVideo", "the file has an audio track but no video stream")
            raise VideoError("DecodeError", "no video or audio stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or 0) or 25.0
        duration = float(container.duration / av.time_base) if container.duration else 0.0
        _check_duration(duration, config)
        total = stream.frames or round(duration * rate)
        if not total:
            raise VideoError("DecodeError", "the video stream announces no frames and no duration")
        indices = frame_indices(total, rate, config)
        wanted, picked, last = set(indices.tolist()), {}, None
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                picked[i] = last = frame.to_ndarray(format="rgb24")
            if i >= indices[-1]:
                break
    if last is None:
        raise VideoError("DecodeError", "no decodable video frames")
    frames = np.stack([picked.get(i, last) for i in indices])
    duration = duration or total / rate
    audio, truncated = _audio_pyav(data, config)
    distinct = len(picked)  # indices past the stream's end were given its last frame again
    return Decoded(frames, _sample_fps(len(indices), duration), audio, duration, "pyav", distinct, truncated)


def _sample_fps(count: int, duration: float) -> float:
    return count / duration if duration > 0 else 2.0


def _check_duration(duration: float, config: DecodeConfig) -> None:
    if config.max_video_seconds is not None and duration > config.max_video_seconds:
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
