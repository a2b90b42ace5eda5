"""Shared pieces of the zero-shot baselines: whole-episode scoring, devices, view selection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from reward_models.base import NON_IMAGE_KEYS


@dataclass
class EpisodeProgress:
    """A model's offline verdict on a whole episode."""

    progress: np.ndarray
    """(T,) Φ_t in [0, 1] for every frame given."""
    end_score: float | None = None
    """A 1–5 rubric end score when the model produces one (RoboReward-style)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Diagnostics (parse failures, raw rewards, ...)."""


class EpisodeScorer:
    """Mixin for models that judge a *whole* episode at once (not only hop by hop).

    Evaluation prefers :meth:`score_episode` when a model has it -- e.g. a GVL scorer sees
    shuffled frames together, a CLIP reward is min–max normalised over the episode. The same
    model still works online through the :class:`~reward_models.base.ProgressModel` interface.
    """

    def score_episode(self, frames: Mapping[str, np.ndarray], task: str, batch_size: int = 16) -> EpisodeProgress:
        raise NotImplementedError


def image_views(obs: Mapping[str, Any], cameras: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The camera entries of an observation (non-image keys dropped), optionally selected."""
    views = {k: np.asarray(v) for k, v in obs.items() if k not in NON_IMAGE_KEYS}
    if cameras is not None:
        missing = [c for c in cameras if c not in views]
        if missing:
            raise ValueError(f"observation lacks camera(s) {missing}; it has {sorted(views)}")
        views = {c: views[c] for c in cameras}
    if not views:
        raise ValueError(f"observation has no camera views (keys: {sorted(obs)})")
    for k, v in views.items():
        if v.ndim != 4 or v.shape[-1] != 3:
            raise ValueError(f"camera {k!r}: expected uint8 (B, H, W, 3), got {v.dtype} {v.shape}")
    return views


def even_indices(n: int, k: int) -> np.ndarray:
    """``k`` indices spread evenly over ``range(n)``, always including the first and last."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if k >= n:
        return np.arange(n)
    if k <= 1:
        return np.array([n - 1])
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


def interpolate_missing(values: np.ndarray, positions: np.ndarray, length: int, fill: float = 0.0) -> np.ndarray:
    """Values at ``positions`` (NaN = unknown) -> a dense (length,) curve by linear interpolation."""
    values = np.asarray(values, dtype=np.float64)
    positions = np.asarray(positions, dtype=np.float64)
    ok = np.isfinite(values)
    if not ok.any():
        return np.full(length, fill)
    return np.interp(np.arange(length), positions[ok], values[ok])
