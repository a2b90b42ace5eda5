"""The oracle progress model: exact hops from the simulator's ground-truth progress.

It reads the privileged ``"progress"`` key of an observation (sim ``info["progress"]``, or an
episode's ``progress`` column). Its embedding *is* the progress value, and its hops are
:func:`hop_from_progress` -- so every reconstruction mode of the tracker recovers the true Φ.
It is the upper bound in evaluations and a dense "oracle reward" baseline for RL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reward_models.base import Observation, ProgressModel, hop_from_progress


class OracleProgressModel(ProgressModel):
    """Ground-truth hops; needs ``obs["progress"]`` (float (B,) in [0, 1])."""

    model_id = "oracle"
    cameras = None

    def encode(self, obs: Observation) -> np.ndarray:
        if "progress" not in obs:
            raise ValueError(
                "OracleProgressModel needs the ground-truth 'progress' key in the observation "
                f"(got keys {sorted(obs)}); pass info['progress'] from the sim or an episode with "
                "a progress column"
            )
        progress = np.asarray(obs["progress"], dtype=np.float64).reshape(-1)
        if np.any(~np.isfinite(progress)):
            raise ValueError("OracleProgressModel: 'progress' contains NaN/inf")
        return np.clip(progress, 0.0, 1.0)

    def hop_from_embeddings(
        self,
        before: Any,
        after: Any,
        tasks: Sequence[str],
        start: Any | None = None,
        goal: Any | None = None,
    ) -> np.ndarray:
        before = np.asarray(before, dtype=np.float64).reshape(-1)
        after = np.asarray(after, dtype=np.float64).reshape(-1)
        if before.shape != after.shape:
            raise ValueError(f"before/after have different batch sizes: {before.shape} vs {after.shape}")
        return hop_from_progress(before, after)
