"""Sim envs as SB3 sees them: flat observations, Monitor, reward views, vectorisation, shaping.

The stack for one training env (inside out)::

    sim.make(task)                 Dict(state, pixels={cam: HxWx3})
    -> PolicyObsWrapper            state: Box  |  pixels: Dict(state, <cam>, ...) (flat, SB3-ready)
    -> RewardViewsWrapper          renders only the reward cameras the policy does not observe
    -> Monitor                     the env's true return, length and is_success
    ... DummyVecEnv / SubprocVecEnv
    -> ShapedRewardVecEnv          one batched reward-model call per step (main process)

Observation normalisation happens inside the policy (:class:`NormalizedFlattenExtractor`, fixed
statistics from :func:`state_statistics`, saved in ``model.zip``), not in the env stack: the raw
sim state stays what evaluation, ``load_policy`` and the ROS 2 policy node feed, and the reward is
never touched, so shaping still telescopes exactly. (The raw state mixes joint velocities with a
spread of ~0.3 rad/s and end-effector/marker positions with a spread of 4–8 cm, so the few
centimetres that decide success are tiny inputs to an unnormalised network.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import sim
from policies.shaping import RewardViewsWrapper

OBS_MODES = ("state", "pixels")


class PolicyObsWrapper(gym.ObservationWrapper):
    """Flattens the sim's nested observation for SB3.

    ``state``: the ``state`` vector only (Box). ``pixels``: Dict(``state``, one uint8 HxWx3 entry
    per camera) -- SB3's MultiInputPolicy cannot take nested Dicts.
    """

    def __init__(self, env: gym.Env, obs_mode: str, cameras: Sequence[str] = ()) -> None:
        super().__init__(env)
        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs mode must be one of {OBS_MODES}, got {obs_mode!r}")
        self.obs_mode = obs_mode
        self.cameras = tuple(cameras)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or "state" not in space.spaces:
            raise ValueError(f"expected the sim's Dict(state, pixels) observation space, got {space}")
        if obs_mode == "state":
            self.observation_space = space["state"]
        else:
            if not self.cameras:
                raise ValueError("obs mode 'pixels' needs at least one camera (e.g. --cameras front)")
            pixels = space.spaces.get("pixels")
            missing = [c for c in self.cameras if pixels is None or c not in pixels.spaces]
            if missing:
                raise ValueError(f"the env does not observe camera(s) {missing}; make it with cameras={self.cameras}")
            if "state" in self.cameras:
                raise ValueError("a camera may not be called 'state' (it collides with the state vector key)")
            spaces = {"state": space["state"]}
            spaces.update({c: pixels[c] for c in self.cameras})
            self.observation_space = gym.spaces.Dict(spaces)

    def observation(self, observation: dict[str, Any]) -> Any:
        if self.obs_mode == "state":
            return np.asarray(observation["state"], dtype=np.float32)
        out = {"state": np.asarray(observation["state"], dtype=np.float32)}
        for c in self.cameras:
            out[c] = observation["pixels"][c]
        return out


def policy_obs_from_sim(obs: dict[str, Any], obs_mode: str, cameras: Sequence[str]) -> Any:
    """The same flattening as :class:`PolicyObsWrapper`, for a single raw sim observation."""
    if obs_mode == "state":
        return np.asarray(obs["state"], dtype=np.float32)
    pixels = obs.get("pixels") or {}
    missing = [c for c in cameras if c not in pixels]
    if missing:
        raise KeyError(f"observation has no camera(s) {missing} (it has {sorted(pixels)}); the policy needs them")
    out = {"state": np.asarray(obs["state"], dtype=np.float32)}
    out.update({c: np.asarray(pixels[c]) for c in cameras})
    return out


def make_sim_env(
    task: str,
    obs_mode: str = "state",
    cameras: Sequence[str] = (),
    image_size: int = 64,
    action_mode: str = "ee_delta",
    max_episode_steps: int | None = None,
    reward_cameras: Sequence[str] = (),
    monitor: bool = True,
) -> gym.Env:
    """One wrapped env (see the module docstring). Only the policy's cameras render into obs."""
    policy_cams = tuple(cameras) if obs_mode == "pixels" else ()
    kwargs: dict[str, Any] = {"cameras": policy_cams, "image_size": image_size, "action_mode": action_mode}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    env = sim.make(task, **kwargs)
    env = PolicyObsWrapper(env, obs_mode, policy_cams)
    if reward_cameras:
        env = RewardViewsWrapper(env, reward_cameras)
    if monitor:
        env = Monitor(env, info_keywords=("is_success",))
    return env


def make_env_fns(n_envs: int, seed: int, **env_kwargs: Any) -> list[Callable[[], gym.Env]]:
    def make(rank: int) -> Callable[[], gym.Env]:
        def thunk() -> gym.Env:
            env = make_sim_env(**env_kwargs)
            env.action_space.seed(seed + rank)
            return env

        return thunk

    return [make(i) for i in range(n_envs)]


