"""Video files with PyAV: H.264 (default), AV1 or VP9 in mp4, written frame by frame.

Frame ``k`` of a file written here has presentation time exactly ``k / fps`` -- the LeRobot v3
readers locate frames by timestamp, so the writer sets every pts itself instead of trusting the
encoder's clock. Readers work on any file FFmpeg can decode.

opencv-python-headless cannot write H.264 here; PyAV (libx264) can.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from episodes.atomic import _check_parent_writable


class VideoError(ValueError):
    """A video file is missing, corrupt, truncated or cannot be encoded/decoded. Names the file."""


# Our codec names -> FFmpeg encoders to try, in order of preference.
ENCODERS: dict[str, tuple[str, ...]] = {
    "h264": ("libx264",),
    "av1": ("libsvtav1", "libaom-av1"),
    "vp9": ("libvpx-vp9",),
    "hevc": ("libx265",),
}
DEFAULT_CRF = {"h264": 18, "av1": 30, "vp9": 31, "hevc": 23}
"""Constant-rate factors: lower = better quality. 18 is visually lossless for x264."""

_ALPHA_PIX_FMTS = ("rgba", "bgra", "argb", "abgr", "yuva420p", "yuva444p")
_CONTAINER_FORMATS = {".mp4": "mp4", ".mkv": "matroska", ".webm": "webm", ".mov": "mov"}


def _resolve_encoder(codec: str) -> str:
    if codec not in ENCODERS:
        raise ValueError(f"unknown video codec {codec!r}; choose one of {sorted(ENCODERS)}")
    for name in ENCODERS[codec]:
        if name in av.codecs_available:
            return name
    raise VideoError(f"no encoder for {codec!r} in this FFmpeg build (tried {ENCODERS[codec]})")


def _fps_fraction(fps: float) -> Fraction:
    if not fps or fps <= 0 or not np.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    return Fraction(fps).limit_denominator(1001)


class VideoWriter:
    """Stream RGB frames into a video file, one frame (or a batch) at a time.

    Frame ``k`` (counted over the whole file) gets the timestamp ``k / fps``. Use as a context
    manager or call :meth:`close`; :meth:`abort` closes and deletes the partial file.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float,
        width: int,
        height: int,
        codec: str = "h264",
        crf: int | None = None,
        gop: int | None = None,
        pix_fmt: str = "yuv420p",
    ) -> None:
        self.path = Path(path)
        if width <= 0 or height <= 0:
            raise ValueError(f"{self.path}: frame size must be positive, got {width}x{height}")
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            raise ValueError(
                f"{self.path}: {pix_fmt} video needs even frame dimensions, got {width}x{height} "
                "(crop or pad the frames by one pixel)"
            )
        self.fps = _fps_fraction(fps)
        self.width, self.height, self.codec = int(width), int(height), codec
        self.frames_written = 0
        self._muxed_bytes = 0
        self._to_yuv = VideoReformatter()  # reused: a new swscale context per frame is slow
        encoder = _resolve_encoder(codec)
        crf = DEFAULT_CRF[codec] if crf is None else crf
        options = {"crf": str(crf)}
        if gop is not None:
            options["g"] = str(gop)
        if encoder == "libvpx-vp9":
            options["b"] = "0"  # constant-quality mode: crf only works with bitrate 0
        if encoder == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a config banner otherwise
        if encoder == "libx264":
            options["preset"] = "veryfast"
        fmt = _CONTAINER_FORMATS.get(self.path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{self.path}: unsupported video extension; use one of {sorted(_CONTAINER_FORMATS)}")
        try:
            self._container = av.open(str(self.path), "w", format=fmt)
        except (OSError, av.error.FFmpegError) as exc:
            raise PermissionError(f"cannot open {self.path} for writing: {exc}") from exc
        try:
            self._stream = self._container.add_stream(encoder, rate=self.fps, options=options)
            self._stream.width, self._stream.height = self.width, self.height
            self._stream.pix_fmt = pix_fmt
            self._stream.codec_context.time_base = 1 / self.fps
        except Exception:
            self._container.close()
            raise

    def write(self, frames: np.ndarray) -> None:
        """Append one frame (H, W, 3) or a batch (T, H, W, 3) of uint8 RGB frames."""
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[1:] != (self.height, self.width, 3) or frames.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: expected uint8 frames of shape (T, {self.height}, {self.width}, 3), "
                f"got {frames.dtype} {frames.shape}"
            )
        for frame in frames:
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            vf = self._to_yuv.reformat(vf, format=self._stream.pix_fmt)
            vf.pts = self.frames_written
            vf.time_base = 1 / self.fps
            for packet in self._stream.encode(vf):
                self._muxed_bytes += packet.size
                self._container.mux(packet)
            self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._container is None:
            return
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close without caring about the content and delete the file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        self.path.unlink(missing_ok=True)

    @property
    def size_bytes(self) -> int:
        """Compressed bytes so far (the encoder holds back a few frames, so this lags slightly)."""
        on_disk = self.path.stat().st_size if self.path.exists() else 0
        return max(on_disk, self._muxed_bytes)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | Iterable[np.ndarray],
    fps: float,
    codec: str = "h264",
    crf: int | None = None,
    gop: int | None = None,
) -> Path:
    """Encode uint8 RGB frames (T, H, W, 3) -- or an iterable of (H, W, 3) -- into ``path``, atomically.

    ``codec`` is ``h264`` (libx264, yuv420p), ``av1`` (SVT-AV1), ``vp9`` or ``hevc``; ``crf`` is the
    constant-rate factor (lower = better; defaults in :data:`DEFAULT_CRF`). Height and width must be
    even. Returns the path.
    """
    path = Path(path)
    _check_parent_writable(path)
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"{path}: frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        if len(frames) == 0:
            raise ValueError(f"{path}: no frames to write")
        batches: Iterable[np.ndarray] = [frames]
        h, w = frames.shape[1:3]
    else:
        iterator = iter(frames)
        try:
            first = np.asarray(next(iterator))
        except StopIteration:
            raise ValueError(f"{path}: no frames to write") from None
        if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
            raise ValueError(f"{path}: frames must be uint8 (H, W, 3), got {first.dtype} {first.shape}")
        h, w = first.shape[:2]
        batches = _chain([first], iterator)
    if h % 2 or w % 2:
        raise ValueError(
            f"{path}: H.264/AV1/VP9 (yuv420p) video needs even frame dimensions, got {w}x{h} "
            "(crop or pad the frames by one pixel)"
        )
    tmp = path.with_name(f"{path.stem}.tmp-{os.getpid()}-{secrets.token_hex(4)}{path.suffix}")
    writer = VideoWriter(tmp, fps, width=w, height=h, codec=codec, crf=crf, gop=gop)
    with writer:
        for batch in batches:
            writer.write(batch)
    os.replace(tmp, path)
    return path


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


