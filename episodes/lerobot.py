"""LeRobot v3.0 datasets: a streaming writer and a reader that returns :class:`Episode` objects.

Layout of a v3.0 dataset (facts of the format, as LeRobot >= 0.4 writes and reads it)::

    meta/info.json                      codebase_version "v3.0", fps, totals, path templates, features
    meta/stats.json                     per feature: min/max/mean/std/count (images: (3,1,1), in [0, 1])
    meta/tasks.parquet                  one row per task string (the index), column task_index
    meta/episodes/chunk-000/file-000.parquet   one row per episode: length, tasks, where its rows and
                                        video segments live (chunk/file indices, timestamps)
    data/chunk-000/file-000.parquet     one row per frame, many episodes per file
    videos/<video_key>/chunk-000/file-000.mp4  many episodes per file, concatenated in time

Frame ``k`` of an episode is the video frame at ``from_timestamp + timestamp[k]`` of its file, where
``from_timestamp`` comes from the episodes table and ``timestamp`` (seconds from the episode start)
from the data table. Files roll over to the next ``file_index`` when they reach their size budget
(``data_files_size_in_mb``, ``video_files_size_in_mb``), and to the next ``chunk_index`` after
``chunks_size`` files. Every data column must be declared in ``info.json['features']`` (LeRobot builds
its parquet schema from it), videos have ``dtype: "video"`` and shape ``[height, width, channels]``.

Our extras -- ``progress``/``stage`` frame labels and ``outcome``/``task_name``/``meta_json`` episode
columns -- are ordinary declared features / extra episode columns, so LeRobot loads them untouched.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image
from tqdm.auto import tqdm

from episodes.atomic import atomic_dir, atomic_write_json, atomic_write_parquet
from episodes.episode import OUTCOMES, Episode
from episodes.video import VideoError, VideoWriter, iter_frames, lerobot_video_info

CODEBASE_VERSION = "v3.0"
DEFAULT_CHUNKS_SIZE = 1000
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 500
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
IMAGE_KEY_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"

# Episode attribute -> (data column, numpy dtype); optional per-frame labels.
FRAME_LABELS: dict[str, tuple[str, str]] = {
    "reward": ("next.reward", "float32"),
    "done": ("next.done", "bool"),
    "success": ("next.success", "bool"),
    "progress": ("progress", "float32"),
    "stage": ("stage", "int64"),
}
_INDEX_FEATURES = {
    "timestamp": "float32",
    "frame_index": "int64",
    "episode_index": "int64",
    "index": "int64",
    "task_index": "int64",
}
IMAGE_STATS_FRAMES_PER_EPISODE = 20
"""Frames per episode and camera sampled for the image statistics in ``meta/stats.json``."""


class NotALeRobotDatasetError(ValueError):
    """The path is not a readable LeRobot v3.0 dataset. The message names the path and what is wrong."""


def camera_key(camera: str) -> str:
    """LeRobot feature key of a camera: ``front`` -> ``observation.images.front``."""
    return camera if camera.startswith("observation.") else IMAGE_KEY_PREFIX + camera


def camera_name(key: str) -> str:
    """Inverse of :func:`camera_key`; keys like ``observation.image`` become ``image``."""
    if key.startswith(IMAGE_KEY_PREFIX):
        return key[len(IMAGE_KEY_PREFIX) :]
    return key.removeprefix("observation.")


def _next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    if file_index >= chunks_size - 1:
        return chunk_index + 1, 0
    return chunk_index, file_index + 1


def _json_number(value: float) -> int | float:
    """An int when ``value`` is integral up to float noise (``1 / 0.1``), as LeRobot expects for fps."""
    return int(round(value)) if abs(value - round(value)) < 1e-6 else float(value)


# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


class _RunningStats:
    """min/max/mean/std/count over rows of a (N, D) array, accumulated in float64."""

    def __init__(self) -> None:
        self.count = 0
        self.sum = self.sumsq = self.min = self.max = None

    def update(self, values: np.ndarray, count: int | None = None) -> None:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            return
        s, ss = values.sum(axis=0), np.square(values).sum(axis=0)
        mn, mx = values.min(axis=0), values.max(axis=0)
        if self.sum is None:
            self.sum, self.sumsq, self.min, self.max = s, ss, mn, mx
        else:
            self.sum, self.sumsq = self.sum + s, self.sumsq + ss
            self.min, self.max = np.minimum(self.min, mn), np.maximum(self.max, mx)
        self.count += values.shape[0] if count is None else count

    def result(self, elements: int, shape: tuple[int, ...]) -> dict[str, Any]:
        mean = self.sum / elements
        std = np.sqrt(np.maximum(self.sumsq / elements - np.square(mean), 0.0))
        as_list = lambda a: np.asarray(a, dtype=np.float64).reshape(shape).tolist()  # noqa: E731
        return {
            "min": as_list(self.min),
            "max": as_list(self.max),
            "mean": as_list(mean),
            "std": as_list(std),
            "count": [int(self.count)],
        }


class _ImageStats:
    """Per-channel statistics of sampled frames, values scaled to [0, 1] (LeRobot's convention).

    Kept as one 256-bin histogram per channel: exact for uint8 pixels and much cheaper than
    float arithmetic over every sampled pixel.
    """

    def __init__(self) -> None:
        self.histograms = np.zeros((3, 256), dtype=np.int64)
        self.frames = 0

    def update(self, frames: np.ndarray) -> None:
        t = frames.shape[0]
        idx = np.unique(np.linspace(0, t - 1, min(t, IMAGE_STATS_FRAMES_PER_EPISODE)).round().astype(int))
        sample = frames[idx]
        for c in range(3):
            self.histograms[c] += np.bincount(sample[..., c].ravel(), minlength=256)
        self.frames += len(idx)

    def result(self) -> dict[str, Any]:
        levels = np.arange(256) / 255.0
        pixels = self.histograms.sum(axis=1)
        mean = self.histograms @ levels / pixels
        std = np.sqrt(np.maximum(self.histograms @ np.square(levels) / pixels - np.square(mean), 0.0))
        present = self.histograms > 0
        low = np.array([levels[np.argmax(row)] for row in present])
        high = np.array([levels[255 - np.argmax(row[::-1])] for row in present])
        as_list = lambda a: np.asarray(a, dtype=np.float64).reshape(3, 1, 1).tolist()  # noqa: E731
        return {
            "min": as_list(low),
            "max": as_list(high),
            "mean": as_list(mean),
            "std": as_list(std),
            "count": [int(self.frames)],
        }


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------


@dataclass
class _VideoSlot:
    """The open mp4 a camera is currently appending to."""

    writer: VideoWriter
    chunk_index: int
    file_index: int
    episodes_in_file: int = 0


class LeRobotWriter:
    """Write Episodes into a new LeRobot v3.0 dataset at ``root``, streaming video to disk.

    Use as a context manager::

        with LeRobotWriter("data/reach", fps=10, cameras=["front", "wrist"], image_size=(128, 128)) as w:
            for ep in episodes:
                w.add_episode(ep)

    The dataset is built in a sibling temporary directory and renamed to ``root`` only when the
    ``with`` block exits cleanly; an exception inside it leaves nothing at ``root`` (and an old
    dataset there untouched). Frames are encoded as they arrive -- one open mp4 per camera -- so
    memory stays at one episode.

    Which optional labels the dataset has (state, action, reward, done, success, progress, stage)
    is fixed by the first episode; every later episode must carry the same ones with the same
    dimensions. Episodes are numbered 0..N-1 in the order they are added.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        fps: float,
        cameras: Sequence[str],
        image_size: tuple[int, int],
        state_names: Sequence[str] | None = None,
        action_names: Sequence[str] | None = None,
        robot_type: str | None = "panda",
        codec: str = "h264",
        overwrite: bool = False,
        crf: int | None = None,
        gop: int | None = None,
        chunks_size: int = DEFAULT_CHUNKS_SIZE,
        data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
        video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB,
    ) -> None:
        self.root = Path(root)
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be positive, got {fps!r}")
        if not cameras:
            raise ValueError("at least one camera is needed (cameras=[...])")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"duplicate camera names in {list(cameras)}")
        h, w = (int(v) for v in image_size)
        if h <= 0 or w <= 0:
            raise ValueError(f"image_size must be positive (height, width), got {image_size}")
        if h % 2 or w % 2:
            raise ValueError(f"image_size {image_size}: H.264/yuv420p video needs an even height and width")
        if chunks_size < 1:
            raise ValueError(f"chunks_size must be >= 1, got {chunks_size}")
        self.fps = _json_number(fps)
        self.cameras = [camera_name(c) for c in cameras]
        self.image_size = (h, w)
        self.state_names = list(state_names) if state_names is not None else None
        self.action_names = list(action_names) if action_names is not None else None
        self.robot_type = robot_type
        self.codec, self.crf, self.gop = codec, crf, gop
        self.overwrite = overwrite
        self.chunks_size = int(chunks_size)
        self.data_files_size_in_mb = data_files_size_in_mb
        self.video_files_size_in_mb = video_files_size_in_mb

        self._stack: contextlib.ExitStack | None = None
        self._dir: Path | None = None
        self._schema: pa.Schema | None = None
        self._labels: dict[str, bool] = {}
        self._state_dim: int | None = len(self.state_names) if self.state_names is not None else None
        self._action_dim: int | None = len(self.action_names) if self.action_names is not None else None
        self._tasks: dict[str, int] = {}
        self._episode_rows: list[dict[str, Any]] = []
        self._total_frames = 0
        self._data_file: Any = None
        self._data_writer: pq.ParquetWriter | None = None
        self._data_loc = (0, 0)
        self._data_frames_in_file = 0
        self._videos: dict[str, _VideoSlot] = {}
        self._stats: dict[str, _RunningStats] = {}
        self._image_stats = {cam: _ImageStats() for cam in self.cameras}
        self._video_info: dict[str, dict[str, Any]] = {}
        self._broken: BaseException | None = None

    # -- context manager ------------------------------------------------------------------

    def __enter__(self) -> LeRobotWriter:
        stack = contextlib.ExitStack()
        self._dir = stack.enter_context(atomic_dir(self.root, overwrite=self.overwrite, kind="dataset"))
        self._stack = stack
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        stack, self._stack = self._stack, None
        if stack is None:
            return False
        if exc_type is None:
            try:
                if self._broken is not None:
                    raise RuntimeError(
                        f"add_episode failed half-way ({self._broken!r}); nothing written at {self.root}"
                    )
                if not self._episode_rows:
                    raise ValueError(f"no episodes were added; nothing was written at {self.root}")
                self._finish()
            except BaseException as finish_exc:
                self._abort_files()
                if not stack.__exit__(type(finish_exc), finish_exc, finish_exc.__traceback__):
                    raise
                return False
            stack.close()
            return False
        self._abort_files()
        return bool(stack.__exit__(exc_type, exc, tb))

    @property
    def num_episodes(self) -> int:
        return len(self._episode_rows)

    # -- adding episodes --------------------------------------------------------------------

    def add_episode(self, episode: Episode) -> int:
        """Append one episode (encodes its frames now). Returns its index in the dataset."""
        if self._dir is None or self._stack is None:
            raise RuntimeError("use LeRobotWriter as a context manager: `with LeRobotWriter(...) as w:`")
        if self._broken is not None:
            raise RuntimeError(f"an earlier add_episode failed half-way ({self._broken!r}); {self.root} is discarded")
        index = len(self._episode_rows)
        self._validate(episode, index)  # nothing is written for an episode that fails validation
        if self._schema is None:
            self._schema = self._build_schema(episode)
        try:
            task_index = self._tasks.setdefault(episode.task, len(self._tasks))
            n = episode.length
            row: dict[str, Any] = {"episode_index": index, "tasks": [episode.task], "length": n}
            row.update(self._write_frames(episode, index, task_index))
            for cam in self.cameras:
                row.update(self._write_video(cam, episode.frames[cam]))
                self._image_stats[cam].update(episode.frames[cam])
            row["outcome"] = episode.outcome
            row["task_name"] = episode.task_name
            row["meta_json"] = json.dumps(episode.meta, sort_keys=True)
        except BaseException as exc:
            # Files now hold part of this episode: the dataset can no longer be committed.
            self._broken = exc
            raise
        self._episode_rows.append(row)
        self._total_frames += n
        return index

    def _validate(self, ep: Episode, index: int) -> None:
        if not isinstance(ep, Episode):
            raise TypeError(f"add_episode expects an Episode, got {type(ep).__name__}")
        where = f"episode {index} ({ep.task!r})"
        got = sorted(camera_name(c) for c in ep.frames)
        if got != sorted(self.cameras):
            raise ValueError(f"{where}: cameras {got} differ from the declared cameras {sorted(self.cameras)}")
        for cam, frames in ep.frames.items():
            if tuple(frames.shape[1:3]) != self.image_size:
                raise ValueError(
                    f"{where}: camera {cam!r} frames are {frames.shape[1]}x{frames.shape[2]} "
                    f"(H x W) but the dataset declares image_size={self.image_size}"
                )
        if abs(float(ep.fps) - float(self.fps)) > 1e-6:
            raise ValueError(f"{where}: recorded at {ep.fps} fps but the dataset is {self.fps} fps")
        try:
            json.dumps(ep.meta)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: Episode.meta must be JSON-serialisable: {exc}") from exc
        first = self._schema is None
        for attr, expected, names_kw in (
            ("state", self._state_dim, "state_names"),
            ("action", self._action_dim, "action_names"),
        ):
            value = getattr(ep, attr)
            declared_by = names_kw if first else "earlier episodes"
            if value is None:
                if expected is not None:
                    raise ValueError(f"{where}: has no {attr} but {declared_by} have {expected} dimensions")
                continue
            shape = np.asarray(value).shape
            if len(shape) != 2:
                raise ValueError(f"{where}: {attr} must be a (T, D) array, got shape {shape}")
            if not first and expected is None:
                raise ValueError(f"{where}: has {attr} but earlier episodes do not")
            if expected is not None and shape[1] != expected:
                raise ValueError(f"{where}: {attr} has {shape[1]} dimensions but {declared_by} have {expected}")
        if self._schema is not None:
            for attr in FRAME_LABELS:
                has = getattr(ep, attr) is not None
                if has != self._labels[attr]:
                    state = "has" if has else "lacks"
                    other = "lack" if has else "have"
                    raise ValueError(
                        f"{where}: {state} {attr!r} labels but earlier episodes {other} them; all "
                        "episodes of a dataset must carry the same labels"
                    )

    def _build_schema(self, ep: Episode) -> pa.Schema:
        fields = []
        if ep.state is not None:
            self._state_dim = int(np.asarray(ep.state).shape[1])
            fields.append(pa.field(STATE_KEY, pa.list_(pa.float32(), self._state_dim)))
        if ep.action is not None:
            self._action_dim = int(np.asarray(ep.action).shape[1])
            fields.append(pa.field(ACTION_KEY, pa.list_(pa.float32(), self._action_dim)))
        for name, dtype in _INDEX_FEATURES.items():
            fields.append(pa.field(name, pa.from_numpy_dtype(np.dtype(dtype))))
        for attr, (column, dtype) in FRAME_LABELS.items():
            self._labels[attr] = getattr(ep, attr) is not None
            if self._labels[attr]:
                fields.append(pa.field(column, pa.from_numpy_dtype(np.dtype(dtype))))
        return pa.schema(fields)

    def _write_frames(self, ep: Episode, episode_index: int, task_index: int) -> dict[str, Any]:
        n = ep.length
        columns: dict[str, np.ndarray] = {}
        if ep.state is not None:
            columns[STATE_KEY] = np.asarray(ep.state, dtype=np.float32).reshape(n, -1)
        if ep.action is not None:
            columns[ACTION_KEY] = np.asarray(ep.action, dtype=np.float32).reshape(n, -1)
        frame_index = np.arange(n, dtype=np.int64)
        columns["timestamp"] = (frame_index / float(self.fps)).astype(np.float32)
        columns["frame_index"] = frame_index
        columns["episode_index"] = np.full(n, episode_index, dtype=np.int64)
        columns["index"] = np.arange(self._total_frames, self._total_frames + n, dtype=np.int64)
        columns["task_index"] = np.full(n, task_index, dtype=np.int64)
        for attr, (column, dtype) in FRAME_LABELS.items():
            value = getattr(ep, attr)
            if value is not None:
                columns[column] = np.asarray(value).reshape(n).astype(dtype)

        arrays = []
        for field in self._schema:
            values = columns[field.name]
            if values.ndim == 2:
                flat = pa.array(values.reshape(-1), type=pa.float32())
                arrays.append(pa.FixedSizeListArray.from_arrays(flat, values.shape[1]))
            else:
                arrays.append(pa.array(values, type=field.type))
            self._stats.setdefault(field.name, _RunningStats()).update(values.reshape(n, -1))
        table = pa.Table.from_arrays(arrays, schema=self._schema)

        limit = self.data_files_size_in_mb * 1024 * 1024
        if self._data_writer is not None and self._data_frames_in_file:
            size = self._data_file.tell()
            estimate = size + size / self._data_frames_in_file * n
            if estimate >= limit:
                self._close_data_file()
                self._data_loc = _next_file(*self._data_loc, self.chunks_size)
        if self._data_writer is None:
            path = self._dir / DATA_PATH.format(chunk_index=self._data_loc[0], file_index=self._data_loc[1])
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data_file = open(path, "wb")
            self._data_writer = pq.ParquetWriter(self._data_file, self._schema, compression="snappy")
            self._data_frames_in_file = 0
        self._data_writer.write_table(table)
        self._data_frames_in_file += n
        return {
            "data/chunk_index": self._data_loc[0],
            "data/file_index": self._data_loc[1],
            "dataset_from_index": self._total_frames,
            "dataset_to_index": self._total_frames + n,
        }

    def _close_data_file(self) -> None:
        if self._data_writer is not None:
            self._data_writer.close()
            self._data_writer = None
        if self._data_file is not None:
            self._data_file.close()
            self._data_file = None

    def _open_video(self, cam: str, chunk_index: int, file_index: int) -> _VideoSlot:
        key = camera_key(cam)
        path = self._dir / VIDEO_PATH.format(video_key=key, chunk_index=chunk_index, file_index=file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = self.image_size
        writer = VideoWriter(path, self.fps, width=w, height=h, codec=self.codec, crf=self.crf, gop=self.gop)
        return _VideoSlot(writer, chunk_index, file_index)

    def _write_video(self, cam: str, frames: np.ndarray) -> dict[str, Any]:
        slot = self._videos.get(cam)
        n = frames.shape[0]
        if slot is None:
            slot = self._videos[cam] = self._open_video(cam, 0, 0)
        elif slot.episodes_in_file:
            size = slot.writer.size_bytes
            per_frame = size / max(slot.writer.frames_written, 1)
            if size + per_frame * n >= self.video_files_size_in_mb * 1024 * 1024:
                self._close_video(cam)
                chunk_index, file_index = _next_file(slot.chunk_index, slot.file_index, self.chunks_size)
                slot = self._videos[cam] = self._open_video(cam, chunk_index, file_index)
        start = slot.writer.frames_written
        slot.writer.write(frames)
        slot.episodes_in_file += 1
        key = camera_key(cam)
        return {
            f"videos/{key}/chunk_index": slot.chunk_index,
            f"videos/{key}/file_index": slot.file_index,
            f"videos/{key}/from_timestamp": start / float(self.fps),
            f"videos/{key}/to_timestamp": (start + n) / float(self.fps),
        }

    def _close_video(self, cam: str) -> None:
        slot = self._videos.get(cam)
        if slot is None:
            return
        slot.writer.close()
        if cam not in self._video_info:  # LeRobot records the encoding of the first file
            self._video_info[cam] = lerobot_video_info(slot.writer.path)

    def _abort_files(self) -> None:
        for slot in self._videos.values():
            slot.writer.abort()
        self._videos.clear()
        with contextlib.suppress(Exception):
            self._close_data_file()

    # -- finishing ------------------------------------------------------------------------

    def _features(self) -> dict[str, dict[str, Any]]:
        h, w = self.image_size
        features: dict[str, dict[str, Any]] = {}
        if self._state_dim is not None and self._schema.get_field_index(STATE_KEY) >= 0:
            features[STATE_KEY] = {"dtype": "float32", "shape": [self._state_dim], "names": self.state_names}
        if self._action_dim is not None and self._schema.get_field_index(ACTION_KEY) >= 0:
            features[ACTION_KEY] = {"dtype": "float32", "shape": [self._action_dim], "names": self.action_names}
        for cam in self.cameras:
            features[camera_key(cam)] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": self._video_info[cam],
            }
        for name, dtype in _INDEX_FEATURES.items():
            features[name] = {"dtype": dtype, "shape": [1], "names": None}
        for attr, (column, dtype) in FRAME_LABELS.items():
            if self._labels[attr]:
                features[column] = {"dtype": dtype, "shape": [1], "names": None}
        return features

    def _finish(self) -> None:
        for cam in list(self._videos):
            self._close_video(cam)
        self._videos.clear()
        self._close_data_file()
        root = self._dir

        episodes = pd.DataFrame(self._episode_rows)
        episodes["meta/episodes/chunk_index"] = 0
        episodes["meta/episodes/file_index"] = 0
        for column in episodes.columns:
            if column.endswith(("chunk_index", "file_index")) or column in (
                "episode_index",
                "length",
                "dataset_from_index",
                "dataset_to_index",
            ):
                episodes[column] = episodes[column].astype("int64")
        table = pa.Table.from_pandas(episodes, preserve_index=False)
        atomic_write_parquet(root / EPISODES_PATH.format(chunk_index=0, file_index=0), table)

        tasks = pd.DataFrame(
            {"task_index": np.arange(len(self._tasks), dtype=np.int64)},
            index=pd.Index(list(self._tasks), name="task"),
        )
        atomic_write_parquet(root / TASKS_PATH, pa.Table.from_pandas(tasks))

        stats = {name: acc.result(acc.count, (-1,)) for name, acc in self._stats.items()}
        for cam, acc in self._image_stats.items():
            stats[camera_key(cam)] = acc.result()
        atomic_write_json(root / STATS_PATH, stats)

        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episode_rows),
            "total_frames": self._total_frames,
            "total_tasks": len(self._tasks),
            "chunks_size": self.chunks_size,
            "data_files_size_in_mb": _json_number(self.data_files_size_in_mb),
            "video_files_size_in_mb": _json_number(self.video_files_size_in_mb),
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episode_rows)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": self._features(),
        }
        atomic_write_json(root / INFO_PATH, info)


