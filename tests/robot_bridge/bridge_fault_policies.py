"""Policies for the bridge tests, loaded by the policy node as ``python:bridge_fault_policies:<name>``."""

import numpy as np


class _Policy:
    action_mode = "ee_delta"
    image_size = 128

    def __init__(self, action, cameras=("front",)):
        self.action = np.asarray(action, dtype=np.float64)
        self.cameras = tuple(cameras)
        self.calls = 0

    def act(self, obs):
        self.calls += 1
        return self.action


def nan_policy():
    """Always outputs NaN: the node must publish nothing at all."""
    return _Policy([np.nan, 0.0, 0.0, 0.0])


def constant_policy():
    """Moves +x at half speed, gripper open (a policy that keeps commanding)."""
    return _Policy([0.5, 0.0, 0.0, -1.0])


def constant_policy_all_cameras():
    return _Policy([0.5, 0.0, 0.0, -1.0], cameras=("front", "side", "wrist"))


def joint_target_policy():
    """Joint mode: the home posture with joint 1 turned to 0.6 rad (normalised over Panda limits)."""
    from robot_bridge.command_mapping import PANDA_LOWER, PANDA_UPPER, normalise_joints

    home = np.array([0.6, -0.3202, 0.0, -2.5556, 0.0, 2.2354, -0.7854])
    policy = _Policy([*normalise_joints(home, PANDA_LOWER, PANDA_UPPER), -1.0])
    policy.action_mode = "joint"
    return policy