def _open_for_reading(path: Path):
    if not path.exists():
        raise VideoError(f"video file not found: {path}")
    if path.stat().st_size == 0:
        raise VideoError(f"video file is empty: {path}")
    try:
        container = av.open(str(path), "r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"cannot open video {path} (corrupt or truncated?): {exc}") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path} has no video stream")
    return container


class VideoReader:
    """The one PyAV decoding loop: opens a video (a :class:`VideoError` naming the file when it is
    missing, empty, corrupt or has no video stream), decodes its frames in presentation order and
    converts the ones a caller keeps to RGB. Use as a context manager; it closes the file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.container = _open_for_reading(self.path)
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        # One reformatter for the whole file: VideoFrame.to_ndarray(format=...) builds a new
        # swscale context per frame, which is ~50x slower on small frames.
        self._to_rgb = VideoReformatter()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.container.close()

    def frames(self, start_s: float | None = None) -> Iterator[av.VideoFrame]:
        """Decoded frames, not yet converted (skipping a frame costs no conversion). With
        ``start_s`` it seeks to the key frame at or before ``start_s`` first, so a few earlier
        frames can still come out. Decode errors and truncation raise :class:`VideoError`."""
        if start_s is not None and start_s > 0:
            try:
                self.container.seek(int(start_s / self.stream.time_base), stream=self.stream, backward=True,
                                    any_frame=False)  # fmt: skip
            except av.error.FFmpegError as exc:
                raise VideoError(f"cannot seek to {start_s:.3f}s in {self.path}: {exc}") from exc
        try:
            yield from self.container.decode(self.stream)
        except av.error.FFmpegError as exc:
            raise VideoError(f"cannot decode video {self.path} (corrupt or truncated?): {exc}") from exc

    def rgb(self, frame: av.VideoFrame, size: tuple[int, int] | None = None) -> np.ndarray:
        """uint8 (H, W, 3) RGB of ``frame``, scaled to ``size`` = (width, height) when given."""
        width, height = size if size is not None else (None, None)
        return self._to_rgb.reformat(frame, format="rgb24", width=width, height=height).to_ndarray()


def iter_frames(path: str | os.PathLike, start_s: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(timestamp_s, frame)`` for every decoded frame, in presentation order.

    With ``start_s`` the reader seeks to the key frame at or before ``start_s`` first, so a
    few earlier frames can still come out (callers filter by timestamp). Decode errors and
    truncation raise :class:`VideoError` naming the file.
    """
    with VideoReader(path) as reader:
        time_base = reader.stream.time_base
        for frame in reader.frames(start_s):
            if frame.pts is None:
                raise VideoError(f"{reader.path}: decoded a frame without a timestamp")
            yield float(frame.pts * time_base), reader.rgb(frame)


