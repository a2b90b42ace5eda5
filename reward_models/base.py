"""The one interface every progress model plugs into.

A *progress model* scores **hops** between states: H(before -> after) in [-1, 1], the fraction of
the *remaining* distance covered (progress) or of the *completed* distance lost (regress)
(docs/method.md § Progress and hops). A :class:`ProgressTracker` turns hops into per-episode
progress Φ_t in [0, 1] by incremental, forward-anchored and backward-anchored reconstruction, fused
with a consistency weight -- for N parallel episodes at once, with **one** encoder forward per step.

Consumers (evaluation, the SB3 shaping wrapper, the ROS reward monitor) only ever use
:class:`ProgressModel` and :class:`ProgressTracker`; they never know which model is behind them.

Observations are mappings ``camera -> uint8 (B, H, W, 3)``. Views may be missing (a model uses the
subset it is given). Two optional non-image keys exist for privileged models: ``"progress"``
(float (B,), ground truth, used by the oracle) and ``"state"`` (float (B, D)).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Observation = Mapping[str, np.ndarray]
"""camera name -> uint8 (B, H, W, 3); optional ``"progress"`` (B,) and ``"state"`` (B, D)."""

NON_IMAGE_KEYS = frozenset({"progress", "state"})


def hop_from_progress(phi_before: np.ndarray, phi_after: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Ground-truth hop between two absolute progress values (docs/method.md § Progress and hops).

    H = (Φq − Φp)/(1 − Φp) if Φq ≥ Φp, else (Φq − Φp)/Φp; clipped to [-1, 1].
    """
    p = np.asarray(phi_before, dtype=np.float64)
    q = np.asarray(phi_after, dtype=np.float64)
    up = (q - p) / np.maximum(1.0 - p, eps)
    down = (q - p) / np.maximum(p, eps)
    return np.clip(np.where(q >= p, up, down), -1.0, 1.0)


class ProgressModel(abc.ABC):
    """Scores hops between multi-view states. Subclasses: GRM, CLIP/VLM baselines, oracle."""

    model_id: str = "unnamed"
    """Stable identifier written into reports and sidecar metadata."""
    cameras: tuple[str, ...] | None = None
    """Views the model was built for; ``None`` means it uses whatever views it is given."""

    @abc.abstractmethod
    def encode(self, obs: Observation) -> Any:
        """Embed B states (all their views) once. The result has a leading batch dimension and
        supports ``[index]`` / concatenation along dim 0 (torch tensor or ndarray)."""

    @abc.abstractmethod
    def hop_from_embeddings(
        self,
        before: Any,
        after: Any,
        tasks: Sequence[str],
        start: Any | None = None,
        goal: Any | None = None,
    ) -> np.ndarray:
        """Hops (B,) in [-1, 1] from cached embeddings; ``start``/``goal`` are reference-state
        embeddings (B rows) or ``None`` when the context is unavailable."""

    def hop_and_std_from_embeddings(
        self,
        before: Any,
        after: Any,
        tasks: Sequence[str],
        start: Any | None = None,
        goal: Any | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Hops (B,) and the model's own predictive std of each hop (B,). A model without a
        predictive distribution (the oracle, the baselines) reports std 0 -- it claims nothing
        about its uncertainty, and the tracker then measures only the disagreement of its
        estimates (:mod:`reward_models.confidence`)."""
        hops = np.asarray(self.hop_from_embeddings(before, after, tasks, start, goal), dtype=np.float64)
        return hops, np.zeros_like(hops)

    def state_features(self, embeddings: Any) -> np.ndarray | None:
        """(B, F) float features of encoded states for out-of-distribution checks, or ``None`` when
        the model has none (then no frame is ever flagged)."""
        return None

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (written into report/sidecar metadata)."""
        return {"model_id": self.model_id, "cameras": list(self.cameras) if self.cameras else None}

    def hop(
        self,
        before: Observation,
        after: Observation,
        tasks: Sequence[str],
        start_ref: Observation | None = None,
        goal_ref: Observation | None = None,
    ) -> np.ndarray:
        """Batched hop from raw observations (encodes, then scores)."""
        enc = self.encode
        return self.hop_from_embeddings(
            enc(before),
            enc(after),
            tasks,
            enc(start_ref) if start_ref is not None else None,
            enc(goal_ref) if goal_ref is not None else None,
        )
