"""The episode data model shared by sim recording, reward models, evaluation and the ROS bridge.

An :class:`Episode` is one recorded trajectory: per-camera frames plus optional per-frame labels.
Frame ``t`` holds the observation *before* action ``t`` is applied; ``reward[t]``, ``done[t]`` and
``success[t]`` describe the transition that action causes (LeRobot's ``next.*`` convention).
Recorders append the final observation as an extra last frame (zero action, ``done=True``) so the
end state -- which is what a progress model has to judge -- is always on video.

Labels that a source does not have (a plain video has no actions or progress) are ``None``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OUTCOMES = ("success", "partial", "fail")
"""Episode-level outcome classes (docs/method.md § Metrics, 3-class completion)."""


@dataclass
class Episode:
    task: str
    """The language instruction shown to the policy / reward model."""
    frames: dict[str, np.ndarray]
    """Camera name -> uint8 array (T, H, W, 3). All cameras have the same T."""
    fps: float = 10.0
    """Frames per second of the recording."""
    episode_index: int = 0
    """Index of the episode inside its dataset."""
    task_name: str | None = None
    """Short task name (``reach``, ``push``, ...) when known."""
    state: np.ndarray | None = None
    """float32 (T, D) proprioception + object state (``observation.state``)."""
    action: np.ndarray | None = None
    """float32 (T, A) action applied at each frame (``action``)."""
    reward: np.ndarray | None = None
    """float32 (T,) environment reward of the transition (``next.reward``)."""
    done: np.ndarray | None = None
    """bool (T,) episode ended after this frame (``next.done``)."""
    success: np.ndarray | None = None
    """bool (T,) task success predicate after the transition (``next.success``)."""
    progress: np.ndarray | None = None
    """float32 (T,) ground-truth task progress in [0, 1] of the frame's state."""
    stage: np.ndarray | None = None
    """int64 (T,) ground-truth task stage index of the frame's state."""
    outcome: str | None = None
    """``success`` / ``partial`` / ``fail`` -- what really happened, when known."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Free-form provenance (seed, policy, source file, ...); JSON-serialisable values only."""

    def __post_init__(self) -> None:
        if not self.frames:
            raise ValueError("an Episode needs at least one camera in `frames`")
        lengths = {}
        for cam, arr in self.frames.items():
            arr = np.asarray(arr)
            if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
                raise ValueError(f"camera {cam!r}: frames must be uint8 (T, H, W, 3), got {arr.dtype} {arr.shape}")
            self.frames[cam] = arr
            lengths[cam] = arr.shape[0]
        if len(set(lengths.values())) != 1:
            raise ValueError(f"cameras have different frame counts: {lengths}")
        n = self.length
        for name in ("state", "action", "reward", "done", "success", "progress", "stage"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name!r} has {len(value)} rows but the episode has {n} frames")
        if self.outcome is not None and self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.progress is not None:
            bad = progress_label_error(np.asarray(self.progress, dtype=np.float64))
            if bad:
                raise ValueError(f"progress labels: {bad}")

    @property
    def length(self) -> int:
        """Number of frames T."""
        return next(iter(self.frames.values())).shape[0]

    @property
    def cameras(self) -> list[str]:
        return list(self.frames)

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the first camera."""
        h, w = next(iter(self.frames.values())).shape[1:3]
        return int(h), int(w)


PROGRESS_TOLERANCE = 1e-4
"""How far outside [0, 1] a stored progress label may lie (float rounding) before it is rejected."""


def progress_label_error(progress: np.ndarray) -> str | None:
    """Why ``progress`` is not a valid label vector (non-finite, or outside [0, 1]); None when valid.
    Out-of-range labels would silently skew every metric computed from them."""
    if progress.size == 0:
        return None
    finite = np.isfinite(progress)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        return f"value {progress[i]} at frame {i} is not a finite number"
    out = (progress < -PROGRESS_TOLERANCE) | (progress > 1 + PROGRESS_TOLERANCE)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        return f"value {progress[i]:g} at frame {i} is outside [0, 1]"
    return None


PARTIAL_PROGRESS = 0.4
"""Mean progress over the last third of an unfinished episode at or above which it is ``partial``."""


def tail_progress(progress: np.ndarray) -> float:
    """Mean progress over the last third of an episode: its last ceil(T/3) frames (at least one)."""
    progress = np.asarray(progress, dtype=np.float64).ravel()
    return float(progress[-max(1, math.ceil(progress.size / 3)) :].mean())


def unfinished_outcome(progress: np.ndarray) -> str:
    """``partial`` or ``fail`` for an episode that did not succeed: the one rule behind both the
    recorded ``outcome`` label (ground-truth progress) and the completion metric (predicted
    progress, :func:`reward_models.metrics.completion_class`); docs/method.md § Metrics."""
    if np.asarray(progress).size == 0:
        return "fail"
    return "partial" if tail_progress(progress) >= PARTIAL_PROGRESS else "fail"


def outcome_from_labels(final_success: bool, progress: np.ndarray) -> str:
    """Episode outcome from what really happened (not from a script's intent): ``success`` when the
    task's success predicate holds at the end, otherwise :func:`unfinished_outcome` of the
    ground-truth progress."""
    return "success" if final_success else unfinished_outcome(progress)
