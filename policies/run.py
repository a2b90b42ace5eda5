"""Load a trained ``prism-train`` run for inference (prism-eval, the ROS 2 policy node, recording).

>>> policy = load_policy("runs/push_grm")                      # doctest: +SKIP
>>> action = policy.predict({"state": s, "pixels": {"front": img}})   # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

import sim
from episodes.camera_map import parse_cameras
from policies.configuration_train import RLTrainConfig
from policies.envs import policy_obs_from_sim
from policies.train import _algo_class
from reward_models.devices import resolve_device


class LoadedPolicy:
    """A trained SB3 policy plus what a caller needs to feed it.

    ``predict`` takes the sim's observation layout (``{"state": (D,), "pixels": {cam: HxWx3}}``)
    or the flat layout the policy was trained on, and returns a float32 action (deterministic).
    ``reset``/``act`` make it a ``policies.record`` rollout policy.
    """

    def __init__(self, model: Any, config: RLTrainConfig, run_dir: Path, model_path: Path) -> None:
        self.model = model
        self.config = config
        self.run_dir = run_dir
        self.model_path = model_path
        self.kind = f"sb3-{config.algo}"

    @property
    def task(self) -> str:
        return sim.resolve_task(self.config.task)

    @property
    def obs_mode(self) -> str:
        return self.config.obs

    @property
    def cameras(self) -> tuple[str, ...]:
        """Cameras the policy observes (empty for state policies)."""
        return parse_cameras(self.config.cameras) if self.config.obs == "pixels" else ()

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def action_mode(self) -> str:
        return self.config.action_mode

    @property
    def state_dim(self) -> int:
        space = self.model.observation_space
        return int((space["state"] if hasattr(space, "spaces") else space).shape[0])

    def _flat(self, obs: Any) -> Any:
        if isinstance(obs, Mapping) and "pixels" in obs:
            return policy_obs_from_sim(obs, self.obs_mode, self.cameras)
        if isinstance(obs, Mapping) and self.obs_mode == "state":
            return np.asarray(obs["state"], dtype=np.float32)
        return obs

    def predict(self, obs: Any, deterministic: bool = True) -> np.ndarray:
        flat = self._flat(obs)
        state = flat["state"] if isinstance(flat, Mapping) else flat
        state = np.asarray(state)
        if state.shape[-1] != self.state_dim:
            raise ValueError(
                f"state has {state.shape[-1]} entries; the policy in {self.run_dir} expects {self.state_dim}"
            )
        action, _ = self.model.predict(flat, deterministic=deterministic)
        action = np.asarray(action, dtype=np.float32)
        if not np.all(np.isfinite(action)):
            raise RuntimeError(f"policy {self.model_path} produced a non-finite action")
        return action

    # policies.record rollout-policy protocol
    def reset(self, obs: Any, info: Any) -> None:
        pass

    def act(self, obs: Any, info: Any) -> np.ndarray:
        return self.predict(obs)


def load_policy(run_dir: str | Path, device: str = "auto", checkpoint: str = "model") -> LoadedPolicy:
    """Load ``RUN_DIR/model.zip`` (``checkpoint="best"``: ``eval/best_model.zip``; or a path)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a prism-train run: {cfg_path} is missing")
    config = RLTrainConfig.from_yaml(cfg_path)
    if checkpoint == "model":
        model_path = run_dir / "model.zip"
    elif checkpoint == "best":
        model_path = run_dir / "eval" / "best_model.zip"
    else:
        model_path = Path(checkpoint)
    if not model_path.is_file():
        raise FileNotFoundError(f"no policy checkpoint at {model_path} (has training finished?)")
    model = _algo_class(config.algo).load(model_path, device=resolve_device(device))
    return LoadedPolicy(model, config, run_dir, model_path)
