import numpy as np
import pytest

from pipeline import decode
from pipeline.config import DecodeConfig
from pipeline.decode import VideoError, decode_video, frame_indices
from pipeline.synthetic import make_clip


@pytest.fixture(scope="module")
def clip() -> bytes:
    return make_clip(seconds=3.0, fps=8, size=(160, 96), tone_hz=440.0)


def test_decord_reads_frames_and_16k_mono_audio(clip):
    video = decode_video(clip, DecodeConfig(num_frames=6))
    assert video.decoder == "decord"
    assert video.frames.shape == (6, 96, 160, 3) and video.frames.dtype == np.uint8
    assert video.audio is not None and abs(video.audio.size / 16_000 - 3.0) < 0.2
    assert np.abs(video.audio).max() <= 1.0 and np.abs(video.audio).max() > 0.2  # the tone, not silence
    assert abs(video.duration - 3.0) < 0.2 and abs(video.sample_fps - 2.0) < 0.2


def test_pyav_fallback_matches_decord(clip):
    config = DecodeConfig(num_frames=4)
    by_decord = decode._decode_decord(clip, config)
    by_pyav = decode._decode_pyav(clip, config)
    assert by_pyav.frames.shape == by_decord.frames.shape
    assert np.abs(by_pyav.frames.astype(int) - by_decord.frames.astype(int)).mean() < 3
    assert abs(by_pyav.audio.size - by_decord.audio.size) < 2048


def test_fallback_is_used_when_decord_fails(clip, monkeypatch):
    def broken(data, config):
        raise RuntimeError("decord cannot read this")

    monkeypatch.setattr(decode, "_decode_decord", broken)
    assert decode_video(clip, DecodeConfig()).decoder == "pyav"


def test_fps_sampling_caps_and_even_counts():
    assert len(frame_indices(240, 24.0, DecodeConfig(fps=1.0))) == 10
    assert len(frame_indices(2400, 24.0, DecodeConfig(fps=2.0, max_frames=16))) == 16
    assert len(frame_indices(240, 24.0, DecodeConfig(num_frames=7))) == 6
    short = frame_indices(3, 24.0, DecodeConfig(num_frames=8)).tolist()  # fewer frames than asked: repeats
    assert len(short) == 8 and short[0] == 0 and short[-1] == 2 and short == sorted(short)


def test_frames_are_shrunk_to_max_side(clip):
    video = decode_video(clip, DecodeConfig(num_frames=2, max_side=80))
    assert max(video.frames.shape[1:3]) == 80 and video.frames.shape[1:3] == (48, 80)


def test_audio_is_capped(clip):
    assert decode_video(clip, DecodeConfig(max_audio_seconds=1.0)).audio.size == 16_000


def test_video_without_audio():
    silent = make_clip(seconds=2.0, tone_hz=None)
    assert decode_video(silent, DecodeConfig()).audio is None
    with pytest.raises(VideoError) as info:
        decode_video(silent, DecodeConfig(missing_audio="error"))
    assert info.value.kind == "NoAudio"


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"", "EmptyObject"), (b"garbage" * 100, "DecodeError"), (b"\x00" * 64, "DecodeError")],
)
def test_bad_bytes_become_typed_errors(data, kind):
    with pytest.raises(VideoError) as info:
        decode_video(data, DecodeConfig())
    assert info.value.kind == kind


def test_size_and_duration_caps(clip):
    with pytest.raises(VideoError, match="max_bytes") as info:
        decode_video(clip, DecodeConfig(max_bytes=100))
    assert info.value.kind == "TooLarge"
    with pytest.raises(VideoError, match="max_video_seconds") as info:
        decode_video(clip, DecodeConfig(max_video_seconds=1.0))
    assert info.value.kind == "TooLong"


@pytest.fixture(scope="module")
def long_clip() -> bytes:
    """Twelve minutes of video and audio (small frames, 1 fps): long videos are normal in real corpora."""
    return make_clip(seconds=720.0, fps=1, size=(64, 48), tone_hz=330.0, seed=5)


def test_a_long_video_decodes_with_the_defaults(long_clip):
    video = decode_video(long_clip, DecodeConfig())
    assert video.decoder == "decord" and video.frames.shape[0] == 8 and abs(video.duration - 720) < 2
    # Audio is read only up to the cap (PyAV for a track this long), and the row will say it was cut.
    assert video.audio.size == 30 * 16_000 and video.audio_truncated
    assert np.abs(video.audio).max() > 0.2
    short = decode_video(make_clip(seconds=2.0), DecodeConfig())
    assert not short.audio_truncated


