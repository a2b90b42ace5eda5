"""Sim envs as SB3 sees them: flat observations, Monitor, reward views, vectorisation, shaping.

The stack for one training env (inside out)::

    sim.make(task)                 Dict(state, pixels={cam: HxWx3})
    -> PolicyObsWrapper            state: Box  |  pixels: Dict(state, <cam>, ...) (flat, SB3-ready)
    -> RewardViewsWrapper          renders only the reward cameras the policy does not observe
    -> Monitor                     the env's true return, length and is_success
    ... DummyVecEnv / SubprocVecEnv
    -> ShapedRewardVecEnv          one batched reward-model call per step (main process)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from policies.shaping import RewardViewsWrapper

OBS_MODES = ("state", "pixels")


def parse_cameras(cameras: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"front,wrist"`` -> ``("front", "wrist")``; ``None``/``""`` -> ``()``."""
    if cameras is None:
        return ()
    if isinstance(cameras, str):
        return tuple(c.strip() for c in cameras.split(",") if c.strip())
    return tuple(cameras)


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
    import sim

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
