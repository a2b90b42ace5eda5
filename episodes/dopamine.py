"""Robo-Dopamine's released raw-data layout as episodes, with step-wise progress labels.

The layout, as released in FlagOpen/Robo-Dopamine (``dataset/example_raw_data/`` and the reader
``dataset/utils/0_preprocess_data.py``)::

    ROOT/task_instruction.json               ["clean the table", "organize the table", ...]
    ROOT/episode_001/cam_high.mp4             one video per camera (640x480, 30 fps, 1000+ frames)
    ROOT/episode_001/cam_left_wrist.mp4
    ROOT/episode_001/cam_right_wrist.mp4
    ROOT/episode_001/annotated_keyframes.json [{"anotation": "subtask1", "start_frame_id": 8,
                                                "end_frame_id": 147}, ...]

``annotated_keyframes.json`` lists the M subtasks in order; ``start_frame_id``/``end_frame_id``
are native frame numbers (consecutive subtasks share their boundary frame). The subtask text is
read from ``anotation`` (the released spelling) or ``annotation``. Progress labels are the
step-wise discretisation of the keyframes (:func:`keyframe_progress`): Φ = completed subtasks / M,
linear within a subtask, 0 before the first subtask starts and 1 once the last one has ended. An
episode without the file has no labels. An episode whose last subtask ends inside the video is
labelled a success (``outcome="success"``); otherwise its outcome is left unknown.

``task_instruction.json`` sits beside the episode folders. Accepted: a JSON list of strings (the
released format: paraphrases of one instruction; the first is used, all are kept in
``meta["instructions"]``), an object with a string ``task_instruction`` or ``instruction`` (or a
list ``instructions``), or a plain JSON string. ``--task`` overrides it.

Videos go through :func:`episodes.video_folder.decode_video`: frames are skipped while decoding
(``fps``) and resized as they are converted (``max_side``), so a long 640x480 recording is never
held in memory at full rate and size.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from episodes.atomic import atomic_write_json
from episodes.episode import Episode
from episodes.video import write_video
from episodes.video_folder import EpisodeSourceError, is_video_file, load_episode_folder

KEYFRAMES_JSON = "annotated_keyframes.json"
INSTRUCTION_JSON = "task_instruction.json"
EPISODE_PREFIX = "episode_"
"""The released reader globs ``episode_*`` folders; other sub-folders holding videos count too."""


@dataclass(frozen=True)
class Subtask:
    """One annotated subtask: native frames ``start`` .. ``end``, and its description."""

    start: int
    end: int
    text: str | None = None


# ----------------------------------------------------------------------------------------------
# Detection and listing
# ----------------------------------------------------------------------------------------------


def is_dopamine_episode(path: str | Path) -> bool:
    """A folder holding ``annotated_keyframes.json`` (one episode of the layout)."""
    return Path(path).is_dir() and (Path(path) / KEYFRAMES_JSON).is_file()


def _holds_videos(folder: Path) -> bool:
    return any(p.is_file() and is_video_file(p) for p in folder.iterdir())


def _episode_candidates(root: Path) -> list[Path]:
    return sorted(c for c in root.iterdir() if c.is_dir() and not c.name.startswith("."))


def is_dopamine_source(path: str | Path) -> bool:
    """One episode folder of the layout, or a folder of them: some sub-folder holds
    ``annotated_keyframes.json``, or the folder holds ``task_instruction.json`` and sub-folders
    with videos."""
    path = Path(path)
    if not path.is_dir():
        return False
    if is_dopamine_episode(path):
        return True
    subdirs = _episode_candidates(path)
    if any(is_dopamine_episode(c) for c in subdirs):
        return True
    return (path / INSTRUCTION_JSON).is_file() and any(_holds_videos(c) for c in subdirs)


def list_dopamine_episodes(path: str | Path) -> list[Path]:
    """The episode folders of ``path`` in name order (``path`` itself when it is one)."""
    path = Path(path)
    if is_dopamine_episode(path):
        return [path]
    return [
        c
        for c in _episode_candidates(path)
        if c.name.startswith(EPISODE_PREFIX) or is_dopamine_episode(c) or _holds_videos(c)
    ]


# ----------------------------------------------------------------------------------------------
# Annotations
# ----------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EpisodeSourceError(path, f"unreadable JSON ({exc})") from exc


def read_task_instruction(path: str | Path) -> tuple[str, list[str]] | None:
    """``(instruction, all paraphrases)`` from a ``task_instruction.json`` (formats in the module
    docstring); ``None`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    data = _read_json(path)
    if isinstance(data, dict):
        for key in ("task_instruction", "instruction", "instructions"):
            if key in data:
                data = data[key]
                break
        else:
            raise EpisodeSourceError(path, "JSON object needs a 'task_instruction' or 'instruction' field")
    texts = [data] if isinstance(data, str) else data
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise EpisodeSourceError(
            path,
            "must hold an instruction: a non-empty string, a list of strings, or "
            "an object with 'task_instruction' / 'instruction'",
        )
    texts = [t.strip() for t in texts]
    return texts[0], texts


def read_keyframes(path: str | Path) -> list[Subtask]:
    """The subtasks of an ``annotated_keyframes.json``, checked: a non-empty list of objects with
    integer ``start_frame_id`` < ``end_frame_id``, in order, not overlapping."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, list) or not data:
        raise EpisodeSourceError(path, "must hold a non-empty list of subtasks")
    subtasks: list[Subtask] = []
    for k, item in enumerate(data):
        if not isinstance(item, dict):
            raise EpisodeSourceError(path, f"subtask {k} must be an object, got {type(item).__name__}")
        ids = {}
        for key in ("start_frame_id", "end_frame_id"):
            value = item.get(key)
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise EpisodeSourceError(path, f"subtask {k}: '{key}' must be a frame number >= 0, got {value!r}")
            ids[key] = value
        start, end = ids["start_frame_id"], ids["end_frame_id"]
        if end <= start:
            raise EpisodeSourceError(path, f"subtask {k}: end_frame_id {end} must be after start_frame_id {start}")
        if subtasks and start < subtasks[-1].end:
            raise EpisodeSourceError(
                path,
                f"subtask {k}: start_frame_id {start} is before the end of subtask "
                f"{k - 1} ({subtasks[-1].end}); subtasks must be in order, not overlapping",
            )
        text = item.get("anotation", item.get("annotation"))
        subtasks.append(Subtask(start, end, str(text) if text is not None else None))
    return subtasks


def keyframe_progress(subtasks: Sequence[Subtask], n_frames: int) -> np.ndarray:
    """float32 (n_frames,) step-wise progress: subtask k (of M) covers Φ ∈ [k/M, (k+1)/M], linear
    in the frame number between its start and end frames; frames before the first start are 0,
    frames between subtasks keep the completed count, frames after the last end are 1."""
    frame = np.arange(n_frames, dtype=np.float64)
    phi = np.zeros(n_frames, dtype=np.float64)
    m = len(subtasks)
    for k, sub in enumerate(subtasks):  # in order, so each later subtask overrides its own frames
        phi[frame >= sub.end] = (k + 1) / m
        inside = (frame >= sub.start) & (frame < sub.end)
        phi[inside] = (k + (frame[inside] - sub.start) / (sub.end - sub.start)) / m
    return phi.astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


def load_dopamine_episode(
    folder: str | Path,
    task: str | None = None,
    fps: float | None = None,
    max_side: int | None = None,
    episode_index: int = 0,
    cameras: Sequence[str] | None = None,
) -> Episode:
    """One episode folder of the layout as an :class:`Episode` (cameras named after the files,
    e.g. ``cam_high``), with keyframe progress labels at the kept frames.

    ``task`` overrides ``../task_instruction.json``; ``fps`` and ``max_side`` stride and resize
    while decoding; ``cameras`` selects (and requires) views. Errors name the offending file.
    """
    folder = Path(folder)
    instruction_path = folder.parent / INSTRUCTION_JSON
    found = read_task_instruction(instruction_path)
    if not task and found is None:
        raise EpisodeSourceError(folder, f"no task instruction: {instruction_path} is missing; pass --task")
    episode = load_episode_folder(
        folder, task=task or found[0], fps=fps, max_side=max_side, episode_index=episode_index, cameras=cameras
    )
    kept = np.asarray(episode.meta["frame_index"], dtype=np.int64)
    n_native = int(kept[-1]) + 1  # decode_video always keeps the final frame
    meta = {**episode.meta, "source_layout": "robo-dopamine"}
    if found is not None:
        meta["instructions"] = found[1]
    keyframes_path = folder / KEYFRAMES_JSON
    if not keyframes_path.is_file():
        return replace(episode, meta=meta)
    subtasks = read_keyframes(keyframes_path)
    if subtasks[-1].end > n_native:
        raise EpisodeSourceError(
            keyframes_path, f"end_frame_id {subtasks[-1].end} is past the end of the videos ({n_native} frames)"
        )
    full = keyframe_progress(subtasks, n_native)
    meta["subtasks"] = [{"start_frame_id": s.start, "end_frame_id": s.end, "text": s.text} for s in subtasks]
    completed = bool(full[-1] >= 1.0)
    if completed:
        meta["success"] = True
    return replace(episode, progress=full[kept], outcome="success" if completed else None, meta=meta)


def write_dopamine_episode(
    folder: str | Path,
    frames: dict[str, np.ndarray],
    fps: float,
    subtasks: Sequence[Subtask] | None = None,
) -> Path:
    """Write one episode folder of the layout: ``<camera>.mp4`` per camera (name cameras
    ``cam_*`` as the release does) and, with ``subtasks``, ``annotated_keyframes.json`` in the
    released spelling. The inverse of :func:`load_dopamine_episode` (instruction aside: see
    :func:`write_task_instruction`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for camera, video in frames.items():
        write_video(folder / f"{camera}.mp4", video, fps=fps)
    if subtasks is not None:
        atomic_write_json(
            folder / KEYFRAMES_JSON,
            [
                {"anotation": s.text or f"subtask{k + 1}", "start_frame_id": s.start, "end_frame_id": s.end}
                for k, s in enumerate(subtasks)
            ],
        )
    return folder


def write_task_instruction(root: str | Path, instructions: Sequence[str]) -> Path:
    """Write ``root/task_instruction.json`` in the released format (a list of paraphrases)."""
    path = Path(root) / INSTRUCTION_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, list(instructions))
    return path


__all__ = [
    "INSTRUCTION_JSON",
    "KEYFRAMES_JSON",
    "Subtask",
    "is_dopamine_episode",
    "is_dopamine_source",
    "keyframe_progress",
    "list_dopamine_episodes",
    "load_dopamine_episode",
    "read_keyframes",
    "read_task_instruction",
    "write_dopamine_episode",
    "write_task_instruction",
]