def read_video(path: str | os.PathLike, start: int | None = None, stop: int | None = None) -> np.ndarray:
    """Decode frames ``[start, stop)`` (frame indices, slice semantics) as uint8 (T, H, W, 3).

    Frame indices follow presentation order from the start of the file. Negative indices are
    not supported. Raises :class:`VideoError` if the file is missing, corrupt or has fewer
    frames than ``stop`` asks for.
    """
    path = Path(path)
    start = 0 if start is None else int(start)
    if start < 0 or (stop is not None and stop < 0):
        raise ValueError(f"{path}: start/stop must be non-negative frame indices, got {start}, {stop}")
    info = video_info(path)
    fps = info["fps"]
    frames = []
    # Seek only when it saves work; frame index -> time uses the stream's average rate.
    seek_s = (start - 0.5) / fps if start > 0 and fps else None
    first_pts: float | None = info.get("start_time", 0.0)
    for t, frame in iter_frames(path, start_s=None if seek_s is None else seek_s + first_pts):
        index = int(round((t - first_pts) * fps))
        if index < start:
            continue
        if stop is not None and index >= stop:
            break
        frames.append(frame)
    if stop is not None and start < stop and len(frames) < stop - start:
        raise VideoError(
            f"{path}: asked for frames [{start}, {stop}) but only {len(frames)} could be decoded "
            f"(the file has {info['frames']} frames; truncated?)"
        )
    if not frames:
        if stop is not None and stop <= start:
            return np.zeros((0, info["height"], info["width"], 3), np.uint8)
        raise VideoError(f"{path}: no frames decoded from index {start}")
    return np.stack(frames)


def video_info(path: str | os.PathLike) -> dict[str, Any]:
    """``{frames, fps, width, height, codec, pix_fmt, duration_s, start_time, has_audio}`` of the first video stream."""
    path = Path(path)
    container = _open_for_reading(path)
    try:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        codec = stream.codec_context.codec
        frames = int(stream.frames or 0)
        if frames == 0:  # some containers (webm/mkv) do not store a frame count: count packets
            try:
                frames = sum(1 for p in container.demux(stream) if p.size > 0)
            except av.error.FFmpegError as exc:
                raise VideoError(f"cannot read packets of {path} (corrupt?): {exc}") from exc
        start_time = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        if stream.duration is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = frames / float(rate) if rate else 0.0
        return {
            "frames": frames,
            "fps": float(rate) if rate else 0.0,
            "width": int(stream.codec_context.width),
            "height": int(stream.codec_context.height),
            "codec": codec.canonical_name if codec is not None else stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
            "duration_s": duration,
            "start_time": start_time,
            "has_audio": bool(container.streams.audio),
        }
    finally:
        container.close()


def lerobot_video_info(path: str | os.PathLike) -> dict[str, Any]:
    """The ``info`` block LeRobot v3 stores for a video feature in ``meta/info.json``."""
    info = video_info(path)
    pix_fmt = info["pix_fmt"] or "yuv420p"
    return {
        "video.height": info["height"],
        "video.width": info["width"],
        "video.codec": info["codec"],
        "video.pix_fmt": pix_fmt,
        "video.is_depth_map": False,
        "video.fps": int(round(info["fps"])) if float(info["fps"]).is_integer() else info["fps"],
        "video.channels": 1 if pix_fmt.startswith("gray") else (4 if pix_fmt in _ALPHA_PIX_FMTS else 3),
        "has_audio": info["has_audio"],
    }
