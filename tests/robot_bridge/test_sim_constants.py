"""The bridge's copies of sim facts stay equal to the sim's own.

``robot_bridge`` keeps the Panda joint limits, the ee_delta step and the proprioceptive state size
as plain constants so that a node on a real robot does not import MuJoCo; these tests tie each to
the value the real sim env has, so changing one side without the other fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

import sim
from robot_bridge.command_mapping import DEFAULT_EE_MAX_STEP, PANDA_JOINT_NAMES, PANDA_LOWER, PANDA_UPPER
from robot_bridge.policy_sources import PROPRIO_DIM, proprio_state
from sim.env import EE_STEP_M


@pytest.fixture(scope="module")
def panda():
    env = sim.make("reach")
    yield env.unwrapped
    env.close()


def test_joint_limits_are_the_sims(panda):
    assert len(PANDA_LOWER) == len(PANDA_UPPER) == len(PANDA_JOINT_NAMES) == 7
    np.testing.assert_allclose(PANDA_LOWER, panda._joint_low, atol=1e-6)
    np.testing.assert_allclose(PANDA_UPPER, panda._joint_high, atol=1e-6)


def test_ee_step_is_the_sims():
    assert DEFAULT_EE_MAX_STEP == EE_STEP_M


def test_proprio_dim_is_the_sims_proprioceptive_prefix(panda):
    assert PROPRIO_DIM == len(panda._proprio_names())
    # proprio_state's order: joint positions, joint velocities, gripper width, end-effector xyz.
    expected = ([f"joint{i}_pos" for i in range(1, 8)] + [f"joint{i}_vel" for i in range(1, 8)]
                + ["gripper_width", "ee_x", "ee_y", "ee_z"])  # fmt: skip
    assert panda.state_names[:PROPRIO_DIM] == expected
    obs, _ = panda.reset(seed=0)
    assert obs["state"].shape[0] > PROPRIO_DIM  # reach adds the target after the proprioception
    assert proprio_state(np.zeros(7), np.zeros(7), 0.0, np.zeros(3)).shape == (PROPRIO_DIM,)