def make_vec_env(n_envs: int, seed: int, vec_env: str = "dummy", **env_kwargs: Any) -> VecEnv:
    """``n_envs`` copies in a DummyVecEnv or a SubprocVecEnv (forkserver; the calling script must
    be guarded by ``if __name__ == "__main__":``). Env ``i`` is seeded with ``seed + i``."""
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    fns = make_env_fns(n_envs, seed, **env_kwargs)
    if vec_env == "dummy" or n_envs == 1:
        venv: VecEnv = DummyVecEnv(fns)
    elif vec_env == "subproc":
        venv = SubprocVecEnv(fns, start_method="forkserver")
    else:
        raise ValueError(f"vec_env must be 'dummy' or 'subproc', got {vec_env!r}")
    venv.seed(seed)
    return venv


# --------------------------------------------------------------------------------------------
# Observation normalisation that travels with the policy.
# --------------------------------------------------------------------------------------------


def state_statistics(
    task: str,
    steps: int = 2_000,
    seed: int = 0,
    action_mode: str = "ee_delta",
    max_episode_steps: int | None = None,
    min_std: float = 1e-2,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the sim's ``state`` vector under uniformly random actions (``steps`` steps,
    seeded). Used to normalise the policy's input; ``std`` is floored at ``min_std`` so constant
    entries (e.g. a fixed marker height) are not blown up."""
    kwargs: dict[str, Any] = {"cameras": (), "action_mode": action_mode}
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    env = sim.make(task, **kwargs)
    try:
        env.action_space.seed(seed)
        rows = []
        obs, _ = env.reset(seed=seed)
        episode = 0
        for _ in range(steps):
            rows.append(np.asarray(obs["state"], dtype=np.float64))
            obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
            if terminated or truncated:
                episode += 1
                obs, _ = env.reset(seed=seed + episode)
    finally:
        env.close()
    data = np.stack(rows)
    return data.mean(axis=0), np.maximum(data.std(axis=0), min_std)


def _normalizer_buffers(
    module: torch.nn.Module, mean: Sequence[float], std: Sequence[float], dim: int, clip: float
) -> None:
    mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32).reshape(-1))
    std_t = torch.as_tensor(np.asarray(std, dtype=np.float32).reshape(-1))
    if mean_t.numel() != dim or std_t.numel() != dim:
        raise ValueError(
            f"state normaliser: mean/std have {mean_t.numel()}/{std_t.numel()} entries, the state has {dim}"
        )
    if not torch.all(std_t > 0):
        raise ValueError("state normaliser: std must be positive")
    module.register_buffer("state_mean", mean_t)
    module.register_buffer("state_std", std_t)
    module.clip = float(clip)


class NormalizedFlattenExtractor(FlattenExtractor):
    """SB3 ``MlpPolicy`` features extractor: ``clip((x − mean) / std)`` with fixed statistics
    stored as buffers, so the normalisation is saved in ``model.zip`` and every consumer
    (evaluation, ``load_policy``, the ROS 2 policy node) feeds raw sim states.

    Fixed rather than running statistics (``VecNormalize``): nothing else has to be saved or
    synchronised, and the critic's inputs do not drift while it learns. Observation
    normalisation leaves the reward untouched, so shaping still telescopes exactly."""

    def __init__(
        self, observation_space: gym.spaces.Box, mean: Sequence[float], std: Sequence[float], clip: float = 10.0
    ) -> None:
        super().__init__(observation_space)
        _normalizer_buffers(self, mean, std, int(np.prod(observation_space.shape)), clip)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = self.flatten(observations)
        return torch.clamp((x - self.state_mean) / self.state_std, -self.clip, self.clip)


class NormalizedCombinedExtractor(CombinedExtractor):
    """``MultiInputPolicy`` extractor: as :class:`NormalizedFlattenExtractor` for the ``state``
    entry; camera images go through SB3's CNNs unchanged."""

    def __init__(
        self,
        observation_space: gym.spaces.Dict,
        mean: Sequence[float],
        std: Sequence[float],
        clip: float = 10.0,
        cnn_output_dim: int = 256,
    ) -> None:
        super().__init__(observation_space, cnn_output_dim=cnn_output_dim)
        _normalizer_buffers(self, mean, std, int(np.prod(observation_space["state"].shape)), clip)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        observations = dict(observations)
        observations["state"] = torch.clamp(
            (observations["state"] - self.state_mean) / self.state_std, -self.clip, self.clip
        )
        return super().forward(observations)


def normalizing_policy_kwargs(obs_mode: str, mean: np.ndarray, std: np.ndarray) -> dict[str, Any]:
    """``policy_kwargs`` entries that make an SB3 policy normalise the state input (see
    :func:`state_statistics`)."""
    cls = NormalizedFlattenExtractor if obs_mode == "state" else NormalizedCombinedExtractor
    return {
        "features_extractor_class": cls,
        "features_extractor_kwargs": {"mean": [float(x) for x in mean], "std": [float(x) for x in std]},
    }
