"""Where the policy node's actions come from (no ROS import).

``policy`` parameter forms:

* ``<run dir>`` (or ``run:<dir>``) -- a ``prism-train`` run, loaded with ``policies.run.load_policy``;
* ``expert:<task>[:<behaviour>]`` -- SIM-ONLY: the scripted expert (``sim.experts``), which reads
  privileged state. It mirrors the twin in a camera-less shadow env: the twin's episode seed
  (``sim/episode``) reproduces the task layout and its MuJoCo state (``sim/mj_state``) is copied in
  every tick. Useful to test the closed loop before a policy is trained;
* ``<vla checkpoint dir>`` (or ``vla:<dir>``) -- a ``prism-vla`` policy (``policies.vla``): camera
  views, the episode's instruction (``episode/start``) and joint positions + gripper width only, so
  it runs on a real arm;
* ``python:<module>:<factory>`` -- ``factory(**options)`` returning an object with
  ``act(obs) -> action`` (and optionally ``reset(episode)``, ``cameras``, ``image_size``,
  ``action_mode``, ``needs_state``) -- your own controller, or a fault injector in tests.

Every source is wrapped as a :class:`BridgePolicy`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from policies.vla.configuration_vla import is_vla_checkpoint

PROPRIO_DIM = 18
"""Leading entries of the sim's ``state`` a real robot can provide: 7 joint positions, 7 joint
velocities, gripper width, end-effector xyz. Anything after them is object/target state."""


@dataclass
class BridgePolicy:
    """What the policy node needs to know about a policy, plus the callable itself."""

    name: str
    act_fn: Any
    """``obs -> action`` (obs: ``{"state": (D,), "pixels": {cam: (H, W, 3)}, ...}``)."""
    cameras: tuple[str, ...] = ()
    """Camera views the policy consumes (each is a required, watchdog-checked input)."""
    image_size: int = 128
    action_mode: str = "ee_delta"
    """``ee_delta`` (-> TwistStamped) or ``joint`` (-> JointTrajectory)."""
    state_dim: int = 0
    """Length of the ``state`` vector the policy needs (0: none)."""
    needs_privileged: bool = False
    """True when the policy needs SIM-ONLY inputs (object state / MuJoCo state)."""
    needs_mj_state: bool = False
    reset_fn: Any = None
    """``reset(episode: dict)`` at each episode start (``{instruction, seed, task, episode}``)."""
    extra: dict = field(default_factory=dict)

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        return np.asarray(self.act_fn(obs), dtype=np.float64).ravel()

    def reset(self, episode: Mapping[str, Any]) -> None:
        if self.reset_fn is not None:
            self.reset_fn(episode)


class ShadowExpert:
    """The scripted expert driven from the twin's published MuJoCo state (SIM-ONLY)."""

    def __init__(self, task: str, behaviour: str = "expert", noise: float | None = None) -> None:
        import mujoco  # sim-only (expert:TASK): keeps MuJoCo out of the robot nodes' start-up

        import sim
        import sim.experts

        self._mujoco = mujoco
        self._experts = sim.experts
        self.env = sim.make(task, cameras=(), action_mode="ee_delta")
        self.sim_env = self.env.unwrapped
        self.behaviour = behaviour
        self.noise = noise
        self.policy = None
        self._episode_key: Any = None
        self._spec = mujoco.mjtState.mjSTATE_INTEGRATION
        self.state_size = mujoco.mj_stateSize(self.sim_env.model, self._spec)

    def reset(self, episode: Mapping[str, Any]) -> None:
        """Nothing to do: episodes are recognised from the ``[episode, seed]`` prefix of each
        ``sim/mj_state`` message, which can never disagree with the state it carries."""

    def _sync_episode(self, episode: int, seed: int) -> None:
        if (episode, seed) == self._episode_key:
            return
        self._episode_key = (episode, seed)
        obs, info = self.env.reset(seed=seed)  # same seed -> same layout and instruction as the twin
        self.policy = self._experts.make_policy(self.behaviour, self.env, seed=seed, noise=self.noise)
        self.policy.reset(obs, info)

    def act(self, obs: Mapping[str, Any]) -> np.ndarray:
        message = np.asarray(obs["mj_state"], dtype=np.float64)
        if message.size != self.state_size + 2:
            raise ValueError(
                f"sim/mj_state has {message.size} values, the shadow env expects "
                f"{self.state_size + 2}: is the twin running the same task?"
            )
        self._sync_episode(int(message[0]), int(message[1]))
        m, d = self.sim_env.model, self.sim_env.data
        self._mujoco.mj_setState(m, d, message[2:], self._spec)
        self._mujoco.mj_forward(m, d)
        return self.policy.act({"state": np.asarray(obs["state"], dtype=np.float32)}, self.sim_env.progress_info())


