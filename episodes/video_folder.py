"""Plain videos as episodes: a video file, a folder of videos, or a folder of episode folders.

Three layouts are recognised (see :func:`load_video_source`):

* ``clip.mp4`` -- one episode, one view (camera name ``camera``, default ``front``).
* ``videos/*.mp4`` -- one episode per video, one view each; the task must be given.
* ``episodes/<name>/<camera>.mp4`` (+ optional ``episodes/<name>/episode.json``) -- one episode
  per sub-folder, one video per camera. ``episode.json`` may hold ``task`` (str), ``success``
  (bool), ``outcome`` (``success``/``partial``/``fail``), ``policy`` (str, a group id for the
  policy-ranking metric) and ``progress`` (list of ground-truth Φ per *native* frame).

Videos are decoded with PyAV, optionally subsampled to a target frame rate (always keeping the
final frame: it is the end state a progress model has to judge) and downscaled. Labels that a
video does not carry stay ``None``; the episode-level success flag goes to
``meta["success"]``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from episodes.episode import OUTCOMES, Episode, progress_label_error
from episodes.video import VideoError, VideoReader, write_video

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
"""File suffixes treated as videos."""
EPISODE_JSON = "episode.json"


class EpisodeSourceError(VideoError):
    """A source file or folder cannot be turned into an episode; ``path`` names the culprit."""

    def __init__(self, path: str | Path, message: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {message}")


@dataclass
class VideoInfo:
    """What the container says about a video (before decoding)."""

    fps: float
    """Average frame rate."""
    n_frames: int
    """Frame count from the container (0 when unknown)."""
    width: int
    height: int


def is_video_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def _open(path: Path) -> VideoReader:
    if not path.is_file():
        raise EpisodeSourceError(path, "video file does not exist")
    try:
        return VideoReader(path)
    except VideoError as exc:
        raise EpisodeSourceError(path, f"unreadable video: {exc}") from exc


def probe_video(path: str | Path) -> VideoInfo:
    """Frame rate, frame count and size of a video without decoding it."""
    path = Path(path)
    with _open(path) as reader:
        stream = reader.stream
        rate = stream.average_rate or stream.base_rate or 0
        return VideoInfo(
            fps=float(rate) if rate else 0.0,
            n_frames=int(stream.frames or 0),
            width=int(stream.codec_context.width),
            height=int(stream.codec_context.height),
        )


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    # Even sizes keep every pixel format/codec happy downstream.
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def decode_video(
    path: str | Path,
    fps: float | None = None,
    max_side: int | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """Decode a video into uint8 (T, H, W, 3) RGB.

    ``fps`` subsamples to that rate (never upsamples); ``max_side`` downscales so the longer
    side is at most that many pixels. Returns ``(frames, fps_out, kept_indices)`` where
    ``kept_indices`` are the native frame numbers of the returned frames.

    Raises :class:`EpisodeSourceError` naming the file for unreadable, corrupt or truncated
    videos and for timestamps that go backwards.
    """
    path = Path(path)
    with _open(path) as reader:
        stream = reader.stream
        rate = float(stream.average_rate or stream.base_rate or 0) or None
        expected = int(stream.frames or 0)
        tb = float(stream.time_base) if stream.time_base else None
        frames: list[np.ndarray] = []
        stamps: list[float] = []
        size: tuple[int, int] | None = None
        keep_every: float | None = None
        if fps is not None and rate is not None and fps < rate:
            keep_every = rate / fps
        next_keep = 0.0
        kept: list[int] = []
        try:
            for i, frame in enumerate(reader.frames()):
                t = float(frame.pts * tb) if (frame.pts is not None and tb) else (i / rate if rate else float(i))
                if stamps and t < stamps[-1] - 1e-9:
                    raise EpisodeSourceError(
                        path, f"frame timestamps go backwards at frame {i} ({t:.4f}s after {stamps[-1]:.4f}s)"
                    )
                stamps.append(t)
                if size is None:
                    size = _target_size(frame.width, frame.height, max_side)
                # Streaming subsample (long videos never sit in memory at full rate); the
                # final frame is fixed up after the loop.
                take = keep_every is None or i + 1e-9 >= next_keep
                if take:
                    if keep_every is not None:
                        next_keep += keep_every
                    frames.append(reader.rgb(frame, size))
                    kept.append(i)
                else:
                    last = frame  # decoded frame kept for the end-state fix-up below
                    last_index = i
        except EpisodeSourceError:
            raise
        except Exception as exc:
            raise EpisodeSourceError(
                path, f"corrupt video: decoding failed after {len(stamps)} frames ({type(exc).__name__}: {exc})"
            ) from exc
        if not stamps:
            raise EpisodeSourceError(path, "video has no decodable frames (empty or corrupt)")
        if expected and len(stamps) < expected:
            raise EpisodeSourceError(
                path, f"truncated video: decoded {len(stamps)} of {expected} frames the container declares"
            )
        if kept[-1] != len(stamps) - 1:
            # Always keep the end state.
            frames.append(reader.rgb(last, size))
            kept.append(last_index)
        fps_out = float(fps) if keep_every is not None else float(rate or fps or 10.0)
        return np.stack(frames).astype(np.uint8, copy=False), fps_out, np.asarray(kept, dtype=np.int64)


def _read_episode_json(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise EpisodeSourceError(path, f"unreadable JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise EpisodeSourceError(path, "must hold a JSON object")
    if "task" in meta and not isinstance(meta["task"], str):
        raise EpisodeSourceError(path, f"field 'task' must be a string, got {type(meta['task']).__name__}")
    if "success" in meta and not isinstance(meta["success"], bool):
        raise EpisodeSourceError(path, f"field 'success' must be true/false, got {meta['success']!r}")
    if "outcome" in meta and meta["outcome"] not in OUTCOMES:
        raise EpisodeSourceError(path, f"field 'outcome' must be one of {OUTCOMES}, got {meta['outcome']!r}")
    if "policy" in meta and not isinstance(meta["policy"], (str, int)):
        raise EpisodeSourceError(path, f"field 'policy' must be a string, got {meta['policy']!r}")
    if "progress" in meta:
        p = meta["progress"]
        if not isinstance(p, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p):
            raise EpisodeSourceError(path, "field 'progress' must be a list of numbers (one per native frame)")
        bad = progress_label_error(np.asarray(p, dtype=np.float64))
        if bad:
            raise EpisodeSourceError(path, f"field 'progress': {bad}")
    if ("success" in meta and "outcome" in meta) and (meta["success"] != (meta["outcome"] == "success")):
        raise EpisodeSourceError(path, f"fields disagree: success={meta['success']} but outcome={meta['outcome']!r}")
    return meta


def load_video_file(
    path: str | Path,
    task: str,
    camera: str = "front",
    fps: float | None = None,
    max_side: int | None = None,
    episode_index: int = 0,
) -> Episode:
    """One video file as a single-view :class:`Episode` (no labels)."""
    path = Path(path)
    if not task:
        raise EpisodeSourceError(path, "a plain video carries no instruction: pass the task (--task)")
    frames, fps_out, kept = decode_video(path, fps=fps, max_side=max_side)
    return Episode(
        task=task,
        frames={camera: frames},
        fps=fps_out,
        episode_index=episode_index,
        meta={"source": str(path), "frame_index": kept.tolist()},
    )


def load_episode_folder(
    folder: str | Path,
    task: str | None = None,
    fps: float | None = None,
    max_side: int | None = None,
    episode_index: int = 0,
    cameras: Sequence[str] | None = None,
) -> Episode:
    """A folder holding ``<camera>.<ext>`` videos (+ optional ``episode.json``) as an Episode.

    ``task`` overrides the instruction in ``episode.json``. ``cameras`` selects (and requires)
    views; by default every video in the folder is a view.
    """
    folder = Path(folder)
    videos = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and is_video_file(p)}
    if not videos:
        raise EpisodeSourceError(folder, f"no video files ({', '.join(VIDEO_SUFFIXES)}) in episode folder")
    if cameras is not None:
        missing = [c for c in cameras if c not in videos]
        if missing:
            raise EpisodeSourceError(folder, f"missing camera video(s) {missing}; found {sorted(videos)}")
        videos = {c: videos[c] for c in cameras}
    meta_path = folder / EPISODE_JSON
    meta = _read_episode_json(meta_path) if meta_path.exists() else {}
    instruction = task or meta.get("task")
    if not instruction:
        raise EpisodeSourceError(folder, f"no task: put 'task' in {EPISODE_JSON} or pass --task")

    decoded: dict[str, np.ndarray] = {}
    fps_out: float | None = None
    kept_ref: np.ndarray | None = None
    native: dict[str, int] = {}
    for cam, vpath in videos.items():
        frames, f_out, kept = decode_video(vpath, fps=fps, max_side=max_side)
        native[cam] = int(kept[-1]) + 1
        decoded[cam] = frames
        if fps_out is None:
            fps_out, kept_ref = f_out, kept
    if len(set(native.values())) != 1:
        raise EpisodeSourceError(folder, f"camera videos have different lengths (native frames): {native}")
    if len({len(v) for v in decoded.values()}) != 1:
        raise EpisodeSourceError(
            folder,
            f"camera videos have different frame rates: { ({c: len(v) for c, v in decoded.items()}) } frames after resampling",
        )
    progress = None
    if "progress" in meta:
        full = np.asarray(meta["progress"], dtype=np.float32)
        n_native = next(iter(native.values()))
        if len(full) != n_native:
            raise EpisodeSourceError(
                meta_path, f"'progress' has {len(full)} values but the videos have {n_native} frames"
            )
        progress = full[kept_ref]
    outcome = meta.get("outcome")
    if outcome is None and meta.get("success") is True:
        outcome = "success"
    # Native frame numbers of the kept frames (after --fps subsampling), for sidecar keys.
    ep_meta: dict[str, Any] = {"source": str(folder), "frame_index": kept_ref.tolist()}
    if "success" in meta or outcome is not None:
        ep_meta["success"] = bool(meta["success"]) if "success" in meta else outcome == "success"
    if "policy" in meta:
        ep_meta["policy"] = str(meta["policy"])
    return Episode(
        task=instruction,
        frames=decoded,
        fps=float(fps_out),
        episode_index=episode_index,
        progress=progress,
        outcome=outcome,
        meta=ep_meta,
    )


def detect_layout(path: str | Path) -> str:
    """``video`` (one file), ``video_folder`` (loose videos) or ``episode_folders``.

    A folder that itself holds videos *and* an ``episode.json`` is a single episode folder and
    reported as ``episode_folder``.
    """
    path = Path(path)
    if not path.exists():
        raise EpisodeSourceError(path, "does not exist")
    if path.is_file():
        if not is_video_file(path):
            raise EpisodeSourceError(path, f"not a video file (expected one of {', '.join(VIDEO_SUFFIXES)})")
        return "video"
    if (path / EPISODE_JSON).exists():
        return "episode_folder"
    subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    loose = [p for p in path.iterdir() if p.is_file() and is_video_file(p)]
    if subdirs and not loose:
        return "episode_folders"
    if loose:
        return "video_folder"
    raise EpisodeSourceError(path, "holds neither video files nor episode sub-folders")


def list_video_source(path: str | Path) -> list[Path]:
    """The items (video files or episode folders) :func:`load_video_source` would load, in order."""
    path = Path(path)
    layout = detect_layout(path)
    if layout in ("video", "episode_folder"):
        return [path]
    if layout == "video_folder":
        return sorted(p for p in path.iterdir() if p.is_file() and is_video_file(p))
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_video_item(
    item: str | Path,
    task: str | None = None,
    fps: float | None = None,
    max_side: int | None = None,
    episode_index: int = 0,
    camera: str = "front",
    cameras: Sequence[str] | None = None,
) -> Episode:
    """Load one item from :func:`list_video_source` (a video file or an episode folder)."""
    item = Path(item)
    if item.is_file():
        return load_video_file(item, task or "", camera=camera, fps=fps, max_side=max_side, episode_index=episode_index)
    return load_episode_folder(
        item, task=task, fps=fps, max_side=max_side, episode_index=episode_index, cameras=cameras
    )


def load_video_source(
    path: str | Path,
    task: str | None = None,
    fps: float | None = None,
    max_side: int | None = None,
    camera: str = "front",
    cameras: Sequence[str] | None = None,
) -> Iterator[Episode]:
    """Yield the episodes of a video file, a folder of videos or a folder of episode folders.

    Episodes are loaded lazily, one at a time (long video collections never sit in memory at
    once). Errors name the offending file.
    """
    for i, item in enumerate(list_video_source(path)):
        yield load_video_item(
            item, task=task, fps=fps, max_side=max_side, episode_index=i, camera=camera, cameras=cameras
        )


def write_episode_folder(
    folder: str | Path,
    episode: Episode,
    success: bool | None = None,
    codec: str = "h264",
) -> Path:
    """Write an Episode in the episode-folder layout (``<camera>.mp4`` + ``episode.json``).

    The inverse of :func:`load_episode_folder`; used to hand recorded episodes to people who
    keep videos rather than datasets, and by tests.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for cam, frames in episode.frames.items():
        # yuv420p needs even sizes: pad odd frames by one edge pixel rather than fail.
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        write_video(folder / f"{cam}.mp4", frames, fps=episode.fps, codec=codec)
    meta: dict[str, Any] = {"task": episode.task}
    succ = success if success is not None else episode.meta.get("success")
    if succ is not None:
        meta["success"] = bool(succ)
    if episode.outcome is not None:
        meta["outcome"] = episode.outcome
        if "success" not in meta:
            meta["success"] = episode.outcome == "success"
    if "policy" in episode.meta:
        meta["policy"] = str(episode.meta["policy"])
    if episode.progress is not None:
        meta["progress"] = [round(float(v), 6) for v in episode.progress]
    tmp_json = folder / f".{EPISODE_JSON}.tmp"
    tmp_json.write_text(json.dumps(meta, indent=2))
    tmp_json.replace(folder / EPISODE_JSON)
    return folder


__all__ = [
    "VIDEO_SUFFIXES",
    "EpisodeSourceError",
    "VideoInfo",
    "decode_video",
    "detect_layout",
    "is_video_file",
    "list_video_source",
    "load_episode_folder",
    "load_video_file",
    "load_video_item",
    "load_video_source",
    "probe_video",
    "write_episode_folder",
]