def write_dataset(
    root: str | os.PathLike,
    episodes: Iterable[Episode],
    *,
    fps: float | None = None,
    cameras: Sequence[str] | None = None,
    image_size: tuple[int, int] | None = None,
    progress: bool = True,
    **kwargs: Any,
) -> Path:
    """Write ``episodes`` to a new LeRobot v3.0 dataset at ``root`` (atomically) and return ``root``.

    ``fps``, ``cameras`` and ``image_size`` default to those of the first episode; other keyword
    arguments go to :class:`LeRobotWriter`. Raises ``ValueError`` for an empty iterable.
    """
    iterator = iter(episodes)
    try:
        first = next(iterator)
    except StopIteration:
        raise ValueError(f"no episodes to write; nothing was written at {root}") from None
    writer = LeRobotWriter(
        root,
        fps=first.fps if fps is None else fps,
        cameras=first.cameras if cameras is None else cameras,
        image_size=first.image_size if image_size is None else image_size,
        **kwargs,
    )
    total = len(episodes) if hasattr(episodes, "__len__") else None
    with writer, tqdm(total=total, desc=f"writing {Path(root).name}", unit="ep", disable=not progress) as bar:
        writer.add_episode(first)
        bar.update()
        for episode in iterator:
            writer.add_episode(episode)
            bar.update()
    return Path(root)