def load_bridge_policy(spec: str, device: str = "auto", options: Mapping[str, Any] | None = None) -> BridgePolicy:
    """Resolve the ``policy`` parameter (see module docstring) into a :class:`BridgePolicy`."""
    spec = spec.strip()
    if not spec:
        raise ValueError(
            "parameter 'policy' is empty: give a prism-train run directory, "
            "expert:<task> (sim only) or python:<module>:<factory>"
        )
    if spec.startswith("expert:"):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError(f"policy {spec!r}: expected expert:<task> or expert:<task>:<behaviour>")
        behaviour = parts[2] if len(parts) == 3 else "expert"
        expert = ShadowExpert(parts[1], behaviour)
        state_dim = int(expert.sim_env.observation_space["state"].shape[0])
        return BridgePolicy(
            name=spec,
            act_fn=expert.act,
            reset_fn=expert.reset,
            action_mode="ee_delta",
            state_dim=state_dim,
            needs_privileged=True,
            needs_mj_state=True,
            extra={"shadow": expert},
        )
    if spec.startswith("python:"):
        parts = spec.split(":")
        if len(parts) != 3:
            raise ValueError(f"policy {spec!r}: expected python:<module>:<factory>")
        try:
            factory = getattr(importlib.import_module(parts[1]), parts[2])
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"policy {spec!r}: cannot import {parts[1]}.{parts[2]} ({exc})") from exc
        obj = factory(**dict(options or {}))
        state_dim = int(getattr(obj, "state_dim", 0))
        return BridgePolicy(
            name=spec,
            act_fn=obj.act,
            reset_fn=getattr(obj, "reset", None),
            cameras=tuple(getattr(obj, "cameras", ())),
            image_size=int(getattr(obj, "image_size", 128)),
            action_mode=str(getattr(obj, "action_mode", "ee_delta")),
            state_dim=state_dim,
            needs_privileged=bool(getattr(obj, "needs_privileged", state_dim > PROPRIO_DIM)),
        )
    vla = _load_vla_policy(spec, device)
    if vla is not None:
        return vla
    run_dir = Path(spec[4:] if spec.startswith("run:") else spec).expanduser()
    if not run_dir.is_dir():
        raise ValueError(
            f"policy run directory {str(run_dir)!r} does not exist (forms: <run dir>, "
            "expert:<task>, python:<module>:<factory>)"
        )
    try:
        from policies.run import load_policy  # SB3 and torch (the learn extra)
    except ImportError as exc:
        raise ValueError(
            f"cannot load the prism-train run {str(run_dir)!r}: policies.run is unavailable ({exc})"
        ) from exc
    loaded = load_policy(run_dir, device=device)
    cameras = tuple(getattr(loaded, "cameras", ()) or ())
    obs_mode = str(getattr(loaded, "obs_mode", "pixels"))
    state_dim = int(getattr(loaded, "state_dim", 0) or _state_dim_from_space(loaded))
    return BridgePolicy(
        name=str(run_dir),
        act_fn=loaded.predict,
        cameras=cameras if obs_mode != "state" else (),
        image_size=int(getattr(loaded, "image_size", 128) or 128),
        action_mode=str(getattr(loaded, "action_mode", "ee_delta")),
        state_dim=state_dim,
        # SB3 policies are stateless (nothing to reset); whether the state they need exists on the
        # robot is checked by the node (state_dim > PROPRIO_DIM needs use_privileged_state, sim only)
        extra={"task": getattr(loaded, "task", None), "obs_mode": obs_mode},
    )


def _load_vla_policy(spec: str, device: str) -> BridgePolicy | None:
    """A ``vla:<dir>`` spec or a folder holding a VLA checkpoint as a :class:`BridgePolicy`; None otherwise."""
    path = Path(spec[4:] if spec.startswith("vla:") else spec).expanduser()
    if not spec.startswith("vla:") and not is_vla_checkpoint(path):
        return None
    from policies.vla.modeling_vla import load_vla  # torch

    policy = load_vla(path, device=device)
    return BridgePolicy(
        name=str(path),
        act_fn=policy.act,
        cameras=policy.cameras,
        image_size=policy.image_size,
        action_mode="ee_delta",
        state_dim=policy.state_dim,
        needs_privileged=False,
        # each episode starts a fresh chunk under the instruction episode/start carried
        reset_fn=lambda episode: policy.start_episode(episode.get("instruction", "")),
        extra={"vla": policy},
    )


def _state_dim_from_space(loaded: Any) -> int:
    space = getattr(loaded, "observation_space", None)
    try:
        return int(space["state"].shape[0])
    except Exception:
        return 0


def proprio_state(
    joint_positions: Sequence[float],
    joint_velocities: Sequence[float],
    gripper_width: float,
    ee_position: Sequence[float],
) -> np.ndarray:
    """The sim's proprioceptive ``state`` prefix from real-robot readings (``PROPRIO_DIM`` values)."""
    return np.concatenate(
        [
            np.asarray(joint_positions, float),
            np.asarray(joint_velocities, float),
            [float(gripper_width)],
            np.asarray(ee_position, float),
        ]
    ).astype(np.float32)
