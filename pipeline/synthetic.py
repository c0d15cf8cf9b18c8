"""Synthetic corpus: real mp4 files (H.264 video + AAC audio) of moving shapes and tones, made with PyAV.

Used by the embedded default job, the tests and the benchmarks; `broken_files` adds the inputs a real
corpus contains too (truncated upload, zero-byte object, mislabelled non-video, clip without audio).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000


def make_clip(
    seconds: float = 3.0,
    fps: int = 8,
    size: tuple[int, int] = (112, 112),
    tone_hz: float | None = 440.0,
    seed: int = 0,
    video_track: bool = True,
) -> bytes:
    """An mp4 of a square moving across a coloured background, with a sine tone (None: no audio track);
    `video_track=False` makes an audio-only file."""
    import io

    import av

    rng = np.random.default_rng(seed)
    width, height = size
    background = rng.integers(0, 256, 3, dtype=np.uint8)
    colour = rng.integers(0, 256, 3, dtype=np.uint8)
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=fps) if video_track else None
        if video is not None:
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
            video.options = {"preset": "ultrafast"}
        audio = None
        if tone_hz is not None:
            audio = container.add_stream("aac", rate=SAMPLE_RATE)
            audio.layout = "mono"
        frames = int(seconds * fps) if video is not None else 0
        side = max(8, min(width, height) // 4)
        for i in range(frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = background
            x = int((width - side) * i / max(frames - 1, 1))
            y = int((height - side) * (0.5 + 0.4 * np.sin(i / 3)))
            image[y : y + side, x : x + side] = colour
            for packet in video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in video.encode() if video is not None else ():
            container.mux(packet)
        if audio is not None:
            t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
            wave = (0.3 * np.sin(2 * np.pi * tone_hz * t)).astype(np.float32)
            for start in range(0, len(wave), 1024):
                frame = av.AudioFrame.from_ndarray(wave[None, start : start + 1024], format="fltp", layout="mono")
                frame.sample_rate, frame.pts = SAMPLE_RATE, start
                for packet in audio.encode(frame):
                    container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return buffer.getvalue()


def write_corpus(
    directory: Path, count: int = 6, seconds: float = 3.0, fps: int = 8, size: tuple[int, int] = (112, 112)
) -> list[Path]:
    """`count` good clips with audio, varied in length, colour and tone."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"clip_{i:04d}.mp4"
        if not path.exists():
            clip = make_clip(seconds=seconds + (i % 3), fps=fps, size=size, tone_hz=220.0 * (1 + i % 4), seed=i)
            path.write_bytes(clip)
        paths.append(path)
    return paths


def broken_files(good_clip: bytes) -> dict[str, bytes]:
    """Bad inputs by name: each must become an error row, except the silent clip (video-only by default)."""
    return {
        "truncated.mp4": good_clip[: len(good_clip) // 3],
        "empty.mp4": b"",
        "not_a_video.mp4": b"this is a text file that was given a video extension\n" * 20,
        "silent.mp4": make_clip(seconds=2.0, tone_hz=None, seed=99),
    }
