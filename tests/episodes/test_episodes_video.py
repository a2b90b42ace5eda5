"""episodes.video: real H.264/AV1/VP9 encodes with PyAV, decoded back and compared."""

from __future__ import annotations

import numpy as np
import pytest

from episodes import VideoError, read_video, video_info, write_video
from episodes.video import VideoWriter


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.mark.parametrize("codec", ["h264", "av1", "vp9"])
def test_round_trip_matches_within_codec_tolerance(tmp_path, square_video, codec):
    frames = square_video(24, seed=1)
    path = write_video(tmp_path / f"clip_{codec}.mp4", frames, fps=10, codec=codec)
    info = video_info(path)
    assert info["frames"] == 24 and info["fps"] == 10
    assert (info["height"], info["width"]) == frames.shape[1:3]
    assert info["codec"] == codec
    decoded = read_video(path)
    assert decoded.shape == frames.shape and decoded.dtype == np.uint8
    assert mean_abs_error(decoded, frames) < 3
    # Each decoded frame is closest to its own source frame (the square moves): no frame shift.
    errors = [[mean_abs_error(d, f) for f in frames] for d in decoded[:6]]
    assert list(np.argmin(errors, axis=1)) == list(range(6))


def test_read_range_returns_the_requested_frames(tmp_path, square_video):
    frames = square_video(40, seed=2)
    path = write_video(tmp_path / "clip.mp4", frames, fps=10, gop=8)
    part = read_video(path, start=17, stop=30)
    assert part.shape[0] == 13
    assert mean_abs_error(part, frames[17:30]) < 3
    nearest = [int(np.argmin([mean_abs_error(d, f) for f in frames])) for d in part]
    assert nearest == list(range(17, 30))
    with pytest.raises(VideoError, match="clip.mp4"):
        read_video(path, start=30, stop=50)


def test_frames_are_timestamped_k_over_fps(tmp_path, square_video):
    from episodes.video import iter_frames

    path = write_video(tmp_path / "clip.mp4", square_video(12, seed=0), fps=15)
    times = [t for t, _ in iter_frames(path)]
    np.testing.assert_allclose(times, np.arange(12) / 15, atol=1e-6)


def test_streaming_writer_appends_batches_and_single_frames(tmp_path, square_video):
    frames = square_video(10, seed=3)
    with VideoWriter(tmp_path / "s.mp4", fps=10, width=64, height=48) as writer:
        writer.write(frames[:4])
        for frame in frames[4:]:
            writer.write(frame)
    assert writer.frames_written == 10
    assert mean_abs_error(read_video(tmp_path / "s.mp4"), frames) < 3


def test_odd_dimensions_are_rejected_with_a_clear_error(tmp_path, square_video):
    frames = square_video(4, seed=0)[:, :47]
    with pytest.raises(ValueError, match="even"):
        write_video(tmp_path / "odd.mp4", frames, fps=10)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_bad_frames_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "f.mp4", np.zeros((3, 8, 8, 3), np.float32), fps=10)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "e.mp4", np.zeros((0, 8, 8, 3), np.uint8), fps=10)
    with pytest.raises(ValueError, match="codec"):
        write_video(tmp_path / "c.mp4", np.zeros((2, 8, 8, 3), np.uint8), fps=10, codec="mpeg1")


def test_missing_corrupt_and_truncated_files_raise_video_error(tmp_path, square_video):
    good = write_video(tmp_path / "good.mp4", square_video(20, seed=0), fps=10)
    data = good.read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.mp4").write_bytes(b"not a video at all" * 50)
    (tmp_path / "empty.mp4").write_bytes(b"")
    for name in ["missing.mp4", "truncated.mp4", "garbage.mp4", "empty.mp4"]:
        with pytest.raises(VideoError, match=name):
            read_video(tmp_path / name)
        with pytest.raises(VideoError, match=name):
            video_info(tmp_path / name)
    assert issubclass(VideoError, ValueError)
