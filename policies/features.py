"""Task-relative inputs for state policies (``--policy-features relative``).

The sim's state vector holds absolute positions: the grip point, the block, the target, the marker,
the drawer handle. What a push policy has to act on is relative -- where to stand behind the block so
that it moves towards the target, and which way to push -- and an MLP has to learn that geometry
(a normalised difference and an offset) from the absolute coordinates before it can learn anything
else. On push that geometry is most of the problem: with these inputs, SAC learns to push from
partial demonstrations that stop before the block moves (policies/configs/sac_push_prepush.yaml), which it
does not without them (figures: README, "Where things stand").

The features are computed *inside* the policy's features extractor from the raw state (entries found
by name in the env's ``state_names``, which travel in ``model.zip``), appended to the normalised
state. So evaluation, :func:`policies.run.load_policy` and the ROS 2 policy node keep feeding raw sim
states, and the reward is untouched (shaping still telescopes exactly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import sim
from policies.envs import NormalizedFlattenExtractor, normalizing_policy_kwargs
from sim.tasks import PUSH_EE_HEIGHT, PUSH_OFFSET

HAND_SCALE_M = 0.05
"""Hand-relative vectors are divided by this (a few centimetres decide success; ±10 is ±50 cm)."""
OBJECT_SCALE_M = 0.1
"""Object-to-target vectors are divided by this."""

Getter = Callable[[str], torch.Tensor]
"""``get("block")`` -> the (batch, 3) tensor of ``block_x, block_y, block_z`` in the state."""


def _reach(get: Getter) -> list[torch.Tensor]:
    return [(get("marker") - get("ee")) / HAND_SCALE_M]


def _push(get: Getter) -> list[torch.Tensor]:
    ee, block, target = get("ee"), get("block"), get("target")
    to_target = target[:, :2] - block[:, :2]
    direction = to_target / to_target.norm(dim=1, keepdim=True).clamp(min=1e-6)
    # the same pre-push point as sim.tasks.PandaPushEnv.push_point (the progress Φ's reach stage)
    push_point = torch.cat(
        [block[:, :2] - direction * PUSH_OFFSET, torch.full_like(block[:, :1], PUSH_EE_HEIGHT)], dim=1
    )
    return [(push_point - ee) / HAND_SCALE_M, to_target / OBJECT_SCALE_M, direction, (block - ee) / HAND_SCALE_M]


def _pickplace(get: Getter) -> list[torch.Tensor]:
    ee, block, target = get("ee"), get("block"), get("target")
    return [(block - ee) / HAND_SCALE_M, (target - block) / OBJECT_SCALE_M]


def _drawer(get: Getter) -> list[torch.Tensor]:
    return [(get("handle") - get("ee")) / HAND_SCALE_M]


TASK_FEATURES: dict[str, tuple[Callable[[Getter], list[torch.Tensor]], int]] = {
    "reach": (_reach, 3),
    "push": (_push, 10),
    "pickplace": (_pickplace, 6),
    "drawer": (_drawer, 3),
}
"""Task name -> (feature function, number of features)."""


class RelativeFeaturesExtractor(NormalizedFlattenExtractor):
    """:class:`~policies.envs.NormalizedFlattenExtractor` (the normalised state) followed by the
    task's relative features (``TASK_FEATURES``), each clipped like the state."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        mean: Sequence[float],
        std: Sequence[float],
        task: str,
        state_names: Sequence[str],
        clip: float = 10.0,
    ) -> None:
        super().__init__(observation_space, mean, std, clip)
        if task not in TASK_FEATURES:
            raise ValueError(f"no relative features for task {task!r}; tasks with them: {', '.join(TASK_FEATURES)}")
        names = list(state_names)
        if len(names) != int(np.prod(observation_space.shape)):
            raise ValueError(
                f"relative features: {len(names)} state names for a state of "
                f"{int(np.prod(observation_space.shape))} entries"
            )
        self.task = task
        self._function, n_features = TASK_FEATURES[task]
        self._index: dict[str, list[int]] = {}
        for prefix in ("ee", "marker", "block", "target", "handle"):
            wanted = [f"{prefix}_{axis}" for axis in "xyz"]
            if all(w in names for w in wanted):
                self._index[prefix] = [names.index(w) for w in wanted]
        self._features_dim = len(names) + n_features

    def _get(self, x: torch.Tensor) -> Getter:
        def get(prefix: str) -> torch.Tensor:
            if prefix not in self._index:
                raise ValueError(
                    f"relative features for {self.task!r} need {prefix}_x/_y/_z in the state; "
                    f"it has {sorted(self._index)}"
                )
            return x[:, self._index[prefix]]

        return get

    def relative(self, observations: torch.Tensor) -> torch.Tensor:
        """The task's relative features of raw states (batch, n_features), unclipped."""
        return torch.cat(self._function(self._get(self.flatten(observations))), dim=1)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        rel = torch.clamp(self.relative(observations), -self.clip, self.clip)
        return torch.cat([super().forward(observations), rel], dim=1)


def state_names(task: str) -> list[str]:
    """Names of the entries of ``task``'s state vector (``task``: short name or env id)."""
    env = sim.make(task, cameras=())
    try:
        return list(env.unwrapped.state_names)
    finally:
        env.close()


def relative_features_kwargs(task: str, names: Sequence[str], mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """``policy_kwargs`` entries for an ``MlpPolicy`` with :class:`RelativeFeaturesExtractor`
    (``task``: short name or env id; ``names``: its :func:`state_names`)."""
    kwargs = normalizing_policy_kwargs("state", mean, std)
    kwargs["features_extractor_class"] = RelativeFeaturesExtractor
    kwargs["features_extractor_kwargs"].update(task=sim.resolve_task(task), state_names=list(names))
    return kwargs
