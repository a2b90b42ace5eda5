"""Tiny gymnasium envs for the shaping tests (importable by SubprocVecEnv workers)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np


def frame_for_state(state: int, size: int = 8) -> np.ndarray:
    """A uint8 (size, size, 3) image that encodes the state index (pixel value = 10·state)."""
    return np.full((size, size, 3), 10 * state, dtype=np.uint8)


def state_from_frame(frame: np.ndarray) -> int:
    return int(round(float(np.asarray(frame)[..., 0].mean()) / 10.0))


class ChainEnv(gym.Env):
    """States 0..L on a line; actions 0/1/2 move −1/0/+1. Reaching L succeeds and terminates;
    ``max_steps`` truncates. ``info`` carries the sim contract keys (progress, stage, is_success,
    task). ``phi`` is the ground-truth progress table; ``pixels`` puts a camera in the obs
    (Dict obs) instead of rendering it on demand."""

    metadata = {"render_modes": []}

    def __init__(
        self, length: int = 4, max_steps: int = 6, phi=None, start: int = 0, pixels: bool = False, slip: float = 0.0
    ) -> None:
        self.length = length
        self.max_steps = max_steps
        self.phi = np.asarray(phi if phi is not None else np.arange(length + 1) / length, dtype=np.float64)
        self.start = start
        self.pixels = pixels
        self.slip = slip
        self.action_space = gym.spaces.Discrete(3)
        state_space = gym.spaces.Box(0.0, float(length), shape=(1,), dtype=np.float32)
        if pixels:
            self.observation_space = gym.spaces.Dict(
                {"state": state_space, "front": gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)}
            )
        else:
            self.observation_space = state_space
        self.n_renders = 0
        self._s = start
        self._t = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def _obs(self):
        state = np.array([self._s], dtype=np.float32)
        if self.pixels:
            return {"state": state, "front": frame_for_state(self._s)}
        return state

    def _info(self, success: bool = False) -> dict:
        return {
            "progress": float(self.phi[self._s]),
            "stage": int(self._s),
            "is_success": success,
            "task": "walk to the end of the chain",
        }

    def render_cameras(self, cameras):
        self.n_renders += 1
        return {c: frame_for_state(self._s) for c in cameras}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._s = self.start if options is None else int(options.get("start", self.start))
        self._t = 0
        return self._obs(), self._info()

    def step(self, action):
        move = int(action) - 1
        if self.slip and self.np_random.random() < self.slip:
            move = int(self.np_random.integers(-1, 2))
        self._s = int(np.clip(self._s + move, 0, self.length))
        self._t += 1
        success = self._s == self.length
        terminated = success
        truncated = (not terminated) and self._t >= self.max_steps
        return self._obs(), 1.0 if success else 0.0, terminated, truncated, self._info(success)


class GraphEnv(gym.Env):
    """A finite deterministic MDP: ``next_state[s, a]``; entering ``goal`` succeeds and terminates."""

    def __init__(self, next_state, goal: int, phi, start: int = 0, max_steps: int = 10_000) -> None:
        self.next_state = np.asarray(next_state, dtype=np.int64)
        self.goal = int(goal)
        self.phi = np.asarray(phi, dtype=np.float64)
        self.start = start
        self.max_steps = max_steps
        n_states, n_actions = self.next_state.shape
        self.observation_space = gym.spaces.Box(0.0, float(n_states), shape=(1,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(n_actions)
        self._s = start
        self._t = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def _info(self, success=False):
        return {"progress": float(self.phi[self._s]), "is_success": success, "task": "reach the goal", "stage": self._s}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._s, self._t = self.start, 0
        return np.array([self._s], dtype=np.float32), self._info()

    def step(self, action):
        self._s = int(self.next_state[self._s, int(action)])
        self._t += 1
        success = self._s == self.goal
        truncated = (not success) and self._t >= self.max_steps
        return np.array([self._s], dtype=np.float32), float(success), success, truncated, self._info(success)
