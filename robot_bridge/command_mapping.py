"""Policy actions <-> robot commands (pure numpy, no ROS).

The sim's action spaces (``sim.make(action_mode=...)``):

* ``ee_delta``: 4-D in [-1, 1] -- end-effector displacement per control step, scaled by the env's
  maximum step (metres per step at |a| = 1), plus gripper (-1 open ... +1 closed). On a robot this
  is a Cartesian velocity ``v = a * max_step / control_dt`` sent to MoveIt Servo as TwistStamped.
* ``joint``: 8-D in [-1, 1] -- absolute joint position targets normalised over the joint limits,
  plus gripper. On a robot: a one-point JointTrajectory.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PANDA_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
"""Classic Panda URDF joint names (the twin publishes these)."""
PANDA_FINGER_NAMES = ("panda_finger_joint1", "panda_finger_joint2")
PANDA_LOWER = (-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973)
"""Published Franka joint limits (rad)."""
PANDA_UPPER = (2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973)
DEFAULT_EE_MAX_STEP = 0.02
"""Metres of end-effector travel per control step at |action| = 1 (the sim's ee_delta scale)."""


def ros_joint_name(mujoco_name: str) -> str:
    """``panda/joint1`` (our attached MJCF) -> ``panda_joint1`` (URDF convention)."""
    name = mujoco_name.replace("/", "_")
    return name


def ee_action_to_velocity(action_xyz: Sequence[float], ee_max_step: float, control_dt: float) -> np.ndarray:
    """Normalised ee_delta action (3,) -> linear velocity (m/s)."""
    return np.asarray(action_xyz, dtype=np.float64) * (ee_max_step / control_dt)


def velocity_to_ee_action(velocity: Sequence[float], ee_max_step: float, control_dt: float) -> np.ndarray:
    """Linear velocity (m/s) -> normalised ee_delta action (3,), clipped to [-1, 1]."""
    return np.clip(np.asarray(velocity, dtype=np.float64) * (control_dt / ee_max_step), -1.0, 1.0)


def normalise_joints(positions: Sequence[float], lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
    """Joint positions (rad) -> [-1, 1] over the limits."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    return np.clip(2.0 * (np.asarray(positions, float) - lo) / (hi - lo) - 1.0, -1.0, 1.0)


def denormalise_joints(action: Sequence[float], lower: Sequence[float], upper: Sequence[float]) -> np.ndarray:
    """[-1, 1] -> joint positions (rad) over the limits."""
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    return lo + (np.clip(np.asarray(action, float), -1.0, 1.0) + 1.0) * 0.5 * (hi - lo)


def reorder_joints(names: Sequence[str], values: Sequence[float], wanted: Sequence[str]) -> np.ndarray | None:
    """Pick ``wanted`` joints out of a (names, values) message; None when one is missing."""
    index = {n: i for i, n in enumerate(names)}
    if any(w not in index for w in wanted) or len(values) < len(names):
        return None
    return np.array([values[index[w]] for w in wanted], dtype=np.float64)