def test_audio_cut_at_the_cap_is_flagged_by_both_decoders(clip):
    config = DecodeConfig(max_audio_seconds=1.0)
    for decoder in (decode._decode_decord, decode._decode_pyav):
        video = decoder(clip, config)
        assert video.audio.size == 16_000 and video.audio_truncated, decoder.__name__
    assert not decode_video(clip, DecodeConfig()).audio_truncated


def test_pyav_samples_a_long_video_without_holding_every_frame(long_clip):
    by_pyav = decode._decode_pyav(long_clip, DecodeConfig(num_frames=6))
    by_decord = decode._decode_decord(long_clip, DecodeConfig(num_frames=6))
    assert by_pyav.frames.shape == by_decord.frames.shape == (6, 48, 64, 3)
    assert np.abs(by_pyav.frames.astype(int) - by_decord.frames.astype(int)).mean() < 3
    assert by_pyav.audio_truncated and by_pyav.audio.size == 30 * 16_000


def test_an_audio_only_file_is_no_video():
    audio_only = make_clip(seconds=2.0, video_track=False)
    with pytest.raises(VideoError, match="no video stream") as info:
        decode_video(audio_only, DecodeConfig())
    assert info.value.kind == "NoVideo"


def test_deadline_turns_a_slow_decode_into_a_timeout():
    import time

    slow = pytest.raises(VideoError, match=r"decode.timeout_seconds=0.2")
    with slow as info, decode.deadline(0.2, "decode.timeout_seconds"):
        for _ in range(100):
            time.sleep(0.05)  # Python-level work, as PyAV's frame loop
    assert info.value.kind == "Timeout"
    with decode.deadline(5.0, "decode.timeout_seconds"):
        pass  # no alarm left behind
    time.sleep(0.01)


def test_a_decode_past_its_deadline_becomes_a_transient_timeout_row(clip, tmp_path):
    import pyarrow as pa

    from pipeline.config import StorageConfig
    from pipeline.errors import retryable
    from pipeline.rows import OK, to_rows
    from pipeline.stages import DecodeStage

    (tmp_path / "clip.mp4").write_bytes(clip)
    row = {"id": "a", "uri": str(tmp_path / "clip.mp4"), "status": OK, "error_type": None, "error_message": None}
    stage = DecodeStage(DecodeConfig(timeout_seconds=0.001), StorageConfig())
    (out,) = to_rows(stage(pa.Table.from_pylist([row])))
    assert out["status"] == "error" and out["error_type"] == "Timeout" and retryable("Timeout")
    assert "decode.timeout_seconds=0.001" in out["error_message"]
    (ok,) = to_rows(DecodeStage(DecodeConfig(), StorageConfig())(pa.Table.from_pylist([row])))
    assert ok["status"] == OK and ok["audio_truncated"] is False


def test_a_one_frame_clip_reports_one_distinct_frame_and_says_it_was_repeated(tmp_path):
    import pyarrow as pa

    from pipeline.config import StorageConfig
    from pipeline.rows import OK, to_rows
    from pipeline.sink import SCHEMA, to_table
    from pipeline.stages import DecodeStage

    files = {"one.mp4": make_clip(seconds=0.125, fps=8), "normal.mp4": make_clip(seconds=3.0, fps=8)}
    rows = []
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        rows.append({"id": name, "uri": str(tmp_path / name), "status": OK, "error_type": None, "error_message": None})
    stage = DecodeStage(DecodeConfig(num_frames=8), StorageConfig())
    one, normal = to_rows(stage(pa.Table.from_pylist(rows)))
    assert one["status"] == OK and one["frames_used"] == 1 and one["frames_repeated"] is True
    assert normal["status"] == OK and normal["frames_used"] == 8 and normal["frames_repeated"] is False
    # The model still gets the sampled count (even, for the vision encoder's temporal pairs).
    assert decode_video(files["one.mp4"], DecodeConfig(num_frames=8)).frames.shape[0] == 8
    # Both decoders count the same, and the written rows carry the column.
    for decoder in (decode._decode_decord, decode._decode_pyav):
        video = decoder(files["one.mp4"], DecodeConfig(num_frames=8))
        assert video.distinct_frames == 1 and video.frames_repeated, decoder.__name__
        video = decoder(files["normal.mp4"], DecodeConfig(num_frames=8))
        assert video.distinct_frames == 8 and not video.frames_repeated, decoder.__name__
    assert SCHEMA.field("frames_repeated").type == pa.bool_()
    written = to_table([one, normal], run_id="r").to_pylist()
    assert [(r["frames_used"], r["frames_repeated"]) for r in written] == [(1, True), (8, False)]