# --------------------------------------------------------------------------------------------
# reader
# --------------------------------------------------------------------------------------------


class _VideoCursor:
    """Decodes one video file forward, handing out the frames at requested timestamps.

    Consecutive requests for later timestamps continue decoding where the last one stopped, so a
    pass over all episodes of a file decodes every frame once; an earlier (or far-ahead)
    request re-opens the file with a seek.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._frames: Iterator[tuple[float, np.ndarray]] | None = None
        self._pending: tuple[float, np.ndarray] | None = None
        self._last_time = -math.inf

    def close(self) -> None:
        if self._frames is not None:
            self._frames.close()  # type: ignore[attr-defined]
        self._frames, self._pending, self._last_time = None, None, -math.inf

    def frames_at(self, times: np.ndarray, tolerance: float) -> np.ndarray:
        start, stop = float(times[0]) - tolerance, float(times[-1]) + tolerance
        resume = self._frames is not None and self._last_time < start and start - self._last_time < 5.0
        if not resume:
            self.close()
            self._frames = iter_frames(self.path, start_s=max(start, 0.0))
        out: list[np.ndarray | None] = [None] * len(times)
        while True:
            if self._pending is not None:
                item, self._pending = self._pending, None
            else:
                item = next(self._frames, None)
                if item is None:
                    break
            t, frame = item
            if t > stop:
                self._pending = item  # the next episode's first frame
                break
            self._last_time = t
            if t < start:
                continue
            j = int(np.searchsorted(times, t))
            best = min((k for k in (j - 1, j) if 0 <= k < len(times)), key=lambda k: abs(times[k] - t))
            if abs(times[best] - t) <= tolerance and out[best] is None:
                out[best] = frame
        missing = [i for i, f in enumerate(out) if f is None]
        if missing:
            self.close()
            raise VideoError(
                f"{self.path}: {len(missing)} of {len(times)} frames missing between "
                f"{times[0]:.3f}s and {times[-1]:.3f}s (first missing at {times[missing[0]]:.3f}s); "
                "the video is truncated or does not match meta/episodes"
            )
        return np.stack(out)


class EpisodeDataset:
    """Read a LeRobot v3.0 dataset (ours or one LeRobot wrote) as :class:`Episode` objects.

    ``len(ds)`` is the number of episodes; ``ds[i]`` / :meth:`load_episode` decodes one episode;
    iterating decodes each video file once, front to back. Optional features a dataset lacks
    (``progress``, ``stage``, ``next.reward``, ...) come back as ``None``.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.info = self._load_info()
        self.features: dict[str, dict[str, Any]] = self.info["features"]
        self.fps: float = float(self.info["fps"])
        self._camera_keys: dict[str, str] = {
            camera_name(k): k for k, ft in self.features.items() if ft.get("dtype") in ("video", "image")
        }
        self.cameras: list[str] = list(self._camera_keys)
        self.task_table = self._load_tasks()
        self.tasks: list[str] = list(self.task_table.sort_values("task_index").index)
        self._task_by_index = {int(i): t for t, i in zip(self.task_table.index, self.task_table["task_index"])}
        self.episode_table = self._load_episodes()
        self.episode_lengths: list[int] = [int(v) for v in self.episode_table["length"]]
        self._check_files()
        self._table_cache: tuple[Path, pa.Table] | None = None

    # -- metadata ---------------------------------------------------------------------------

    def _fail(self, what: str) -> NotALeRobotDatasetError:
        return NotALeRobotDatasetError(f"{self.root} is not a LeRobot v3.0 dataset: {what}")

    def _load_info(self) -> dict[str, Any]:
        if not self.root.is_dir():
            raise NotALeRobotDatasetError(f"{self.root} does not exist or is not a directory")
        path = self.root / INFO_PATH
        if not path.is_file():
            legacy = [p for p in ("meta/info.json", "meta_data/info.json") if (self.root / p).exists()]
            raise self._fail(f"{INFO_PATH} is missing" + (f" (found {legacy})" if legacy else ""))
        try:
            info = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self._fail(f"{path} is not valid JSON: {exc}") from exc
        version = str(info.get("codebase_version", ""))
        if not version.startswith("v3."):
            raise self._fail(
                f"{path} has codebase_version={version or 'nothing'!r} but v3.0 is required; convert "
                "older (v2.x) datasets with LeRobot's `python -m lerobot.datasets.v30.convert_dataset_v21_to_v30`"
            )
        for field in ("fps", "features", "data_path"):
            if field not in info:
                raise self._fail(f"{path} has no {field!r} field")
        if any(ft.get("dtype") == "video" for ft in info["features"].values()) and not info.get("video_path"):
            raise self._fail(f"{path} declares video features but no 'video_path'")
        return info

    def _load_tasks(self) -> pd.DataFrame:
        path = self.root / TASKS_PATH
        if not path.is_file():
            raise self._fail(f"{TASKS_PATH} is missing")
        tasks = pd.read_parquet(path)
        if "task" in tasks.columns:  # tolerate a task column instead of the index
            tasks = tasks.set_index("task")
        if "task_index" not in tasks.columns:
            raise self._fail(f"{path} has no 'task_index' column")
        return tasks

    def _load_episodes(self) -> pd.DataFrame:
        files = sorted((self.root / EPISODES_DIR).glob("*/*.parquet"))
        if not files:
            raise self._fail(f"no episode tables under {EPISODES_DIR}/ (expected {EPISODES_PATH})")
        columns = None  # skip per-episode stats columns: many and unused here
        frames = []
        for f in files:
            names = pq.read_schema(f).names
            columns = [c for c in names if not c.startswith("stats/")]
            frames.append(pd.read_parquet(f, columns=columns))
        episodes = pd.concat(frames, ignore_index=True).sort_values("episode_index").reset_index(drop=True)
        required = ["episode_index", "length", "data/chunk_index", "data/file_index",
                    "dataset_from_index", "dataset_to_index"]  # fmt: skip
        for key, ft in self.features.items():
            if ft.get("dtype") == "video":
                required += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp")]
        missing = [c for c in required if c not in episodes.columns]
        if missing:
            raise self._fail(f"episode tables under {EPISODES_DIR}/ lack columns {missing}")
        if list(episodes["episode_index"]) != list(range(len(episodes))):
            raise self._fail(f"episode_index in {EPISODES_DIR}/ is not 0..{len(episodes) - 1}")
        return episodes

    def _data_path(self, i: int) -> Path:
        ep = self.episode_table.iloc[i]
        rel = self.info["data_path"].format(
            chunk_index=int(ep["data/chunk_index"]), file_index=int(ep["data/file_index"])
        )
        return self.root / rel

    def _video_path(self, i: int, key: str) -> Path:
        ep = self.episode_table.iloc[i]
        rel = self.info["video_path"].format(
            video_key=key,
            chunk_index=int(ep[f"videos/{key}/chunk_index"]),
            file_index=int(ep[f"videos/{key}/file_index"]),
        )
        return self.root / rel

    def _check_files(self) -> None:
        paths = {self._data_path(i) for i in range(len(self.episode_table))}
        for key in self.video_keys:
            paths |= {self._video_path(i, key) for i in range(len(self.episode_table))}
        missing = sorted(str(p.relative_to(self.root)) for p in paths if not p.is_file())
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise self._fail(f"files listed in {EPISODES_DIR}/ are missing: {missing[:3]}{more}")

    # -- properties ---------------------------------------------------------------------------

    @property
    def num_episodes(self) -> int:
        return len(self.episode_table)

    @property
    def num_frames(self) -> int:
        return int(sum(self.episode_lengths))

    @property
    def video_keys(self) -> list[str]:
        return [k for k, ft in self.features.items() if ft.get("dtype") == "video"]

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) of the first camera (None for a dataset without cameras)."""
        if not self.cameras:
            return None
        feature = self.features[self._camera_keys[self.cameras[0]]]
        names = feature.get("names") or ["height", "width", "channels"]
        shape = dict(zip(names, feature["shape"]))
        if "height" in shape and "width" in shape:
            return int(shape["height"]), int(shape["width"])
        return int(feature["shape"][0]), int(feature["shape"][1])

    @property
    def robot_type(self) -> str | None:
        return self.info.get("robot_type")

    def __len__(self) -> int:
        return self.num_episodes

    def __repr__(self) -> str:
        return (
            f"EpisodeDataset({str(self.root)!r}, episodes={self.num_episodes}, frames={self.num_frames}, "
            f"fps={self.fps:g}, cameras={self.cameras})"
        )

    # -- loading ------------------------------------------------------------------------------

    def _resolve_cameras(self, cameras: Sequence[str] | None) -> list[str]:
        if cameras is None:
            return list(self.cameras)
        resolved = []
        for cam in cameras:
            name = camera_name(cam)
            if name not in self._camera_keys:
                raise ValueError(f"unknown camera {cam!r} in {self.root}; available cameras: {self.cameras}")
            resolved.append(name)
        return resolved

    def _check_index(self, i: int) -> int:
        if not isinstance(i, (int, np.integer)):
            raise TypeError(f"episode index must be an int, got {type(i).__name__}")
        n = self.num_episodes
        if not -n <= i < n:
            raise IndexError(f"episode index {i} out of range: {self.root} has {n} episodes")
        return int(i) % n

    def _rows(self, i: int) -> pa.Table:
        path = self._data_path(i)
        if self._table_cache is None or self._table_cache[0] != path:
            try:
                table = pq.read_table(path)
            except (pa.ArrowInvalid, OSError) as exc:
                raise self._fail(f"cannot read {path}: {exc}") from exc
            if "episode_index" not in table.column_names:
                raise self._fail(f"{path} has no 'episode_index' column")
            self._table_cache = (path, table)
        table = self._table_cache[1]
        ep = self.episode_table.iloc[i]
        length = int(ep["length"])
        # Rows of a file are stored episode after episode: slice by the global index first and
        # fall back to a filter if the file is ordered differently.
        rows = None
        if "index" in table.column_names and table.num_rows:
            offset = int(ep["dataset_from_index"]) - int(table["index"][0].as_py())
            if 0 <= offset and offset + length <= table.num_rows:
                candidate = table.slice(offset, length)
                episode_ids = candidate["episode_index"].to_numpy()
                if length and (episode_ids == i).all():
                    rows = candidate
        if rows is None:
            episode_id = pa.scalar(i, table.schema.field("episode_index").type)
            rows = table.filter(pc.equal(table["episode_index"], episode_id))
            if "frame_index" in rows.column_names:
                rows = rows.sort_by("frame_index")
        if rows.num_rows != length:
            raise self._fail(f"{path} has {rows.num_rows} rows for episode {i} but {EPISODES_DIR}/ says {length}")
        return rows

    def _frames(
        self, i: int, cams: list[str], rows: pa.Table, cursors: dict[str, _VideoCursor] | None
    ) -> dict[str, np.ndarray]:
        frames: dict[str, np.ndarray] = {}
        n = rows.num_rows
        if "timestamp" in rows.column_names:
            timestamps = rows["timestamp"].to_numpy().astype(np.float64)
        else:
            timestamps = np.arange(n) / self.fps
        tolerance = 0.4 / self.fps  # nearest frame, never a neighbour
        for cam in cams:
            key = self._camera_keys[cam]
            if self.features[key]["dtype"] == "image":
                frames[cam] = _decode_image_column(rows[key], key, self.root)
                continue
            path = self._video_path(i, key)
            offset = float(self.episode_table.iloc[i][f"videos/{key}/from_timestamp"])
            if cursors is None:
                cursor = _VideoCursor(path)
                try:
                    frames[cam] = cursor.frames_at(offset + timestamps, tolerance)
                finally:
                    cursor.close()
            else:
                cursor = cursors.get(key)
                if cursor is None or cursor.path != path:
                    if cursor is not None:
                        cursor.close()
                    cursor = cursors[key] = _VideoCursor(path)
                frames[cam] = cursor.frames_at(offset + timestamps, tolerance)
        return frames

    def _episode(self, i: int, cams: list[str], cursors: dict[str, _VideoCursor] | None) -> Episode:
        rows = self._rows(i)
        ep_row = self.episode_table.iloc[i]
        frames = self._frames(i, cams, rows, cursors)
        if not frames:
            raise ValueError(f"{self.root}: no cameras selected; an Episode needs at least one")

        def column(name: str, dtype: str) -> np.ndarray | None:
            if name not in rows.column_names:
                return None
            return _column_to_numpy(rows[name], dtype)

        if "task_index" in rows.column_names and rows.num_rows:
            task = self._task_by_index.get(int(rows["task_index"][0].as_py()))
        else:
            task = None
        ep_tasks = list(ep_row["tasks"]) if "tasks" in ep_row and ep_row["tasks"] is not None else []
        if task is None:
            task = ep_tasks[0] if ep_tasks else ""
        meta: dict[str, Any] = {}
        if "meta_json" in ep_row and isinstance(ep_row["meta_json"], str):
            try:
                meta = json.loads(ep_row["meta_json"])
            except json.JSONDecodeError as exc:
                raise self._fail(f"episode {i} has a meta_json that is not valid JSON: {exc}") from exc
        if len(ep_tasks) > 1:
            meta.setdefault("tasks", ep_tasks)
        labels = {attr: column(col, dtype) for attr, (col, dtype) in FRAME_LABELS.items()}
        outcome = ep_row.get("outcome") if "outcome" in ep_row else None
        task_name = ep_row.get("task_name") if "task_name" in ep_row else None
        return Episode(
            task=task,
            frames=frames,
            fps=self.fps,
            episode_index=i,
            task_name=task_name if isinstance(task_name, str) else None,
            state=column(STATE_KEY, "float32"),
            action=column(ACTION_KEY, "float32"),
            outcome=outcome if outcome in OUTCOMES else None,
            meta=meta,
            **labels,
        )

    def load_episode(self, i: int, cameras: Sequence[str] | None = None) -> Episode:
        """Decode episode ``i`` (frames from the mp4s by timestamp; labels exactly as stored)."""
        i = self._check_index(i)
        return self._episode(i, self._resolve_cameras(cameras), cursors=None)

    def __getitem__(self, i: int) -> Episode:
        return self.load_episode(i)

    def iter_episodes(self, cameras: Sequence[str] | None = None, progress: bool = True) -> Iterator[Episode]:
        """Yield every episode in order, decoding each video file once from front to back."""
        cams = self._resolve_cameras(cameras)
        cursors: dict[str, _VideoCursor] = {}
        try:
            for i in tqdm(range(self.num_episodes), desc=f"reading {self.root.name}", unit="ep", disable=not progress):
                yield self._episode(i, cams, cursors)
        finally:
            for cursor in cursors.values():
                cursor.close()

    def __iter__(self) -> Iterator[Episode]:
        return self.iter_episodes(progress=False)


def _column_to_numpy(column: pa.ChunkedArray, dtype: str) -> np.ndarray:
    column = column.combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_fixed_size_list(column.type) or pa.types.is_large_list(column.type):
        n = len(column)
        flat = column.flatten().to_numpy(zero_copy_only=False)
        return flat.reshape(n, -1).astype(dtype) if n else np.zeros((0, 0), dtype)
    return column.to_numpy(zero_copy_only=False).astype(dtype)


def _decode_image_column(column: pa.ChunkedArray, key: str, root: Path) -> np.ndarray:
    """Frames of a LeRobot ``image`` feature: PNG/JPEG bytes stored in the parquet as {bytes, path}."""
    out = []
    for item in column.to_pylist():
        data = item.get("bytes") if isinstance(item, dict) else item
        if data is None and isinstance(item, dict) and item.get("path"):
            data = (root / item["path"]).read_bytes()
        if data is None:
            raise NotALeRobotDatasetError(f"{root}: image feature {key!r} has a row without image bytes")
        out.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return np.stack(out)


def open_dataset(root: str | os.PathLike) -> EpisodeDataset:
    """Open a LeRobot v3.0 dataset for reading; raises :class:`NotALeRobotDatasetError` if it is not one."""
    return EpisodeDataset(root)
